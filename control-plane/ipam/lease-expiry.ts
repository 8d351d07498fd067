import type { NodeRecord } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";

export interface ExpiryPolicy {
  /** A live node that has not heartbeated for this long loses its route. */
  readonly ttlMs: number;
  /** A node that stopped being live keeps its subnet this long (it gets it back when it returns). */
  readonly graceMs: number;
  /** More than this share of live nodes overdue at once is a disruption on our side: keep every route. */
  readonly disruptionShare: number;
}

export interface ExpiryInput {
  readonly nodes: readonly NodeRecord[];
  /** Last heartbeat by node name (ms). */
  readonly heartbeats: ReadonlyMap<string, bigint>;
  readonly nowMs: number;
  /**
   * Since when this replica has seen etcd and itself up without interruption. Nobody can heartbeat
   * through an outage of ours, so no node is judged on time before it: after any outage every live
   * node gets a full TTL again.
   */
  readonly healthySinceMs: number;
}

export interface ExpiryPlan {
  /** Live nodes to mark not live (their routes go). */
  readonly expire: readonly string[];
  /** Not-live nodes past the grace period: their subnet lease is freed. */
  readonly free: readonly string[];
  /** Overdue nodes kept because too many are overdue at once; empty when there is no disruption. */
  readonly keptInDisruption: readonly string[];
  readonly liveCount: number;
}

/** Decides which nodes expire and which subnets are freed. Pure. */
export function planExpiry(input: ExpiryInput, policy: ExpiryPolicy): ExpiryPlan {
  const live = input.nodes.filter((n) => n.live);
  const overdue = live
    .filter((n) => {
      const seen = Math.max(Number(input.heartbeats.get(n.name) ?? n.registeredAtMs), Number(n.registeredAtMs), input.healthySinceMs);
      return input.nowMs - seen > policy.ttlMs;
    })
    .map((n) => n.name);
  const disruption = overdue.length >= 2 && overdue.length > live.length * policy.disruptionShare;
  const free = input.nodes
    .filter((n) => !n.live && n.releasedAtMs > 0n && input.nowMs - Number(n.releasedAtMs) > policy.graceMs)
    .map((n) => n.name);
  return {
    expire: disruption ? [] : overdue,
    free,
    keptInDisruption: disruption ? overdue : [],
    liveCount: live.length,
  };
}
