// What nodes report of their routes, kept in etcd for the admin API (GetRoutes) without writing in
// proportion to the cluster's churn (issue 10, finding 1): a report that changes what is missing is written
// at once; one that changes only the count and digest (nodes joining and leaving) at most once per
// `minIntervalMs` per node and replica, the latest one held until then; one that says the same again
// never.
import { create } from "@bufbuild/protobuf";
import { TrellisError } from "../../proto/core/errors.js";
import type { Route } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { type ReportedRoutesRecord, ReportedRoutesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
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

/** What a replica last wrote of a node's report (or found stored), and when. */
interface Written {
  readonly missing: string;
  readonly all: string;
  readonly atMs: number;
  /** The stream revision the report was made at. */
  readonly revision: bigint;
  /** The report key's mod revision: the next write is conditional on it. */
  readonly modRevision: bigint;
}

/** Writes of one report that found another replica writing the same node's report meanwhile, before giving up. */
const maxWriteAttempts = 3;

/** Held-back reports a flush writes at once (each one etcd round trip). */
const flushConcurrency = 16;

export class RouteReports {
  /** Per node: what this replica last wrote (or found stored), and when it wrote. */
  private readonly written = new Map<string, Written>();
  /** Reports held back by the interval, written by the flush timer once it has passed. */
  private readonly pending = new Map<string, RouteReport>();
  private flusher?: ReturnType<typeof setInterval>;
  /** A flush is writing. */
  private flushing = false;

  constructor(
    private readonly deps: {
      readonly routeReports: RouteReportStore;
      readonly clock: () => number;
      readonly minIntervalMs?: number;
    },
  ) {}

  async record(node: string, report: RouteReport): Promise<void> {
    const [missing, all] = keysOf(report);
    const last = this.written.get(node);
    if (last) {
      // The same again at the same stream revision (a resync) is not written. At a later revision it is: the
      // node may have said something else through another replica meanwhile, which this one cannot know.
      if (last.all === all && report.revision <= last.revision) {
        this.pending.delete(node);
        return;
      }
      const onlyCountChanged = last.missing === missing && report.routes.length === 0;
      if (onlyCountChanged && this.deps.clock() - last.atMs < this.minIntervalMs) {
        this.pending.set(node, report);
        this.flusher ??= setInterval(() => void this.flushDue(), Math.min(1_000, this.minIntervalMs)).unref();
        return;
      }
    }
    await this.write(node, report);
  }

  /**
   * Writes `report` in one etcd round trip: conditional on the node being registered and on its stored
   * report being the one this replica last wrote or found (none, the first time). When another replica wrote
   * meanwhile (a node may report to several; found by the chaos tests), what is stored comes back in the same
   * round trip: a newer report, or this same one, stays and is remembered; an older one is written over.
   */
  private async write(node: string, report: RouteReport): Promise<void> {
    this.pending.delete(node);
    const [missing, all] = keysOf(report);
    let expected = this.written.get(node)?.modRevision ?? 0n;
    for (let attempt = 1; ; attempt++) {
      const now = this.deps.clock();
      const res = await this.deps.routeReports.putReportedRoutes(node, recordOf(report, now), expected);
      if (res.written) {
        this.remember(node, { missing, all, atMs: now, revision: report.revision, modRevision: res.modRevision });
        return;
      }
      if (!res.registered) {
        this.written.delete(node);
        throw new TrellisError("NOT_FOUND", `node ${node} is not registered; register it first`);
      }
      const stored = res.current;
      if (stored) {
        const [m, a] = keysOf(stored.value);
        if (stored.value.revision > report.revision || (a === all && stored.value.revision === report.revision)) {
          this.remember(node, { missing: m, all: a, atMs: now, revision: stored.value.revision, modRevision: stored.modRevision });
          return;
        }
      }
      expected = stored?.modRevision ?? 0n;
      if (attempt === maxWriteAttempts) {
        this.written.delete(node);
        throw new TrellisError(
          "CONFLICT",
          `node ${node}'s route report was rewritten ${attempt} times by other replicas meanwhile; report again`,
        );
      }
    }
  }

  private get minIntervalMs(): number {
    return this.deps.minIntervalMs ?? 5_000;
  }

  /**
   * Writes the held-back reports whose interval has passed, `flushConcurrency` at a time, each node's
   * latest. One flush at a time: the timer fires every second, and at 5000 nodes a flush writing one report
   * at a time took minutes; the flushes it started meanwhile wrote the same reports again, concurrently, and
   * half of each replica's etcd transactions were those writes failing their compare (issue 10).
   */
  async flushDue(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      const now = this.deps.clock();
      const due = [...this.pending.keys()].filter((node) => now - (this.written.get(node)?.atMs ?? 0) >= this.minIntervalMs);
      const writeDue = async () => {
        for (let node = due.pop(); node !== undefined; node = due.pop()) {
          const report = this.pending.get(node); // written meanwhile (a report of what is missing goes at once): none
          if (report) await this.write(node, report).catch(() => undefined); // the node reports again on its next resync
        }
      };
      await Promise.all(Array.from({ length: Math.min(flushConcurrency, due.length) }, writeDue));
    } finally {
      this.flushing = false;
    }
    if (this.pending.size === 0 && this.flusher) {
      clearInterval(this.flusher);
      this.flusher = undefined;
    }
  }

  private remember(node: string, entry: Written): void {
    if (this.written.size >= 100_000) this.written.clear(); // bounded; a miss costs a failed compare, still one round trip
    this.written.set(node, entry);
  }
}

function recordOf(report: RouteReport, nowMs: number): ReportedRoutesRecord {
  return create(ReportedRoutesRecordSchema, {
    revision: report.revision,
    routeCount: report.routeCount,
    digest: report.digest,
    missing: [...report.missing],
    routes: [...report.routes],
    reportedAtMs: BigInt(nowMs),
  });
}

/** Whether a stored report matches `desired` exactly. Pure. */
export function reportMatches(stored: ReportedRoutesRecord, desiredDigest: Uint8Array, desiredCount: number): boolean {
  return stored.missing.length === 0 && stored.routeCount === desiredCount && Buffer.from(stored.digest).equals(Buffer.from(desiredDigest));
}
