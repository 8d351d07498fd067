import type { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";

/** The subnets of a cluster CIDR that nodes may lease. Pure. */
export interface SubnetPool {
  readonly cluster: Cidr;
  readonly prefixLength: number;
}

/** Prefix lengths a node subnet may have: /31 and /32 leave no room for a gateway and pods. */
export const subnetPrefixLengths = { min: 1, max: 30 } as const;

/** Checks that `cluster` splits into at least one subnet of `prefixLength`. */
export function createSubnetPool(cluster: Cidr, prefixLength: number): SubnetPool {
  const { min, max } = subnetPrefixLengths;
  if (!Number.isInteger(prefixLength) || prefixLength < min || prefixLength > max) {
    throw new TrellisError("INVALID_ARGUMENT", `subnet size /${prefixLength} is not between /${min} and /${max}`);
  }
  if (cluster.subnetCount(prefixLength) === 0n) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `cluster CIDR ${cluster.toString()} is smaller than one /${prefixLength} node subnet; use a larger cluster CIDR or a longer subnet prefix`,
    );
  }
  return { cluster, prefixLength };
}

/**
 * Index of the first subnet handed out. Like flannel, Trellis leaves the cluster's first subnet (the one
 * holding the cluster network address, 10.244.0.0/24) unused when the pool has room to spare.
 */
function firstIndex(pool: SubnetPool): bigint {
  return pool.cluster.subnetCount(pool.prefixLength) >= 4n ? 1n : 0n;
}

/**
 * Chooses a free subnet. `rand` undefined: the lowest free one (readable, deterministic). With `rand`:
 * a random free one, scanning forward from a random start, so that registrations that lost a race to the
 * same lowest subnet spread out instead of colliding again.
 */
export function pickFreeSubnet(pool: SubnetPool, leased: readonly Cidr[], rand?: () => number): Cidr {
  const count = pool.cluster.subnetCount(pool.prefixLength);
  const first = firstIndex(pool);
  const usable = count - first;
  const taken = new Set(leased.filter((c) => c.prefixLength === pool.prefixLength).map((c) => c.network));
  const overlapsOther = (s: Cidr) => leased.some((c) => c.prefixLength !== pool.prefixLength && c.overlaps(s));
  const start = rand ? BigInt(Math.floor(rand() * Number(usable))) % usable : 0n;
  for (let i = 0n; i < usable; i++) {
    const subnet = pool.cluster.subnet(pool.prefixLength, first + ((start + i) % usable));
    if (!taken.has(subnet.network) && !overlapsOther(subnet)) return subnet;
  }
  throw new TrellisError(
    "EXHAUSTED",
    `no free /${pool.prefixLength} subnet left in cluster CIDR ${pool.cluster.toString()} (${leased.length} leased)`,
  );
}
