// The node's uplink: the interface that holds the node IP; the pod MTU follows its MTU (DESIGN.md §1). Pure.
import { TrellisError } from "../../proto/core/errors.js";

export interface Uplink {
  readonly name: string;
  readonly mtu: number;
}

/** Finds the link holding `nodeIp`; throws INVALID_ARGUMENT naming the addresses there are and what to do. */
export function findUplink(
  links: readonly { readonly index: number; readonly name: string; readonly mtu?: number }[],
  addresses: readonly { readonly index: number; readonly cidr: string }[],
  nodeIp: string,
): Uplink {
  const held = addresses.find((a) => a.cidr.split("/")[0] === nodeIp);
  const link = held && links.find((l) => l.index === held.index);
  if (!link) {
    const here = addresses.map((a) => `${links.find((l) => l.index === a.index)?.name ?? `link ${a.index}`} ${a.cidr}`).join(", ");
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `no interface of this node holds --node-ip ${nodeIp}, so the pod MTU cannot follow the node's uplink (addresses here: ${here || "none"}); give the node's own underlay address as --node-ip, or set --mtu`,
    );
  }
  if (!link.mtu)
    throw new TrellisError("INVALID_ARGUMENT", `could not read the MTU of ${link.name} (the uplink holding ${nodeIp}); set --mtu`);
  return { name: link.name, mtu: link.mtu };
}
