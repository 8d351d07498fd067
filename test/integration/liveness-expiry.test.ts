import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ExpiryLoop, Liveness } from "../../control-plane/nodes/liveness.js";
import { Registrar } from "../../control-plane/nodes/registrar.js";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import type { Versioned } from "../../control-plane/store/versioned.js";
import { createSubnetPool } from "../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../proto/core/cidr.js";
import { DisruptionRecordSchema, type NodeRecord, NodeRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

// Issue 10, findings 3 and 4, where they live in etcd transactions: the heartbeat key's mod revision is
// what liveness is judged by, an expiry commits only if that key and the disruption record are unchanged
// since the round read them, and the disruption record is changed only by compare-and-swap.
let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

const opened: EtcdStores[] = [];
afterEach(() => {
  for (const s of opened.splice(0)) s.close();
});

/** Stores whose expiry (or, in the code before issue 10, any node update) first runs `beforeWrite`. */
type PausingStores = EtcdStores & { beforeWrite?: (name: string) => Promise<void> };

function openStore(root: string): PausingStores {
  const stores: PausingStores = openEtcdStores({ endpoints: [etcd.endpoint], root });
  const expire = stores.liveness.expireNode.bind(stores.liveness);
  const update = stores.nodes.updateNode.bind(stores.nodes);
  stores.liveness.expireNode = async (...args) => {
    await stores.beforeWrite?.(args[0].name);
    return expire(...args);
  };
  stores.nodes.updateNode = async (...args) => {
    await stores.beforeWrite?.(args[0].name);
    return update(...args);
  };
  opened.push(stores);
  return stores;
}

/** One replica's domain services over `stores`, on `clock` (monotonic and wall alike). */
function replica(stores: EtcdStores, clock: () => number) {
  const liveness = new Liveness({ ...stores, log, clock, policy });
  return { liveness, registrar: new Registrar({ ...stores, liveness, pool, log, clock, rand: Math.random }) };
}

const policy = { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33 };
const pool = createSubnetPool(Cidr.parse("10.244.0.0/16"), 24);
const log = pino({ level: "silent" });

describe("the liveness transactions in etcd", () => {
  it("a heartbeat returns its key's mod revision, which listHeartbeats reads back", async () => {
    const store = openStore(namespace());
    const first = await store.liveness.putHeartbeats(new Map([["n1", 1n]]));
    expect((await store.liveness.listHeartbeats()).get("n1")).toEqual({ revision: first, lastSeenMs: 1n });
    const second = await store.liveness.putHeartbeats(new Map([["n1", 1n]])); // the same value: still a change of the key
    expect(second).toBeGreaterThan(first);
    expect(await store.liveness.listHeartbeats()).toEqual(new Map([["n1", { revision: second, lastSeenMs: 1n }]]));
  });

  it("the disruption record changes only by compare-and-swap", async () => {
    const store = openStore(namespace());
    const on = create(DisruptionRecordSchema, { active: true, sinceMs: 5n, overdueNodes: ["n2", "n3"], liveNodes: 6n });
    const created = await store.liveness.putDisruption(on, 0n);
    expect(created).toBeDefined();
    expect(await store.liveness.putDisruption(on, 0n)).toBeUndefined(); // another replica created it first
    expect(await store.liveness.findDisruption()).toEqual({ value: on, modRevision: created });
    const off = create(DisruptionRecordSchema, { active: false, liveNodes: 6n });
    expect(await store.liveness.putDisruption(off, (created ?? 0n) - 1n)).toBeUndefined(); // a stale view
    const ended = await store.liveness.putDisruption(off, created ?? 0n);
    expect(ended).toBeGreaterThan(created ?? 0n);
    expect((await store.liveness.findDisruption())?.value.active).toBe(false);
  });

  it("an expiry commits only if the node, its heartbeat key and the disruption record are as read", async () => {
    const store = openStore(namespace());
    const leases = replica(store, Date.now).registrar;
    for (const [i, name] of ["n1", "n2", "n3", "n4"].entries()) await leases.register({ name, nodeIp: `192.168.1.${11 + i}`, mtu: 1500 });
    const expired = (node: Versioned<NodeRecord> | undefined) => {
      if (!node) throw new Error("test setup: node not registered");
      return create(NodeRecordSchema, { ...node.value, live: false, releasedReason: "expired" });
    };

    // no heartbeat key (0n) and no disruption record (0n): both compare as absent
    const n1 = await store.nodes.findNode("n1");
    expect(await store.liveness.expireNode(expired(n1), n1?.modRevision ?? 0n, 0n, 0n)).toBe(true);
    expect((await store.nodes.findNode("n1"))?.value.live).toBe(false);

    // judged by heartbeat revision h, then the node heartbeated: no expiry
    const h = await store.liveness.putHeartbeats(new Map([["n2", 1n]]));
    const n2 = await store.nodes.findNode("n2");
    await store.liveness.putHeartbeats(new Map([["n2", 2n]]));
    expect(await store.liveness.expireNode(expired(n2), n2?.modRevision ?? 0n, h, 0n)).toBe(false);
    expect((await store.nodes.findNode("n2"))?.value.live).toBe(true);

    // judged with no disruption record, then another replica recorded one: no expiry
    const n3 = await store.nodes.findNode("n3");
    const d = await store.liveness.putDisruption(create(DisruptionRecordSchema, { active: true, liveNodes: 4n }), 0n);
    expect(await store.liveness.expireNode(expired(n3), n3?.modRevision ?? 0n, 0n, 0n)).toBe(false);
    expect((await store.nodes.findNode("n3"))?.value.live).toBe(true);

    // the node record changed (registered again, router flag): no expiry
    const n4 = await store.nodes.findNode("n4");
    await leases.setRouter("n4", true);
    expect(await store.liveness.expireNode(expired(n4), n4?.modRevision ?? 0n, 0n, d ?? 0n)).toBe(false);
    expect((await store.nodes.findNode("n4"))?.value.live).toBe(true);
  });
});

describe("expiry against etcd", () => {
  it("a replica paused between planning and committing cannot expire a node that heartbeated meanwhile", async () => {
    const root = namespace();
    let now = 1_800_000_000_000;
    const storeA = openStore(root);
    const storeB = openStore(root);
    const a = replica(storeA, () => now);
    const b = replica(storeB, () => now + 60_000);
    const loopA = new ExpiryLoop({ liveness: a.liveness, clock: () => now, log });
    for (const [i, name] of ["n1", "n2", "n3"].entries()) await a.registrar.register({ name, nodeIp: `192.168.1.${11 + i}`, mtu: 1500 });
    expect((await loopA.tick())?.expire).toEqual([]);
    now += 30_000;
    await a.liveness.heartbeat("n1");
    await b.liveness.heartbeat("n2");
    now += 11_000; // n3: 41 s without a heartbeat, as replica A saw it
    let paused = false;
    storeA.beforeWrite = async (name) => {
      if (name !== "n3" || paused) return;
      paused = true; // A planned n3's expiry and stopped (GC, SIGSTOP); n3 heartbeats through B meanwhile
      await b.liveness.heartbeat("n3");
    };
    const plan = await loopA.tick();
    expect(plan?.expire).toEqual(["n3"]);
    expect(paused).toBe(true);
    expect((await storeA.nodes.findNode("n3"))?.value.live).toBe(true);
    // A's next round has seen n3's heartbeat key change: n3 gets a full TTL from then
    storeA.beforeWrite = undefined;
    now += 5_000;
    expect((await loopA.tick())?.expire).toEqual([]);
    now += 36_000;
    await a.liveness.heartbeat("n1");
    await b.liveness.heartbeat("n2");
    expect((await loopA.tick())?.expire).toEqual([]);
    now += 5_000;
    expect((await loopA.tick())?.expire).toEqual(["n3"]);
    expect((await storeA.nodes.findNode("n3"))?.value).toMatchObject({ live: false, releasedReason: "expired" });
  });
});
