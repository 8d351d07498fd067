// The node daemon's lifecycle (DESIGN.md §2): register and lease, set the node up and reconcile its pods,
// serve the shim, write the conflist, then keep heartbeating, following the route stream and resyncing.
// main.ts builds the real implementations and hands them in; everything here goes through ports.
import type { Logger } from "pino";
import { Cidr } from "../proto/core/cidr.js";
import { AttachmentService } from "./cni/attachment-service.js";
import type { PendingDeletes } from "./cni/pending-deletes.js";
import { conflistFor } from "./cni/plan.js";
import type { DaemonConfig } from "./config.js";
import type { ControlClient } from "./control/control-client.js";
import type { AllocationJournal } from "./ipam/journal.js";
import type { Netlink } from "./net/netlink.js";
import { RouteReporter, routeReport } from "./routes/route-reporter.js";
import { RouteSync } from "./routes/route-sync.js";
import type { DaemonServer, DaemonServerDeps } from "./rpc/server.js";

export interface NodeDaemonDeps {
  readonly config: DaemonConfig;
  readonly log: Logger;
  readonly net: Netlink;
  readonly journal: AllocationJournal;
  readonly pendingDeletes: PendingDeletes;
  readonly control: ControlClient;
  readonly pathExists: (path: string) => Promise<boolean>;
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Serves the shim (rpc/server.ts startDaemonServer). */
  readonly serve: (deps: DaemonServerDeps) => Promise<DaemonServer>;
  /** Writes the conflist atomically; returns its path (cni/conflist.ts). */
  readonly writeConflist: (dir: string, name: string, conflist: Record<string, unknown>) => Promise<string>;
}

export class NodeDaemon {
  private readonly stopping = new AbortController();
  private server?: DaemonServer;
  private routes?: RouteSync;
  private reporter?: RouteReporter;

  constructor(private readonly deps: NodeDaemonDeps) {}

  /** Runs until `stop`; resolves once the daemon serves the shim and its loops are running. */
  async start(): Promise<void> {
    const { config, log, net, control, sleep } = this.deps;
    const signal = this.stopping.signal;
    const registration = await control.register(signal);
    let current = Cidr.parse(registration.subnet, "leased subnet"); // changes if the node re-registers after losing its lease
    const cni = new AttachmentService({
      net,
      journal: this.deps.journal,
      log,
      clock: Date.now,
      pathExists: this.deps.pathExists,
      mirror: control,
      pendingDeletes: this.deps.pendingDeletes,
    });
    await cni.start({ subnet: current, bridgeName: config.bridge, mtu: config.mtu });
    this.server = await this.deps.serve({
      cni,
      log,
      socketPath: config.socketPath,
      status: () => {
        const stranded = cni.strandedAllocations.length;
        if (stranded > 0) {
          return {
            subnet: current.toString(),
            routesCurrent: false,
            detail: `${stranded} pods still have addresses of this node's previous subnet; recreate them`,
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
      const path = await this.deps.writeConflist(config.cniConfDir, config.cniConfName, conflistFor(config.socketPath));
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
      await cni.moveTo({ subnet: next, bridgeName: config.bridge, mtu: config.mtu });
    };
    const keepGoing = (what: string) => (err: unknown) => log.error({ err }, `${what} stopped`);
    control.heartbeatLoop(config.heartbeatIntervalMs, signal, onRegistered).catch(keepGoing("heartbeat loop"));
    control
      .watchRoutes(async (set, revision) => {
        try {
          const { wanted, held } = await routes.setRoutes(set.values());
          reporter.update(routeReport(revision, wanted, held));
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
        await reporter.flush();
        await cni.completePendingDeletes().catch((err: unknown) => log.error({ err }, "pending deletes failed"));
        await cni.syncMirror();
      }
    })().catch(keepGoing("route resync"));
  }

  /** Stops the loops and the server, and withdraws the node's route. */
  async stop(): Promise<void> {
    this.stopping.abort();
    this.reporter?.stop();
    await this.server?.close();
    await this.deps.control.deregister().catch((err: unknown) => this.deps.log.warn({ err }, "could not withdraw the node's route"));
  }
}
