import type { Logger } from "pino";
import { desiredRoutes, type HostRoute } from "../../proto/core/route-plan.js";
import type { Route } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { Netlink } from "../net/netlink.js";
import { diffRoutes } from "./route-diff.js";

export interface RouteSyncDeps {
  readonly net: Netlink;
  readonly log: Logger;
  readonly nodeName: string;
  readonly clusterCidr: string;
}

/**
 * Keeps the node's host-gw routes equal to the cluster's route set: one route per other live node,
 * none to a node that left. Every call reconciles the whole set against the kernel, so a missed event,
 * a route deleted by hand or a crash in the middle are all repaired by the next call.
 */
export class RouteSync {
  private desired = new Map<string, string>();
  private running: Promise<void> = Promise.resolve();
  private lastApplied = new Map<string, string>();
  /** False until the first route set arrives: before it, an empty set would wipe every route. */
  private known = false;

  constructor(private readonly deps: RouteSyncDeps) {}

  /**
   * Sets the cluster's route set and reconciles the kernel to what this node should hold of it (host-gw,
   * or the central router's cluster route); returns those routes and which of them the kernel holds.
   * A route the kernel refuses (a bad next hop) is left out and logged; the others are all set.
   */
  async setRoutes(routes: Iterable<Route>): Promise<{ wanted: HostRoute[]; held: HostRoute[] }> {
    const wanted = desiredRoutes(routes, this.deps.nodeName, this.deps.clusterCidr);
    this.desired = new Map(wanted.map((r) => [r.dst, r.via]));
    this.known = true;
    await this.reconcile();
    return { wanted, held: wanted.filter((r) => this.lastApplied.get(r.dst) === r.via) };
  }

  /** Desired routes the kernel does not hold after the last reconciliation (STATUS 51 while any). */
  get missing(): number {
    let n = 0;
    for (const [dst, via] of this.desired) if (this.lastApplied.get(dst) !== via) n++;
    return n;
  }

  /**
   * Routes desired, held in the kernel as of the last reconciliation, and not (trellis_routes); undefined
   * until the first route set arrived.
   */
  get counts(): { desired: number; installed: number; failed: number } | undefined {
    if (!this.known) return undefined;
    const failed = this.missing;
    return { desired: this.desired.size, installed: this.desired.size - failed, failed };
  }

  /** Serialized: concurrent callers wait for one another, the last desired set wins. */
  reconcile(): Promise<void> {
    this.running = this.running.catch(() => undefined).then(() => this.reconcileOnce());
    return this.running;
  }

  private async reconcileOnce(): Promise<void> {
    if (!this.known) return;
    const { net, log } = this.deps;
    const desired = this.desired;
    const diff = diffRoutes(desired, await net.listRoutes());
    for (const r of diff.blocked)
      log.warn({ route: `${r.dst} via ${r.via}` }, "route destination held by a route Trellis does not own; left alone");
    if (diff.replace.length + diff.remove.length === 0) {
      this.lastApplied = desired;
      return;
    }
    try {
      await net.applyRoutes(diff.replace, diff.remove);
      for (const r of diff.replace) log.info({ route: `${r.dst} via ${r.via}` }, "route set");
      for (const r of diff.remove) log.info({ route: `${r.dst} via ${r.via}` }, "route removed");
      this.lastApplied = desired;
    } catch (err) {
      // Every change was tried (applyRoutes does not stop at the first failure): what holds is what the
      // kernel has now. One bad next hop costs its own route, never the others.
      log.error({ err }, "some routes could not be set; the others are");
      const owned = new Map((await net.listRoutes()).filter((r) => r.owned).map((r) => [r.dst, r.via]));
      this.lastApplied = new Map([...desired].filter(([dst, via]) => owned.get(dst) === via));
    }
  }
}
