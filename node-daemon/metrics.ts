// The node daemon's metrics (README, "Metrics"), on a registry of its own: main.ts serves it on
// --metrics-address; tests make as many as they like. Domain code sees only the methods it calls
// (AttachmentService: observePhase; rpc/cni-metrics.ts: observeCni; the daemon: the rest).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Routes this node should hold (one per other node, or the router's), held in its kernel, and not. */
export interface RouteCounts {
  readonly desired: number;
  readonly installed: number;
  readonly failed: number;
}

/**
 * Where the gauges are read from, when scraped (in memory, except pending deletes: one readdir). Until the
 * daemon gives them (once its pods are reconciled at start), the gauges read NaN: not known yet.
 */
export interface DaemonGaugeSources {
  readonly podAddressesInUse: () => number;
  /** Undefined until the first route set arrived: then trellis_routes has no series. */
  readonly routes: () => RouteCounts | undefined;
  readonly pendingDeletes: () => Promise<number>;
}

/** Pod calls take milliseconds; a slow kernel or disk, seconds. */
const requestBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Choosing an address takes microseconds; an fsync or a netlink call, up to milliseconds. */
const phaseBuckets = [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** A route change reaches every node within milliseconds when all is well; seconds to minutes when not. */
const lagBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export class DaemonMetrics {
  readonly registry = new Registry();
  private sources?: DaemonGaugeSources;
  private readonly requests: Counter<"command" | "code">;
  private readonly requestSeconds: Histogram<"command">;
  private readonly phaseSeconds: Histogram<"phase">;
  private readonly applyLagSeconds: Histogram;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: "trellis_cni_requests_total",
      help: "CNI requests the daemon answered, by command (ADD, DEL, CHECK, GC, STATUS) and the CNI code the shim reports (0: success)",
      labelNames: ["command", "code"],
      registers,
    });
    this.requestSeconds = new Histogram({
      name: "trellis_cni_request_duration_seconds",
      help: "Time the daemon took to answer a CNI request, by command",
      labelNames: ["command"],
      buckets: requestBuckets,
      registers,
    });
    this.phaseSeconds = new Histogram({
      name: "trellis_cni_phase_duration_seconds",
      help: "Time of each step of pod calls: allocation (choosing an address), fsync (recording or releasing it durably), kernel (netlink: veth add, delete, inspect)",
      labelNames: ["phase"],
      buckets: phaseBuckets,
      registers,
    });
    this.applyLagSeconds = new Histogram({
      name: "trellis_route_apply_lag_seconds",
      help: "From the control plane deciding a route change (seeing it committed to etcd) to this node's kernel holding the routes; clock skew between the machines adds to it (negative values count as 0)",
      buckets: lagBuckets,
      registers,
    });
    const sources = () => this.sources;
    new Gauge({
      name: "trellis_pod_addresses_in_use",
      help: "Pod addresses this node has allocated (one per pod interface)",
      registers,
      collect() {
        this.set(sources()?.podAddressesInUse() ?? Number.NaN);
      },
    });
    new Gauge({
      name: "trellis_routes",
      help: "Routes to other nodes: desired (what the route stream says this node should hold), installed (in the kernel), failed (desired but not in the kernel)",
      labelNames: ["state"],
      registers,
      collect() {
        const counts = sources()?.routes();
        if (!counts) return;
        this.set({ state: "desired" }, counts.desired);
        this.set({ state: "installed" }, counts.installed);
        this.set({ state: "failed" }, counts.failed);
      },
    });
    new Gauge({
      name: "trellis_pending_deletes",
      help: "DELs the shim left while the daemon was unreachable, not completed yet (NaN: the directory could not be read)",
      registers,
      async collect() {
        // An unreadable directory is reported as NaN (unknown), never as 0, and never fails the scrape.
        this.set(
          (await sources()
            ?.pendingDeletes()
            .catch(() => Number.NaN)) ?? Number.NaN,
        );
      },
    });
  }

  /** Where the gauges come from once the daemon's pods are reconciled; before, they read NaN (or have no series). */
  readGaugesFrom(sources: DaemonGaugeSources): void {
    this.sources = sources;
  }

  /** One answered CNI request: its command, the CNI code the shim reports for it (0: success), how long it took. */
  observeCni(command: string, code: number, seconds: number): void {
    this.requests.inc({ command, code: String(code) });
    this.requestSeconds.observe({ command }, seconds);
  }

  /** One step of a pod call ("allocation", "fsync" or "kernel"). */
  observePhase(phase: string, seconds: number): void {
    this.phaseSeconds.observe({ phase }, seconds);
  }

  /** Seconds from the control plane's decision to the routes being in this node's kernel (already clamped at 0). */
  observeRouteApplyLag(seconds: number): void {
    this.applyLagSeconds.observe(seconds);
  }
}
