import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

export interface NodeAllocation {
  readonly node: string;
  readonly record: AllocationRecord;
}

/** The control plane's mirror of every node's pod allocations (the node's journal is the authority). */
export interface AllocationStore {
  putAllocation(node: string, record: AllocationRecord): Promise<void>;
  /** Succeeds when the allocation is already gone. */
  deleteAllocation(node: string, address: string): Promise<void>;
  /** Records and releases several of a node's allocations, in transactions of at most 100 writes. */
  applyAllocations(node: string, recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void>;
  /**
   * Up to `limit` allocations (one node's, or every node's) after `after` ("node/address", as `next`
   * gave it; "" for the first page), and where the next page starts ("" after the last).
   */
  listAllocationsPage(node: string | undefined, after: string, limit: number): Promise<{ allocations: NodeAllocation[]; next: string }>;
  /** One node's allocations, or every node's when `node` is undefined (read in pages). */
  listAllocations(node?: string): Promise<NodeAllocation[]>;
  /** How many allocations each node has (read from the keys alone). */
  countAllocations(): Promise<Map<string, number>>;
}
