// Issue 10, finding 1: route reports must not write etcd in proportion to the square of the cluster. With
// the old behaviour (every report written, every route listed) a 100-node bring-up in which every node
// reports after every join writes 100*101/2 records holding ~330,000 routes.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RouteReports, reportMatches } from "../../../../control-plane/routes/route-reports.js";
import type { NodeStore } from "../../../../control-plane/store/node-store.js";
import type { RouteReportStore } from "../../../../control-plane/store/route-report-store.js";
import { routeDigest } from "../../../../proto/core/route-plan.js";
import { RouteSchema } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import {
  NodeRecordSchema,
  type ReportedRoutesRecord,
  ReportedRoutesRecordSchema,
} from "../../../../proto/gen/trellis/store/v1/store_pb.js";

/** Just the store methods RouteReports uses, counting writes and the bytes they hold. */
function store() {
  const reports = new Map<string, ReportedRoutesRecord>();
  const stats = { writes: 0, routes: 0 };
  const nodes = { findNode: async (name: string) => ({ value: create(NodeRecordSchema, { name }), modRevision: 1n }) };
  const routeReports: RouteReportStore = {
    listReportedRoutes: async () => new Map(reports),
    findReportedRoutes: async (node: string) => reports.get(node),
    putReportedRoutes: async (node: string, record: ReportedRoutesRecord) => {
      stats.writes++;
      stats.routes += record.routes.length + record.missing.length;
      reports.set(node, create(ReportedRoutesRecordSchema, record));
    },
  };
  return { store: { nodes: nodes as unknown as NodeStore, routeReports }, reports, stats };
}

const hostRoutes = (n: number, except: number) =>
  Array.from({ length: n }, (_, i) => i)
    .filter((i) => i !== except)
    .map((i) => ({ dst: `10.${i >> 8}.${i & 255}.0/24`, via: `192.168.${i >> 8}.${i & 255}` }));

describe("RouteReports", () => {
  it("a 200-node bring-up, every node reporting after every join, writes O(nodes) records, not O(nodes²)", async () => {
    const { store: s, stats } = store();
    let now = 0;
    const reports = new RouteReports({ ...s, clock: () => now });
    const n = 100;
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
    const { store: s, stats, reports: stored } = store();
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
    expect(stored.get("node-0")?.missing).toHaveLength(1);
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
    const { store: s, stats, reports: stored } = store();
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
    expect(stored.get("node-0")?.routeCount).toBe(5);
  });
});

describe("RouteReports on two replicas", () => {
  it("a report held back on one replica never overwrites a newer one written through another", async () => {
    const { store: s, reports: stored } = store();
    let now = 0;
    const a = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    const b = new RouteReports({ ...s, clock: () => now, minIntervalMs: 5_000 });
    const report = (count: number) => {
      const held = hostRoutes(count + 1, 0);
      return { revision: BigInt(count), routeCount: held.length, digest: routeDigest(held), missing: [], routes: [] };
    };
    await b.record("node-0", report(1)); // B writes it
    now += 5_500;
    await a.record("node-0", report(2)); // A reads report 1 just now: report 2 is held back for A's interval
    await b.record("node-0", report(3)); // B's interval has passed: written at once
    now += 7_000;
    await a.flushDue(); // A's held-back report 2 is older than what is stored now
    await b.record("node-0", report(3)); // the node says again what it holds; B remembers writing exactly that
    expect(stored.get("node-0")?.revision).toBe(3n);
  });
});
