// Issue 10, finding 5 (second half): after etcd was restored from an older snapshot a node's record may be
// gone while its pods still hold addresses of its subnet. The node says which subnet it holds when it
// registers, and gets it back when that subnet is free; never one another node's pods use.
import { create } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Registrar } from "../../control-plane/nodes/registrar.js";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { createSubnetPool } from "../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../proto/core/cidr.js";
import { SubnetReservationRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { namespace, replicaServices } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

let etcd: EtcdHandle;
let store: EtcdStores | undefined;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterEach(async () => {
  store?.close();
});
afterAll(async () => {
  await etcd?.stop();
});

function leaseManager(): Registrar {
  store = openEtcdStores({ endpoints: [etcd.endpoint], root: namespace() });
  const policy = { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33 };
  return replicaServices(store, { pool: createSubnetPool(Cidr.parse("10.244.0.0/16"), 24), policy }).registrar;
}

describe("registration with the subnet the node holds", () => {
  it("a node the control plane does not know gets the subnet it holds back, when it is free", async () => {
    const leases = leaseManager();
    await leases.register({ name: "a", nodeIp: "192.168.1.11", mtu: 1500 });
    const back = await leases.register({ name: "n7", nodeIp: "192.168.1.17", mtu: 1500, heldSubnet: "10.244.7.0/24" });
    expect(back.subnet).toBe("10.244.7.0/24");
  });

  it("one that another node leases now, or that is not a subnet of the cluster, is not handed out twice: the node gets another", async () => {
    const leases = leaseManager();
    const a = await leases.register({ name: "a", nodeIp: "192.168.1.11", mtu: 1500 });
    const b = await leases.register({ name: "b", nodeIp: "192.168.1.12", mtu: 1500, heldSubnet: a.subnet });
    expect(b.subnet).not.toBe(a.subnet);
    const c = await leases.register({ name: "c", nodeIp: "192.168.1.13", mtu: 1500, heldSubnet: "10.99.0.0/24" });
    expect(c.subnet).toMatch(/^10\.244\./);
    const d = await leases.register({ name: "d", nodeIp: "192.168.1.14", mtu: 1500, heldSubnet: "10.244.0.0/23" });
    expect(d.subnet).toMatch(/^10\.244\.\d+\.0\/24$/);
  });
});

describe("node IPs that cannot be a next hop (issue 10, finding 7)", () => {
  it("a loopback address or one inside the pod network is refused at registration, naming the flag", async () => {
    const leases = leaseManager();
    await expect(leases.register({ name: "a", nodeIp: "127.0.0.2", mtu: 1500 })).rejects.toThrow(/loopback address.*--node-ip/);
    await expect(leases.register({ name: "a", nodeIp: "10.244.3.7", mtu: 1500 })).rejects.toThrow(
      /inside the pod network 10\.244\.0\.0\/16/,
    );
  });
});

describe("reservations are part of the claim (issue 10, finding 11)", () => {
  it("a subnet reserved for another node between the read and the claim is not leased to this one", async () => {
    const leases = leaseManager();
    const s = store as EtcdStores;
    // Reserve the subnet the registration chose, just before its claim commits: a reservation made meanwhile.
    const claim = s.nodes.claimSubnet.bind(s.nodes);
    let raced = false;
    s.nodes.claimSubnet = async (lease, node, rev, ip, mine) => {
      if (!raced) {
        raced = true;
        await s.subnets.createReservation(
          create(SubnetReservationRecordSchema, { subnet: lease.subnet, nodeName: "other", createdAtMs: 1n }),
        );
      }
      return claim(lease, node, rev, ip, mine);
    };
    const got = await leases.register({ name: "a", nodeIp: "192.168.1.11", mtu: 1500 });
    expect(raced).toBe(true);
    const reserved = (await s.subnets.listReservations()).map((r) => r.subnet);
    expect(reserved).toHaveLength(1);
    expect(got.subnet).not.toBe(reserved[0]);
    // The node it is reserved for gets it.
    expect((await leases.register({ name: "other", nodeIp: "192.168.1.12", mtu: 1500 })).subnet).toBe(reserved[0]);
  });
});
