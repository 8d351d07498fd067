import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

/** The node's durable record of pod addresses. Writes are durable when their promise resolves. */
export interface AllocationJournal {
  load(): Promise<AllocationRecord[]>;
  /** Records `record.address` as taken; false (and no change) when the address is already recorded. */
  reserve(record: AllocationRecord): Promise<boolean>;
  /** Forgets an address; succeeds when it was not recorded. */
  release(address: string): Promise<void>;
}
