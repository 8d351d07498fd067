// The node daemon's lifecycle (DESIGN.md §2): register and lease, set the node up and reconcile its pods,
// serve the shim, write the conflist, then keep heartbeating, following the route stream and resyncing.
// main.ts builds the real implementations and hands them in; everything here goes through ports.
import type { Logger } from "pino";
import { Cidr } from "../proto/core/cidr.js";
import { clusterMtu } from "../proto/core/cluster-mtu.js";
import { TrellisError } from "../proto/core/errors.js";
import { AttachmentService, type PhaseObserver } from "./cni/attachment-service.js";
import type { PendingDeletes } from "./cni/pending-deletes.js";
import { conflistFor } from "./cni/plan.js";
import type { DaemonConfig } from "./config.js";
import type { ControlClient } from "./control/control-client.js";
import type { AllocationJournal } from "./ipam/journal.js";
import type { Masquerade } from "./net/masquerade-script.js";
import type { Netlink } from "./net/netlink.js";
import { routeApplyLagSeconds } from "./routes/apply-lag.js";
import { RouteReporter, routeReport } from "./routes/route-reporter.js";
import { RouteSync } from "./routes/route-sync.js";
import type { CniRequestObserver } from "./rpc/cni-metrics.js";
import type { DaemonServer, DaemonServerDeps } from "./rpc/server.js";

/** What the daemon reports to its metrics (metrics.ts DaemonMetrics); optional, tests run without. */
export interface NodeMetrics extends PhaseObserver, CniRequestObserver {
  observeRouteApplyLag(seconds: number): void;
  /** The gauges' sources, read when scraped. */
  readGaugesFrom(sources: {
    podAddressesInUse: () => number;
    routes: () => { desired: number; installed: number; failed: number } | undefined;
    pendingDeletes: () => Promise<number>;
  }): void;
}

export interface NodeDaemonDeps {
  readonly config: DaemonConfig;
  readonly log: Logger;
  readonly net: Netlink;
  /** The MTU of the bridge and the pods: --mtu, or the uplink's (main.ts finds it before registering). */
  readonly podMtu: number;
  /** Trellis's nftables table: pod egress masquerade (config.masquerade), or its removal. */
  readonly masquerade: Masquerade;
  readonly journal: AllocationJournal;
  readonly pendingDeletes: PendingDeletes;
  readonly control: ControlClient;
  readonly pathExists: (path: string) => Promise<boolean>;
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Serves the shim (rpc/server.ts startDaemonServer). */
  readonly serve: (deps: DaemonServerDeps) => Promise<DaemonServer>;
  /** Writes the conflist atomically; returns its path (cni/conflist.ts). */
  readonly writeConflist: (dir: string, name: string, conflist: Record<string, unknown>) => Promise<string>;
  readonly metrics?: NodeMetrics;
}

export class NodeDaemon {
  private readonly stopping = new AbortController();
  private server?: DaemonServer;
  private routes?: RouteSync;
  private reporter?: RouteReporter;

  constructor(private readonly deps: NodeDaemonDeps) {}

  /** Runs until `stop`; resolves once the daemon serves the shim and its loops are running. */
  async start(): Promise<void> {
    const { config, log, net, control, sleep, podMtu, masquerade, metrics } = this.deps;
    const signal = this.stopping.signal;
    const registration = await control.register(signal);
    await masquerade.apply(config.masquerade ? registration.clusterCidr : undefined);
    log.info(
      { subnet: registration.clusterCidr },
      config.masquerade ? "egress masquerade set (table ip trellis)" : "egress masquerade off (table ip trellis removed)",
    );
    let mtuOfCluster: number | undefined;
    let current = Cidr.parse(registration.subnet, "leased subnet"); // changes if the node re-registers after losing its lease
    const cni = new AttachmentService({
      net,
      journal: this.deps.journal,
      log,
      clock: Date.now,
      pathExists: this.deps.pathExists,
      mirror: control,
      pendingDeletes: this.deps.pendingDeletes,
      metrics,
    });
    await cni.start({ subnet: current, bridgeName: config.bridge, mtu: podMtu });
    metrics?.readGaugesFrom({
      podAddressesInUse: () => cni.allocationCount,
      routes: () => this.routes?.counts,
      pendingDeletes: () => this.deps.pendingDeletes.count(),
    });
    this.server = await this.deps.serve({
      cni,
      log,
      socketPath: config.socketPath,
      metrics,
      status: () => {
        const stranded = cni.strandedAllocations.length;
        if (stranded > 0) {
          return {
            subnet: current.toString(),
            routesCurrent: false,
            detail: `${stranded} pods still have addresses of this node's previous subnet; recreate them`,
          };
        }
        if (mtuOfCluster !== undefined && mtuOfCluster !== podMtu) {
          return {
            subnet: current.toString(),
            routesCurrent: false,
            detail: `this node's pod MTU is ${podMtu} but the cluster's is ${mtuOfCluster} (the most common among live nodes); large packets between this node's pods and other nodes' may be lost: set the same MTU on every node (--mtu, or the uplink's)`,
          };
        }
        const missing = this.routes?.missing ?? 0;
        if (missing > 0) {
          return {
            subnet: current.toString(),
            routesCurrent: false,
            detail: `${missing} routes to other nodes could not be set (see the daemon's log); pods may not reach those nodes' pods`,
          };
        }
        return { subnet: current.toString(), routesCurrent: control.routesCurrent.current, detail: control.routesCurrent.detail };
      },
    });
    if (config.cniConfDir) {
      // Only now: a runtime that finds the conflist can use it at once (DESIGN.md §4, installation).
      const path = await this.deps.writeConflist(config.cniConfDir, config.cniConfName, conflistFor(config.socketPath, config.cniVersion));
      log.info({ key: path }, "CNI conflist written");
    }

    const routes = new RouteSync({ net, log, nodeName: config.nodeName, clusterCidr: registration.clusterCidr });
    const reporter = new RouteReporter((report) => control.reportRoutes(report), log);
    this.reporter = reporter;
    this.routes = routes;
    const onRegistered = async (res: { subnet: string }) => {
      const next = Cidr.parse(res.subnet, "leased subnet");
      if (next.equals(current)) return;
      log.error(
        { subnet: next.toString() },
        `SUBNET CHANGED from ${current.toString()} to ${next.toString()}: this node lost its lease while cut off and it was handed on; new pods get ${next.toString()}, pods still on ${current.toString()} must be recreated (STATUS answers 51 until they are)`,
      );
      current = next;
      await cni.moveTo({ subnet: next, bridgeName: config.bridge, mtu: podMtu });
    };
    const keepGoing = (what: string) => (err: unknown) => log.error({ err }, `${what} stopped`);
    control.heartbeatLoop(config.heartbeatIntervalMs, signal, onRegistered).catch(keepGoing("heartbeat loop"));
    control
      .watchRoutes(async (set, revision, decidedAtMs) => {
        mtuOfCluster = clusterMtu([...set.values()].map((r) => r.mtu));
        try {
          const { wanted, held } = await routes.setRoutes(set.values());
          reporter.update(routeReport(revision, wanted, held));
          // A change (never a snapshot: it holds decisions of any age) is applied once every route is in.
          if (decidedAtMs !== undefined && held.length === wanted.length) {
            metrics?.observeRouteApplyLag(routeApplyLagSeconds(decidedAtMs, Date.now()));
          }
        } catch (err) {
          log.error({ err, revision: String(revision) }, "route sync failed");
        }
      }, signal)
      .catch(keepGoing("route stream"));
    (async () => {
      while (!signal.aborted) {
        await sleep(config.routeResyncIntervalMs, signal);
        if (signal.aborted) break;
        await routes.reconcile().catch((err: unknown) => log.error({ err }, "route resync failed"));
        await reporter.resync();
        await cni.completePendingDeletes().catch((err: unknown) => log.error({ err }, "pending deletes failed"));
        await cni.syncMirror();
      }
    })().catch(keepGoing("route resync"));
  }

  /**
   * Stops the loops and the server. Stopping is not leaving (DESIGN.md §2): the node's route, its routes to
   * the other nodes, the bridge and the pods all stay, so a daemon started again within the lease TTL cuts
   * nothing. Leaving is `leaveCluster` (the daemon's leave command) or AdminService.DrainNode.
   */
  async stop(): Promise<void> {
    this.stopping.abort();
    this.reporter?.stop();
    await this.server?.close();
  }
}

export interface LeaveDeps {
  readonly config: Pick<DaemonConfig, "socketPath">;
  readonly log: Logger;
  readonly net: Pick<Netlink, "listRoutes" | "applyRoutes">;
  readonly control: Pick<ControlClient, "deregister">;
  /** Trellis's nftables table, removed by `apply(undefined)`. */
  readonly masquerade: Masquerade;
  /** Whether a daemon answers on the shim socket now. */
  readonly serving: (socketPath: string) => Promise<boolean>;
}

/**
 * The node leaves the cluster (`trellis-node-daemon leave`): the control plane withdraws its route at once
 * (its subnet stays its own for the grace period, its certificate stays valid), and the node's own routes
 * to the other nodes and its nftables table go. The bridge, the pods and their records stay, so the
 * runtime can still DEL them. Refused while a daemon serves: it would register again at its next heartbeat.
 */
export async function leaveCluster(deps: LeaveDeps): Promise<{ routesRemoved: number }> {
  const { config, log, net, control, masquerade } = deps;
  if (await deps.serving(config.socketPath)) {
    throw new TrellisError(
      "CONFLICT",
      `the node daemon is running (it serves ${config.socketPath}), and would register the node again at its next heartbeat: stop it first (systemctl stop trellis-node-daemon), then run leave again`,
    );
  }
  try {
    await control.deregister();
    log.info("node left the cluster: its route is withdrawn");
  } catch (err) {
    // Its record is gone already (the grace period ended, or ReleaseLease): no route points here.
    if (!(err instanceof TrellisError && err.reason === "NOT_FOUND")) throw err;
    log.info({ err }, "the control plane does not know this node (its subnet was freed): no route to withdraw");
  }
  const owned = (await net.listRoutes()).filter((r) => r.owned);
  if (owned.length > 0) await net.applyRoutes([], owned);
  for (const r of owned) log.info({ route: `${r.dst} via ${r.via}` }, "route removed");
  await masquerade.apply(undefined);
  log.info("nftables table removed");
  return { routesRemoved: owned.length };
}
