import type { NodeRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";

export interface ExpiryPolicy {
  /** A live node whose heartbeat this replica has not seen change for this long loses its route. */
  readonly ttlMs: number;
  /** A node that stopped being live keeps its subnet this long (it gets it back when it returns). */
  readonly graceMs: number;
  /**
   * More than this share of live nodes (and at least 2) going quiet within one heartbeat interval plus
   * the TTL is a disruption on our side: keep every route.
   */
  readonly disruptionShare: number;
  /** How often daemons heartbeat (their --heartbeat-interval); default a quarter of the TTL. */
  readonly heartbeatIntervalMs?: number;
}

/**
 * When this replica last saw each live node's heartbeat key change: its own monotonic clock, never a
 * time another machine wrote (DESIGN.md §2, like Kubernetes' node lifecycle controller).
 */
export interface Sighting {
  /** mod revision of the node's heartbeat key when seen (0n: no heartbeat key yet). */
  readonly heartbeatRevision: bigint;
  readonly seenAtMs: number;
}

/**
 * A replica's memory of its sightings. A node seen for the first time, or whose heartbeat key changed
 * (a heartbeat, a new registration, etcd restored to another revision), is seen now.
 */
export class Sightings {
  private readonly byNode = new Map<string, Sighting>();

  /** This replica saw `node`'s heartbeat key at `heartbeatRevision` at `nowMs` (it wrote it, or read it). */
  saw(node: string, heartbeatRevision: bigint, nowMs: number): Sighting {
    const before = this.byNode.get(node);
    if (before?.heartbeatRevision === heartbeatRevision) return before;
    const sighting = { heartbeatRevision, seenAtMs: nowMs };
    this.byNode.set(node, sighting);
    return sighting;
  }

  /**
   * Takes one read of the live nodes and their heartbeat revisions; forgets nodes no longer live. Returns
   * a copy: what this round judges by, whatever heartbeats this replica records meanwhile.
   */
  update(live: readonly string[], heartbeatRevisions: ReadonlyMap<string, bigint>, nowMs: number): ReadonlyMap<string, Sighting> {
    const keep = new Set(live);
    for (const node of this.byNode.keys()) if (!keep.has(node)) this.byNode.delete(node);
    for (const node of live) this.saw(node, heartbeatRevisions.get(node) ?? 0n, nowMs);
    return new Map(this.byNode);
  }
}

/**
 * When this replica first saw each not-live node so (its own monotonic clock): what the grace period is
 * judged by. A node seen live again is forgotten; a replica that starts gives every such node a full
 * grace period from its first round, erring on keeping a subnet longer.
 */
export class ReleaseSightings {
  private readonly since = new Map<string, number>();

  update(nodes: readonly NodeRecord[], nowMs: number): ReadonlyMap<string, number> {
    const released = new Set(nodes.filter((n) => !n.live).map((n) => n.name));
    for (const name of this.since.keys()) if (!released.has(name)) this.since.delete(name);
    for (const name of released) if (!this.since.has(name)) this.since.set(name, nowMs);
    return new Map(this.since);
  }
}

export interface ExpiryInput {
  readonly nodes: readonly NodeRecord[];
  /** This replica's sightings of the live nodes (`Sightings.update`). */
  readonly sightings: ReadonlyMap<string, Sighting>;
  /** This replica's monotonic clock. */
  readonly nowMs: number;
  /**
   * Since when (monotonic) this replica has seen etcd and itself up without interruption, and not
   * left a disruption: nobody can heartbeat through an outage of ours, so no node is judged on time
   * before it, and every live node gets a full TTL again.
   */
  readonly healthySinceMs: number;
  /**
   * When (monotonic) this replica first saw each not-live node so: the grace period runs from then, by
   * this replica's own clock, never from `releasedAtMs`, which another replica's wall clock wrote.
   */
  readonly releasedSeenAtMs: ReadonlyMap<string, number>;
  /** Whether the disruption record in etcd, read in this round, says the cluster is in disruption. */
  readonly disruptionRecorded: boolean;
}

export interface ExpiryPlan {
  /** Live nodes to mark not live (their routes go). */
  readonly expire: readonly string[];
  /** Not-live nodes past the grace period: their subnet lease is freed. */
  readonly free: readonly string[];
  /** Overdue nodes kept because the cluster is in disruption; empty when it is not. */
  readonly keptInDisruption: readonly string[];
  /** Live nodes that missed a heartbeat, by this replica's view. */
  readonly quiet: readonly string[];
  /** Whether the cluster is in disruption by this replica's view (the record must say so before it acts on it). */
  readonly disruption: boolean;
  readonly liveCount: number;
}

/** How long a node may go without a heartbeat before it counts as quiet: one interval, half an interval of slack. */
export function quietAfterMs(policy: ExpiryPolicy): number {
  const interval = heartbeatIntervalMs(policy);
  return Math.min(interval * 1.5, policy.ttlMs / 2);
}

export function heartbeatIntervalMs(policy: ExpiryPolicy): number {
  return policy.heartbeatIntervalMs ?? policy.ttlMs / 4;
}

/**
 * Decides which nodes expire and which subnets are freed. Pure.
 *
 * A node is overdue when this replica has not seen its heartbeat key change for the TTL, and quiet
 * once it missed a heartbeat. Heartbeats are spread over the interval, so when a partition (or our own
 * trouble) silences many nodes they become overdue a few at a time, but all of them are quiet long
 * before the first one is overdue: the decision counts the quiet ones. Entering disruption counts the
 * nodes that went quiet within one heartbeat interval plus the TTL; staying in it counts every quiet
 * node, however long ago it went quiet. Nothing expires in the round that enters or leaves disruption,
 * nor while it lasts; leaving it gives every node a full TTL (the caller moves `healthySinceMs`).
 */
export function planExpiry(input: ExpiryInput, policy: ExpiryPolicy): ExpiryPlan {
  const live = input.nodes.filter((n) => n.live);
  const ageMs = (name: string) => input.nowMs - Math.max(input.sightings.get(name)?.seenAtMs ?? input.nowMs, input.healthySinceMs);
  const quietAfter = quietAfterMs(policy);
  const window = heartbeatIntervalMs(policy) + policy.ttlMs;
  const quiet = live.filter((n) => ageMs(n.name) > quietAfter).map((n) => n.name);
  const wentQuietInWindow = quiet.filter((name) => ageMs(name) <= window);
  const overdue = live.filter((n) => ageMs(n.name) > policy.ttlMs).map((n) => n.name);
  const tooMany = (count: number) => count >= 2 && count > live.length * policy.disruptionShare;
  const disruption = input.disruptionRecorded ? tooMany(quiet.length) : tooMany(wentQuietInWindow.length);
  const free = input.nodes
    .filter((n) => !n.live && input.nowMs - (input.releasedSeenAtMs.get(n.name) ?? input.nowMs) > policy.graceMs)
    .map((n) => n.name);
  return {
    expire: disruption || input.disruptionRecorded ? [] : overdue,
    free,
    keptInDisruption: disruption ? overdue : [],
    quiet,
    disruption,
    liveCount: live.length,
  };
}
