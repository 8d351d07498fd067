import type { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";

/** The gateway (bridge) address of a node subnet: its first host address. */
export function gatewayOf(subnet: Cidr): bigint {
  return subnet.network + 1n;
}

/** Pod addresses of a subnet: all hosts except the gateway (network and broadcast excluded). */
export function podAddressCount(subnet: Cidr): bigint {
  return subnet.size - 3n;
}

/**
 * Chooses a free pod address in `subnet`, scanning upward from just after `after` (the last address
 * handed out) and wrapping, like host-local, so a released address is not reused at once. Pure.
 */
export function pickFreeAddress(subnet: Cidr, taken: ReadonlySet<bigint>, after?: bigint): bigint {
  const first = subnet.network + 2n;
  const count = podAddressCount(subnet);
  if (count <= 0n) throw new TrellisError("EXHAUSTED", `subnet ${subnet.toString()} has no room for pod addresses`);
  const start = after !== undefined && after >= first && after < first + count ? after - first + 1n : 0n;
  for (let i = 0n; i < count; i++) {
    const candidate = first + ((start + i) % count);
    if (!taken.has(candidate)) return candidate;
  }
  throw new TrellisError(
    "EXHAUSTED",
    `subnet ${subnet.toString()} is full: all ${count} pod addresses are in use; delete pods or give the cluster larger node subnets`,
  );
}
