// Tells the control plane what the node holds of its routes (DESIGN.md §2, "What nodes report"): a count
// and a digest, and the routes it could not set, if any; never the whole table. At most one report is in
// flight; a burst of route changes (a cluster coming up) becomes one report per `debounceMs`, or per
// `quietMs` when nothing missing changed, and the resync timer repeats the last one (the control plane
// writes nothing when nothing changed).
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { type HostRoute, routeDigest } from "../../proto/core/route-plan.js";
import { type Route, RouteSchema } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";

export interface RouteReport {
  readonly revision: bigint;
  readonly routeCount: number;
  readonly digest: Uint8Array;
  readonly missing: Route[];
}

/** The report for routes `wanted` at `revision`, of which `held` are in the kernel. Pure. */
export function routeReport(revision: bigint, wanted: readonly HostRoute[], held: readonly HostRoute[]): RouteReport {
  const got = new Set(held.map((r) => `${r.dst} via ${r.via}`));
  const missing = wanted
    .filter((r) => !got.has(`${r.dst} via ${r.via}`))
    .map((r) => create(RouteSchema, { nodeName: r.nodeName, subnet: r.dst, nodeIp: r.via }));
  return { revision, routeCount: held.length, digest: routeDigest(held), missing };
}

/**
 * How long a node waits between reports that change only count and digest: at least `minMs`, and 10 ms
 * per route it holds, so that a whole cluster sends at most about 100 such reports a second whatever its
 * size (5000 nodes coming up each reported every 5 s: 1000 calls a second to the control plane, six
 * times their heartbeats, for no route anyone needs). Changes of what is missing never wait for it. Pure.
 */
export function quietMsFor(routeCount: number, minMs = 5_000): number {
  return Math.max(minMs, routeCount * 10);
}

/**
 * How long a report that changes only count and digest waits, `sinceLastMs` after the last report: the
 * debounce, and the rest of the quiet time (quietMsFor), plus a random part of up to 10 ms a route. Every
 * node sees a join at the same moment: without the random part, 5000 quiet nodes all reported within the
 * second after it, past the control plane's 512 calls in flight (issue 10); with it, about 100 a second
 * whatever the cluster's size, as the quiet time intends. A small cluster waits a few ms more. Pure.
 */
export function countOnlyWaitMs(sinceLastMs: number, routeCount: number, debounceMs: number, quietMs: number, rand: () => number): number {
  return Math.max(debounceMs, quietMsFor(routeCount, quietMs) - sinceLastMs) + rand() * routeCount * 10;
}

/** The same routes missing (by destination and gateway), in any order. */
function sameMissing(a: readonly Route[], b: readonly Route[]): boolean {
  const key = (r: Route) => `${r.subnet} via ${r.nodeIp}`;
  const seen = new Set(a.map(key));
  return a.length === b.length && b.every((r) => seen.has(key(r)));
}

export class RouteReporter {
  private latest?: RouteReport;
  private lastSent?: { readonly report: RouteReport; readonly at: number };
  private sending = false;
  private due?: ReturnType<typeof setTimeout>;
  private dueAt = Number.POSITIVE_INFINITY;

  /**
   * A change of what is missing is reported within `debounceMs`; one of count and digest only (a route
   * added or withdrawn and set) at most once per quietMsFor(routes, `quietMs`), at least the control
   * plane's own pace for writing them. While a cluster comes up every node's table changes every second:
   * reporting each was N calls a second to the control plane for nothing it would write (issue 10).
   */
  constructor(
    private readonly send: (report: RouteReport) => Promise<void>,
    private readonly log: Logger,
    private readonly debounceMs = 1_000,
    private readonly quietMs = 5_000,
    private readonly rand: () => number = Math.random,
  ) {}

  /** A new state to report: sent within `debounceMs` (or `quietMs`, see above), coalesced with any that follow. */
  update(report: RouteReport): void {
    this.latest = report;
    const now = performance.now();
    const last = this.lastSent;
    const wait =
      !last || !sameMissing(last.report.missing, report.missing)
        ? this.debounceMs
        : countOnlyWaitMs(now - last.at, report.routeCount, this.debounceMs, this.quietMs, this.rand);
    if (this.due && this.dueAt <= now + wait) return;
    clearTimeout(this.due);
    this.dueAt = now + wait;
    this.due = setTimeout(() => {
      this.due = undefined;
      this.dueAt = Number.POSITIVE_INFINITY;
      void this.flush();
    }, wait);
  }

  /**
   * The resync timer: sends the latest state again (a report may have been lost with a control-plane
   * replica) once the quiet time since the last report has passed; one never sent goes now.
   */
  async resync(): Promise<void> {
    const report = this.latest;
    const last = this.lastSent;
    if (report && last && performance.now() - last.at < quietMsFor(report.routeCount, this.quietMs)) return;
    await this.flush();
  }

  /** Sends the latest state now, unless a send is in flight. */
  async flush(): Promise<void> {
    const report = this.latest;
    if (!report || this.sending) return;
    this.sending = true;
    try {
      await this.send(report);
      this.lastSent = { report, at: performance.now() };
    } catch (err) {
      this.log.debug({ err }, "could not report routes; the next change or resync reports again");
    } finally {
      this.sending = false;
    }
    if (this.latest && this.latest !== report) this.update(this.latest);
  }

  stop(): void {
    clearTimeout(this.due);
    this.due = undefined;
    this.dueAt = Number.POSITIVE_INFINITY;
  }
}
