// Registration on Memory stores: how many etcd transactions a burst of new nodes costs (issue 10: 500
// registrations/s take racers that rarely collide).
import { describe, expect, it } from "vitest";
import { createSubnetPool } from "../../../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../../../proto/core/cidr.js";
import { replicaServices } from "../../../support/control-plane.js";
import { openMemoryStores } from "../../../support/memory-stores.js";

describe("Registrar", () => {
  it("64 new nodes registering at once through one replica each get a subnet with their first claim", async () => {
    const stores = openMemoryStores();
    let claims = 0;
    const claim = stores.nodes.claimSubnet.bind(stores.nodes);
    stores.nodes.claimSubnet = async (...args) => {
      claims++;
      return claim(...args);
    };
    const { registrar } = replicaServices(stores);
    const nodes = await Promise.all(
      Array.from({ length: 64 }, (_, i) => registrar.register({ name: `n${i}`, nodeIp: `192.168.1.${i + 1}`, mtu: 1500 })),
    );
    expect(new Set(nodes.map((n) => n.subnet)).size).toBe(64);
    expect(claims).toBe(64);
  });

  it("a burst of 200 new nodes reads the leased and freed subnets once, not once per node (issue 10: O(N²) reads)", async () => {
    const stores = openMemoryStores();
    let reads = 0;
    const read = stores.subnets.readSubnetUse.bind(stores.subnets);
    stores.subnets.readSubnetUse = async () => {
      reads++;
      return read();
    };
    const { registrar } = replicaServices(stores, { subnetUseMaxAgeMs: Number.POSITIVE_INFINITY });
    const nodes = await Promise.all(
      Array.from({ length: 200 }, (_, i) => registrar.register({ name: `n${i}`, nodeIp: `192.168.${i >> 8}.${(i & 255) + 1}`, mtu: 1500 })),
    );
    expect(new Set(nodes.map((n) => n.subnet)).size).toBe(200);
    expect(reads).toBe(1);
  });

  it("replicas choosing from stale views never lease a subnet twice, nor take a just-freed subnet as never used", async () => {
    // A /22 of /24s: 10.244.1.0, .2.0 and .3.0 usable. Neither replica's view is ever read again by age.
    const stores = openMemoryStores();
    const options = { pool: createSubnetPool(Cidr.parse("10.244.0.0/22"), 24), rand: () => 0, subnetUseMaxAgeMs: Number.POSITIVE_INFINITY };
    const a = replicaServices(stores, options).registrar;
    const b = replicaServices(stores, options).registrar;
    const node = (name: string, last: number) => ({ name, nodeIp: `192.168.1.${last}`, mtu: 1500 });
    expect((await a.register(node("a1", 1))).subnet).toBe("10.244.1.0/24"); // a's view: nothing leased
    expect((await b.register(node("b1", 2))).subnet).toBe("10.244.2.0/24"); // b's view: 1.0 leased
    await b.withdraw("b1");
    await b.release("10.244.2.0/24"); // 2.0 freed; a's view still shows it never used
    // a tries 2.0 as never used: the claim fails on its freed record, and the never-used 3.0 comes first.
    expect((await a.register(node("a2", 3))).subnet).toBe("10.244.3.0/24");
    // None left that a's view shows free: a reads again and finds the freed one.
    expect((await a.register(node("a3", 4))).subnet).toBe("10.244.2.0/24");
    const leases = (await stores.subnets.listLeases()).map((l) => `${l.subnet} ${l.nodeName}`).sort();
    expect(leases).toEqual(["10.244.1.0/24 a1", "10.244.2.0/24 a3", "10.244.3.0/24 a2"]);
    await expect(b.register(node("b2", 5))).rejects.toMatchObject({ reason: "EXHAUSTED" });
  });

  it("sequential registrations still get the lowest free subnets, in order", async () => {
    const { registrar } = replicaServices(openMemoryStores());
    const subnets: string[] = [];
    for (let i = 0; i < 3; i++) subnets.push((await registrar.register({ name: `n${i}`, nodeIp: `192.168.1.${i + 1}`, mtu: 1500 })).subnet);
    expect(subnets).toEqual(["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
    expect(Cidr.parse(subnets[0] ?? "").prefixLength).toBe(24);
  });

  it("a drained node stays out while the drained daemon runs, and comes back when it restarts (issue 11)", async () => {
    const { registrar } = replicaServices(openMemoryStores());
    const node = { name: "n1", nodeIp: "192.168.1.11", mtu: 1500 };
    const first = await registrar.register({ ...node, instance: "process-a" });
    // The daemon was restarted while live: the new process is the one a drain holds out.
    await registrar.register({ ...node, instance: "process-b" });
    await registrar.withdraw("n1", "drained");
    await expect(registrar.register({ ...node, instance: "process-b", heldSubnet: first.subnet })).rejects.toMatchObject({
      reason: "CONFLICT",
      message: expect.stringMatching(/drained by an admin .* restart the daemon/),
    });
    const back = await registrar.register({ ...node, instance: "process-c", heldSubnet: first.subnet });
    expect(back).toMatchObject({ live: true, subnet: first.subnet, instance: "process-c" });
  });

  it("holds out only a drain: a node that left by itself or expired registers again from the same process", async () => {
    const { registrar } = replicaServices(openMemoryStores());
    const node = { name: "n1", nodeIp: "192.168.1.11", mtu: 1500, instance: "process-a" };
    for (const reason of ["withdrawn", "expired"] as const) {
      await registrar.register(node);
      await registrar.withdraw("n1", reason);
      expect((await registrar.register(node)).live).toBe(true);
    }
  });
});
