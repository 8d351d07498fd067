import { toJsonString } from "@bufbuild/protobuf";
import { type AllocationRecord, AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { AllocationStore, NodeAllocation } from "./allocation-store.js";
import { decodeRecord, prefixEnd, rangePaged } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";

/** AllocationStore over etcd. The allocation mirror: allocations/<node>/<address>. */
export class EtcdAllocationStore extends EtcdStore implements AllocationStore {
  async putAllocation(node: string, record: AllocationRecord): Promise<void> {
    const value = toJsonString(AllocationRecordSchema, record);
    await this.call("put", `record allocation ${record.address} of ${node}`, () =>
      this.etcd.put(this.keys.allocation(node, record.address)).value(value).exec(),
    );
  }

  async deleteAllocation(node: string, address: string): Promise<void> {
    await this.call("delete", `release allocation ${address} of ${node}`, () =>
      this.etcd.delete().key(this.keys.allocation(node, address)).exec(),
    );
  }

  async applyAllocations(node: string, recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void> {
    const writes = [
      ...recorded.map((r) => this.etcd.put(this.keys.allocation(node, r.address)).value(toJsonString(AllocationRecordSchema, r))),
      ...released.map((address) => this.etcd.delete().key(this.keys.allocation(node, address))),
    ];
    // etcd refuses transactions of more than 128 operations (--max-txn-ops).
    for (let at = 0; at < writes.length; at += 100) {
      const chunk = writes.slice(at, at + 100);
      // A compare that always holds (a key's create revision is never negative): the writes apply together.
      await this.call("txn", `sync ${chunk.length} allocations of ${node}`, () =>
        this.etcd
          .if(this.keys.allocation(node, "0.0.0.0"), "Create", ">", -1)
          .then(...chunk)
          .commit(),
      );
    }
  }

  async listAllocationsPage(
    node: string | undefined,
    after: string,
    limit: number,
  ): Promise<{ allocations: NodeAllocation[]; next: string }> {
    const base = this.keys.allocationsPrefix;
    const prefix = node === undefined ? base : this.keys.nodeAllocationsPrefix(node);
    const res = await this.call("range", "list a page of allocations", () =>
      this.etcd.kv.range({ key: Buffer.from(after ? `${base}${after}\0` : prefix), range_end: prefixEnd(prefix), limit: String(limit) }),
    );
    const allocations = res.kvs.map((kv) => ({
      node: kv.key.toString().slice(base.length).split("/")[0] ?? "",
      record: decodeRecord(AllocationRecordSchema, kv),
    }));
    const last = res.kvs.at(-1);
    return { allocations, next: res.more && last ? last.key.toString().slice(base.length) : "" };
  }

  async listAllocations(node?: string): Promise<NodeAllocation[]> {
    const prefix = node === undefined ? this.keys.allocationsPrefix : this.keys.nodeAllocationsPrefix(node);
    const res = await this.call("range", "list allocations", () => rangePaged(this.etcd, prefix));
    return res.kvs.map((kv) => ({
      node: kv.key.toString().slice(this.keys.allocationsPrefix.length).split("/")[0] ?? "",
      record: decodeRecord(AllocationRecordSchema, kv),
    }));
  }

  async countAllocations(): Promise<Map<string, number>> {
    const prefix = this.keys.allocationsPrefix;
    const res = await this.call("range", "count allocations", () => rangePaged(this.etcd, prefix, { keysOnly: true, pageSize: 5_000 }));
    const counts = new Map<string, number>();
    for (const kv of res.kvs) {
      const node = kv.key.toString().slice(prefix.length).split("/")[0] ?? "";
      counts.set(node, (counts.get(node) ?? 0) + 1);
    }
    return counts;
  }
}
