import { createHash } from "node:crypto";

/** Host end of a pod's veth: "tr" + 11 hex chars of sha256(containerId/ifName); derived, never random. */
export function hostVethName(containerId: string, ifName: string): string {
  return `tr${createHash("sha256").update(`${containerId}/${ifName}`).digest("hex").slice(0, 11)}`;
}

/** True for names `hostVethName` can produce. */
export function isHostVethName(name: string): boolean {
  return /^tr[0-9a-f]{11}$/.test(name);
}

/**
 * A locally administered unicast MAC derived from an IPv4 address: `prefix` byte 0x0a, then `kind`,
 * then the four address bytes. Pod interfaces use kind 0x58, host veth ends 0x59, the bridge 0x5a.
 */
export function macFor(address: bigint, kind: "pod" | "host" | "bridge"): string {
  const kindByte = { pod: 0x58, host: 0x59, bridge: 0x5a }[kind];
  const bytes = [0x0a, kindByte, ...[24n, 16n, 8n, 0n].map((s) => Number((address >> s) & 255n))];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}
