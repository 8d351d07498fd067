import type { Logger } from "pino";
import { Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { ClusterStore } from "../store/store.js";

/**
 * Pod allocations reported by nodes, kept in etcd so the cluster-wide view survives the loss of a
 * node's disk. The node stays the single writer of its own subnet: this only checks and stores.
 */
export class AllocationMirror {
  constructor(private readonly deps: { store: ClusterStore; log: Logger }) {}

  async record(node: string, record: AllocationRecord | undefined): Promise<void> {
    if (!record) throw new TrellisError("INVALID_ARGUMENT", "allocation is missing");
    const subnet = await this.subnetOf(node);
    if (!subnet.contains(parseIpv4(record.address, "allocation.address"))) {
      throw new TrellisError("INVALID_ARGUMENT", `allocation.address ${record.address} is outside ${node}'s subnet ${subnet.toString()}`);
    }
    await this.deps.store.putAllocation(node, record);
    this.deps.log.debug({ node, address: record.address, containerId: record.attachment?.containerId }, "allocation mirrored");
  }

  async release(node: string, address: string): Promise<void> {
    parseIpv4(address, "address");
    await this.deps.store.deleteAllocation(node, address);
  }

  async list(node: string): Promise<AllocationRecord[]> {
    await this.subnetOf(node);
    return (await this.deps.store.listAllocations(node)).map((a) => a.record);
  }

  private async subnetOf(node: string): Promise<Cidr> {
    const found = await this.deps.store.findNode(node);
    if (!found) throw new TrellisError("NOT_FOUND", `node ${node} is not registered; register it first`);
    return Cidr.parse(found.value.subnet, `stored subnet of ${node}`);
  }
}
