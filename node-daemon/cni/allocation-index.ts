// The daemon's in-memory view of its allocations: by address, by attachment, and the set of taken
// addresses the allocator avoids. Pure data; the durable record is the journal (ipam/journal.ts).
import { type Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import type { AllocationRecord, Attachment } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

/** State is keyed by (network, container id, interface name), as CNI identifies an attachment. */
export const attachmentKey = (a: Pick<Attachment, "networkName" | "containerId" | "ifName">) =>
  `${a.networkName}/${a.containerId}/${a.ifName}`;

export class AllocationIndex {
  private readonly byAddress = new Map<string, AllocationRecord>();
  private readonly byAttachment = new Map<string, AllocationRecord>();
  /** Addresses the allocator must skip: recorded ones, and ones found on disk that memory did not know. */
  readonly taken = new Set<bigint>();
  /** The last address handed out: the allocator continues after it, so a freed address is not reused at once. */
  lastAddress?: bigint;

  get size(): number {
    return this.byAddress.size;
  }

  records(): AllocationRecord[] {
    return [...this.byAddress.values()];
  }

  has(address: string): boolean {
    return this.byAddress.has(address);
  }

  find(attachment: Pick<Attachment, "networkName" | "containerId" | "ifName">): AllocationRecord | undefined {
    return this.byAttachment.get(attachmentKey(attachment));
  }

  add(record: AllocationRecord): void {
    this.byAddress.set(record.address, record);
    if (record.attachment) this.byAttachment.set(attachmentKey(record.attachment), record);
    this.taken.add(parseIpv4(record.address));
  }

  remove(record: AllocationRecord): void {
    this.byAddress.delete(record.address);
    if (record.attachment) this.byAttachment.delete(attachmentKey(record.attachment));
    this.taken.delete(parseIpv4(record.address));
  }

  /** Allocations outside `subnet`: pods to recreate after a subnet change. */
  outside(subnet: Cidr): AllocationRecord[] {
    return this.records().filter((r) => !subnet.contains(parseIpv4(r.address)));
  }
}
