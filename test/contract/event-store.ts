// The contract of EventStore (control-plane/store/event-store.ts), run on the Memory stores (unit) and on
// etcd (integration): what operators watch, from the moment they start watching. EtcdEventStore is the
// reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { ClusterEvent } from "../../control-plane/store/event-store.js";
import type { Stores } from "../../control-plane/store/stores.js";
import { AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { ReportedRoutesRecordSchema, SubnetReservationRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { waitFor } from "../support/wait.js";
import { changeNode, registerNode } from "./node-store.js";

const reservation = (subnet: string, nodeName: string) => create(SubnetReservationRecordSchema, { subnet, nodeName, createdAtMs: 5n });
const describeEvent = (e: ClusterEvent) => `${e.kind} ${e.type} node=${e.nodeName} subnet=${e.subnet} address=${e.address} live=${e.live}`;

export function describeEventStoreContract(name: string, make: () => Promise<Stores>): void {
  describe(`EventStore contract: ${name}`, () => {
    it("delivers every node, lease, allocation and reservation change from the start on, in order, with what it was about", async () => {
      const s = await make();
      await s.subnets.createReservation(reservation("10.244.8.0/24", "before")); // before the watch: not delivered
      const events: ClusterEvent[] = [];
      const lost: Error[] = [];
      const stop = new AbortController();
      await s.events.watchEvents(
        (e) => events.push(e),
        stop.signal,
        (err) => lost.push(err),
      );
      try {
        await s.subnets.createReservation(reservation("10.244.3.0/24", "c"));
        const a = await registerNode(s, "a", "192.168.1.11", "10.244.1.0/24");
        await s.liveness.putHeartbeats(new Map([["a", 1n]])); // heartbeats, node-IP entries, freed subnets: no events
        await s.allocations.putAllocation("a", create(AllocationRecordSchema, { address: "10.244.1.5" }));
        await s.routeReports.putReportedRoutes("a", create(ReportedRoutesRecordSchema, { revision: 1n }), 0n); // nor route reports
        const gone = await changeNode(s, "a", { live: false });
        const back = await changeNode(s, "a", { live: true });
        await s.subnets.deleteReservation("10.244.3.0/24");
        expect(await s.nodes.removeNode(back.value, back.modRevision)).toBe(true); // live: its delete event says not live
        await s.subnets.createReservation(reservation("10.244.9.0/24", "z"));
        await waitFor("the last event", async () => events.some((e) => e.nodeName === "z"));
        expect(events.map(describeEvent)).toEqual([
          "reservation put node=c subnet=10.244.3.0/24 address= live=false",
          "lease put node=a subnet=10.244.1.0/24 address= live=false",
          "node put node=a subnet=10.244.1.0/24 address= live=true",
          "allocation put node=a subnet= address=10.244.1.5 live=false",
          "node put node=a subnet=10.244.1.0/24 address= live=false",
          "node put node=a subnet=10.244.1.0/24 address= live=true",
          "reservation delete node=c subnet=10.244.3.0/24 address= live=false",
          "node delete node=a subnet=10.244.1.0/24 address= live=false",
          "lease delete node=a subnet=10.244.1.0/24 address= live=false",
          "allocation delete node=a subnet= address=10.244.1.5 live=false",
          "reservation put node=z subnet=10.244.9.0/24 address= live=false",
        ]);
        const revisions = events.map((e) => e.revision);
        expect(revisions[1]).toBe(a.modRevision); // the claim's lease and node: one transaction
        expect(revisions[2]).toBe(a.modRevision);
        expect(revisions[4]).toBe(gone.modRevision);
        expect(revisions[5]).toBe(back.modRevision);
        expect(new Set(revisions.slice(7, 10)).size).toBe(1); // the removal: one transaction
        for (let i = 1; i < revisions.length; i++) expect(revisions[i]).toBeGreaterThanOrEqual(revisions[i - 1]!);
        expect(revisions[7]).toBeGreaterThan(revisions[6]!);
        expect(lost).toEqual([]);
      } finally {
        stop.abort();
      }
    });
  });
}
