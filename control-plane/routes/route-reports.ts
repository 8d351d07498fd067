// What nodes report of their routes, kept in etcd for the admin API (GetRoutes) without writing in
// proportion to the cluster's churn (issue 10, finding 1): a report that changes what is missing is written
// at once; one that changes only the count and digest (nodes joining and leaving) at most once per
// `minIntervalMs` per node and replica, the latest one held until then; one that says the same again
// never.
import { create } from "@bufbuild/protobuf";
import { TrellisError } from "../../proto/core/errors.js";
import type { Route } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { type ReportedRoutesRecord, ReportedRoutesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { NodeStore } from "../store/node-store.js";
import type { RouteReportStore } from "../store/route-report-store.js";

export interface RouteReport {
  readonly revision: bigint;
  readonly routeCount: number;
  readonly digest: Uint8Array;
  readonly missing: readonly Route[];
  /** Every route, from daemons before digests. */
  readonly routes: readonly Route[];
}

const lines = (routes: readonly Route[]) =>
  routes
    .map((r) => `${r.subnet} via ${r.nodeIp}`)
    .sort()
    .join(",");

/** What a report says, for comparing with the last one written: [what is missing, everything]. */
function keysOf(r: { routeCount: number; digest: Uint8Array; missing: readonly Route[]; routes: readonly Route[] }): [string, string] {
  const missing = lines(r.missing);
  return [missing, `${r.routeCount}:${Buffer.from(r.digest).toString("hex")}:${missing}:${lines(r.routes)}`];
}

export class RouteReports {
  /** Per node: what this replica last wrote (or read back), and when it wrote. */
  private readonly written = new Map<string, { missing: string; all: string; atMs: number; revision: bigint }>();
  /** Reports held back by the interval, written by the flush timer once it has passed. */
  private readonly pending = new Map<string, RouteReport>();
  private flusher?: ReturnType<typeof setInterval>;

  constructor(
    private readonly deps: {
      readonly nodes: NodeStore;
      readonly routeReports: RouteReportStore;
      readonly clock: () => number;
      readonly minIntervalMs?: number;
    },
  ) {}

  async record(node: string, report: RouteReport): Promise<void> {
    const [missing, all] = keysOf(report);
    const now = this.deps.clock();
    let last = this.written.get(node);
    if (last === undefined) {
      if (!(await this.deps.nodes.findNode(node))) throw new TrellisError("NOT_FOUND", `node ${node} is not registered; register it first`);
      const stored = await this.deps.routeReports.findReportedRoutes(node);
      if (stored) {
        const [m, a] = keysOf(stored);
        last = { missing: m, all: a, atMs: now, revision: stored.revision };
        this.remember(node, last);
      }
    }
    // The same again at the same stream revision (a resync) is not written. At a later revision it is: the
    // node may have said something else through another replica meanwhile, which this one cannot know.
    if (last?.all === all && report.revision <= last.revision) {
      this.pending.delete(node);
      return;
    }
    const onlyCountChanged = last?.missing === missing && report.routes.length === 0;
    if (last && onlyCountChanged && now - last.atMs < this.minIntervalMs) {
      this.pending.set(node, report);
      this.flusher ??= setInterval(() => void this.flushDue(), Math.min(1_000, this.minIntervalMs)).unref();
      return;
    }
    await this.write(node, report);
  }

  private async write(node: string, report: RouteReport): Promise<void> {
    const [missing, all] = keysOf(report);
    const now = this.deps.clock();
    this.pending.delete(node);
    await this.deps.routeReports.putReportedRoutes(
      node,
      create(ReportedRoutesRecordSchema, {
        revision: report.revision,
        routeCount: report.routeCount,
        digest: report.digest,
        missing: [...report.missing],
        routes: [...report.routes],
        reportedAtMs: BigInt(now),
      }),
    );
    this.remember(node, { missing, all, atMs: now, revision: report.revision });
  }

  private get minIntervalMs(): number {
    return this.deps.minIntervalMs ?? 5_000;
  }

  /** Writes the held-back reports whose interval has passed. */
  async flushDue(): Promise<void> {
    const now = this.deps.clock();
    for (const [node, report] of [...this.pending]) {
      if (now - (this.written.get(node)?.atMs ?? 0) < this.minIntervalMs) continue;
      await this.flushOne(node, report).catch(() => undefined); // the node reports again on its next resync
    }
    if (this.pending.size === 0 && this.flusher) {
      clearInterval(this.flusher);
      this.flusher = undefined;
    }
  }

  /**
   * Writes a held-back report unless a newer one (a later stream revision) was stored meanwhile, through
   * another replica: then that one stays, and this replica remembers it instead (a node may report to
   * several replicas; found by the chaos tests).
   */
  private async flushOne(node: string, report: RouteReport): Promise<void> {
    const stored = await this.deps.routeReports.findReportedRoutes(node);
    if (stored && stored.revision > report.revision) {
      this.pending.delete(node);
      const [missing, all] = keysOf(stored);
      this.remember(node, { missing, all, atMs: this.deps.clock(), revision: stored.revision });
      return;
    }
    await this.write(node, report);
  }

  private remember(node: string, entry: { missing: string; all: string; atMs: number; revision: bigint }): void {
    if (this.written.size >= 100_000) this.written.clear(); // bounded; a miss costs one read
    this.written.set(node, entry);
  }
}

/** Whether a stored report matches `desired` exactly. Pure. */
export function reportMatches(stored: ReportedRoutesRecord, desiredDigest: Uint8Array, desiredCount: number): boolean {
  return stored.missing.length === 0 && stored.routeCount === desiredCount && Buffer.from(stored.digest).equals(Buffer.from(desiredDigest));
}
