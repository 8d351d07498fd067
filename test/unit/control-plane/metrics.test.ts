import { describe, expect, it } from "vitest";
import { ControlPlaneMetrics } from "../../../control-plane/metrics.js";
import { parseMetrics, sampleOf } from "../../support/prometheus.js";

const scrape = async (m: ControlPlaneMetrics) => parseMetrics(await m.registry.metrics());

describe("ControlPlaneMetrics", () => {
  it("counts registrations by result, expiries and txn conflicts by kind; times etcd calls by op", async () => {
    const m = new ControlPlaneMetrics();
    m.countRegistration("new");
    m.countRegistration("new");
    m.countRegistration("exhausted");
    m.countExpiry();
    m.countTxnConflict("report_routes");
    m.countTxnConflict("report_routes");
    m.countTxnConflict("claim_subnet");
    m.observeEtcd("txn", 0.004);
    m.observeEtcd("range", 0.002);
    m.observeEtcd("range", 0.003);
    const s = await scrape(m);
    expect(sampleOf(s, "trellis_registrations_total", { result: "new" })).toBe(2);
    expect(sampleOf(s, "trellis_registrations_total", { result: "exhausted" })).toBe(1);
    expect(sampleOf(s, "trellis_node_expiries_total")).toBe(1);
    expect(sampleOf(s, "trellis_etcd_txn_conflicts_total", { txn: "report_routes" })).toBe(2);
    expect(sampleOf(s, "trellis_etcd_txn_conflicts_total", { txn: "claim_subnet" })).toBe(1);
    expect(sampleOf(s, "trellis_etcd_txn_conflicts_total", { txn: "expire_node" })).toBe(0); // every kind is there from the start
    expect(sampleOf(s, "trellis_etcd_request_duration_seconds_count", { op: "txn" })).toBe(1);
    expect(sampleOf(s, "trellis_etcd_request_duration_seconds_count", { op: "range" })).toBe(2);
    expect(sampleOf(s, "trellis_etcd_request_duration_seconds_sum", { op: "range" })).toBeCloseTo(0.005, 9);
  });

  it("reads the gauges from the replica's memory when scraped; before the first expiry round, only what it knows", async () => {
    const m = new ControlPlaneMetrics();
    let view: { nodes: Map<string, number>; free: number; disruption: boolean } | undefined;
    let streams = 2;
    m.readGaugesFrom({
      nodes: () => view?.nodes,
      subnetsFree: () => view?.free,
      routeStreams: () => streams,
      disruption: () => view?.disruption,
    });
    let s = await scrape(m);
    expect(sampleOf(s, "trellis_route_streams")).toBe(2);
    expect(sampleOf(s, "trellis_nodes", { state: "live" })).toBeUndefined();
    expect(sampleOf(s, "trellis_subnets_free")).toBeNaN(); // not 0: that would say the pool is exhausted
    expect(sampleOf(s, "trellis_disruption")).toBeNaN();
    view = {
      nodes: new Map([
        ["live", 3],
        ["expired", 1],
        ["drained", 0],
      ]),
      free: 251,
      disruption: false,
    };
    streams = 3;
    s = await scrape(m);
    expect(sampleOf(s, "trellis_nodes", { state: "live" })).toBe(3);
    expect(sampleOf(s, "trellis_nodes", { state: "expired" })).toBe(1);
    expect(sampleOf(s, "trellis_nodes", { state: "drained" })).toBe(0);
    expect(sampleOf(s, "trellis_subnets_free")).toBe(251);
    expect(sampleOf(s, "trellis_route_streams")).toBe(3);
    expect(sampleOf(s, "trellis_disruption")).toBe(0);
    view = { nodes: new Map([["live", 2]]), free: 251, disruption: true };
    s = await scrape(m);
    expect(sampleOf(s, "trellis_nodes", { state: "expired" })).toBeUndefined(); // a state no longer reported is gone
    expect(sampleOf(s, "trellis_disruption")).toBe(1);
  });

  it("has the process's default metrics, and every instance its own registry", async () => {
    const a = new ControlPlaneMetrics();
    const b = new ControlPlaneMetrics();
    a.countExpiry();
    expect(sampleOf(await scrape(a), "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(sampleOf(await scrape(b), "trellis_node_expiries_total")).toBe(0);
  });
});
