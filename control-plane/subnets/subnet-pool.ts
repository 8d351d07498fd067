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
 * Subnets of the pool a new node could still get, when `leased` of them are leased (trellis_subnets_free):
 * the usable ones (all but the unused first, see firstIndex) less the leased ones, never below 0. A subnet
 * reserved for a node that has not registered yet counts as free: it is free for that node. Pure.
 */
export function freeSubnetCount(pool: SubnetPool, leased: number): number {
  const usable = pool.cluster.subnetCount(pool.prefixLength) - firstIndex(pool);
  return Math.max(0, Number(usable) - leased);
}

/** A subnet that was leased once and then freed (DESIGN.md §2: freed subnets go to the back of the line). */
export interface FreedSubnet {
  readonly subnet: Cidr;
  /** etcd revision of the transaction that freed it: lower means freed longer ago. */
  readonly freedRevision: bigint;
}

/**
 * Chooses a free subnet. Subnets never leased before come first: `rand` undefined, the lowest of them
 * (readable, deterministic); with `rand`, a random one, scanning forward from a random start, so that
 * registrations that lost a race to the same subnet spread out instead of colliding again. Only when none is
 * left, a `freed` one, the one freed longest ago first (with `rand`, any of the older half), so that pods
 * that may still hold addresses of a just-freed subnet have as long as possible to go.
 */
export function pickFreeSubnet(pool: SubnetPool, leased: readonly Cidr[], rand?: () => number, freed: readonly FreedSubnet[] = []): Cidr {
  const count = pool.cluster.subnetCount(pool.prefixLength);
  const first = firstIndex(pool);
  const usable = count - first;
  const taken = new Set(leased.filter((c) => c.prefixLength === pool.prefixLength).map((c) => c.network));
  const others = leased.filter((c) => c.prefixLength !== pool.prefixLength); // usually none: O(leases), not O(leases²)
  const overlapsOther = (s: Cidr) => others.length > 0 && others.some((c) => c.overlaps(s));
  const isFree = (s: Cidr) => !taken.has(s.network) && !overlapsOther(s);
  const usedBefore = new Set(freed.filter((f) => f.subnet.prefixLength === pool.prefixLength).map((f) => f.subnet.network));
  const start = rand ? BigInt(Math.floor(rand() * Number(usable))) % usable : 0n;
  for (let i = 0n; i < usable; i++) {
    const subnet = pool.cluster.subnet(pool.prefixLength, first + ((start + i) % usable));
    if (!usedBefore.has(subnet.network) && isFree(subnet)) return subnet;
  }
  const unused = first === 1n ? pool.cluster.subnet(pool.prefixLength, 0n).network : undefined;
  const reusable = freed
    .filter((f) => f.subnet.prefixLength === pool.prefixLength && pool.cluster.covers(f.subnet) && f.subnet.network !== unused)
    .filter((f) => isFree(f.subnet))
    .sort((a, b) =>
      a.freedRevision === b.freedRevision ? Number(a.subnet.network - b.subnet.network) : a.freedRevision < b.freedRevision ? -1 : 1,
    );
  const olderHalf = Math.ceil(reusable.length / 2);
  const pick = reusable[rand ? Math.min(Math.floor(rand() * olderHalf), olderHalf - 1) : 0];
  if (pick) return pick.subnet;
  throw new TrellisError(
    "EXHAUSTED",
    `no free /${pool.prefixLength} subnet left in cluster CIDR ${pool.cluster.toString()} (${leased.length} leased)`,
  );
}

/**
 * Replicas share one subnet pool (issue 10, finding 11): the first replica's --cluster-cidr and
 * --subnet-size are stored in etcd, and a replica started with others must not hand out subnets. Pure.
 */
export function checkSameClusterConfig(
  stored: { readonly clusterCidr: string; readonly subnetPrefixLength: number },
  mine: SubnetPool,
): void {
  if (stored.clusterCidr === mine.cluster.toString() && stored.subnetPrefixLength === mine.prefixLength) return;
  throw new TrellisError(
    "CONFLICT",
    `this replica was started with --cluster-cidr ${mine.cluster.toString()} --subnet-size ${mine.prefixLength}, but the cluster in etcd was set up with --cluster-cidr ${stored.clusterCidr} --subnet-size ${stored.subnetPrefixLength}: start every replica with the cluster's flags (changing them on a running cluster would hand out overlapping subnets)`,
  );
}
