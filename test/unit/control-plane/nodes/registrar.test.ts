// Registration on Memory stores: how many etcd transactions a burst of new nodes costs (issue 10: 500
// registrations/s take racers that rarely collide).
import { describe, expect, it } from "vitest";
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
