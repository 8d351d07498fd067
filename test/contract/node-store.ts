// The contract of NodeStore (control-plane/store/node-store.ts), run on the Memory stores (unit) and on etcd
// (integration). It takes every store port, since a registration's and a removal's transactions span
// aggregates (leases, reservations, heartbeats, allocations, route reports). EtcdNodeStore is the reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { NodeChange, NodeIpClaim, NodeWatchBatch } from "../../control-plane/store/node-store.js";
import type { Stores } from "../../control-plane/store/stores.js";
import type { Versioned } from "../../control-plane/store/versioned.js";
import { AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import {
  type NodeRecord,
  NodeRecordSchema,
  ReportedRoutesRecordSchema,
  type SubnetLeaseRecord,
  SubnetLeaseRecordSchema,
  SubnetReservationRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { waitFor } from "../support/wait.js";

/** The stores under test, and a compaction of their history up to now (EtcdCompactor; MemoryStores.compact). */
export interface CompactableStores extends Stores {
  compact(): Promise<void>;
}

const [S1, S2, S3] = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"];
const [IP1, IP2, IP3] = ["192.168.1.11", "192.168.1.12", "192.168.1.13"];

/** Fields of a node record to set. */
export type NodeFields = Partial<Omit<NodeRecord, "$typeName" | "$unknown">>;
export const nodeRecord = (name: string, nodeIp: string, subnet: string, fields: NodeFields = {}): NodeRecord =>
  create(NodeRecordSchema, { name, nodeIp, subnet, mtu: 1500, live: true, registeredAtMs: 1_700_000_000_000n, ...fields });
export const leaseRecord = (subnet: string, nodeName: string): SubnetLeaseRecord =>
  create(SubnetLeaseRecordSchema, { subnet, nodeName, leasedAtMs: 1_700_000_000_000n });
const reservation = (subnet: string, nodeName: string) => create(SubnetReservationRecordSchema, { subnet, nodeName, createdAtMs: 5n });

/** Registers a new node as a registration does (read its view, claim `subnet`); returns its record as stored. */
export async function registerNode(stores: Stores, name: string, nodeIp: string, subnet: string): Promise<Versioned<NodeRecord>> {
  const view = await stores.nodes.readRegistration(name, nodeIp);
  const claimed = await stores.nodes.claimSubnet(leaseRecord(subnet, name), nodeRecord(name, nodeIp, subnet), 0n, { entry: view.nodeIp });
  if (!claimed) throw new Error(`test setup: could not register ${name}`);
  return current(stores, name);
}

/** Node `name`'s record as stored now; throws when it has none. */
export async function current(stores: Stores, name: string): Promise<Versioned<NodeRecord>> {
  const found = await stores.nodes.findNode(name);
  if (!found) throw new Error(`test setup: node ${name} has no record`);
  return found;
}

/** Rewrites node `name`'s record with `fields` (no node-IP claim); returns it as stored. */
export async function changeNode(stores: Stores, name: string, fields: NodeFields): Promise<Versioned<NodeRecord>> {
  const before = await current(stores, name);
  if (!(await stores.nodes.updateNode(create(NodeRecordSchema, { ...before.value, ...fields }), before.modRevision))) {
    throw new Error(`test setup: could not update ${name}`);
  }
  return current(stores, name);
}

/** What a refused write must have left alone. */
async function state(stores: Stores, ips: readonly string[]) {
  return {
    nodes: (await stores.nodes.listNodes()).nodes,
    leases: await stores.subnets.listLeases(),
    ips: await Promise.all(ips.map((ip) => stores.nodes.findNodeByIp(ip))),
  };
}

/** The changes of every batch, in order, once `until` holds of them. */
async function collect(batches: NodeWatchBatch[], until: (changes: NodeChange[]) => boolean): Promise<NodeChange[]> {
  return waitFor("node changes", async () => {
    const changes = batches.flatMap((b) => b.changes);
    return until(changes) && changes;
  });
}

const describeChange = (c: NodeChange) => (c.type === "put" ? `put ${c.name} ${c.node?.subnet} live=${c.node?.live}` : `delete ${c.name}`);

export function describeNodeStoreContract(name: string, make: () => Promise<CompactableStores>): void {
  describe(`NodeStore contract: ${name}`, () => {
    describe("claimSubnet", () => {
      it("writes the lease, the node and its node-IP entry at one revision, and every reader reads them back", async () => {
        const s = await make();
        const view = await s.nodes.readRegistration("a", IP1);
        expect(view).toEqual({ nodeIp: { ip: IP1, modRevision: 0n }, reservations: [] });
        expect(await s.nodes.claimSubnet(leaseRecord(S1, "a"), nodeRecord("a", IP1, S1), 0n, { entry: view.nodeIp })).toBe(true);
        const a = await current(s, "a");
        expect(a.value).toEqual(nodeRecord("a", IP1, S1));
        expect(a.modRevision).toBeGreaterThan(0n);
        expect(await s.nodes.findNodeByIp(IP1)).toBe("a");
        expect(await s.subnets.listLeases()).toEqual([leaseRecord(S1, "a")]);
        // A known node reads its record and no choice; its entry was written in the same transaction.
        expect(await s.nodes.readRegistration("a", IP1)).toEqual({
          node: a,
          nodeIp: { ip: IP1, nodeName: "a", modRevision: a.modRevision },
        });
        const snapshot = await s.nodes.listNodes();
        expect(snapshot.nodes).toEqual([a.value]);
        expect(snapshot.revision).toBeGreaterThanOrEqual(a.modRevision);
        expect(await s.nodes.findNode("ghost")).toBeUndefined();
        expect(await s.nodes.findNodeByIp(IP2)).toBeUndefined();
      });

      it.each([
        { race: "one subnet, two nodes", claims: [["a", IP1, S1] as const, ["b", IP2, S1] as const] },
        { race: "one node name, two subnets", claims: [["a", IP1, S1] as const, ["a", IP1, S2] as const] },
        { race: "one address, two nodes", claims: [["a", IP1, S1] as const, ["b", IP1, S2] as const] },
      ])("two claims decided on one view, racing ($race): exactly one wins", async ({ claims }) => {
        const s = await make();
        const views = await Promise.all(claims.map(([n, ip]) => s.nodes.readRegistration(n, ip)));
        const won = await Promise.all(
          claims.map(([n, ip, subnet], i) =>
            s.nodes.claimSubnet(leaseRecord(subnet, n), nodeRecord(n, ip, subnet), 0n, { entry: views[i]!.nodeIp }),
          ),
        );
        expect(won.filter(Boolean)).toHaveLength(1);
        const [n, ip, subnet] = claims[won.indexOf(true)]!;
        expect(await s.subnets.listLeases()).toEqual([leaseRecord(subnet, n)]);
        expect((await s.nodes.listNodes()).nodes).toEqual([nodeRecord(n, ip, subnet)]);
        expect(await s.nodes.findNodeByIp(ip)).toBe(n);
        const [, otherIp] = claims[1 - won.indexOf(true)]!;
        if (otherIp !== ip) expect(await s.nodes.findNodeByIp(otherIp)).toBeUndefined();
      });

      type Claim = { lease: SubnetLeaseRecord; node: NodeRecord; nodeModRevision: bigint; ip: NodeIpClaim };
      it.each<{ changed: string; setup: (s: Stores) => Promise<Claim> }>([
        {
          changed: "the subnet was leased to another node",
          setup: async (s) => {
            const view = await s.nodes.readRegistration("a", IP1);
            await registerNode(s, "b", IP2, S1);
            return { lease: leaseRecord(S1, "a"), node: nodeRecord("a", IP1, S1), nodeModRevision: 0n, ip: { entry: view.nodeIp } };
          },
        },
        {
          changed: "the node record appeared (read as absent)",
          setup: async (s) => {
            const view = await s.nodes.readRegistration("a", IP1);
            await registerNode(s, "a", IP2, S2); // at another address: only the record's compare fails
            return { lease: leaseRecord(S1, "a"), node: nodeRecord("a", IP1, S1), nodeModRevision: 0n, ip: { entry: view.nodeIp } };
          },
        },
        {
          changed: "the node record changed since its mod revision",
          setup: async (s) => {
            const a = await registerNode(s, "a", IP1, S1);
            const view = await s.nodes.readRegistration("a", IP1);
            await changeNode(s, "a", { router: true });
            return {
              lease: leaseRecord(S2, "a"),
              node: nodeRecord("a", IP1, S2),
              nodeModRevision: a.modRevision,
              ip: { entry: view.nodeIp },
            };
          },
        },
        {
          changed: "another node took the address (node-IP entry)",
          setup: async (s) => {
            const view = await s.nodes.readRegistration("a", IP1);
            await registerNode(s, "b", IP1, S2);
            return { lease: leaseRecord(S1, "a"), node: nodeRecord("a", IP1, S1), nodeModRevision: 0n, ip: { entry: view.nodeIp } };
          },
        },
        {
          changed: "the displaced node came back",
          setup: async (s) => {
            await registerNode(s, "old", IP1, S1);
            const gone = await changeNode(s, "old", { live: false });
            const view = await s.nodes.readRegistration("new", IP1);
            await changeNode(s, "old", { live: true });
            const ip = { entry: view.nodeIp, displaced: { name: "old", modRevision: gone.modRevision } };
            return { lease: leaseRecord(S2, "new"), node: nodeRecord("new", IP1, S2), nodeModRevision: 0n, ip };
          },
        },
        {
          changed: "the subnet was reserved",
          setup: async (s) => {
            const view = await s.nodes.readRegistration("a", IP1);
            await s.subnets.createReservation(reservation(S1, "other"));
            return { lease: leaseRecord(S1, "a"), node: nodeRecord("a", IP1, S1), nodeModRevision: 0n, ip: { entry: view.nodeIp } };
          },
        },
      ])("is refused and writes nothing when $changed", async ({ setup }) => {
        const s = await make();
        const claim = await setup(s);
        const before = await state(s, [IP1, IP2]);
        expect(await s.nodes.claimSubnet(claim.lease, claim.node, claim.nodeModRevision, claim.ip)).toBe(false);
        expect(await state(s, [IP1, IP2])).toEqual(before);
      });

      it("of a subnet reserved for the claiming node succeeds with reservedForNode", async () => {
        const s = await make();
        await s.subnets.createReservation(reservation(S1, "a"));
        const view = await s.nodes.readRegistration("a", IP1);
        const reservedForNode = { reservedForNode: true };
        expect(await s.nodes.claimSubnet(leaseRecord(S1, "a"), nodeRecord("a", IP1, S1), 0n, { entry: view.nodeIp }, reservedForNode)).toBe(
          true,
        );
        expect(await s.subnets.listLeases()).toEqual([leaseRecord(S1, "a")]);
      });

      it("takes over the address of a node that is not live while that node stays unchanged", async () => {
        const s = await make();
        await registerNode(s, "old", IP1, S1);
        const gone = await changeNode(s, "old", { live: false });
        const view = await s.nodes.readRegistration("new", IP1);
        expect(view.nodeIp).toMatchObject({ ip: IP1, nodeName: "old" });
        const ip = { entry: view.nodeIp, displaced: { name: "old", modRevision: gone.modRevision } };
        expect(await s.nodes.claimSubnet(leaseRecord(S2, "new"), nodeRecord("new", IP1, S2), 0n, ip)).toBe(true);
        expect(await s.nodes.findNodeByIp(IP1)).toBe("new");
        expect(await s.nodes.findNode("old")).toEqual(gone);
      });

      it("takes its subnet out of the freed subnets", async () => {
        const s = await make();
        const a = await registerNode(s, "a", IP1, S1);
        expect(await s.nodes.removeNode(a.value, a.modRevision)).toBe(true);
        const view = await s.nodes.readRegistration("b", IP2);
        expect((await s.subnets.readSubnetUse()).freedSubnets.map((f) => f.subnet)).toEqual([S1]);
        expect(await s.nodes.claimSubnet(leaseRecord(S1, "b"), nodeRecord("b", IP2, S1), 0n, { entry: view.nodeIp })).toBe(true);
        expect(await s.subnets.readSubnetUse()).toEqual({ leasedSubnets: [S1], freedSubnets: [] });
      });

      it("made as never used fails while the subnet is freed (a cached view missed its lease and release)", async () => {
        const s = await make();
        const a = await registerNode(s, "a", IP1, S1);
        expect(await s.nodes.removeNode(a.value, a.modRevision)).toBe(true);
        const view = await s.nodes.readRegistration("b", IP2);
        const claim = (neverUsed: boolean) =>
          s.nodes.claimSubnet(leaseRecord(S1, "b"), nodeRecord("b", IP2, S1), 0n, { entry: view.nodeIp }, { neverUsed });
        expect(await claim(true)).toBe(false);
        expect(await s.subnets.listLeases()).toEqual([]);
        expect(await claim(false)).toBe(true);
      });

      it("with an index entry read for another address is a bug: INTERNAL, and nothing is written", async () => {
        const s = await make();
        const view = await s.nodes.readRegistration("a", IP2);
        await expect(s.nodes.claimSubnet(leaseRecord(S1, "a"), nodeRecord("a", IP1, S1), 0n, { entry: view.nodeIp })).rejects.toMatchObject(
          {
            reason: "INTERNAL",
          },
        );
        expect(await s.subnets.listLeases()).toEqual([]);
      });
    });

    describe("readRegistration", () => {
      it("reads, for a new node, the reservations; SubnetStore.readSubnetUse the leased and freed subnets with the revisions that freed them", async () => {
        const s = await make();
        await registerNode(s, "a", IP1, S1);
        const b = await registerNode(s, "b", IP2, S2);
        await s.subnets.createReservation(reservation(S3, "c"));
        expect(await s.nodes.removeNode(b.value, b.modRevision)).toBe(true);
        const view = await s.nodes.readRegistration("c", IP2);
        expect(view).toEqual({ nodeIp: { ip: IP2, modRevision: 0n }, reservations: [reservation(S3, "c")] });
        const use = await s.subnets.readSubnetUse();
        expect(use.leasedSubnets).toEqual([S1]);
        expect(use.freedSubnets).toHaveLength(1);
        expect(use.freedSubnets[0]?.subnet).toBe(S2);
        expect(use.freedSubnets[0]?.freedRevision).toBeGreaterThan(b.modRevision);
        // A known node reads no lists, however many there are.
        const known = await s.nodes.readRegistration("a", IP1);
        expect(known.reservations).toBeUndefined();
        expect(known.node?.value.name).toBe("a");
      });
    });

    describe("updateNode", () => {
      it("writes only over the mod revision it was given: a stale writer loses", async () => {
        const s = await make();
        const a = await registerNode(s, "a", IP1, S1);
        expect(await s.nodes.updateNode(nodeRecord("a", IP1, S1, { router: true }), a.modRevision)).toBe(true);
        const after = await current(s, "a");
        expect(after.value.router).toBe(true);
        expect(after.modRevision).toBeGreaterThan(a.modRevision);
        expect(await s.nodes.updateNode(nodeRecord("a", IP1, S1, { live: false }), a.modRevision)).toBe(false);
        expect(await s.nodes.updateNode(nodeRecord("a", IP1, S1, { live: false }), after.modRevision + 1_000n)).toBe(false);
        expect(await current(s, "a")).toEqual(after);
        expect(await s.nodes.updateNode(nodeRecord("ghost", IP2, S2), after.modRevision)).toBe(false); // absent: only 0n holds
        expect(await s.nodes.findNode("ghost")).toBeUndefined();
      });

      it.each([
        { move: "to a free address", takenBy: undefined, left: undefined },
        { move: "away from an address another node took meanwhile", takenBy: "b", left: "b" },
      ])(
        "with a node-IP claim, moving $move: the new entry names it; the old one goes only if it still named it",
        async ({ takenBy, left }) => {
          const s = await make();
          await registerNode(s, "a", IP1, S1);
          const gone = await changeNode(s, "a", { live: false });
          if (takenBy) {
            const view = await s.nodes.readRegistration(takenBy, IP1);
            const ip = { entry: view.nodeIp, displaced: { name: "a", modRevision: gone.modRevision } };
            expect(await s.nodes.claimSubnet(leaseRecord(S2, takenBy), nodeRecord(takenBy, IP1, S2), 0n, ip)).toBe(true);
          }
          const view = await s.nodes.readRegistration("a", IP3);
          const ip = { entry: view.nodeIp, previousIp: IP1 };
          expect(await s.nodes.updateNode(nodeRecord("a", IP3, S1), view.node?.modRevision ?? 0n, ip)).toBe(true);
          expect(await s.nodes.findNodeByIp(IP3)).toBe("a");
          expect(await s.nodes.findNodeByIp(IP1)).toBe(left);
          expect((await current(s, "a")).value).toEqual(nodeRecord("a", IP3, S1));
        },
      );

      it("with a node-IP claim at its own address leaves the entry as it was", async () => {
        const s = await make();
        await registerNode(s, "a", IP1, S1);
        await changeNode(s, "a", { live: false });
        const view = await s.nodes.readRegistration("a", IP1);
        expect(view.nodeIp.nodeName).toBe("a");
        const ip = { entry: view.nodeIp, previousIp: IP1 };
        expect(await s.nodes.updateNode(nodeRecord("a", IP1, S1), view.node?.modRevision ?? 0n, ip)).toBe(true);
        expect((await s.nodes.readRegistration("a", IP1)).nodeIp).toEqual(view.nodeIp);
        expect((await current(s, "a")).value.live).toBe(true);
      });

      it.each<{ changed: string; change: (s: Stores) => Promise<unknown>; displaced: boolean }>([
        { changed: "another node took the address", change: (s) => registerNode(s, "b", IP2, S2), displaced: false },
        { changed: "the displaced node came back", change: (s) => changeNode(s, "c", { live: true }), displaced: true },
      ])("with a node-IP claim is refused and writes nothing when $changed", async ({ change, displaced }) => {
        const s = await make();
        await registerNode(s, "a", IP1, S1);
        await changeNode(s, "a", { live: false });
        if (displaced) {
          await registerNode(s, "c", IP2, S3);
          await changeNode(s, "c", { live: false });
        }
        const view = await s.nodes.readRegistration("a", IP2);
        const c = displaced ? await current(s, "c") : undefined;
        const ip: NodeIpClaim = {
          entry: view.nodeIp,
          previousIp: IP1,
          ...(c ? { displaced: { name: "c", modRevision: c.modRevision } } : {}),
        };
        await change(s);
        const before = await state(s, [IP1, IP2]);
        expect(await s.nodes.updateNode(nodeRecord("a", IP2, S1), view.node?.modRevision ?? 0n, ip)).toBe(false);
        expect(await state(s, [IP1, IP2])).toEqual(before);
      });

      it("with an index entry read for another address is a bug: INTERNAL", async () => {
        const s = await make();
        const a = await registerNode(s, "a", IP1, S1);
        const view = await s.nodes.readRegistration("a", IP1);
        await expect(s.nodes.updateNode(nodeRecord("a", IP2, S1), a.modRevision, { entry: view.nodeIp })).rejects.toMatchObject({
          reason: "INTERNAL",
        });
        expect(await current(s, "a")).toEqual(a);
      });
    });

    describe("removeNode", () => {
      it("deletes the node's record, lease, heartbeat, allocations, route report and node-IP entry, and no other node's", async () => {
        const s = await make();
        const a = await registerNode(s, "a", IP1, S1);
        await registerNode(s, "b", IP2, S2);
        for (const n of ["a", "b"]) {
          await s.liveness.putHeartbeats(new Map([[n, 1n]]));
          const put = await s.routeReports.putReportedRoutes(n, create(ReportedRoutesRecordSchema, { revision: 1n, routeCount: 1 }), 0n);
          expect(put.written).toBe(true);
        }
        const alloc = (address: string) => create(AllocationRecordSchema, { address, hostVeth: "tr00000000001" });
        await s.allocations.applyAllocations("a", [alloc("10.244.1.5"), alloc("10.244.1.6")], []);
        await s.allocations.putAllocation("b", alloc("10.244.2.5"));
        await s.allocations.putAllocation("ab", alloc("10.244.9.5")); // a name that begins with "a"
        expect(await s.nodes.removeNode(a.value, a.modRevision)).toBe(true);
        expect(await s.nodes.findNode("a")).toBeUndefined();
        expect(await s.subnets.listLeases()).toEqual([leaseRecord(S2, "b")]);
        expect([...(await s.liveness.listHeartbeats()).keys()]).toEqual(["b"]);
        expect((await s.allocations.listAllocations()).map((x) => `${x.node}/${x.record.address}`)).toEqual([
          "ab/10.244.9.5",
          "b/10.244.2.5",
        ]);
        expect(await s.routeReports.findReportedRoutes("a")).toBeUndefined();
        expect([...(await s.routeReports.listReportedRoutes()).keys()]).toEqual(["b"]);
        expect(await s.nodes.findNodeByIp(IP1)).toBeUndefined();
        expect(await s.nodes.findNodeByIp(IP2)).toBe("b");
        const freed = (await s.subnets.readSubnetUse()).freedSubnets;
        expect(freed?.map((f) => f.subnet)).toEqual([S1]);
        expect(freed?.[0]?.freedRevision).toBeGreaterThan(a.modRevision);
      });

      it("is refused over a stale mod revision, and then deletes nothing", async () => {
        const s = await make();
        const a = await registerNode(s, "a", IP1, S1);
        await s.liveness.putHeartbeats(new Map([["a", 1n]]));
        await s.allocations.putAllocation("a", create(AllocationRecordSchema, { address: "10.244.1.5" }));
        const changed = await changeNode(s, "a", { live: false });
        expect(await s.nodes.removeNode(a.value, a.modRevision)).toBe(false);
        expect(await s.nodes.removeNode(nodeRecord("ghost", IP2, S2), changed.modRevision)).toBe(false);
        expect(await s.nodes.findNode("a")).toEqual(changed);
        expect(await s.subnets.listLeases()).toEqual([leaseRecord(S1, "a")]);
        expect([...(await s.liveness.listHeartbeats()).keys()]).toEqual(["a"]);
        expect(await s.allocations.listAllocations("a")).toHaveLength(1);
        expect(await s.nodes.findNodeByIp(IP1)).toBe("a");
        expect((await s.subnets.readSubnetUse()).freedSubnets).toEqual([]);
      });

      it("refuses mod revision 0, which would match a node that does not exist, and frees nothing", async () => {
        const s = await make();
        await registerNode(s, "a", IP1, S1);
        await expect(s.nodes.removeNode(nodeRecord("ghost", IP2, S2), 0n)).rejects.toThrow(/never read/);
        expect(await s.subnets.listLeases()).toEqual([leaseRecord(S1, "a")]);
        expect((await s.subnets.readSubnetUse()).freedSubnets).toEqual([]);
      });

      it("leaves the node-IP entry that names the node that took the address over", async () => {
        const s = await make();
        await registerNode(s, "old", IP1, S1);
        const gone = await changeNode(s, "old", { live: false });
        const view = await s.nodes.readRegistration("new", IP1);
        const ip = { entry: view.nodeIp, displaced: { name: "old", modRevision: gone.modRevision } };
        expect(await s.nodes.claimSubnet(leaseRecord(S2, "new"), nodeRecord("new", IP1, S2), 0n, ip)).toBe(true);
        expect(await s.nodes.removeNode(gone.value, gone.modRevision)).toBe(true);
        expect(await s.nodes.findNodeByIp(IP1)).toBe("new");
      });

      it("records freed subnets in the order they were freed; one leased and freed again goes to the back", async () => {
        const s = await make();
        const freedOrder = async () =>
          [...(await s.subnets.readSubnetUse()).freedSubnets]
            .sort((p, q) => (p.freedRevision < q.freedRevision ? -1 : 1))
            .map((f) => f.subnet);
        const remove = async (n: string) => {
          const r = await current(s, n);
          expect(await s.nodes.removeNode(r.value, r.modRevision)).toBe(true);
        };
        for (const [n, ip, subnet] of [
          ["n1", IP1, S1],
          ["n2", IP2, S2],
          ["n3", IP3, S3],
        ] as const)
          await registerNode(s, n, ip, subnet);
        for (const n of ["n3", "n1", "n2"]) await remove(n);
        expect(await freedOrder()).toEqual([S3, S1, S2]);
        const freed = (await s.subnets.readSubnetUse()).freedSubnets;
        expect(new Set(freed.map((f) => f.freedRevision)).size).toBe(3);
        await registerNode(s, "n4", "192.168.1.14", S3);
        expect(await freedOrder()).toEqual([S1, S2]);
        await remove("n4");
        expect(await freedOrder()).toEqual([S1, S2, S3]);
      });
    });

    describe("watchNodes", () => {
      it.each(["before", "after"] as const)(
        "from a revision delivers every later change in order, changes made %s the watch started; a batch's revision is its highest mod revision",
        async (when) => {
          const s = await make();
          const from = (await s.nodes.listNodes()).revision + 1n;
          const batches: NodeWatchBatch[] = [];
          const stop = new AbortController();
          const lost: Error[] = [];
          const watch = () =>
            s.nodes.watchNodes(
              from,
              (b) => batches.push(b),
              stop.signal,
              (err) => lost.push(err),
            );
          if (when === "after") await watch();
          const known = new Map<string, bigint>(); // change -> its mod revision, where a read tells it
          const note = (r: Versioned<NodeRecord>) =>
            known.set(describeChange({ type: "put", name: r.value.name, node: r.value }), r.modRevision);
          note(await registerNode(s, "a", IP1, S1));
          const b = await registerNode(s, "b", IP2, S2);
          note(b);
          note(await changeNode(s, "a", { subnet: S3 }));
          expect(await s.nodes.removeNode(b.value, b.modRevision)).toBe(true);
          const last = await changeNode(s, "a", { live: false });
          note(last);
          await s.liveness.putHeartbeats(new Map([["a", 1n]])); // a later revision outside the nodes
          if (when === "before") await watch();
          try {
            const changes = await collect(batches, (c) => c.length >= 5);
            expect(changes.map(describeChange)).toEqual([
              `put a ${S1} live=true`,
              `put b ${S2} live=true`,
              `put a ${S3} live=true`,
              "delete b",
              `put a ${S3} live=false`,
            ]);
            expect(changes[4]).toEqual({ type: "put", name: "a", node: last.value });
            expect(changes[3]).toEqual({ type: "delete", name: "b" });
            for (const batch of batches) {
              const revisions = batch.changes.map((c) => known.get(describeChange(c))).filter((r) => r !== undefined);
              for (const r of revisions) expect(batch.revision).toBeGreaterThanOrEqual(r);
              const lastKnown = known.get(describeChange(batch.changes.at(-1)!));
              if (lastKnown !== undefined) expect(batch.revision).toBe(lastKnown);
            }
            expect(batches.map((x) => x.revision)).toEqual(
              [...batches.map((x) => x.revision)].sort((p, q) => (p < q ? -1 : p > q ? 1 : 0)),
            );
            expect(batches.at(-1)?.revision).toBe(last.modRevision);
            expect(lost).toEqual([]);
          } finally {
            stop.abort();
          }
        },
      );

      it("from the revision of a past change starts with that change", async () => {
        const s = await make();
        await registerNode(s, "a", IP1, S1);
        const b = await registerNode(s, "b", IP2, S2);
        await registerNode(s, "c", IP3, S3);
        const batches: NodeWatchBatch[] = [];
        const stop = new AbortController();
        await s.nodes.watchNodes(b.modRevision, (x) => batches.push(x), stop.signal);
        try {
          const changes = await collect(batches, (c) => c.length >= 2);
          expect(changes.map((c) => c.name)).toEqual(["b", "c"]);
        } finally {
          stop.abort();
        }
      });

      it("from a compacted revision ends with onLost and delivers nothing; from after the compaction it works", async () => {
        const s = await make();
        const from = (await s.nodes.listNodes()).revision + 1n;
        await registerNode(s, "a", IP1, S1);
        await registerNode(s, "b", IP2, S2);
        await s.compact();
        const batches: NodeWatchBatch[] = [];
        const lost: Error[] = [];
        const stop = new AbortController();
        try {
          await s.nodes.watchNodes(
            from,
            (x) => batches.push(x),
            stop.signal,
            (err) => lost.push(err),
          );
          await waitFor("the watch to be lost", async () => lost.length > 0);
          expect(lost).toHaveLength(1);
          const fresh: NodeWatchBatch[] = [];
          await s.nodes.watchNodes((await s.nodes.listNodes()).revision + 1n, (x) => fresh.push(x), stop.signal);
          await registerNode(s, "c", IP3, S3);
          expect((await collect(fresh, (c) => c.length >= 1)).map((c) => c.name)).toEqual(["c"]);
          expect(batches).toEqual([]);
        } finally {
          stop.abort();
        }
      });
    });
  });
}
