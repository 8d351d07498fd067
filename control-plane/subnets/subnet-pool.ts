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
  return new FreeSubnets(pool, leased, freed).pick(rand);
}

/**
 * The free subnets of a pool given the leased and the freed ones, indexed once so that a replica choosing
 * for many new nodes from one view pays O(leases) once, not per registration: pick() costs about the
 * number of subnets it passes over. Subnets marked taken later (claimed since the view was read) count as
 * leased. Pure.
 */
export class FreeSubnets {
  private readonly taken = new Set<bigint>();
  /** Leases of another prefix length than the pool's (usually none). */
  private readonly others: Cidr[] = [];
  private readonly usedBefore: Set<bigint>;
  /** Freed subnets of the pool, the one freed longest ago first. */
  private readonly freed: readonly FreedSubnet[];
  private readonly first: bigint;
  private readonly usable: bigint;
  private readonly step: bigint;
  /** Every subnet index below this one is taken or was used before (a cursor for the lowest free). */
  private lowest = 0n;
  private leasedCount = 0;

  constructor(
    readonly pool: SubnetPool,
    leased: readonly Cidr[],
    freed: readonly FreedSubnet[] = [],
  ) {
    this.first = firstIndex(pool);
    this.usable = pool.cluster.subnetCount(pool.prefixLength) - this.first;
    this.step = 1n << BigInt(32 - pool.prefixLength);
    for (const c of leased) this.markTaken(c);
    const ofPool = freed.filter((f) => f.subnet.prefixLength === pool.prefixLength);
    this.usedBefore = new Set(ofPool.map((f) => f.subnet.network));
    const unused = this.first === 1n ? pool.cluster.network : undefined;
    this.freed = ofPool
      .filter((f) => pool.cluster.covers(f.subnet) && f.subnet.network !== unused)
      .sort((a, b) =>
        a.freedRevision === b.freedRevision ? Number(a.subnet.network - b.subnet.network) : a.freedRevision < b.freedRevision ? -1 : 1,
      );
  }

  /** `subnet` is leased from now on (claimed since the view was read). */
  markTaken(subnet: Cidr): void {
    if (subnet.prefixLength !== this.pool.prefixLength) this.others.push(subnet);
    else if (!this.taken.has(subnet.network)) this.taken.add(subnet.network);
    else return;
    this.leasedCount++;
  }

  /** A subnet of the pool's size that is not leased (nor overlaps a lease), nor overlaps any of `alsoTaken`. */
  isFree(subnet: Cidr, alsoTaken: readonly Cidr[] = []): boolean {
    if (this.taken.has(subnet.network)) return false;
    return !this.others.some((c) => c.overlaps(subnet)) && !alsoTaken.some((c) => c.overlaps(subnet));
  }

  /** `subnet` was leased and freed before, and not leased since. */
  wasFreed(subnet: Cidr): boolean {
    return subnet.prefixLength === this.pool.prefixLength && this.usedBefore.has(subnet.network);
  }

  /** As pickFreeSubnet; `alsoTaken` (reservations, claims in flight) are not free either. */
  pick(rand?: () => number, alsoTaken: readonly Cidr[] = []): Cidr {
    const { pool, usable } = this;
    const subnetAt = (i: bigint) => pool.cluster.subnet(pool.prefixLength, this.first + i);
    const networkAt = (i: bigint) => pool.cluster.network + (this.first + i) * this.step;
    const unusedAt = (i: bigint) => {
      const network = networkAt(i);
      return !this.taken.has(network) && !this.usedBefore.has(network) && (this.others.length === 0 || this.isFree(subnetAt(i)));
    };
    const choosable = (i: bigint) => unusedAt(i) && (alsoTaken.length === 0 || this.isFree(subnetAt(i), alsoTaken));
    if (!rand) {
      while (this.lowest < usable && !unusedAt(this.lowest)) this.lowest++;
      for (let i = this.lowest; i < usable; i++) {
        if (choosable(i)) return subnetAt(i);
      }
    } else {
      const start = BigInt(Math.floor(rand() * Number(usable))) % usable;
      for (let n = 0n; n < usable; n++) {
        const i = (start + n) % usable;
        if (choosable(i)) return subnetAt(i);
      }
    }
    const reusable = this.freed.filter((f) => this.isFree(f.subnet, alsoTaken));
    const olderHalf = Math.ceil(reusable.length / 2);
    const pick = reusable[rand ? Math.min(Math.floor(rand() * olderHalf), olderHalf - 1) : 0];
    if (pick) return pick.subnet;
    throw new TrellisError(
      "EXHAUSTED",
      `no free /${pool.prefixLength} subnet left in cluster CIDR ${pool.cluster.toString()} (${this.leasedCount} leased)`,
    );
  }
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
