import type { Logger } from "pino";
import { Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { AllocationStore } from "../store/allocation-store.js";
import type { NodeStore } from "../store/node-store.js";

/**
 * Most allocations one SyncAllocations call may record, and most it may release (node.proto): twice what
 * the daemon sends (mirrorBatchLimit, 500, of each kind at most; the test holds the two together).
 */
export const syncAllocationsLimit = 1000;

/** Throws INVALID_ARGUMENT when a SyncAllocations batch holds more than syncAllocationsLimit of either kind. Pure. */
export function checkSyncBatchSize(recorded: number, released: number): void {
  for (const [field, count] of [
    ["recorded", recorded],
    ["released", released],
  ] as const) {
    if (count > syncAllocationsLimit) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `${field} holds ${count} entries; at most ${syncAllocationsLimit} recorded and ${syncAllocationsLimit} released allocations per call, split the batch`,
      );
    }
  }
}

/**
 * Pod allocations reported by nodes, kept in etcd so the cluster-wide view survives the loss of a
 * node's disk. The node stays the single writer of its own subnet: this only checks and stores.
 */
export class AllocationMirror {
  constructor(private readonly deps: { allocations: AllocationStore; nodes: NodeStore; log: Logger }) {}

  async record(node: string, record: AllocationRecord | undefined): Promise<void> {
    if (!record) throw new TrellisError("INVALID_ARGUMENT", "allocation is missing");
    const subnet = await this.subnetOf(node);
    if (!subnet.contains(parseIpv4(record.address, "allocation.address"))) {
      throw new TrellisError("INVALID_ARGUMENT", `allocation.address ${record.address} is outside ${node}'s subnet ${subnet.toString()}`);
    }
    await this.deps.allocations.putAllocation(node, record);
    this.deps.log.debug({ node, address: record.address, containerId: record.attachment?.containerId }, "allocation mirrored");
  }

  async release(node: string, address: string): Promise<void> {
    parseIpv4(address, "address");
    await this.deps.allocations.deleteAllocation(node, address);
  }

  /** Several records and releases at once; every address is checked before anything is written. */
  async sync(node: string, recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void> {
    checkSyncBatchSize(recorded.length, released.length);
    const subnet = await this.subnetOf(node);
    for (const [i, record] of recorded.entries()) {
      if (!subnet.contains(parseIpv4(record.address, `recorded[${i}].address`))) {
        throw new TrellisError(
          "INVALID_ARGUMENT",
          `recorded[${i}].address ${record.address} is outside ${node}'s subnet ${subnet.toString()}`,
        );
      }
    }
    for (const [i, address] of released.entries()) parseIpv4(address, `released[${i}]`);
    const recordedAddresses = new Set<string>();
    for (const r of recorded) {
      // Two writes of one key in one etcd transaction are refused by etcd: say so here, naming the address.
      if (recordedAddresses.has(r.address))
        throw new TrellisError("INVALID_ARGUMENT", `recorded holds ${r.address} twice; send each address once`);
      recordedAddresses.add(r.address);
    }
    const both = released.filter((a) => recordedAddresses.has(a));
    if (both.length > 0) throw new TrellisError("INVALID_ARGUMENT", `${both.join(", ")} both recorded and released in one call`);
    await this.deps.allocations.applyAllocations(node, recorded, released);
    this.deps.log.debug({ node }, `${recorded.length} allocations mirrored, ${released.length} released`);
  }

  async list(node: string): Promise<AllocationRecord[]> {
    await this.subnetOf(node);
    return (await this.deps.allocations.listAllocations(node)).map((a) => a.record);
  }

  private async subnetOf(node: string): Promise<Cidr> {
    const found = await this.deps.nodes.findNode(node);
    if (!found) throw new TrellisError("NOT_FOUND", `node ${node} is not registered; register it first`);
    return Cidr.parse(found.value.subnet, `stored subnet of ${node}`);
  }
}
