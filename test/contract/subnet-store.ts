// The contract of SubnetStore (control-plane/store/subnet-store.ts), run on the Memory stores (unit) and on
// etcd (integration): reservations created once, leases as NodeStore's transactions leave them.
// EtcdSubnetStore is the reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { Stores } from "../../control-plane/store/stores.js";
import { type SubnetReservationRecord, SubnetReservationRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { leaseRecord, registerNode } from "./node-store.js";

const reservation = (subnet: string, nodeName: string, createdAtMs = 5n) =>
  create(SubnetReservationRecordSchema, { subnet, nodeName, createdAtMs });
const bySubnet = (rs: SubnetReservationRecord[]) => [...rs].sort((p, q) => p.subnet.localeCompare(q.subnet));

export function describeSubnetStoreContract(name: string, make: () => Promise<Stores>): void {
  describe(`SubnetStore contract: ${name}`, () => {
    it("a reservation is created once per subnet, listed, and deleted; deleting one that is gone succeeds", async () => {
      const s = await make();
      expect(await s.subnets.listReservations()).toEqual([]);
      expect(await s.subnets.createReservation(reservation("10.244.2.0/24", "a"))).toBe(true);
      expect(await s.subnets.createReservation(reservation("10.244.2.0/24", "b", 6n))).toBe(false);
      expect(await s.subnets.createReservation(reservation("10.244.10.0/24", "b"))).toBe(true);
      expect(bySubnet(await s.subnets.listReservations())).toEqual([reservation("10.244.10.0/24", "b"), reservation("10.244.2.0/24", "a")]);
      await s.subnets.deleteReservation("10.244.2.0/24");
      expect(await s.subnets.listReservations()).toEqual([reservation("10.244.10.0/24", "b")]);
      await expect(s.subnets.deleteReservation("10.244.2.0/24")).resolves.toBeUndefined();
      expect(await s.subnets.createReservation(reservation("10.244.2.0/24", "c"))).toBe(true);
      expect(bySubnet(await s.subnets.listReservations()).map((r) => r.nodeName)).toEqual(["b", "c"]);
    });

    it("two reservations of one subnet, racing: exactly one is created", async () => {
      const s = await make();
      const results = await Promise.all(["a", "b"].map((n) => s.subnets.createReservation(reservation("10.244.7.0/24", n))));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect((await s.subnets.listReservations()).map((r) => r.nodeName)).toEqual([results[0] ? "a" : "b"]);
    });

    it.each([
      { call: "createReservation", run: (s: Stores) => s.subnets.createReservation(reservation("10.244.3.7/24", "a")) },
      { call: "deleteReservation", run: (s: Stores) => s.subnets.deleteReservation("not a subnet") },
    ])("$call of a malformed subnet is INVALID_ARGUMENT", async ({ run }) => {
      const s = await make();
      await expect(run(s)).rejects.toMatchObject({ reason: "INVALID_ARGUMENT" });
      expect(await s.subnets.listReservations()).toEqual([]);
    });

    it("listLeases holds the lease of every registered node, and not a removed one's", async () => {
      const s = await make();
      expect(await s.subnets.listLeases()).toEqual([]);
      const a = await registerNode(s, "a", "192.168.1.11", "10.244.1.0/24");
      await registerNode(s, "b", "192.168.1.12", "10.244.2.0/24");
      const leases = [...(await s.subnets.listLeases())].sort((p, q) => p.subnet.localeCompare(q.subnet));
      expect(leases).toEqual([leaseRecord("10.244.1.0/24", "a"), leaseRecord("10.244.2.0/24", "b")]);
      expect(await s.nodes.removeNode(a.value, a.modRevision)).toBe(true);
      expect(await s.subnets.listLeases()).toEqual([leaseRecord("10.244.2.0/24", "b")]);
    });
  });
}
