// Liveness.heartbeat: a node the route feed holds live is taken as live without reading its record; any
// other node is read, and refused when it is not registered or not live.
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Liveness } from "../../../../control-plane/nodes/liveness.js";
import { changeNode, registerNode } from "../../../contract/node-store.js";
import { openMemoryStores } from "../../../support/memory-stores.js";

const policy = { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33, heartbeatIntervalMs: 10_000 };

function setUp(held: Set<string>) {
  const stores = openMemoryStores();
  let reads = 0;
  const nodes = Object.create(stores.nodes) as typeof stores.nodes;
  nodes.findNode = (name) => {
    reads++;
    return stores.nodes.findNode(name);
  };
  const liveness = new Liveness({
    ...stores,
    nodes,
    log: pino({ level: "silent" }),
    clock: () => 1_000,
    policy,
    holdsLive: (name) => held.has(name),
  });
  return { stores, liveness, reads: () => reads };
}

describe("Liveness.heartbeat", () => {
  it("of a node the route feed holds live: writes its heartbeat key and reads no node record", async () => {
    const held = new Set(["n1"]);
    const { stores, liveness, reads } = setUp(held);
    await registerNode(stores, "n1", "192.168.1.11", "10.244.1.0/24");
    await liveness.heartbeat("n1");
    expect(reads()).toBe(0);
    expect((await stores.liveness.listHeartbeats()).get("n1")?.lastSeenMs).toBe(1_000n);
  });

  it("of a node the feed does not hold: reads its record; live, not live, not registered", async () => {
    const { stores, liveness, reads } = setUp(new Set());
    await registerNode(stores, "n1", "192.168.1.11", "10.244.1.0/24");
    await liveness.heartbeat("n1"); // registered a moment ago: the feed has not seen it yet
    expect(reads()).toBe(1);
    expect((await stores.liveness.listHeartbeats()).has("n1")).toBe(true);
    await changeNode(stores, "n1", { live: false, releasedReason: "drained" });
    await expect(liveness.heartbeat("n1")).rejects.toMatchObject({
      reason: "NOT_FOUND",
      message: expect.stringMatching(/not live \(drained\)/),
    });
    await expect(liveness.heartbeat("ghost")).rejects.toMatchObject({
      reason: "NOT_FOUND",
      message: expect.stringMatching(/not registered/),
    });
    expect(reads()).toBe(3);
  });
});
