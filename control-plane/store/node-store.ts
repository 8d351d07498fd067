import { TrellisError } from "../../proto/core/errors.js";
import type { NodeRecord, SubnetLeaseRecord, SubnetReservationRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { Versioned } from "./versioned.js";

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

/** Everything a registration decides on, read at one revision in one etcd round trip. */
export interface RegistrationView {
  readonly node?: Versioned<NodeRecord>;
  /** The node-ips index entry of the address the node registers with. */
  readonly nodeIp: NodeIpEntry;
  /**
   * Only when the node has no record: every reservation (few, and read fresh, so a node always finds the
   * subnet reserved for it). Which subnets are leased or were freed, the rest of a new node's choice, is
   * SubnetStore.readSubnetUse, which a replica caches: read per registration it made registering N nodes
   * cost O(N²).
   */
  readonly reservations?: readonly SubnetReservationRecord[];
}

/** How a claim may fail besides the node's record and its address (claimSubnet). */
export interface ClaimConditions {
  /** The subnet is reserved for this node; otherwise the claim holds only while no reservation exists for it. */
  readonly reservedForNode?: boolean;
  /**
   * The subnet was chosen as never leased before (from a cached view, which may be stale): the claim holds
   * only while it was never freed either, so a just-freed subnet never jumps the line (DESIGN.md §2).
   */
  readonly neverUsed?: boolean;
}

/**
 * Node records, the node-ips index and what a registration writes with them (its subnet's lease): the
 * aggregate a registration, a withdrawal and a removal change in one transaction each.
 */
export interface NodeStore {
  findNode(name: string): Promise<Versioned<NodeRecord> | undefined>;
  /** The node that holds underlay address `ip`, from the node-ips index. */
  findNodeByIp(ip: string): Promise<string | undefined>;
  listNodes(): Promise<NodeSnapshot>;
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
  /** Node `name`'s record and the node-ips entry of `ip`, and for a new node the reservations: one round trip. */
  readRegistration(name: string, ip: string): Promise<RegistrationView>;
  /**
   * Atomically creates the lease of `lease.subnet`, writes `node` and makes the node-ips entry of its
   * address name it, provided the subnet is still free, the node record is unchanged since
   * `nodeModRevision` (0n: still absent), `ip` holds and `conditions` hold. The subnet's freed record goes.
   * False when a race was lost.
   */
  claimSubnet(
    lease: SubnetLeaseRecord,
    node: NodeRecord,
    nodeModRevision: bigint,
    ip: NodeIpClaim,
    conditions?: ClaimConditions,
  ): Promise<boolean>;
  /**
   * Writes `node` if its record is unchanged since `modRevision`; with `ip` (a registration), only if `ip`
   * holds too, and the node-ips entry of its address names it afterwards. False when a race was lost.
   */
  updateNode(node: NodeRecord, modRevision: bigint, ip?: NodeIpClaim): Promise<boolean>;
  /**
   * Deletes a node's record, its heartbeat, its subnet lease, its allocations and its route report in one
   * transaction, if the record is unchanged since `modRevision`; records the subnet as freed (at the back
   * of the line), and deletes the node-ips entry of its address only if it still names this node. False
   * when a race was lost.
   */
  removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean>;
}

/**
 * removeNode's guard: etcd compares an absent key's mod revision as 0, so a removal "since revision 0"
 * would succeed for a node that does not exist and free a subnet it never held.
 */
export function refuseUnreadRecord(nodeName: string, modRevision: bigint): void {
  if (modRevision <= 0n) {
    throw new TrellisError("INTERNAL", `removing node ${nodeName} needs the mod revision its record was read at; it was never read`);
  }
}
