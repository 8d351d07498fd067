// Issue 10, findings 1 and 7 on the daemon's side: reports are a digest plus what is missing, coalesced;
// one route the kernel refuses costs only itself, and shows as missing.
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import {
  countOnlyWaitMs,
  quietMsFor,
  type RouteReport,
  RouteReporter,
  routeReport,
} from "../../../../node-daemon/routes/route-reporter.js";
import { RouteSync } from "../../../../node-daemon/routes/route-sync.js";
import { routeDigest } from "../../../../proto/core/route-plan.js";
import { RouteSchema } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { RecordingNetlink } from "../../../support/fakes.js";
import { seeded } from "../../../support/prng.js";
import { waitFor } from "../../../support/wait.js";

const log = pino({ level: "silent" });
const route = (i: number, via = `192.168.1.${10 + i}`) =>
  create(RouteSchema, { nodeName: `node-${i}`, subnet: `10.244.${i}.0/24`, nodeIp: via });

describe("RouteSync with a next hop the kernel refuses", () => {
  it("sets every other route, reports the refused one missing, and counts it for STATUS", async () => {
    const net = new RecordingNetlink();
    net.failRouteVia.add("10.99.0.1");
    const sync = new RouteSync({ net, log, nodeName: "node-1", clusterCidr: "10.244.0.0/16" });
    const routes = [route(1), route(2), route(3, "10.99.0.1"), route(4), route(5)];
    const { wanted, held } = await sync.setRoutes(routes);
    expect(wanted).toHaveLength(4);
    expect(held.map((r) => r.dst).sort()).toEqual(["10.244.2.0/24", "10.244.4.0/24", "10.244.5.0/24"]);
    expect(sync.missing).toBe(1);
    const report = routeReport(7n, wanted, held);
    expect(report.missing.map((r) => `${r.subnet} via ${r.nodeIp}`)).toEqual(["10.244.3.0/24 via 10.99.0.1"]);
    expect(report.routeCount).toBe(3);

    net.failRouteVia.clear();
    await sync.reconcile();
    expect(sync.missing).toBe(0);
  });
});

describe("routeReport", () => {
  it("has the digest of what is held, independent of order, and lists nothing when in sync", () => {
    const a = [
      { dst: "10.244.2.0/24", via: "192.168.1.12", nodeName: "node-2" },
      { dst: "10.244.3.0/24", via: "192.168.1.13", nodeName: "node-3" },
    ];
    const r = routeReport(3n, a, [...a].reverse());
    expect(r.missing).toEqual([]);
    expect(Buffer.from(r.digest).equals(Buffer.from(routeDigest(a)))).toBe(true);
    expect(r.routeCount).toBe(2);
  });
});

describe("RouteReporter", () => {
  it("turns a burst of route changes into one report, with the latest state", async () => {
    const sent: RouteReport[] = [];
    const reporter = new RouteReporter(async (r) => void sent.push(r), log, 20);
    for (let i = 1; i <= 50; i++) reporter.update(routeReport(BigInt(i), [], []));
    await waitFor("a report", async () => sent.length > 0, 2_000);
    await new Promise((r) => setTimeout(r, 60));
    expect(sent.map((r) => r.revision)).toEqual([50n]);
    reporter.stop();
  });

  it("a change while a report is in flight is sent after it, not lost", async () => {
    const sent: bigint[] = [];
    let release: () => void = () => undefined;
    const reporter = new RouteReporter(
      (r) =>
        new Promise<void>((resolve) => {
          sent.push(r.revision);
          release = resolve;
        }),
      log,
      5,
      5,
    );
    reporter.update(routeReport(1n, [], []));
    await waitFor("the first report in flight", async () => sent.length === 1, 2_000);
    reporter.update(routeReport(2n, [], []));
    await new Promise((r) => setTimeout(r, 30));
    release();
    await waitFor("the second report", async () => sent.length === 2, 2_000);
    expect(sent).toEqual([1n, 2n]);
    release();
    reporter.stop();
  });

  it("sends a change of what is missing within debounceMs, but a change of count and digest only once per quietMs", async () => {
    const sent: RouteReport[] = [];
    // When each report was sent, taken as it is sent: waitFor notices a send only at its next poll, and
    // on a loaded machine that was 45 ms late, so a gap measured from there came out short (CI).
    const sentAt: number[] = [];
    const reporter = new RouteReporter(
      async (r) => {
        sentAt.push(performance.now());
        sent.push(r);
      },
      log,
      5,
      400,
    );
    const a = { nodeName: "a", dst: "10.244.1.0/24", via: "192.168.1.11" };
    const b = { nodeName: "b", dst: "10.244.2.0/24", via: "192.168.1.12" };
    reporter.update(routeReport(1n, [a], [a]));
    await waitFor("the first report", async () => sent.length === 1, 2_000);
    reporter.update(routeReport(2n, [a, b], [a, b])); // one more route, none missing: count and digest only
    await new Promise((r) => setTimeout(r, 150));
    expect(sent).toHaveLength(1);
    await waitFor("the count-only report", async () => sent.length === 2, 2_000);
    expect(sentAt[1]! - sentAt[0]!).toBeGreaterThanOrEqual(390);
    expect(sent[1]?.revision).toBe(2n);
    reporter.update(routeReport(3n, [a, b], [a])); // b refused by the kernel: missing changes
    await waitFor("the missing route, at once", async () => sent.length === 3, 200);
    expect(sent[2]?.missing.map((r) => r.nodeName)).toEqual(["b"]);
    reporter.stop();
  });

  it("waits 10 ms per route held between count-only reports: a cluster sends about 100 a second at any size (issue 10)", () => {
    expect(quietMsFor(0)).toBe(5_000);
    expect(quietMsFor(500)).toBe(5_000);
    expect(quietMsFor(1_000)).toBe(10_000);
    expect(quietMsFor(5_000)).toBe(50_000);
    expect(quietMsFor(3, 10)).toBe(30);
  });

  it("one change seen by 5000 quiet nodes: their count-only reports spread over the quiet time, about 100 a second, not all within a second (issue 10)", () => {
    const rand = seeded(10);
    const waits = Array.from({ length: 5_000 }, () => countOnlyWaitMs(120_000, 5_000, 1_000, 5_000, rand));
    const perSecond = new Map<number, number>();
    for (const w of waits) perSecond.set(Math.floor(w / 1_000), (perSecond.get(Math.floor(w / 1_000)) ?? 0) + 1);
    expect(Math.min(...waits)).toBeGreaterThanOrEqual(1_000); // never before the debounce
    expect(Math.max(...waits)).toBeLessThan(1_000 + 50_000);
    expect(Math.max(...perSecond.values())).toBeLessThan(200);
    // A small cluster hardly waits more than the debounce; a recent report still holds the next one back.
    expect(countOnlyWaitMs(120_000, 3, 1_000, 5_000, () => 0.999)).toBeLessThan(1_030);
    expect(countOnlyWaitMs(2_000, 3, 1_000, 5_000, () => 0)).toBe(3_000);
  });

  it("resync sends the last report again only once the quiet time has passed", async () => {
    const sent: RouteReport[] = [];
    const reporter = new RouteReporter(async (r) => void sent.push(r), log, 5, 300);
    const a = { nodeName: "a", dst: "10.244.1.0/24", via: "192.168.1.11" };
    await reporter.resync(); // nothing to report yet
    expect(sent).toHaveLength(0);
    reporter.update(routeReport(1n, [a], [a]));
    await waitFor("the first report", async () => sent.length === 1, 2_000);
    await reporter.resync();
    expect(sent).toHaveLength(1); // just sent: the control plane has it
    await new Promise((r) => setTimeout(r, 320));
    await reporter.resync();
    expect(sent).toHaveLength(2);
    expect(sent[1]).toBe(sent[0]);
    reporter.stop();
  });
});
