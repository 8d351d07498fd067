import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Registrar } from "../../control-plane/nodes/registrar.js";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { createSubnetPool } from "../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { ReportedRoutesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { namespace, replicaServices, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

// Issue 10, finding 9: "a subnet can be in use twice". A live node's lease is never released from under
// it, and a freed subnet goes to the back of the line (DESIGN.md §2): new nodes get never-used subnets
// while any remain, then freed ones, the one freed longest ago first, so pods that may still hold
// addresses of a just-freed subnet have as long as possible to go.
let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

let store: EtcdStores | undefined;
afterEach(async () => {
  store?.close();
  store = undefined;
});

function leaseManager(clusterCidr = "10.244.0.0/16"): { leases: Registrar; store: EtcdStores } {
  store = openEtcdStores({ endpoints: [etcd.endpoint], root: namespace() });
  const pool = createSubnetPool(Cidr.parse(clusterCidr), 24);
  const policy = { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33 };
  const leases = replicaServices(store, { pool, policy }).registrar;
  return { leases, store };
}

async function registerAll(leases: Registrar, names: readonly string[]): Promise<Map<string, string>> {
  const subnets = new Map<string, string>();
  for (const [i, name] of names.entries()) {
    subnets.set(name, (await leases.register({ name, nodeIp: `192.168.1.${11 + i}`, mtu: 1500 })).subnet);
  }
  return subnets;
}

/** Takes `name` out (EvictNode), then frees its subnet (ReleaseLease), as an operator does. */
async function evictAndRelease(leases: Registrar, subnet: string, name: string): Promise<void> {
  await leases.withdraw(name, "evicted");
  expect(await leases.release(subnet)).toBe(name);
}

const subnetOf = async (leases: Registrar, name: string, ip: string) => (await leases.register({ name, nodeIp: ip, mtu: 1500 })).subnet;

describe("ReleaseLease frees only the subnet of a node that is not live", () => {
  it("refuses a live node's lease with CONFLICT, saying to drain or evict it first, and changes nothing", async () => {
    const { leases, store } = leaseManager();
    const subnets = await registerAll(leases, ["n1", "n2", "n3"]);
    const before = { leases: await store.subnets.listLeases(), n2: await store.nodes.findNode("n2") };
    const err = await leases.release(subnets.get("n2") ?? "").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TrellisError);
    expect(err).toMatchObject({ reason: "CONFLICT" });
    expect((err as Error).message).toMatch(
      /10\.244\.2\.0\/24 is leased by n2, which is live: drain it \(DrainNode\) or evict it \(EvictNode\) first, then release/,
    );
    expect(await store.subnets.listLeases()).toEqual(before.leases);
    expect(await store.nodes.findNode("n2")).toEqual(before.n2);
  });

  it.each(["evicted", "withdrawn"] as const)("releases the lease of a %s node", async (reason) => {
    const { leases, store } = leaseManager();
    const subnets = await registerAll(leases, ["n1", "n2"]);
    await leases.withdraw("n2", reason);
    expect(await leases.release(subnets.get("n2") ?? "")).toBe("n2");
    expect((await store.subnets.listLeases()).map((l) => l.nodeName)).toEqual(["n1"]);
    expect(await store.nodes.findNode("n2")).toBeUndefined();
  });

  it("through the admin API: a live node's lease is refused (ABORTED), then released once the node is evicted", async () => {
    const cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root: namespace() });
    try {
      const admin = createClient(AdminService, cp.adminTransport());
      const { subnet } = await createClient(NodeService, cp.nodeTransport("n1")).registerNode({
        nodeName: "n1",
        nodeIp: "192.168.1.11",
        mtu: 1500,
      });
      await expect(admin.releaseLease({ subnet })).rejects.toMatchObject({ code: 10 });
      await expect(admin.releaseLease({ subnet })).rejects.toThrow(
        /n1, which is live: drain it \(DrainNode\) or evict it \(EvictNode\) first, then release/,
      );
      expect((await admin.listLeases({})).leases.map((l) => l.subnet)).toEqual([subnet]);
      await admin.evictNode({ name: "n1" });
      expect((await admin.releaseLease({ subnet })).nodeName).toBe("n1");
      expect((await admin.listLeases({})).leases).toEqual([]);
    } finally {
      await cp.stop();
    }
  });
});

describe("a freed subnet goes to the back of the line", () => {
  it("the next new node gets a never-used subnet, not the one just freed", async () => {
    const { leases } = leaseManager();
    const subnets = await registerAll(leases, ["n1", "n2", "n3"]);
    await evictAndRelease(leases, subnets.get("n2") ?? "", "n2");
    expect(await subnetOf(leases, "n4", "192.168.1.14")).toBe("10.244.4.0/24");
    expect(await subnetOf(leases, "n5", "192.168.1.15")).toBe("10.244.5.0/24");
  });

  it("with only freed subnets left, the one freed longest ago comes first; a re-leased subnet freed again goes last", async () => {
    // 10.244.0.0/22 in /24s: .1, .2 and .3 (the first subnet stays unused)
    const { leases } = leaseManager("10.244.0.0/22");
    const subnets = await registerAll(leases, ["n1", "n2", "n3"]);
    expect([...subnets.values()]).toEqual(["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
    await evictAndRelease(leases, "10.244.3.0/24", "n3");
    await evictAndRelease(leases, "10.244.1.0/24", "n1");
    await evictAndRelease(leases, "10.244.2.0/24", "n2");
    expect(await subnetOf(leases, "n4", "192.168.1.14")).toBe("10.244.3.0/24");
    await evictAndRelease(leases, "10.244.3.0/24", "n4"); // freed again: now the newest
    expect(await subnetOf(leases, "n5", "192.168.1.15")).toBe("10.244.1.0/24");
    expect(await subnetOf(leases, "n6", "192.168.1.16")).toBe("10.244.2.0/24");
    expect(await subnetOf(leases, "n7", "192.168.1.17")).toBe("10.244.3.0/24");
    await expect(leases.register({ name: "n8", nodeIp: "192.168.1.18", mtu: 1500 })).rejects.toMatchObject({ reason: "EXHAUSTED" });
  });

  it("registrations racing for the freed subnets still get distinct ones", async () => {
    const { leases, store } = leaseManager("10.244.0.0/20"); // 15 usable subnets
    const names = Array.from({ length: 15 }, (_, i) => `n${i}`);
    const subnets = await registerAll(leases, names);
    for (const name of names.slice(0, 10)) await evictAndRelease(leases, subnets.get(name) ?? "", name);
    const got = await Promise.all(Array.from({ length: 10 }, (_, i) => subnetOf(leases, `m${i}`, `192.168.2.${i + 1}`)));
    expect(new Set(got).size).toBe(10);
    expect((await store.subnets.listLeases()).map((l) => l.subnet).sort()).toEqual([...subnets.values()].sort());
  });
});

describe("a released node leaves nothing behind (issue 10, finding 10)", () => {
  it("its mirrored allocations and its route report go with its lease", async () => {
    const { leases, store } = leaseManager();
    const subnets = await registerAll(leases, ["n1", "n2"]);
    const record = create(AllocationRecordSchema, { address: "10.244.2.5", hostVeth: "tr00000000001" });
    await store.allocations.applyAllocations("n2", [record], []);
    const put = await store.routeReports.putReportedRoutes("n2", create(ReportedRoutesRecordSchema, { revision: 1n, routeCount: 1 }), 0n);
    expect(put.written).toBe(true);
    await store.allocations.applyAllocations(
      "n1",
      [create(AllocationRecordSchema, { address: "10.244.1.5", hostVeth: "tr00000000002" })],
      [],
    );
    await evictAndRelease(leases, subnets.get("n2") ?? "", "n2");
    expect(await store.allocations.listAllocations("n2")).toEqual([]);
    expect(await store.routeReports.findReportedRoutes("n2")).toBeUndefined();
    expect((await store.allocations.listAllocations("n1")).map((a) => a.record.address)).toEqual(["10.244.1.5"]);
  });
});
