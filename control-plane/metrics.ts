// The control plane's metrics (README, "Metrics"), on a registry of its own: main.ts serves it on
// --metrics-address; tests make as many as they like. Domain code sees only the methods it calls (the
// registrar: countRegistration; liveness: countExpiry; the etcd stores: observeEtcd, countTxnConflict).
// Gauges are read when scraped from what the replica holds in memory: never an etcd read per scrape.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { type TxnKind, txnKinds } from "./store/txn-kinds.js";

/**
 * Where the gauges are read from, when scraped; undefined: not known yet (before this replica's first expiry
 * round), which reads NaN (trellis_nodes: no series).
 */
export interface ControlPlaneGaugeSources {
  /** Node records by state (live, withdrawn, drained, evicted, expired). */
  readonly nodes: () => ReadonlyMap<string, number> | undefined;
  readonly subnetsFree: () => number | undefined;
  readonly routeStreams: () => number;
  readonly disruption: () => boolean | undefined;
}

/** etcd answers in milliseconds; a loaded or distant one, in up to seconds (the call deadline is 5 s). */
const etcdBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export class ControlPlaneMetrics {
  readonly registry = new Registry();
  private sources?: ControlPlaneGaugeSources;
  private readonly registrations: Counter<"result">;
  private readonly etcdSeconds: Histogram<"op">;
  private readonly conflicts: Counter<"txn">;
  private readonly expiries: Counter;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.registrations = new Counter({
      name: "trellis_registrations_total",
      help: "Node registrations this replica answered, by result: new (a subnet leased), returned (a known node again), unchanged (already live as asked), or the reason it failed in lower case",
      labelNames: ["result"],
      registers,
    });
    this.etcdSeconds = new Histogram({
      name: "trellis_etcd_request_duration_seconds",
      help: "Time of this replica's etcd calls (failed ones too), by op: get, range (a listing, all its pages), put, delete, txn, watch (creating one), compact",
      labelNames: ["op"],
      buckets: etcdBuckets,
      registers,
    });
    this.conflicts = new Counter({
      name: "trellis_etcd_txn_conflicts_total",
      help: `etcd compare-and-swap transactions of this replica whose compare failed, so they wrote nothing (a race lost to another writer, or a stale read); retried or decided again. By txn: ${txnKinds.join(", ")}`,
      labelNames: ["txn"],
      registers,
    });
    for (const txn of txnKinds) this.conflicts.inc({ txn }, 0); // every series from the start, at 0
    this.expiries = new Counter({
      name: "trellis_node_expiries_total",
      help: "Nodes this replica expired (missed heartbeats for the lease TTL; route withdrawn)",
      registers,
    });
    const sources = () => this.sources;
    new Gauge({
      name: "trellis_nodes",
      help: "Node records by state (live, or why not: withdrawn, drained, evicted, expired), cluster-wide, as of this replica's last expiry round",
      labelNames: ["state"],
      registers,
      collect() {
        const byState = sources()?.nodes();
        if (!byState) return;
        this.reset();
        for (const [state, count] of byState) this.set({ state }, count);
      },
    });
    new Gauge({
      name: "trellis_subnets_free",
      help: "Node subnets of the cluster CIDR not leased by any node (reserved ones included), as of this replica's last expiry round",
      registers,
      collect() {
        this.set(sources()?.subnetsFree() ?? Number.NaN);
      },
    });
    new Gauge({
      name: "trellis_route_streams",
      help: "Route streams (WatchRoutes) open on this replica: one per node daemon following it",
      registers,
      collect() {
        this.set(sources()?.routeStreams() ?? Number.NaN);
      },
    });
    new Gauge({
      name: "trellis_disruption",
      help: "1 while the cluster is in disruption mode (many nodes quiet at once: routes are kept), else 0, as of this replica's last expiry round",
      registers,
      collect() {
        const on = sources()?.disruption();
        this.set(on === undefined ? Number.NaN : on ? 1 : 0);
      },
    });
  }

  /** Where the gauges come from; before they are given, they read NaN (or have no series). */
  readGaugesFrom(sources: ControlPlaneGaugeSources): void {
    this.sources = sources;
  }

  countRegistration(result: string): void {
    this.registrations.inc({ result });
  }

  observeEtcd(op: string, seconds: number): void {
    this.etcdSeconds.observe({ op }, seconds);
  }

  countTxnConflict(txn: TxnKind): void {
    this.conflicts.inc({ txn });
  }

  countExpiry(): void {
    this.expiries.inc();
  }
}
