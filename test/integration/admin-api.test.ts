import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AdminService, EventKind, type WatchEventsResponse } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { AllocationRecordSchema, AttachmentSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { NodeService, RouteSchema } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { type InProcessControlPlane, namespace, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";
import { run } from "../support/exec.js";
import { root } from "../support/lab.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { waitFor } from "../support/wait.js";

// The operator's admin API against a real etcd, over mutual TLS as in production: through the generated
// client with an admin certificate, and through a reflection client (buf curl), the way operators call it.
// Node calls go out with that node's own joined certificate: a node acts only for itself.
let etcd: EtcdHandle;
let pki: TestPki;
let cp: InProcessControlPlane;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
/** A NodeService client with `name`'s own certificate. */
const node = (name: string) => createClient(NodeService, cp.nodeTransport(name));
beforeAll(async () => {
  [etcd, pki] = await Promise.all([startEtcd(), createTestPki()]);
});
afterAll(async () => {
  await etcd?.stop();
  await pki?.destroy();
});
afterEach(async () => {
  await cp?.stop();
});

async function start() {
  cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root: namespace(), pki });
  admin = createClient(AdminService, cp.adminTransport());
  for (let i = 1; i <= 3; i++) await node(`n${i}`).registerNode({ nodeName: `n${i}`, nodeIp: `192.168.1.${10 + i}`, mtu: 1500 });
}

const allocation = (address: string, containerId: string, podName: string) =>
  create(AllocationRecordSchema, {
    address,
    hostVeth: `tr${containerId.padEnd(11, "0").slice(0, 11)}`,
    createdAtMs: 1n,
    attachment: create(AttachmentSchema, { networkName: "trellis", containerId, ifName: "eth0", podNamespace: "default", podName }),
  });

/** buf curl as the admin, over mutual TLS. */
const buf = (...args: string[]) =>
  run(join(root, "node_modules", ".bin", "buf"), ["curl", "--protocol", "grpc", ...cp.bufCurlFlags(), ...args]);

describe("admin API", () => {
  it("shows the cluster's MTU (the most common among live nodes) and each node whose MTU differs", async () => {
    await start();
    await node("n4").registerNode({ nodeName: "n4", nodeIp: "192.168.1.14", mtu: 9000 });
    const res = await admin.listNodes({});
    expect(res.clusterMtu).toBe(1500);
    expect(Object.fromEntries(res.nodes.map((n) => [n.name, [n.mtu, n.mtuDiffers]]))).toEqual({
      n1: [1500, false],
      n2: [1500, false],
      n3: [1500, false],
      n4: [9000, true],
    });
    expect((await admin.getNode({ name: "n4" })).node?.mtuDiffers).toBe(true);
  });

  it("lists allocations per node and cluster-wide, and says who holds an address", async () => {
    await start();
    await node("n2").recordAllocation({ nodeName: "n2", allocation: allocation("10.244.2.7", "c7", "web-7") });
    await node("n1").recordAllocation({ nodeName: "n1", allocation: allocation("10.244.1.2", "c2", "db-0") });
    expect((await admin.listAllocations({})).allocations.map((a) => [a.nodeName, a.address, a.podName])).toEqual([
      ["n1", "10.244.1.2", "db-0"],
      ["n2", "10.244.2.7", "web-7"],
    ]);
    expect((await admin.listAllocations({ nodeName: "n2" })).allocations.map((a) => a.address)).toEqual(["10.244.2.7"]);
    const who = await admin.lookupAddress({ address: "10.244.2.7" });
    expect(who).toMatchObject({
      subnet: "10.244.2.0/24",
      allocation: { nodeName: "n2", containerId: "c7", podNamespace: "default", podName: "web-7" },
    });
    await expect(admin.lookupAddress({ address: "10.244.2.8" })).rejects.toThrow(
      /no pod holds 10\.244\.2\.8 \(it lies in n2's subnet 10\.244\.2\.0\/24\)/,
    );
    expect((await admin.getNode({ name: "n2" })).node?.pods).toBe(1);
    // a node may only record addresses of its own subnet
    await expect(node("n1").recordAllocation({ nodeName: "n1", allocation: allocation("10.244.2.9", "c9", "x") })).rejects.toThrow(
      /outside n1's subnet/,
    );
  });

  it("SyncAllocations records and releases many at once (more than one etcd transaction), checking every address first", async () => {
    await start();
    const many = Array.from({ length: 150 }, (_, i) => allocation(`10.244.1.${i + 2}`, `s${i}`, `pod-${i}`));
    await node("n1").syncAllocations({ nodeName: "n1", recorded: many, released: [] });
    expect((await admin.listAllocations({ nodeName: "n1" })).allocations).toHaveLength(150);
    await node("n1").syncAllocations({
      nodeName: "n1",
      recorded: [allocation("10.244.1.200", "late", "late")],
      released: many.slice(0, 120).map((a) => a.address),
    });
    expect((await admin.listAllocations({ nodeName: "n1" })).allocations).toHaveLength(31);
    // One bad address refuses the whole call, and nothing of it is written.
    await expect(
      node("n1").syncAllocations({
        nodeName: "n1",
        recorded: [allocation("10.244.1.201", "ok", "ok"), allocation("10.244.2.9", "bad", "bad")],
        released: [],
      }),
    ).rejects.toThrow(/recorded\[1\]\.address 10\.244\.2\.9 is outside n1's subnet/);
    await expect(
      node("n1").syncAllocations({ nodeName: "n1", recorded: [allocation("10.244.1.202", "x", "x")], released: ["10.244.1.202"] }),
    ).rejects.toThrow(/10\.244\.1\.202 both recorded and released/);
    // An address twice in one list would be two writes of one key in one etcd transaction, which etcd refuses.
    await expect(
      node("n1").syncAllocations({
        nodeName: "n1",
        recorded: [allocation("10.244.1.203", "a", "a"), allocation("10.244.1.203", "b", "b")],
        released: [],
      }),
    ).rejects.toThrow(/recorded holds 10\.244\.1\.203 twice/);
    expect((await admin.listAllocations({ nodeName: "n1" })).allocations).toHaveLength(31);
  });

  it("shows a node's routes, desired versus reported, with the difference", async () => {
    await start();
    await node("n1").reportRoutes({
      nodeName: "n1",
      revision: 42n,
      routes: [
        create(RouteSchema, { nodeName: "n2", subnet: "10.244.2.0/24", nodeIp: "192.168.1.12" }),
        create(RouteSchema, { nodeName: "n9", subnet: "10.244.9.0/24", nodeIp: "192.168.1.19" }),
      ],
    });
    const routes = await admin.getRoutes({ nodeName: "n1" });
    expect(routes.desired.map((r) => `${r.dst} via ${r.via}`)).toEqual([
      "10.244.2.0/24 via 192.168.1.12",
      "10.244.3.0/24 via 192.168.1.13",
    ]);
    expect(routes.reportedRevision).toBe(42n);
    expect(routes.missing.map((r) => r.dst)).toEqual(["10.244.3.0/24"]);
    expect(routes.extra.map((r) => r.dst)).toEqual(["10.244.9.0/24"]);
  });

  it("evicts a node, releases a lease, reserves a subnet; every write is visible in WatchEvents", async () => {
    await start();
    const events: WatchEventsResponse[] = [];
    const stop = new AbortController();
    void (async () => {
      for await (const e of admin.watchEvents({}, { signal: stop.signal })) events.push(e);
    })().catch(() => undefined);
    try {
      // the watch starts asynchronously: write until the stream shows a write
      let probe = 0;
      await waitFor(
        "the event stream",
        async () => {
          await node("n1").recordAllocation({
            nodeName: "n1",
            allocation: allocation(`10.244.1.${10 + (probe++ % 200)}`, "probe", "probe"),
          });
          return events.some((e) => e.kind === EventKind.ALLOCATION);
        },
        15_000,
        100,
      );
      await admin.evictNode({ name: "n3" });
      expect((await admin.getNode({ name: "n3" })).node).toMatchObject({ live: false, releasedReason: "evicted", subnet: "10.244.3.0/24" });
      expect((await admin.releaseLease({ subnet: "10.244.3.0/24" })).nodeName).toBe("n3");
      expect((await admin.listLeases({})).leases.map((l) => l.subnet)).toEqual(["10.244.1.0/24", "10.244.2.0/24"]);

      await admin.reserveSubnet({ subnet: "10.244.3.0/24", nodeName: "special" });
      const other = await node("n4").registerNode({ nodeName: "n4", nodeIp: "192.168.1.14", mtu: 1500 });
      expect(other.subnet).toBe("10.244.4.0/24"); // .3 is reserved for someone else
      const special = await node("special").registerNode({ nodeName: "special", nodeIp: "192.168.1.50", mtu: 1500 });
      expect(special.subnet).toBe("10.244.3.0/24");
      expect((await admin.listReservations({})).reservations.map((r) => [r.subnet, r.nodeName])).toEqual([["10.244.3.0/24", "special"]]);

      await waitFor("events", async () => events.some((e) => e.kind === EventKind.RESERVATION));
      const seen = events.map((e) => `${EventKind[e.kind]} ${e.type} ${e.nodeName} ${e.subnet}`);
      expect(seen).toContain("NODE put n3 10.244.3.0/24");
      expect(seen).toContain("NODE delete n3 10.244.3.0/24");
      expect(seen).toContain("LEASE delete n3 10.244.3.0/24");
      expect(seen).toContain("RESERVATION put special 10.244.3.0/24");
    } finally {
      stop.abort();
    }
  });

  it.each([
    [
      "a malformed CIDR",
      () => admin.reserveSubnet({ subnet: "10.244.3/24", nodeName: "x" }),
      /subnet "10\.244\.3\/24" is not an IPv4 CIDR/,
    ],
    [
      "a subnet outside the cluster CIDR",
      () => admin.reserveSubnet({ subnet: "10.9.0.0/24", nodeName: "x" }),
      /not a \/24 node subnet of cluster CIDR/,
    ],
    [
      "a reservation overlapping a live lease",
      () => admin.reserveSubnet({ subnet: "10.244.2.0/24", nodeName: "x" }),
      /overlaps the lease of node n2/,
    ],
    ["a missing field", () => admin.reserveSubnet({ subnet: "10.244.8.0/24", nodeName: "" }), /node_name is required/],
    ["an address outside the cluster", () => admin.lookupAddress({ address: "8.8.8.8" }), /address 8\.8\.8\.8 is outside the cluster CIDR/],
    ["a malformed address", () => admin.lookupAddress({ address: "10.244.1" }), /address "10\.244\.1" is not an IPv4 address/],
  ])("rejects %s with INVALID_ARGUMENT naming the field, and changes nothing", async (_what, call, message) => {
    await start();
    const before = await admin.listReservations({});
    await expect(call()).rejects.toThrow(message);
    await expect(call()).rejects.toMatchObject({ code: 3 });
    expect(await admin.listReservations({})).toEqual(before);
  });

  it.each([
    ["an unknown node", () => admin.getNode({ name: "ghost" })],
    ["evicting an unknown node", () => admin.evictNode({ name: "ghost" })],
    ["draining an unknown node", () => admin.drainNode({ name: "ghost" })],
    ["releasing a subnet nobody leases", () => admin.releaseLease({ subnet: "10.244.77.0/24" })],
  ])("answers NOT_FOUND for %s", async (_what, call) => {
    await start();
    await expect(call()).rejects.toMatchObject({ code: 5 });
  });

  it("lists every admin method through reflection, and answers each unary one (buf curl)", async () => {
    await start();
    await node("n2").recordAllocation({ nodeName: "n2", allocation: allocation("10.244.2.7", "c7", "web-7") });
    const listed = await buf("--list-methods", `https://${cp.address}`);
    for (const m of AdminService.methods) expect(listed.stdout).toContain(`trellis.admin.v1.AdminService/${m.name}`);
    const inputs: Record<string, string> = {
      GetNode: '{"name":"n1"}',
      ListAllocations: "{}",
      LookupAddress: '{"address":"10.244.2.7"}',
      GetRoutes: '{"nodeName":"n1"}',
      ReserveSubnet: '{"subnet":"10.244.9.0/24","nodeName":"n9"}',
      DeleteReservation: '{"subnet":"10.244.9.0/24"}',
      DrainNode: '{"name":"n3"}',
      EvictNode: '{"name":"n3"}',
      CreateJoinToken: '{"nodeName":"n4"}',
      SetRouter: '{"nodeName":"n1","router":false}',
      ReleaseLease: '{"subnet":"10.244.3.0/24"}',
    };
    const order = [
      "ListNodes",
      "GetNode",
      "ListLeases",
      "ListReservations",
      "ListAllocations",
      "LookupAddress",
      "GetRoutes",
      "GetClusterConfig",
      "CreateJoinToken",
      "SetRouter",
      "ReserveSubnet",
      "DeleteReservation",
      "DrainNode",
      "EvictNode",
      "ReleaseLease",
    ];
    const unary = AdminService.methods.filter((m) => m.methodKind === "unary").map((m) => m.name);
    expect([...unary].sort()).toEqual([...order].sort());
    for (const method of order) {
      const res = await buf("-d", inputs[method] ?? "{}", `https://${cp.address}/trellis.admin.v1.AdminService/${method}`);
      expect(res.code, `${method}: ${res.stderr}`).toBe(0);
    }
  });

  it("answers calls through reflection alone (buf curl), errors included", async () => {
    await start();
    await node("n2").recordAllocation({ nodeName: "n2", allocation: allocation("10.244.2.7", "c7", "web-7") });
    const url = (method: string) => `https://${cp.address}/trellis.admin.v1.AdminService/${method}`;
    const lookup = await buf("-d", '{"address":"10.244.2.7"}', url("LookupAddress"));
    expect(lookup.code, lookup.stderr).toBe(0);
    expect(JSON.parse(lookup.stdout)).toMatchObject({ allocation: { nodeName: "n2", podName: "web-7" }, subnet: "10.244.2.0/24" });
    const config = JSON.parse((await buf(url("GetClusterConfig"))).stdout) as Record<string, unknown>;
    expect(config).toMatchObject({ clusterCidr: "10.244.0.0/16", subnetPrefixLength: 24, leaseTtlSeconds: "40" });
    const bad = await buf("-d", '{"subnet":"nope","nodeName":"x"}', url("ReserveSubnet"));
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/invalid_argument/i);
  });
});
