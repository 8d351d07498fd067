import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { NodeRecord, SubnetLeaseRecord } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";

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

export interface NodeSnapshot {
  readonly revision: bigint;
  readonly nodes: readonly NodeRecord[];
}

/** Everything the control plane keeps; etcd is the only implementation that runs in production. */
export interface ClusterStore {
  listLeases(): Promise<SubnetLeaseRecord[]>;
  findNode(name: string): Promise<Versioned<NodeRecord> | undefined>;
  listNodes(): Promise<NodeSnapshot>;
  /**
   * Atomically creates the lease of `lease.subnet` and writes `node`, provided the subnet is still free
   * and the node record is unchanged since `nodeModRevision` (0n: still absent). False when a race was lost.
   */
  claimSubnet(lease: SubnetLeaseRecord, node: NodeRecord, nodeModRevision: bigint): Promise<boolean>;
  /** Writes `node` if its record is unchanged since `modRevision`. False when a race was lost. */
  updateNode(node: NodeRecord, modRevision: bigint): Promise<boolean>;
  putHeartbeat(name: string, lastSeenMs: bigint): Promise<void>;
  /** Last heartbeat of every node that sent one, by node name. */
  listHeartbeats(): Promise<Map<string, bigint>>;
  /** Calls `onBatch` with every change to node records after `fromRevision`, in order, until `signal` aborts. */
  watchNodes(fromRevision: bigint, onBatch: (batch: NodeWatchBatch) => void, signal: AbortSignal): Promise<void>;
  putAllocation(node: string, record: AllocationRecord): Promise<void>;
  /** Succeeds when the allocation is already gone. */
  deleteAllocation(node: string, address: string): Promise<void>;
  /** One node's allocations, or every node's when `node` is undefined. */
  listAllocations(node?: string): Promise<Array<{ node: string; record: AllocationRecord }>>;
  close(): Promise<void>;
}
