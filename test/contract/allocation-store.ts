// The contract of AllocationStore (control-plane/store/allocation-store.ts), run on the Memory stores (unit)
// and on etcd (integration): the allocation mirror, its batched writes, its pages and its counts.
// EtcdAllocationStore is the reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { NodeAllocation } from "../../control-plane/store/allocation-store.js";
import type { Stores } from "../../control-plane/store/stores.js";
import { AllocationRecordSchema, AttachmentSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

const allocation = (address: string, hostVeth = "tr00000000001") =>
  create(AllocationRecordSchema, {
    address,
    hostVeth,
    createdAtMs: 1_700_000_000_000n,
    attachment: create(AttachmentSchema, { networkName: "trellis", containerId: `c-${address}`, ifName: "eth0", podName: "p" }),
  });
/** `count` allocations of node `index`'s subnet. */
const allocations = (index: number, count: number) => Array.from({ length: count }, (_, i) => allocation(`10.244.${index}.${i + 2}`));
const ids = (as: readonly NodeAllocation[]) => as.map((a) => `${a.node}/${a.record.address}`);

/** Nodes whose names are prefixes of each other's ("n1", "n10"): one node's range must not reach into another's. */
const seeded = { n1: 20, n10: 5, n2: 15 } as const;
async function seed(s: Stores): Promise<void> {
  for (const [i, [node, count]] of Object.entries(seeded).entries())
    await s.allocations.applyAllocations(node, allocations(i + 1, count), []);
}

export function describeAllocationStoreContract(name: string, make: () => Promise<Stores>): void {
  describe(`AllocationStore contract: ${name}`, () => {
    it("an allocation is put, replaced and deleted; deleting one that is gone succeeds", async () => {
      const s = await make();
      await s.allocations.putAllocation("n1", allocation("10.244.1.5"));
      await s.allocations.putAllocation("n1", allocation("10.244.1.5", "tr00000000002"));
      await s.allocations.putAllocation("n2", allocation("10.244.2.5"));
      expect(await s.allocations.listAllocations("n1")).toEqual([{ node: "n1", record: allocation("10.244.1.5", "tr00000000002") }]);
      await s.allocations.deleteAllocation("n1", "10.244.1.5");
      await expect(s.allocations.deleteAllocation("n1", "10.244.1.5")).resolves.toBeUndefined();
      expect(await s.allocations.listAllocations("n1")).toEqual([]);
      expect(ids(await s.allocations.listAllocations())).toEqual(["n2/10.244.2.5"]);
    });

    it("applyAllocations records and releases more than one transaction's worth (100 writes)", async () => {
      const s = await make();
      const recorded = allocations(1, 250);
      await s.allocations.applyAllocations("n1", recorded, []);
      expect((await s.allocations.countAllocations()).get("n1")).toBe(250);
      const released = recorded.slice(0, 130).map((r) => r.address);
      const added = [allocation("10.244.1.254", "tr00000000009")];
      await s.allocations.applyAllocations("n1", added, released);
      const left = await s.allocations.listAllocations("n1");
      expect(left).toHaveLength(121);
      expect(new Set(left.map((a) => a.record.address))).toEqual(new Set([...recorded.slice(130), ...added].map((r) => r.address)));
      expect(left.find((a) => a.record.address === "10.244.1.254")?.record).toEqual(added[0]);
    });

    it("listAllocations and countAllocations keep nodes apart, even one whose name another's begins with", async () => {
      const s = await make();
      await seed(s);
      expect(await s.allocations.countAllocations()).toEqual(new Map(Object.entries(seeded)));
      for (const [node, count] of Object.entries(seeded)) {
        const mine = await s.allocations.listAllocations(node);
        expect(mine).toHaveLength(count);
        expect(mine.every((a) => a.node === node)).toBe(true);
      }
      expect(await s.allocations.listAllocations()).toHaveLength(40);
      expect(await s.allocations.listAllocations("n3")).toEqual([]);
    });

    it.each([
      { scope: "one node's", node: "n1", limit: 7, total: 20 },
      { scope: "one node's", node: "n1", limit: 10, total: 20 },
      { scope: "one node's", node: "n1", limit: 500, total: 20 },
      { scope: "every node's", node: undefined, limit: 7, total: 40 },
      { scope: "every node's", node: undefined, limit: 10, total: 40 },
      { scope: "every node's", node: undefined, limit: 1, total: 40 },
    ])("listAllocationsPage pages through $scope allocations $limit at a time: each once, in order", async ({ node, limit, total }) => {
      const s = await make();
      await seed(s);
      const pages: NodeAllocation[][] = [];
      let after = "";
      do {
        const page = await s.allocations.listAllocationsPage(node, after, limit);
        pages.push(page.allocations);
        const last = page.allocations.at(-1);
        if (page.next) expect(page.next).toBe(`${last?.node}/${last?.record.address}`);
        after = page.next;
        if (pages.length > total + 1) throw new Error("paging does not end");
      } while (after);
      expect(pages).toHaveLength(Math.ceil(total / limit));
      for (const page of pages.slice(0, -1)) expect(page).toHaveLength(limit);
      const all = pages.flat();
      expect(all).toEqual(await s.allocations.listAllocations(node));
      expect(new Set(ids(all)).size).toBe(total);
      if (node !== undefined) expect(all.every((a) => a.node === node)).toBe(true);
    });
  });
}
