import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { TrellisError } from "../../proto/core/errors.js";
import {
  type DisruptionRecord,
  DisruptionRecordSchema,
  type NodeRecord,
  NodeRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { LivenessStore } from "../store/liveness-store.js";
import type { NodeStore } from "../store/node-store.js";
import type { Versioned } from "../store/versioned.js";
import { type ExpiryPlan, type ExpiryPolicy, planExpiry, ReleaseSightings, Sightings } from "./expiry-plan.js";
import { HeartbeatWriter } from "./heartbeat-writer.js";

export interface LivenessDeps {
  readonly nodes: NodeStore;
  readonly liveness: LivenessStore;
  readonly log: Logger;
  /** Wall clock, only for the times records show operators. */
  readonly clock: () => number;
  /**
   * The monotonic clock liveness is judged by (main.ts: performance.now()); default `clock`. Times that
   * other machines wrote are never compared with it.
   */
  readonly monotonicClock?: () => number;
  readonly policy: ExpiryPolicy;
  /** Counts the nodes this replica expired (trellis_node_expiries_total). */
  readonly metrics?: { countExpiry(): void };
  /**
   * Whether this replica's route feed holds node `name` live (RouteFeed.holdsLive): a heartbeat of such a
   * node reads no node record. Without it, or when it says no, every heartbeat reads the node's record.
   */
  readonly holdsLive?: (name: string) => boolean;
  /** How long a heartbeat waits for others to share its etcd write (HeartbeatWriterOptions.lingerMs; default 0). */
  readonly heartbeatLingerMs?: number;
}

/** A node's state: "live", or why it is not ("withdrawn", "drained", "evicted", "expired"). */
export type NodeState = "live" | "withdrawn" | "drained" | "evicted" | "expired";

/** What this replica's last expiry round read and left behind (its metrics; no etcd read of their own). */
export interface LivenessView {
  /** Node records by state; every state is present, 0 when no node is in it. */
  readonly nodesByState: ReadonlyMap<NodeState, number>;
  /** Node records: each holds its subnet's lease, live or in its grace period. */
  readonly nodeRecords: number;
  /** Whether the cluster is in disruption, as the record in etcd says after the round. */
  readonly disruption: boolean;
}

const nodeStates: readonly NodeState[] = ["live", "withdrawn", "drained", "evicted", "expired"];

function stateOf(node: NodeRecord): NodeState {
  if (node.live) return "live";
  return nodeStates.find((s) => s !== "live" && s === node.releasedReason) ?? "withdrawn";
}

/** Node records by state. Pure. */
export function countNodeStates(nodes: readonly NodeRecord[]): Map<NodeState, number> {
  const counts = new Map(nodeStates.map((s) => [s, 0]));
  for (const node of nodes) {
    const state = stateOf(node);
    counts.set(state, (counts.get(state) ?? 0) + 1);
  }
  return counts;
}

/**
 * Heartbeats, expiry and disruption (DESIGN.md §2): which nodes are live, judged by this replica's own
 * clock and decided by transactions every replica can check.
 */
export class Liveness {
  /** When this replica last saw each live node's heartbeat key change, by its own monotonic clock. */
  private readonly sightings = new Sightings();
  /** When this replica first saw each not-live node so, by its own monotonic clock: the grace period runs from then. */
  private readonly releases = new ReleaseSightings();
  /** The disruption record's mod revision as of this replica's last round (undefined before its first). */
  private disruptionRevision: bigint | undefined;
  /** When (monotonic) this replica last saw a disruption end: every live node got a full TTL from then. */
  private disruptionEndedAtMs = Number.NEGATIVE_INFINITY;
  private lastView?: LivenessView;
  private readonly heartbeats: HeartbeatWriter;

  constructor(private readonly deps: LivenessDeps) {
    this.heartbeats = new HeartbeatWriter((beats) => deps.liveness.putHeartbeats(beats), { lingerMs: deps.heartbeatLingerMs ?? 0 });
  }

  /** As of this replica's last expiry round (undefined before its first): nodes by state, disruption. */
  get view(): LivenessView | undefined {
    return this.lastView;
  }

  /**
   * A heartbeat of a live node; NOT_FOUND for a node that is not registered or not live. A node the route
   * feed holds live is taken as live without a read: the feed follows etcd's watch, so at worst a node
   * expired a moment ago has one more heartbeat accepted, and hears NOT_FOUND at its next (issue 10: the
   * read was half of every heartbeat's etcd calls).
   */
  async heartbeat(name: string, signal?: AbortSignal): Promise<void> {
    if (this.deps.holdsLive?.(name)) return this.recordHeartbeat(name, signal);
    const node = await this.deps.nodes.findNode(name);
    if (!node) throw new TrellisError("NOT_FOUND", `node ${name} is not registered; register it first`);
    if (!node.value.live) {
      throw new TrellisError("NOT_FOUND", `node ${name} is not live (${node.value.releasedReason || "withdrawn"}); register it again`);
    }
    await this.recordHeartbeat(name, signal);
  }

  /** Writes node `name`'s heartbeat key; this replica saw it change (it wrote it). Not written once `signal` aborts first (HeartbeatWriter.record). */
  async recordHeartbeat(name: string, signal?: AbortSignal): Promise<void> {
    const revision = await this.heartbeats.record(name, BigInt(this.deps.clock()), signal);
    this.sightings.saw(name, revision, this.monotonic());
  }

  /** A new node (no heartbeat key yet) registered through this replica: seen now. */
  sawNewNode(name: string): void {
    this.sightings.saw(name, 0n, this.monotonic());
  }

  /**
   * One expiry round (DESIGN.md §2). This replica judges each live node by its own monotonic clock, from
   * when it last saw the node's heartbeat key change; `healthySinceMs` (same clock) is since when it has
   * seen etcd without interruption: no node is judged on time before it. Nodes overdue by the TTL lose
   * their route, unless the cluster is in disruption: the record in etcd, read here and changed only by
   * compare-and-swap, says so, or this round finds too many nodes gone quiet and records it. Each expiry
   * is a transaction that also checks the node's heartbeat key and the disruption record against what
   * this round read, so a replica that paused after deciding, or decided on a stale view, expires
   * nobody. Nodes past the grace period lose their subnet.
   */
  async sweep(healthySinceMs: number): Promise<ExpiryPlan> {
    const { nodes: store, liveness, log, policy } = this.deps;
    const [{ nodes }, heartbeats, disruption] = await Promise.all([
      store.listNodes(),
      liveness.listHeartbeats(),
      liveness.findDisruption(),
    ]);
    const heartbeatRevisions = new Map([...heartbeats].map(([name, h]) => [name, h.revision]));
    const nowMs = this.monotonic();
    const wallNowMs = this.deps.clock();
    const disruptionRevision = disruption?.modRevision ?? 0n;
    const seenBefore = this.disruptionRevision;
    this.disruptionRevision = disruptionRevision;
    if (disruption && !disruption.value.active && seenBefore !== undefined && seenBefore !== disruptionRevision) {
      // Another replica ended a disruption since this one's last round: every live node gets a full TTL.
      this.disruptionEndedAtMs = nowMs;
    }
    const live = nodes.filter((n) => n.live).map((n) => n.name);
    const sightings = this.sightings.update(live, heartbeatRevisions, nowMs);
    const plan = planExpiry(
      {
        nodes,
        sightings,
        nowMs,
        healthySinceMs: Math.max(healthySinceMs, this.disruptionEndedAtMs),
        releasedSeenAtMs: this.releases.update(nodes, nowMs),
        disruptionRecorded: disruption?.value.active ?? false,
      },
      policy,
    );
    const inDisruption = await this.recordDisruption(plan, disruption, nowMs, wallNowMs);
    const after = new Map(nodes.map((n) => [n.name, n]));
    for (const name of plan.expire) {
      const found = await store.findNode(name);
      if (!found?.value.live) continue;
      const judgedBy = sightings.get(name)?.heartbeatRevision ?? 0n;
      const next = create(NodeRecordSchema, { ...found.value, live: false, releasedAtMs: BigInt(wallNowMs), releasedReason: "expired" });
      if (await liveness.expireNode(next, found.modRevision, judgedBy, disruptionRevision)) {
        log.warn({ node: name, subnet: next.subnet }, "node missed its heartbeats for the lease TTL; route withdrawn");
        this.deps.metrics?.countExpiry();
        after.set(name, next);
      } else log.debug({ node: name }, "node heartbeated, changed or a disruption was recorded since this round read it; not expired");
    }
    for (const name of plan.free) {
      const found = await store.findNode(name);
      if (!found || found.value.live) continue;
      if (await store.removeNode(found.value, found.modRevision)) {
        log.info({ node: name, subnet: found.value.subnet }, "grace period over; subnet freed");
        after.delete(name);
      }
    }
    const records = [...after.values()];
    this.lastView = { nodesByState: countNodeStates(records), nodeRecords: records.length, disruption: inDisruption };
    return plan;
  }

  /**
   * Brings the disruption record in line with this round's view, by compare-and-swap against the record
   * the round read: enters or leaves disruption, or updates the overdue nodes it keeps. A lost race
   * changes nothing here; the next round reads the winner's record and decides again. Returns whether the
   * record says the cluster is in disruption now (as read, after a lost race).
   */
  private async recordDisruption(
    plan: ExpiryPlan,
    before: Versioned<DisruptionRecord> | undefined,
    nowMs: number,
    wallNowMs: number,
  ): Promise<boolean> {
    const { liveness: store, log } = this.deps;
    const active = plan.disruption;
    const recorded = before?.value.active ?? false;
    const overdue = [...plan.keptInDisruption].sort();
    if (!active && !recorded) return false;
    if (active && recorded && before?.value.overdueNodes.join() === overdue.join()) return true;
    const since = active ? (recorded && before ? before.value.sinceMs : BigInt(wallNowMs)) : 0n;
    const written = await store.putDisruption(
      create(DisruptionRecordSchema, { active, sinceMs: since, overdueNodes: overdue, liveNodes: BigInt(plan.liveCount) }),
      before?.modRevision ?? 0n,
    );
    if (written === undefined) {
      log.debug({ reason: "disruption" }, "another replica changed the disruption record first; deciding again next round");
      return recorded;
    }
    this.disruptionRevision = written;
    if (!active) {
      this.disruptionEndedAtMs = nowMs;
      log.info({ reason: "disruption" }, "disruption over: heartbeats are back; every live node gets a full lease TTL");
    } else if (!recorded) {
      log.warn(
        { reason: "disruption" },
        `${plan.quiet.length} of ${plan.liveCount} live nodes went quiet at once: keeping every route (disruption mode)`,
      );
    } else log.debug({ reason: "disruption" }, `${overdue.length} overdue nodes kept in disruption mode`);
    return active;
  }

  private monotonic(): number {
    return (this.deps.monotonicClock ?? this.deps.clock)();
  }
}

/**
 * Runs expiry rounds and remembers since when etcd has answered without interruption: after an outage
 * of ours (etcd, or this replica just started) every live node gets a full TTL again before anything
 * expires, since no node could heartbeat through it. `clock` is the Liveness's monotonic clock.
 */
export class ExpiryLoop {
  private healthySinceMs: number;
  private healthy = true;
  private running = false;

  constructor(private readonly deps: { liveness: Liveness; clock: () => number; log: Logger }) {
    this.healthySinceMs = deps.clock();
  }

  /** One round; none while the last one still runs (a slow etcd), so rounds never overlap. */
  async tick(): Promise<ExpiryPlan | undefined> {
    if (this.running) return undefined;
    this.running = true;
    const startedMs = this.deps.clock();
    try {
      const plan = await this.deps.liveness.sweep(this.healthy ? this.healthySinceMs : startedMs);
      if (!this.healthy) {
        this.healthy = true;
        this.healthySinceMs = startedMs;
        this.deps.log.info("etcd answers again: every live node gets a full lease TTL");
      }
      return plan;
    } catch (err) {
      if (this.healthy) this.deps.log.warn({ err }, "lease expiry round failed; no node expires until etcd answers again");
      this.healthy = false;
      return undefined;
    } finally {
      this.running = false;
    }
  }
}
