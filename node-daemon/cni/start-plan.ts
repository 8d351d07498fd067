// What a starting daemon does with its pods (DESIGN.md §2, daemon start), decided from the local journal,
// the control plane's copy and the kernel's links. Pure: the daemon reads, this decides, the daemon acts.
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { isHostVethName } from "../net/names.js";
import type { LinkInfo, VethSpec, VethState } from "../net/netlink.js";
import { attachmentKey } from "./allocation-index.js";

export interface StartPlan {
  /** The control plane's records the journal lacks entirely (address and attachment), of pods the kernel still has. */
  readonly restore: AllocationRecord[];
  /** Local records whose host veth is gone: the pod is gone, its address is free. */
  readonly release: AllocationRecord[];
  /** Local records whose host veth exists: kept, unless the kernel shows an ADD cut short (isInterruptedAdd). */
  readonly verify: AllocationRecord[];
}

export function planStart(local: readonly AllocationRecord[], remote: readonly AllocationRecord[], links: readonly LinkInfo[]): StartPlan {
  const present = new Set(links.map((l) => l.name));
  const localAddresses = new Set(local.map((r) => r.address));
  const localAttachments = new Set(local.flatMap((r) => (r.attachment ? [attachmentKey(r.attachment)] : [])));
  // The local record wins: restore only what it lacks entirely, and only for live pods.
  const restore = remote.filter(
    (r) =>
      !localAddresses.has(r.address) &&
      present.has(r.hostVeth) &&
      r.attachment !== undefined &&
      !localAttachments.has(attachmentKey(r.attachment)),
  );
  return {
    restore,
    release: local.filter((r) => !present.has(r.hostVeth)),
    verify: local.filter((r) => present.has(r.hostVeth)),
  };
}

/**
 * An ADD cut short by a crash never answered (it answers only once the pod side is configured), so the
 * runtime will DEL and retry it. Only the marks of an unfinished ADD count (host end not on the bridge,
 * pod interface without its address), never drift of a finished pod.
 */
export function isInterruptedAdd(veth: VethSpec, state: VethState): boolean {
  return !(state.host?.master === veth.bridge && state.pod?.addresses.includes(veth.podAddress));
}

/** Trellis veths on the bridge (or on none) that no kept record explains: an ADD a crash cut short. */
export function orphanVeths(links: readonly LinkInfo[], kept: readonly AllocationRecord[], bridge: string): string[] {
  const known = new Set(kept.map((r) => r.hostVeth));
  return links
    .filter((l) => l.kind === "veth" && isHostVethName(l.name) && (l.master === bridge || !l.master) && !known.has(l.name))
    .map((l) => l.name);
}
