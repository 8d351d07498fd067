// Issue 10, finding 2: cluster-wide reads are paged, so a list larger than gRPC's 4 MiB message limit
// (about 9,000 pods' allocations) still reads, as one consistent view.
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAdminService } from "../../control-plane/rpc/admin-service.js";
import { openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { ListAllocationsRequestSchema, type ListAllocationsResponse } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { AllocationRecordSchema, AttachmentSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe("paged reads", () => {
  it("12,000 allocations (about 6 MiB) list whole, and count per node from the keys", async () => {
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root: namespace(), callTimeoutMs: 30_000 });
    try {
      const nodes = 40;
      const perNode = 300;
      const writes: Array<Promise<void>> = [];
      for (let n = 0; n < nodes; n++) {
        const records = Array.from({ length: perNode }, (_, i) =>
          create(AllocationRecordSchema, {
            address: `10.${n}.${i >> 8}.${i & 255}`,
            hostVeth: `tr${String(n * perNode + i).padStart(11, "0")}`,
            createdAtMs: 1_700_000_000_000n,
            attachment: create(AttachmentSchema, {
              networkName: "trellis",
              containerId: "c".repeat(64),
              ifName: "eth0",
              netns: `/run/netns/${"p".repeat(100)}-${n}-${i}`,
              podNamespace: "n".repeat(63),
              podName: "p".repeat(120),
            }),
          }),
        );
        writes.push(store.allocations.applyAllocations(`node-${n}`, records, []));
      }
      await Promise.all(writes);
      const all = await store.allocations.listAllocations();
      expect(all).toHaveLength(nodes * perNode);
      expect(all.reduce((n, a) => n + toBinary(AllocationRecordSchema, a.record).length, 0)).toBeGreaterThan(4 << 20);
      const counts = await store.allocations.countAllocations();
      expect(counts.size).toBe(nodes);
      expect([...counts.values()].every((c) => c === perNode)).toBe(true);

      // The admin API pages too: every allocation once, in answers of at most 1000.
      const admin = createAdminService({ stores: store } as unknown as Parameters<typeof createAdminService>[0]);
      const seen = new Set<string>();
      let token = "";
      let pages = 0;
      do {
        const page = (await admin.listAllocations(
          create(ListAllocationsRequestSchema, { pageToken: token }),
          {} as never,
        )) as ListAllocationsResponse;
        expect(page.allocations.length).toBeLessThanOrEqual(1000);
        for (const a of page.allocations) seen.add(`${a.nodeName}/${a.address}`);
        token = page.nextPageToken;
        pages++;
      } while (token);
      expect(seen.size).toBe(nodes * perNode);
      expect(pages).toBe(12);
    } finally {
      store.close();
    }
  }, 90_000);
});
