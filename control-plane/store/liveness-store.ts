import type { DisruptionRecord, NodeRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { Versioned } from "./versioned.js";

/** A node's heartbeat key as read. */
export interface HeartbeatEntry {
  /** The key's mod revision: what every replica judges liveness by (DESIGN.md §2). */
  readonly revision: bigint;
  /** The writer's wall clock, for operators only. */
  readonly lastSeenMs: bigint;
}

/** Heartbeats, expiry and the disruption record: what deciding liveness reads and writes. */
export interface LivenessStore {
  /**
   * Records a heartbeat of every node in `beats` (node name -> the writer's wall clock) in one write, at
   * most 128 (etcd's default --max-txn-ops); returns its revision, every heartbeat key's new mod revision.
   */
  putHeartbeats(beats: ReadonlyMap<string, bigint>): Promise<bigint>;
  /** Every node's heartbeat key, by node name. */
  listHeartbeats(): Promise<Map<string, HeartbeatEntry>>;
  /**
   * Expires a node: writes `node` (not live) if its record is unchanged since `nodeModRevision`, its
   * heartbeat key since `heartbeatModRevision` and the disruption record since `disruptionModRevision`
   * (0n: absent), so a replica that paused after deciding, or decided on a stale view, writes nothing.
   * False when any of them changed.
   */
  expireNode(node: NodeRecord, nodeModRevision: bigint, heartbeatModRevision: bigint, disruptionModRevision: bigint): Promise<boolean>;
  /** The disruption record with its mod revision, which every replica reads before it expires anyone. */
  findDisruption(): Promise<Versioned<DisruptionRecord> | undefined>;
  /**
   * Writes the disruption record if it is unchanged since `modRevision` (0n: absent); returns its new mod
   * revision, or undefined when another replica changed it first.
   */
  putDisruption(record: DisruptionRecord, modRevision: bigint): Promise<bigint | undefined>;
}
