import { describe, expect, it } from "vitest";
import { DaemonMetrics } from "../../../node-daemon/metrics.js";
import { parseMetrics, sampleOf } from "../../support/prometheus.js";

const scrape = async (m: DaemonMetrics) => parseMetrics(await m.registry.metrics());

describe("DaemonMetrics", () => {
  it("counts CNI requests by command and code, and times them by command", async () => {
    const m = new DaemonMetrics();
    m.observeCni("ADD", 0, 0.004);
    m.observeCni("ADD", 0, 0.02);
    m.observeCni("ADD", 101, 0.001);
    m.observeCni("DEL", 0, 0.003);
    const s = await scrape(m);
    expect(sampleOf(s, "trellis_cni_requests_total", { command: "ADD", code: "0" })).toBe(2);
    expect(sampleOf(s, "trellis_cni_requests_total", { command: "ADD", code: "101" })).toBe(1);
    expect(sampleOf(s, "trellis_cni_requests_total", { command: "DEL", code: "0" })).toBe(1);
    expect(sampleOf(s, "trellis_cni_requests_total", { command: "CHECK", code: "0" })).toBeUndefined();
    expect(sampleOf(s, "trellis_cni_request_duration_seconds_count", { command: "ADD" })).toBe(3);
    expect(sampleOf(s, "trellis_cni_request_duration_seconds_sum", { command: "ADD" })).toBeCloseTo(0.025, 9);
    expect(sampleOf(s, "trellis_cni_request_duration_seconds_bucket", { command: "ADD", le: "0.005" })).toBe(2);
  });

  it("times phases and the route apply lag", async () => {
    const m = new DaemonMetrics();
    m.observePhase("allocation", 0.00002);
    m.observePhase("fsync", 0.002);
    m.observePhase("fsync", 0.003);
    m.observePhase("kernel", 0.001);
    m.observeRouteApplyLag(0.05);
    const s = await scrape(m);
    expect(sampleOf(s, "trellis_cni_phase_duration_seconds_count", { phase: "allocation" })).toBe(1);
    expect(sampleOf(s, "trellis_cni_phase_duration_seconds_count", { phase: "fsync" })).toBe(2);
    expect(sampleOf(s, "trellis_cni_phase_duration_seconds_count", { phase: "kernel" })).toBe(1);
    expect(sampleOf(s, "trellis_route_apply_lag_seconds_count")).toBe(1);
    expect(sampleOf(s, "trellis_route_apply_lag_seconds_bucket", { le: "0.025" })).toBe(0);
    expect(sampleOf(s, "trellis_route_apply_lag_seconds_bucket", { le: "0.1" })).toBe(1);
  });

  it("reads the gauges from their sources when scraped, every time", async () => {
    const m = new DaemonMetrics();
    let pods = 3;
    let pending = 0;
    m.readGaugesFrom({
      podAddressesInUse: () => pods,
      routes: () => ({ desired: 4, installed: 3, failed: 1 }),
      pendingDeletes: async () => pending,
    });
    let s = await scrape(m);
    expect(sampleOf(s, "trellis_pod_addresses_in_use")).toBe(3);
    expect(sampleOf(s, "trellis_routes", { state: "desired" })).toBe(4);
    expect(sampleOf(s, "trellis_routes", { state: "installed" })).toBe(3);
    expect(sampleOf(s, "trellis_routes", { state: "failed" })).toBe(1);
    expect(sampleOf(s, "trellis_pending_deletes")).toBe(0);
    pods = 5;
    pending = 2;
    s = await scrape(m);
    expect(sampleOf(s, "trellis_pod_addresses_in_use")).toBe(5);
    expect(sampleOf(s, "trellis_pending_deletes")).toBe(2);
  });

  it("an unreadable pending-deletes directory reads as NaN, and the scrape still answers", async () => {
    const m = new DaemonMetrics();
    m.readGaugesFrom({
      podAddressesInUse: () => 1,
      routes: () => ({ desired: 0, installed: 0, failed: 0 }),
      pendingDeletes: async () => {
        throw new Error("EACCES");
      },
    });
    const s = await scrape(m);
    expect(sampleOf(s, "trellis_pending_deletes")).toBeNaN();
    expect(sampleOf(s, "trellis_pod_addresses_in_use")).toBe(1);
  });

  it("reads NaN (not known), and no route series, until the daemon gives its sources, and while no route set arrived", async () => {
    const m = new DaemonMetrics();
    let s = await scrape(m);
    expect(sampleOf(s, "trellis_pod_addresses_in_use")).toBeNaN();
    expect(sampleOf(s, "trellis_pending_deletes")).toBeNaN();
    expect(sampleOf(s, "trellis_routes", { state: "desired" })).toBeUndefined();
    m.readGaugesFrom({ podAddressesInUse: () => 0, routes: () => undefined, pendingDeletes: async () => 0 });
    s = await scrape(m);
    expect(sampleOf(s, "trellis_pod_addresses_in_use")).toBe(0);
    expect(sampleOf(s, "trellis_routes", { state: "desired" })).toBeUndefined();
  });

  it("has the process's default metrics, and every instance its own registry", async () => {
    const a = new DaemonMetrics();
    const b = new DaemonMetrics();
    a.observeCni("ADD", 0, 0.001);
    const s = await scrape(a);
    expect(sampleOf(s, "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(sampleOf(s, "nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
    expect(sampleOf(await scrape(b), "trellis_cni_requests_total", { command: "ADD", code: "0" })).toBeUndefined();
  });
});
