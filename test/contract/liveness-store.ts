// The contract of LivenessStore (control-plane/store/liveness-store.ts), run on the Memory stores (unit) and
// on etcd (integration): heartbeat keys judged by their mod revisions, expiry that commits only over what
// it was decided on, and the disruption record changed only by compare-and-swap. EtcdLivenessStore is the
// reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { Stores } from "../../control-plane/store/stores.js";
import { DisruptionRecordSchema, NodeRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { changeNode, current, registerNode } from "./node-store.js";

export function describeLivenessStoreContract(name: string, make: () => Promise<Stores>): void {
  describe(`LivenessStore contract: ${name}`, () => {
    it("a heartbeat returns its key's new mod revision, which listHeartbeats reads back; every heartbeat moves it on", async () => {
      const s = await make();
      expect(await s.liveness.listHeartbeats()).toEqual(new Map());
      const first = await s.liveness.putHeartbeats(new Map([["n1", 5n]]));
      expect(await s.liveness.listHeartbeats()).toEqual(new Map([["n1", { revision: first, lastSeenMs: 5n }]]));
      const second = await s.liveness.putHeartbeats(new Map([["n1", 5n]])); // the same value: still a change of the key
      expect(second).toBeGreaterThan(first);
      const other = await s.liveness.putHeartbeats(new Map([["n2", 7n]]));
      expect(other).toBeGreaterThan(second);
      expect(await s.liveness.listHeartbeats()).toEqual(
        new Map([
          ["n1", { revision: second, lastSeenMs: 5n }],
          ["n2", { revision: other, lastSeenMs: 7n }],
        ]),
      );
    });

    it("heartbeats of many nodes in one write: every key at that write's revision, each with its own time", async () => {
      const s = await make();
      const before = await s.liveness.putHeartbeats(new Map([["n0", 1n]]));
      const beats = new Map(Array.from({ length: 128 }, (_, i) => [`n${i}`, BigInt(100 + i)]));
      const revision = await s.liveness.putHeartbeats(beats);
      expect(revision).toBeGreaterThan(before);
      const read = await s.liveness.listHeartbeats();
      expect(read.size).toBe(128);
      for (const [name, lastSeenMs] of beats) expect(read.get(name)).toEqual({ revision, lastSeenMs });
    });

    it.each<{ state: string; heartbeat: boolean; disruption: boolean; change?: "node" | "heartbeat" | "disruption"; expires: boolean }>([
      { state: "nothing changed", heartbeat: true, disruption: true, expires: true },
      {
        state: "nothing changed, no heartbeat key and no disruption record (0n: absent)",
        heartbeat: false,
        disruption: false,
        expires: true,
      },
      { state: "the node record changed", heartbeat: true, disruption: true, change: "node", expires: false },
      { state: "the heartbeat key changed", heartbeat: true, disruption: true, change: "heartbeat", expires: false },
      { state: "a heartbeat key appeared", heartbeat: false, disruption: false, change: "heartbeat", expires: false },
      { state: "the disruption record changed", heartbeat: true, disruption: true, change: "disruption", expires: false },
      { state: "a disruption record appeared", heartbeat: false, disruption: false, change: "disruption", expires: false },
    ])("expireNode when $state: expires=$expires", async ({ heartbeat, disruption, change, expires }) => {
      const s = await make();
      await registerNode(s, "n1", "192.168.1.11", "10.244.1.0/24");
      if (heartbeat) await s.liveness.putHeartbeats(new Map([["n1", 1n]]));
      const record = create(DisruptionRecordSchema, { active: false, liveNodes: 1n });
      if (disruption) await s.liveness.putDisruption(record, 0n);
      // The round's reads.
      const node = await current(s, "n1");
      const heartbeatRevision = (await s.liveness.listHeartbeats()).get("n1")?.revision ?? 0n;
      const disruptionRevision = (await s.liveness.findDisruption())?.modRevision ?? 0n;
      if (change === "node") await changeNode(s, "n1", { router: true });
      if (change === "heartbeat") await s.liveness.putHeartbeats(new Map([["n1", 2n]]));
      if (change === "disruption") await s.liveness.putDisruption(record, disruptionRevision);
      const before = await current(s, "n1");
      const expired = create(NodeRecordSchema, { ...node.value, live: false, releasedReason: "expired", releasedAtMs: 9n });
      expect(await s.liveness.expireNode(expired, node.modRevision, heartbeatRevision, disruptionRevision)).toBe(expires);
      const after = await current(s, "n1");
      if (expires) {
        expect(after.value).toEqual(expired);
        expect(after.modRevision).toBeGreaterThan(before.modRevision);
      } else {
        expect(after).toEqual(before);
      }
    });

    it("the disruption record changes only by compare-and-swap", async () => {
      const s = await make();
      expect(await s.liveness.findDisruption()).toBeUndefined();
      const on = create(DisruptionRecordSchema, { active: true, sinceMs: 5n, overdueNodes: ["n2", "n3"], liveNodes: 6n });
      const created = await s.liveness.putDisruption(on, 0n);
      expect(created).toBeGreaterThan(0n);
      expect(await s.liveness.putDisruption(on, 0n)).toBeUndefined(); // another replica created it first
      expect(await s.liveness.findDisruption()).toEqual({ value: on, modRevision: created });
      const off = create(DisruptionRecordSchema, { active: false, liveNodes: 6n });
      expect(await s.liveness.putDisruption(off, (created ?? 0n) - 1n)).toBeUndefined(); // a stale view
      expect(await s.liveness.findDisruption()).toEqual({ value: on, modRevision: created });
      const ended = await s.liveness.putDisruption(off, created ?? 0n);
      expect(ended).toBeGreaterThan(created ?? 0n);
      expect(await s.liveness.findDisruption()).toEqual({ value: off, modRevision: ended });
    });

    it("two replicas creating the disruption record at once: exactly one succeeds", async () => {
      const s = await make();
      const records = [1n, 2n].map((liveNodes) => create(DisruptionRecordSchema, { active: true, liveNodes }));
      const results = await Promise.all(records.map((r) => s.liveness.putDisruption(r, 0n)));
      const winner = results.findIndex((r) => r !== undefined);
      expect(results.filter((r) => r !== undefined)).toHaveLength(1);
      expect(await s.liveness.findDisruption()).toEqual({ value: records[winner], modRevision: results[winner] });
    });
  });
}
