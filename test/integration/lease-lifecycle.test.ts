import { createClient } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ExpiryLoop } from "../../control-plane/nodes/liveness.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService, RouteEventType, type WatchRoutesResponse } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { type InProcessControlPlane, namespace, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { waitFor } from "../support/wait.js";

// Lease lifecycle against a real etcd, with the control plane's lease clock in the test's hand, over mutual
// TLS: each node calls with its own joined certificate, the admin with an admin one.
let etcd: EtcdHandle;
let pki: TestPki;
beforeAll(async () => {
  [etcd, pki] = await Promise.all([startEtcd(), createTestPki()]);
});
afterAll(async () => {
  await etcd?.stop();
  await pki?.destroy();
});

const ttlMs = 40_000;
const graceMs = 600_000;
let now = 1_000_000;
let cp: InProcessControlPlane | undefined;
afterEach(async () => {
  await cp?.stop();
  cp = undefined;
});

async function start() {
  now = 1_000_000;
  const started = await startInProcessControlPlane({
    etcd: etcd.endpoint,
    root: namespace(),
    clock: () => now,
    identityClock: Date.now, // node certificates: TLS checks them against the real time
    policy: { ttlMs, graceMs, disruptionShare: 0.33 },
    pki,
  });
  cp = started;
  /** A NodeService client with `name`'s own certificate. */
  const node = (name: string) => createClient(NodeService, started.nodeTransport(name));
  return { cp: started, node, admin: createClient(AdminService, started.adminTransport()) };
}

async function registerAll(node: (name: string) => ReturnType<typeof createClient<typeof NodeService>>, count: number): Promise<string[]> {
  const subnets: string[] = [];
  for (let i = 1; i <= count; i++)
    subnets.push((await node(`n${i}`).registerNode({ nodeName: `n${i}`, nodeIp: `192.168.1.${10 + i}`, mtu: 1500 })).subnet);
  return subnets;
}

describe("subnet leases follow their node", () => {
  it("a node that stops heartbeating loses its route after the TTL; back within the grace period it gets its subnet again", async () => {
    const { cp, node, admin } = await start();
    const subnets = await registerAll(node, 3);
    const seen: WatchRoutesResponse[] = [];
    const stop = new AbortController();
    void (async () => {
      for await (const m of node("n1").watchRoutes({ nodeName: "n1", fromRevision: 0n }, { signal: stop.signal })) seen.push(m);
    })().catch(() => undefined);
    try {
      now += 30_000;
      await node("n1").heartbeat({ nodeName: "n1" });
      await node("n2").heartbeat({ nodeName: "n2" });
      now += 11_000; // n3: 41 s without a heartbeat
      const plan = await cp.liveness.sweep(0);
      expect(plan.expire).toEqual(["n3"]);
      await waitFor("n3's route withdrawn", async () =>
        seen.flatMap((m) => m.events).some((e) => e.type === RouteEventType.DELETE && e.route?.nodeName === "n3"),
      );
      const n3 = (await admin.getNode({ name: "n3" })).node;
      expect(n3).toMatchObject({ live: false, releasedReason: "expired", subnet: subnets[2] });
      expect(n3?.graceLeftSeconds).toBe(600n);

      await expect(node("n3").heartbeat({ nodeName: "n3" })).rejects.toThrow(/not live \(expired\); register it again/);
      now += 60_000;
      const again = await node("n3").registerNode({ nodeName: "n3", nodeIp: "192.168.1.13", mtu: 1500 });
      expect(again.subnet).toBe(subnets[2]);
      // coming back counts as a heartbeat: an expiry round before its first heartbeat leaves it live
      await node("n1").heartbeat({ nodeName: "n1" });
      await node("n2").heartbeat({ nodeName: "n2" });
      expect((await cp.liveness.sweep(0)).expire).toEqual([]);
      await waitFor("n3's route back after its withdrawal", async () => {
        const events = seen.flatMap((m) => m.events).filter((e) => e.route?.nodeName === "n3");
        return events.at(-1)?.type === RouteEventType.UPSERT && events.some((e) => e.type === RouteEventType.DELETE);
      });
      expect((await admin.getNode({ name: "n3" })).node).toMatchObject({ live: true, releasedReason: "" });
    } finally {
      stop.abort();
    }
  });

  it("after the grace period the subnet is freed, to the back of the line: the next node gets a never-used one", async () => {
    const { cp, node, admin } = await start();
    const subnets = await registerAll(node, 2);
    await node("n2").deregisterNode({ nodeName: "n2" }); // graceful shutdown: route out now, subnet kept
    expect((await admin.getNode({ name: "n2" })).node).toMatchObject({ live: false, releasedReason: "withdrawn" });
    expect((await cp.liveness.sweep(0)).free).toEqual([]); // this replica's round sees n2 withdrawn: its grace period starts
    now += graceMs - 1_000;
    expect((await cp.liveness.sweep(0)).free).toEqual([]);
    now += 2_000;
    expect((await cp.liveness.sweep(0)).free).toEqual(["n2"]);
    expect((await admin.listLeases({})).leases.map((l) => l.nodeName)).toEqual(["n1"]);
    await expect(admin.getNode({ name: "n2" })).rejects.toThrow(/not known/);
    const newcomer = await node("n9").registerNode({ nodeName: "n9", nodeIp: "192.168.1.19", mtu: 1500 });
    // DESIGN.md §2: a freed subnet goes to the back of the line (pods may still hold its addresses)
    expect(subnets).toEqual(["10.244.1.0/24", "10.244.2.0/24"]);
    expect(newcomer.subnet).toBe("10.244.3.0/24");
  });

  it("when over a third of the nodes miss heartbeats at once, routes are kept and the disruption is visible", async () => {
    const { cp, node, admin } = await start();
    await registerAll(node, 6);
    now += 30_000;
    for (const n of ["n1", "n2", "n3"]) await node(n).heartbeat({ nodeName: n });
    now += 11_000; // n4, n5, n6 overdue: 3 of 6
    const plan = await cp.liveness.sweep(0);
    expect(plan.expire).toEqual([]);
    expect(plan.keptInDisruption).toEqual(["n4", "n5", "n6"]);
    expect((await admin.listNodes({})).nodes.every((n) => n.live)).toBe(true);
    const config = await admin.getClusterConfig({});
    expect(config).toMatchObject({ disruption: true, disruptionOverdueNodes: ["n4", "n5", "n6"] });
    for (const n of ["n1", "n2", "n3", "n4", "n5", "n6"]) await node(n).heartbeat({ nodeName: n });
    await cp.liveness.sweep(0);
    expect((await admin.getClusterConfig({})).disruption).toBe(false);
  });

  it("after an outage of ours longer than the TTL, live nodes get a full TTL before anything expires", async () => {
    const { cp, node } = await start();
    await registerAll(node, 3);
    now += 5 * ttlMs; // every replica (or etcd) was down: nobody could heartbeat
    const loop = new ExpiryLoop({ liveness: cp.liveness, clock: () => now, log: pino({ level: "silent" }) }); // a replica starting
    expect((await loop.tick())?.expire).toEqual([]);
    now += ttlMs - 1_000;
    await node("n1").heartbeat({ nodeName: "n1" });
    await node("n2").heartbeat({ nodeName: "n2" });
    expect((await loop.tick())?.expire).toEqual([]);
    now += 2_000; // n3 had its full TTL since the outage and used none of it
    expect((await loop.tick())?.expire).toEqual(["n3"]);
  });
});
