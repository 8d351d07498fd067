import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type {
  DisruptionRecord,
  NodeRecord,
  ReportedRoutesRecord,
  SubnetLeaseRecord,
  SubnetReservationRecord,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";

/** A value read from the store together with the etcd revision that last modified it. */
export interface Versioned<T> {
  readonly value: T;
  /** etcd mod_revision of the key; 0n means "absent" in compare operations. */
  readonly modRevision: bigint;
}

export interface NodeChange {
  readonly type: "put" | "delete";
  readonly name: string;
  /** The new record for "put". */
  readonly node?: NodeRecord;
}

export interface NodeWatchBatch {
  readonly revision: bigint;
  readonly changes: readonly NodeChange[];
}

/** A change an operator may want to watch (admin WatchEvents). */
export interface ClusterEvent {
  readonly kind: "node" | "lease" | "allocation" | "reservation";
  readonly type: "put" | "delete";
  readonly nodeName: string;
  readonly subnet: string;
  readonly address: string;
  readonly live: boolean;
  readonly revision: bigint;
}

export interface NodeSnapshot {
  readonly revision: bigint;
  readonly nodes: readonly NodeRecord[];
}

/** Everything the control plane keeps; etcd is the only implementation that runs in production. */
export interface ClusterStore {
  listLeases(): Promise<SubnetLeaseRecord[]>;
  /** Just the leased subnets, read from the keys alone (cheap: registrations call it every time). */
  listLeasedSubnets(): Promise<string[]>;
  findNode(name: string): Promise<Versioned<NodeRecord> | undefined>;
  /** The node that last registered underlay address `ip`, from the node-ips index. */
  findNodeByIp(ip: string): Promise<string | undefined>;
  listNodes(): Promise<NodeSnapshot>;
  /**
   * Atomically creates the lease of `lease.subnet` and writes `node`, provided the subnet is still free
   * and the node record is unchanged since `nodeModRevision` (0n: still absent). False when a race was lost.
   */
  claimSubnet(lease: SubnetLeaseRecord, node: NodeRecord, nodeModRevision: bigint): Promise<boolean>;
  /**
   * Writes `node` if its record is unchanged since `modRevision` (and moves the node-ips index entry when
   * its address changed from `previousIp`). False when a race was lost.
   */
  updateNode(node: NodeRecord, modRevision: bigint, previousIp?: string): Promise<boolean>;
  /**
   * Deletes a node's record and frees its subnet lease in one transaction, if the record is unchanged
   * since `modRevision`. False when a race was lost.
   */
  removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean>;
  putHeartbeat(name: string, lastSeenMs: bigint): Promise<void>;
  listReservations(): Promise<SubnetReservationRecord[]>;
  /** Creates a reservation; false when the subnet is reserved already. */
  createReservation(reservation: SubnetReservationRecord): Promise<boolean>;
  /** Succeeds when there was none. */
  deleteReservation(subnet: string): Promise<void>;
  putReportedRoutes(node: string, record: ReportedRoutesRecord): Promise<void>;
  findReportedRoutes(node: string): Promise<ReportedRoutesRecord | undefined>;
  listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>>;
  /** Calls `onEvent` for every node, lease, allocation and reservation change from now on, until `signal` aborts. */
  watchEvents(onEvent: (event: ClusterEvent) => void, signal: AbortSignal): Promise<void>;
  getDisruption(): Promise<DisruptionRecord | undefined>;
  putDisruption(record: DisruptionRecord): Promise<void>;
  /** Last heartbeat of every node that sent one, by node name. */
  listHeartbeats(): Promise<Map<string, bigint>>;
  /**
   * Calls `onBatch` with every change to node records from `fromRevision` on, in order, until `signal`
   * aborts; `onLost` when the watch ends for good (its revision was compacted): the caller starts over.
   */
  watchNodes(
    fromRevision: bigint,
    onBatch: (batch: NodeWatchBatch) => void,
    signal: AbortSignal,
    onLost?: (err: Error) => void,
  ): Promise<void>;
  putAllocation(node: string, record: AllocationRecord): Promise<void>;
  /** Succeeds when the allocation is already gone. */
  deleteAllocation(node: string, address: string): Promise<void>;
  /** Records and releases several of a node's allocations, in transactions of at most 100 writes. */
  applyAllocations(node: string, recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void>;
  /** One node's allocations, or every node's when `node` is undefined. */
  listAllocations(node?: string): Promise<Array<{ node: string; record: AllocationRecord }>>;
  close(): Promise<void>;
}
