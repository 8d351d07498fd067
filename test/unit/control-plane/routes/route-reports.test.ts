// Issue 10, finding 1: route reports must not write etcd in proportion to the square of the cluster. With
// the old behaviour (every report written, every route listed) a 100-node bring-up in which every node
// reports after every join writes 100*101/2 records holding ~330,000 routes.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RouteReports, reportMatches } from "../../../../control-plane/routes/route-reports.js";
import type { RouteReportStore } from "../../../../control-plane/store/route-report-store.js";
import { routeDigest } from "../../../../proto/core/route-plan.js";
import { RouteSchema } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { ReportedRoutesRecordSchema } from "../../../../proto/gen/trellis/store/v1/store_pb.js";
import { registerNode } from "../../../contract/node-store.js";
import { openMemoryStores } from "../../../support/memory-stores.js";

/** Memory stores with nodes node-0..node-(n-1) registered, counting RouteReports' round trips, writes and the routes they hold. */
async function store(n = 1) {
  const stores = openMemoryStores();
  for (let i = 0; i < n; i++) await registerNode(stores, `node-${i}`, `192.168.${i >> 8}.${(i & 255) + 1}`, `10.244.${i}.0/24`);
  const stats = { calls: 0, writes: 0, routes: 0 };
  const inner = stores.routeReports;
  const routeReports: RouteReportStore = {
    listReportedRoutes: () => inner.listReportedRoutes(),
    findReportedRoutes: (node) => {
      stats.calls++;
      return inner.findReportedRoutes(node);
    },
    putReportedRoutes: async (node, record, expected) => {
      stats.calls++;
      const res = await inner.putReportedRoutes(node, record, expected);
      if (res.written) {
        stats.writes++;
        stats.routes += record.routes.length + record.missing.length;
      }
      return res;
    },
  };
  const stored = async (node: string) => (await inner.findReportedRoutes(node))?.value;
  return { store: { routeReports }, stores, stored, stats };
}

const hostRoutes = (n: number, except: number) =>
  Array.from({ length: n }, (_, i) => i)
    .filter((i) => i !== except)
    .map((i) => ({ dst: `10.${i >> 8}.${i & 255}.0/24`, via: `192.168.${i >> 8}.${i & 255}` }));

describe("RouteReports", () => {
  it("a 200-node bring-up, every node reporting after every join, writes O(nodes) records, not O(nodes²)", async () => {
    const n = 100;
    const { store: s, stats } = await store(n);
    let now = 0;
    const reports = new RouteReports({ ...s, clock: () => now });
    for (let joined = 1; joined <= n; joined++) {
      now += 100; // 10 joins per second
      for (let node = 0; node < joined; node++) {
        const held = hostRoutes(joined, node);
        await reports.record(`node-${node}`, {
          revision: BigInt(joined),
          routeCount: held.length,
          digest: routeDigest(held),
          missing: [],
          routes: [],
        });
      }
    }
    // Each node: its first report, then at most one per 5 s of the 10 s bring-up (held back, then flushed).
    now += 5_000;
    await reports.flushDue();
    expect(stats.writes).toBeLessThanOrEqual(4 * n);
    expect(stats.routes).toBe(0);
  });

  it("the same report again writes nothing; what is missing is written at once; a legacy full list is kept", async () => {
    const { store: s, stats, stored } = await store();
    const now = 0;
    const reports = new RouteReports({ ...s, clock: () => now });
    const held = hostRoutes(3, 0);
    const base = { revision: 1n, routeCount: 2, digest: routeDigest(held), missing: [], routes: [] };
    await reports.record("node-0", base);
    await reports.record("node-0", base);
    expect(stats.writes).toBe(1);
    const missing = [create(RouteSchema, { nodeName: "node-2", subnet: "10.0.2.0/24", nodeIp: "192.168.0.2" })];
    await reports.record("node-0", { ...base, routeCount: 1, missing });
    expect(stats.writes).toBe(2);
    expect((await stored("node-0"))?.missing).toHaveLength(1);
    // A second replica (no memory of node-0) reads what is stored instead of writing it again.
    const other = new RouteReports({ ...s, clock: () => now });
    await other.record("node-0", { ...base, routeCount: 1, missing });
    expect(stats.writes).toBe(2);
  });

  it("reportMatches: in sync only with the same digest and count and nothing missing", () => {
    const held = hostRoutes(4, 1);
    const record = create(ReportedRoutesRecordSchema, { routeCount: held.length, digest: routeDigest(held) });
    expect(reportMatches(record, routeDigest(held), held.length)).toBe(true);
    expect(reportMatches(record, routeDigest(held.slice(1)), held.length - 1)).toBe(false);
  });
});

describe("RouteReports held back by the interval", () => {
  it("writes the latest held-back report once the interval has passed", async () => {
    const { store: s, stats, stored } = await store();
    let now = 0;
    const reports = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    for (let count = 1; count <= 5; count++) {
      const held = hostRoutes(count + 1, 0);
      await reports.record("node-0", {
        revision: BigInt(count),
        routeCount: held.length,
        digest: routeDigest(held),
        missing: [],
        routes: [],
      });
      now += 100;
    }
    expect(stats.writes).toBe(1);
    now += 5_000;
    await reports.flushDue();
    expect(stats.writes).toBe(2);
    expect((await stored("node-0"))?.routeCount).toBe(5);
  });
});

describe("RouteReports flushing held-back reports", () => {
  /** Nodes node-0..node-(n-1), each with a report written at 0 and a later one held back; writes wait for `release`. */
  async function heldBack(n: number) {
    const { store: s, stats } = await store(n);
    let now = 0;
    const reports = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    for (const revision of [1n, 2n]) {
      for (let i = 0; i < n; i++) {
        const held = hostRoutes(Number(revision) + 1, i);
        await reports.record(`node-${i}`, { revision, routeCount: held.length, digest: routeDigest(held), missing: [], routes: [] });
      }
    }
    expect(stats.writes).toBe(n);
    const gate = { waiting: 0, maxWaiting: 0, open: [] as Array<() => void> };
    const put = s.routeReports.putReportedRoutes;
    s.routeReports.putReportedRoutes = async (node, record, expected) => {
      gate.waiting++;
      gate.maxWaiting = Math.max(gate.maxWaiting, gate.waiting);
      await new Promise<void>((resolve) => gate.open.push(resolve));
      gate.waiting--;
      return put(node, record, expected);
    };
    const release = async () => {
      while (gate.open.length > 0 || gate.waiting > 0) {
        for (const open of gate.open.splice(0)) open();
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    now = 5_000;
    return { reports, stats, gate, release };
  }

  it("a flush that starts while one is still writing writes nothing again (issue 10: at 5000 nodes a flush outlasted the 1 s timer, and half of all etcd transactions were reports written twice)", async () => {
    const { reports, stats, release } = await heldBack(3);
    const first = reports.flushDue();
    const second = reports.flushDue(); // the timer fires again before the first flush is done
    await release();
    await Promise.all([first, second]);
    expect(stats.calls - 3).toBe(3); // one write per held-back report, and no conflict
    expect(stats.writes).toBe(6);
  });

  it("writes the held-back reports several at a time, never more than its limit", async () => {
    const { reports, stats, gate, release } = await heldBack(40);
    const flush = reports.flushDue();
    await new Promise((resolve) => setImmediate(resolve));
    expect(gate.waiting).toBeGreaterThan(1);
    await release();
    await flush;
    expect(gate.maxWaiting).toBeLessThanOrEqual(16);
    expect(stats.writes).toBe(80);
  });
});

describe("RouteReports on two replicas", () => {
  it("a report held back on one replica never overwrites a newer one written through another", async () => {
    const { store: s, stored } = await store();
    let now = 0;
    const a = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    const b = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    const report = (count: number) => {
      const held = hostRoutes(count + 1, 0);
      return { revision: BigInt(count), routeCount: held.length, digest: routeDigest(held), missing: [], routes: [] };
    };
    await a.record("node-0", report(1)); // A writes it
    now += 100;
    await a.record("node-0", report(2)); // only the count changed: held back for A's interval
    now += 100;
    await b.record("node-0", report(3)); // B's first report of node-0: written
    now += 7_000;
    await a.flushDue(); // A's held-back report 2 is older than what is stored now
    await b.record("node-0", report(3)); // the node says again what it holds; B remembers writing exactly that
    expect((await stored("node-0"))?.revision).toBe(3n);
  });
});

describe("RouteReports round trips (issue 10: reports were most of etcd's calls during churn)", () => {
  const report = (count: number, missing: string[] = []) => {
    const held = hostRoutes(count + 1, 0);
    return {
      revision: BigInt(count),
      routeCount: held.length,
      digest: routeDigest(held),
      missing: missing.map((subnet) => create(RouteSchema, { nodeName: "node-9", subnet, nodeIp: "192.168.0.10" })),
      routes: [],
    };
  };

  it("a node's first report to a replica is one round trip, and so is the same report found stored", async () => {
    const { store: s, stats } = await store();
    const a = new RouteReports({ ...s, clock: () => 0 });
    await a.record("node-0", report(1));
    expect(stats).toMatchObject({ calls: 1, writes: 1 });
    const b = new RouteReports({ ...s, clock: () => 0 });
    await b.record("node-0", report(1));
    expect(stats).toMatchObject({ calls: 2, writes: 1 });
  });

  it("a held-back report is written in one round trip once its interval has passed", async () => {
    const { store: s, stats, stored } = await store();
    let now = 0;
    const a = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    await a.record("node-0", report(1));
    await a.record("node-0", report(2));
    now += 5_000;
    const before = stats.calls;
    await a.flushDue();
    expect(stats.calls - before).toBe(1);
    expect((await stored("node-0"))?.revision).toBe(2n);
  });

  it("a report of missing routes made at an older stream revision never overwrites a newer one written through another replica", async () => {
    const { store: s, stored } = await store();
    let now = 0;
    const a = new RouteReports({ ...s, clock: () => now });
    const b = new RouteReports({ ...s, clock: () => now });
    await a.record("node-0", report(1));
    now += 100;
    await b.record("node-0", report(3));
    // A late report on A's stream (revision 2), saying a route is missing: written at once, so the write
    // must not be a blind put over B's newer report.
    await a.record("node-0", report(2, ["10.244.9.0/24"]));
    expect(await stored("node-0")).toMatchObject({ revision: 3n, missing: [] });
    // A now knows what is stored: a newer report from the node through A is written over it in one round trip.
    await a.record("node-0", report(4, ["10.244.9.0/24"]));
    expect(await stored("node-0")).toMatchObject({ revision: 4n, missing: [{ subnet: "10.244.9.0/24" }] });
  });

  it("a node that is not registered, or was removed, gets NOT_FOUND and no report is written for it", async () => {
    const { store: s, stores, stored } = await store();
    let now = 0;
    const a = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    await expect(a.record("node-7", report(1))).rejects.toMatchObject({ reason: "NOT_FOUND" });
    expect(await stored("node-7")).toBeUndefined();
    await a.record("node-0", report(1));
    await a.record("node-0", report(2)); // held back
    const node = await stores.nodes.findNode("node-0");
    if (!node) throw new Error("test setup: node-0 has no record");
    await stores.nodes.removeNode(node.value, node.modRevision);
    expect(await stored("node-0"), "removing a node removes its report").toBeUndefined();
    now += 5_000;
    await a.flushDue(); // the report held back before the removal
    await expect(a.record("node-0", report(3, ["10.244.9.0/24"]))).rejects.toMatchObject({ reason: "NOT_FOUND" });
    expect(await stored("node-0")).toBeUndefined();
  });
});

describe("RouteReports against replicas that keep writing", () => {
  it("gives up with CONFLICT after 3 writes that each found an older report written meanwhile, and forgets what it knew", async () => {
    let modRevision = 10n;
    const expected: bigint[] = [];
    const routeReports: RouteReportStore = {
      listReportedRoutes: async () => new Map(),
      findReportedRoutes: async () => undefined,
      // Another replica writes an older report just before each of this one's writes.
      putReportedRoutes: async (_node, _record, expectedModRevision) => {
        expected.push(expectedModRevision);
        modRevision++;
        return { written: false, registered: true, current: { value: create(ReportedRoutesRecordSchema, { revision: 1n }), modRevision } };
      },
    };
    const reports = new RouteReports({ routeReports, clock: () => 0 });
    const report = { revision: 5n, routeCount: 1, digest: new Uint8Array([1]), missing: [], routes: [] };
    await expect(reports.record("node-0", report)).rejects.toMatchObject({ reason: "CONFLICT" });
    // Each retry expected what the one before found.
    expect(expected).toEqual([0n, 11n, 12n]);
    await expect(reports.record("node-0", report)).rejects.toMatchObject({ reason: "CONFLICT" });
    expect(expected[3], "a report after giving up starts from nothing known").toBe(0n);
  });
});
