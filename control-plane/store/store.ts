import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type {
  ClusterConfigRecord,
  DisruptionRecord,
  NodeRecord,
  ReportedRoutesRecord,
  SubnetLeaseRecord,
  SubnetReservationRecord,
} from "../../proto/gen/trellis/store/v1/store_pb.js";

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

/** A node-ips index entry as read: the node it names (none when absent) and its mod revision (0n: absent). */
export interface NodeIpEntry {
  readonly ip: string;
  readonly nodeName?: string;
  readonly modRevision: bigint;
}

/**
 * The node-ips index condition of a registration's write (the index is the authority on who holds an
 * underlay address): the entry of the node's address is unchanged since `entry` was read, and when it names
 * another node (one no longer live at that address, whose address this node takes over), that node's record
 * is unchanged since `displaced.modRevision` (0n: absent). The write makes the entry name this node.
 */
export interface NodeIpClaim {
  readonly entry: NodeIpEntry;
  readonly displaced?: { readonly name: string; readonly modRevision: bigint };
  /** The address the node had; when it moves, that entry is deleted in the same transaction if it still names it. */
  readonly previousIp?: string;
}

/** A subnet freed and not leased since, with the revision of the transaction that freed it. */
export interface FreedSubnetEntry {
  readonly subnet: string;
  readonly freedRevision: bigint;
}

/** What choosing a subnet for a new node depends on. */
export interface SubnetChoiceInput {
  readonly leasedSubnets: readonly string[];
  readonly reservations: readonly SubnetReservationRecord[];
  readonly freedSubnets: readonly FreedSubnetEntry[];
}

/** Everything a registration decides on, read at one revision in one etcd round trip. */
export interface RegistrationView {
  readonly node?: Versioned<NodeRecord>;
  /** The node-ips index entry of the address the node registers with. */
  readonly nodeIp: NodeIpEntry;
  /** Only when the node has no record (a known node keeps its subnet, so a restart reads no lists). */
  readonly choice?: SubnetChoiceInput;
}

/** Everything the control plane keeps; etcd is the only implementation that runs in production. */
export interface ClusterStore {
  listLeases(): Promise<SubnetLeaseRecord[]>;
  findNode(name: string): Promise<Versioned<NodeRecord> | undefined>;
  /** The node that holds underlay address `ip`, from the node-ips index. */
  findNodeByIp(ip: string): Promise<string | undefined>;
  /** Node `name`'s record and the node-ips entry of `ip`, or, for a new node, what choosing its subnet takes: one round trip. */
  readRegistration(name: string, ip: string): Promise<RegistrationView>;
  listNodes(): Promise<NodeSnapshot>;
  /**
   * Atomically creates the lease of `lease.subnet`, writes `node` and makes the node-ips entry of its
   * address name it, provided the subnet is still free, the node record is unchanged since
   * `nodeModRevision` (0n: still absent) and `ip` holds. The subnet's freed record goes. False when a race
   * was lost.
   */
  claimSubnet(
    lease: SubnetLeaseRecord,
    node: NodeRecord,
    nodeModRevision: bigint,
    ip: NodeIpClaim,
    /** The subnet is reserved for this node; otherwise the claim holds only while no reservation exists for it. */
    reservedForNode?: boolean,
  ): Promise<boolean>;
  /**
   * Writes `node` if its record is unchanged since `modRevision`; with `ip` (a registration), only if `ip`
   * holds too, and the node-ips entry of its address names it afterwards. False when a race was lost.
   */
  updateNode(node: NodeRecord, modRevision: bigint, ip?: NodeIpClaim): Promise<boolean>;
  /**
   * Deletes a node's record, its heartbeat and its subnet lease in one transaction, if the record is
   * unchanged since `modRevision`; records the subnet as freed (at the back of the line), and deletes the
   * node-ips entry of its address only if it still names this node. False when a race was lost.
   */
  removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean>;
  /**
   * Records a heartbeat of node `name` (`lastSeenMs` is the writer's wall clock, for operators only:
   * liveness is judged by the key's mod revision); returns the heartbeat key's new mod revision.
   */
  putHeartbeat(name: string, lastSeenMs: bigint): Promise<bigint>;
  /** The mod revision of every node's heartbeat key, by node name: what each replica judges liveness by. */
  listHeartbeatRevisions(): Promise<Map<string, bigint>>;
  /**
   * Expires a node: writes `node` (not live) if its record is unchanged since `nodeModRevision`, its
   * heartbeat key since `heartbeatModRevision` and the disruption record since `disruptionModRevision`
   * (0n: absent), so a replica that paused after deciding, or decided on a stale view, writes nothing.
   * False when any of them changed.
   */
  expireNode(node: NodeRecord, nodeModRevision: bigint, heartbeatModRevision: bigint, disruptionModRevision: bigint): Promise<boolean>;
  listReservations(): Promise<SubnetReservationRecord[]>;
  /** Creates a reservation; false when the subnet is reserved already. */
  createReservation(reservation: SubnetReservationRecord): Promise<boolean>;
  /** Succeeds when there was none. */
  deleteReservation(subnet: string): Promise<void>;
  putReportedRoutes(node: string, record: ReportedRoutesRecord): Promise<void>;
  findReportedRoutes(node: string): Promise<ReportedRoutesRecord | undefined>;
  listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>>;
  /**
   * Calls `onEvent` for every node, lease, allocation and reservation change from now on, until `signal`
   * aborts; `onLost` once when the watch ends by itself (compacted, etcd restarted).
   */
  watchEvents(onEvent: (event: ClusterEvent) => void, signal: AbortSignal, onLost?: (err: Error) => void): Promise<void>;
  getDisruption(): Promise<DisruptionRecord | undefined>;
  /** The disruption record with its mod revision, which every replica reads before it expires anyone. */
  findDisruption(): Promise<Versioned<DisruptionRecord> | undefined>;
  /**
   * Writes the disruption record if it is unchanged since `modRevision` (0n: absent); returns its new mod
   * revision, or undefined when another replica changed it first.
   */
  putDisruption(record: DisruptionRecord, modRevision: bigint): Promise<bigint | undefined>;
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
  /**
   * Up to `limit` allocations (one node's, or every node's) after `after` ("node/address", as `next`
   * gave it; "" for the first page), and where the next page starts ("" after the last).
   */
  listAllocationsPage(
    node: string | undefined,
    after: string,
    limit: number,
  ): Promise<{ allocations: Array<{ node: string; record: AllocationRecord }>; next: string }>;
  /** Stores `config` unless a cluster config is stored already; returns the one stored. */
  ensureClusterConfig(config: ClusterConfigRecord): Promise<ClusterConfigRecord>;
  /** How many allocations each node has (read from the keys alone). */
  countAllocations(): Promise<Map<string, number>>;
  /** One node's allocations, or every node's when `node` is undefined. */
  listAllocations(node?: string): Promise<Array<{ node: string; record: AllocationRecord }>>;
  close(): Promise<void>;
}
