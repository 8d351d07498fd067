// Every store port's contract (test/contract/*-store.ts) on the Memory stores the domain tests use, and the
// test hooks those stores add (test/support/memory-stores.ts).
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { NodeWatchBatch } from "../../../../control-plane/store/node-store.js";
import { DisruptionRecordSchema } from "../../../../proto/gen/trellis/store/v1/store_pb.js";
import { describeAllocationStoreContract } from "../../../contract/allocation-store.js";
import { describeClusterConfigStoreContract } from "../../../contract/cluster-config-store.js";
import { describeEventStoreContract } from "../../../contract/event-store.js";
import { describeLivenessStoreContract } from "../../../contract/liveness-store.js";
import { type CompactableStores, changeNode, current, describeNodeStoreContract, registerNode } from "../../../contract/node-store.js";
import { describeRouteReportStoreContract } from "../../../contract/route-report-store.js";
import { describeSubnetStoreContract } from "../../../contract/subnet-store.js";
import { openMemoryStores } from "../../../support/memory-stores.js";
import { waitFor } from "../../../support/wait.js";

async function memory(): Promise<CompactableStores> {
  const stores = openMemoryStores();
  return { ...stores, compact: async () => stores.compact() };
}

describeNodeStoreContract("in memory", memory);
describeLivenessStoreContract("in memory", memory);
describeSubnetStoreContract("in memory", memory);
describeAllocationStoreContract("in memory", memory);
describeRouteReportStoreContract("in memory", memory);
describeClusterConfigStoreContract("in memory", memory);
describeEventStoreContract("in memory", memory);

/** Lets every queued watch delivery (microtasks) run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("the Memory stores' test hooks", () => {
  it("revision: one step per transaction that changes something; a refused or empty one leaves it", async () => {
    const s = openMemoryStores();
    const start = s.revision;
    const a = await registerNode(s, "a", "192.168.1.11", "10.244.1.0/24"); // lease, node and node-IP entry: one step
    expect(s.revision).toBe(start + 1n);
    expect(a.modRevision).toBe(s.revision);
    expect(await s.nodes.updateNode(a.value, a.modRevision - 1n)).toBe(false);
    await s.allocations.deleteAllocation("a", "10.244.1.9");
    await s.subnets.deleteReservation("10.244.9.0/24");
    expect(s.revision).toBe(start + 1n);
    expect(await s.liveness.putHeartbeats(new Map([["a", 1n]]))).toBe(start + 2n);
  });

  it("down: every call fails with UNAVAILABLE until it is back", async () => {
    const s = openMemoryStores();
    s.down = true;
    await expect(s.nodes.listNodes()).rejects.toMatchObject({ reason: "UNAVAILABLE" });
    await expect(s.liveness.putHeartbeats(new Map([["a", 1n]]))).rejects.toMatchObject({ reason: "UNAVAILABLE" });
    await expect(s.allocations.countAllocations()).rejects.toMatchObject({ reason: "UNAVAILABLE" });
    expect(s.revision).toBe(openMemoryStores().revision);
    s.down = false;
    await expect(s.liveness.putHeartbeats(new Map([["a", 1n]]))).resolves.toBeGreaterThan(0n);
  });

  it("beforeNodeWrite runs between the caller's reads and its commit", async () => {
    const s = openMemoryStores();
    await registerNode(s, "a", "192.168.1.11", "10.244.1.0/24");
    const node = await current(s, "a");
    const seen: string[] = [];
    s.beforeNodeWrite = async (name) => {
      seen.push(name);
      await s.liveness.putHeartbeats(new Map([[name, 2n]])); // the node heartbeats while the replica is paused
    };
    expect(await s.liveness.expireNode({ ...node.value, live: false }, node.modRevision, 0n, 0n)).toBe(false);
    expect(seen).toEqual(["a"]);
    expect((await current(s, "a")).value.live).toBe(true);
  });

  it("liveChanges: every flip of an existing node's live flag, in order; a new node is none", async () => {
    const s = openMemoryStores();
    await registerNode(s, "a", "192.168.1.11", "10.244.1.0/24");
    await changeNode(s, "a", { router: true });
    expect(s.liveChanges).toEqual([]);
    const a = await current(s, "a");
    expect(await s.liveness.expireNode({ ...a.value, live: false }, a.modRevision, 0n, 0n)).toBe(true);
    await changeNode(s, "a", { live: true });
    expect(s.liveChanges).toEqual([
      { name: "a", live: false },
      { name: "a", live: true },
    ]);
  });

  it("breakWatches ends every open watch with onLost, once", async () => {
    const s = openMemoryStores();
    const lost: string[] = [];
    const stop = new AbortController();
    await s.nodes.watchNodes(
      0n,
      () => undefined,
      stop.signal,
      () => lost.push("nodes"),
    );
    await s.events.watchEvents(
      () => undefined,
      stop.signal,
      () => lost.push("events"),
    );
    s.breakWatches();
    s.breakWatches();
    await waitFor("both watches lost", async () => lost.length === 2);
    await settle();
    expect(lost.sort()).toEqual(["events", "nodes"]);
    stop.abort();
  });

  it("an aborted watch delivers nothing more; one still open does", async () => {
    const s = openMemoryStores();
    const [aborted, open] = [[], []] as NodeWatchBatch[][];
    const stop = new AbortController();
    const keep = new AbortController();
    await s.nodes.watchNodes(0n, (b) => aborted!.push(b), stop.signal);
    await s.nodes.watchNodes(0n, (b) => open!.push(b), keep.signal);
    stop.abort();
    await registerNode(s, "a", "192.168.1.11", "10.244.1.0/24");
    await settle();
    expect(open).toHaveLength(1);
    expect(aborted).toEqual([]);
    keep.abort();
  });

  it("compact refuses a future revision and ignores one already compacted", async () => {
    const s = openMemoryStores();
    await s.liveness.putDisruption(create(DisruptionRecordSchema, { active: false }), 0n);
    expect(() => s.compact(s.revision + 1n)).toThrow(/future revision/);
    s.compact();
    expect(() => s.compact(1n)).not.toThrow();
  });
});
