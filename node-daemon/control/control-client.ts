import type { Logger } from "pino";
import { TrellisError } from "../../proto/core/errors.js";
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { RegisterNodeResponse, Route, WatchRoutesResponse } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { RouteEventType } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { AllocationMirror } from "../cni/mirror-queue.js";
import type { RouteReport } from "../routes/route-reporter.js";

/** The NodeService calls the daemon makes; the generated Connect client satisfies it. */
export interface ControlPlaneApi {
  registerNode(
    req: { nodeName: string; nodeIp: string; mtu: number; heldSubnet?: string; instance?: string },
    options?: { signal?: AbortSignal; timeoutMs?: number },
  ): Promise<RegisterNodeResponse>;
  heartbeat(req: { nodeName: string }, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<unknown>;
  deregisterNode(req: { nodeName: string }, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<unknown>;
  watchRoutes(
    req: { nodeName: string; fromRevision: bigint; epoch: bigint },
    options?: { signal?: AbortSignal },
  ): AsyncIterable<WatchRoutesResponse>;
  syncAllocations(req: { nodeName: string; recorded: AllocationRecord[]; released: string[] }, options?: CallOptions): Promise<unknown>;
  listNodeAllocations(req: { nodeName: string }, options?: CallOptions): Promise<{ allocations: AllocationRecord[] }>;
  reportRoutes(
    req: { nodeName: string; revision: bigint; routeCount: number; digest: Uint8Array; missing: Route[] },
    options?: CallOptions,
  ): Promise<unknown>;
  renewCertificate(req: { nodeName: string; csrPem: string }, options?: CallOptions): Promise<{ certificatePem: string }>;
}

type CallOptions = { signal?: AbortSignal; timeoutMs?: number };

export interface ControlClientDeps {
  /** One client per control-plane replica; calls fail over to the next on UNAVAILABLE. */
  readonly replicas: readonly ControlPlaneApi[];
  readonly log: Logger;
  readonly nodeName: string;
  readonly nodeIp: string;
  readonly mtu: number;
  /** This daemon process, new at each start (RegisterNodeRequest.instance: a drain sticks while it runs). */
  readonly instance?: string;
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly callTimeoutMs?: number;
}

/** Route set as applied from the stream: by node name. */
export type RouteSet = ReadonlyMap<string, Route>;

/** Applies one stream message to the route set. Pure. */
export function applyRouteMessage(current: RouteSet, msg: WatchRoutesResponse): RouteSet {
  const next = new Map(msg.snapshot ? [] : current);
  if (msg.snapshot) for (const r of msg.routes) next.set(r.nodeName, r);
  for (const e of msg.events) {
    if (!e.route) continue;
    if (e.type === RouteEventType.UPSERT) next.set(e.route.nodeName, e.route);
    else if (e.type === RouteEventType.DELETE) next.delete(e.route.nodeName);
  }
  return next;
}

/** The daemon's side of the control plane: registration with backoff, heartbeats, the route stream. */
export class ControlClient implements AllocationMirror {
  private current = 0;
  private replicas: readonly ControlPlaneApi[];
  private revision = 0n;
  /** The route stream's epoch: a resume names it, and a stream of another epoch starts with a snapshot. */
  private epoch = 0n;
  /** The subnet of the last registration: sent when registering again, to get it back if it is free. */
  private heldSubnet?: string;
  private routes: RouteSet = new Map();
  /** Whether the route stream is connected and its last message applied; why not, when it is not. */
  private routeState: { current: boolean; detail: string } = { current: false, detail: "no route set received yet" };

  constructor(private readonly deps: ControlClientDeps) {
    this.replicas = deps.replicas;
  }

  /**
   * New clients for every later call (after a certificate renewal); streams already open go on over the
   * connections they have.
   */
  useReplicas(replicas: readonly ControlPlaneApi[]): void {
    this.replicas = replicas;
  }

  private get api(): ControlPlaneApi {
    const api = this.replicas[this.current % this.replicas.length];
    if (!api) throw new TrellisError("INVALID_ARGUMENT", "no control-plane address configured");
    return api;
  }

  private failover(): void {
    this.current = (this.current + 1) % this.replicas.length;
  }

  /** Registers until it succeeds (retrying with backoff while the control plane is unreachable). */
  async register(signal: AbortSignal): Promise<RegisterNodeResponse> {
    const { log, nodeName, nodeIp, mtu } = this.deps;
    for (let attempt = 1, delay = 250; ; attempt++, delay = Math.min(delay * 2, 10_000)) {
      try {
        const res = await this.api.registerNode(
          { nodeName, nodeIp, mtu, heldSubnet: this.heldSubnet, instance: this.deps.instance },
          { signal, timeoutMs: this.deps.callTimeoutMs ?? 5_000 },
        );
        log.info({ subnet: res.subnet, attempt }, "registered with the control plane");
        this.heldSubnet = res.subnet;
        return res;
      } catch (err) {
        if (signal.aborted) throw err;
        const reason = err instanceof TrellisError ? err.reason : undefined;
        if (
          reason === "INVALID_ARGUMENT" ||
          reason === "ALREADY_EXISTS" ||
          reason === "EXHAUSTED" ||
          reason === "PERMISSION_DENIED" ||
          reason === "UNAUTHENTICATED"
        )
          throw err;
        if (reason === "CONFLICT") {
          // Drained by an admin while running (or lost races): asking again will not change that soon.
          log.warn({ err, attempt, durationMs: 10_000 }, `not registered: ${(err as Error).message}`);
          await this.deps.sleep(10_000, signal);
          continue;
        }
        log.warn({ err, attempt, durationMs: delay }, "control plane not reachable, retrying registration");
        this.failover();
        await this.deps.sleep(delay, signal);
      }
    }
  }

  /**
   * Heartbeats every `intervalMs`; when the control plane no longer holds the node live (evicted, expired
   * while partitioned) it registers again and hands the answer to `onRegistered` (the subnet may differ).
   */
  async heartbeatLoop(
    intervalMs: number,
    signal: AbortSignal,
    onRegistered: (res: RegisterNodeResponse) => Promise<void> = async () => undefined,
  ): Promise<void> {
    while (!signal.aborted) {
      await this.deps.sleep(intervalMs, signal);
      if (signal.aborted) return;
      try {
        await this.api.heartbeat({ nodeName: this.deps.nodeName }, { signal, timeoutMs: this.deps.callTimeoutMs ?? 5_000 });
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof TrellisError && err.reason === "NOT_FOUND") {
          this.deps.log.warn({ err }, "the control plane no longer holds this node live; registering again");
          await onRegistered(await this.register(signal));
        } else {
          this.deps.log.warn({ err }, "heartbeat failed");
          this.failover();
        }
      }
    }
  }

  /**
   * Follows the route stream until `signal` aborts, calling `onRoutes` with the full route set after every
   * message, and, for a message of changes, when the control plane decided them (its wall clock, ms; never
   * for a snapshot); reconnects with backoff (to the next replica) when the stream breaks.
   */
  async watchRoutes(
    onRoutes: (routes: RouteSet, revision: bigint, decidedAtMs?: number) => Promise<void>,
    signal: AbortSignal,
  ): Promise<void> {
    for (let backoffMs = 100; !signal.aborted; backoffMs = Math.min(backoffMs * 2, 5_000)) {
      try {
        const resume = { nodeName: this.deps.nodeName, fromRevision: this.revision, epoch: this.epoch };
        for await (const msg of this.api.watchRoutes(resume, { signal })) {
          this.routes = applyRouteMessage(this.routes, msg);
          this.revision = msg.revision;
          this.epoch = msg.epoch;
          backoffMs = 100;
          await onRoutes(this.routes, this.revision, msg.snapshot || msg.decidedAtMs === 0n ? undefined : Number(msg.decidedAtMs));
          this.routeState = { current: true, detail: "" };
        }
        if (!signal.aborted) this.deps.log.warn({ revision: String(this.revision) }, "route stream ended, resuming");
        this.routeState = { current: false, detail: "the route stream from the control plane ended; reconnecting" };
      } catch (err) {
        if (signal.aborted) return;
        this.deps.log.warn({ err, revision: String(this.revision) }, "route stream broken, resuming");
        this.routeState = {
          current: false,
          detail: `the route stream from the control plane is broken (${(err as Error).message}); reconnecting`,
        };
        this.failover();
      }
      await this.deps.sleep(backoffMs, signal).catch(() => undefined);
    }
  }

  /** For STATUS: stale routes mean existing pods may have limited connectivity. */
  get routesCurrent(): { current: boolean; detail: string } {
    return this.routeState;
  }

  private get timeout() {
    return { timeoutMs: this.deps.callTimeoutMs ?? 5_000 };
  }

  async sync(recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void> {
    await this.withFailover(() =>
      this.api.syncAllocations({ nodeName: this.deps.nodeName, recorded: [...recorded], released: [...released] }, this.timeout),
    );
  }

  async list(): Promise<AllocationRecord[]> {
    return (await this.withFailover(() => this.api.listNodeAllocations({ nodeName: this.deps.nodeName }, this.timeout))).allocations;
  }

  /** Tells the control plane which routes this node holds now (admin GetRoutes: desired versus reported). */
  async reportRoutes(report: RouteReport): Promise<void> {
    await this.withFailover(() => this.api.reportRoutes({ nodeName: this.deps.nodeName, ...report }, this.timeout));
  }

  /** A certificate for a new key (CSR), authenticated by the current one. */
  async renewCertificate(csrPem: string): Promise<string> {
    const res = await this.withFailover(() => this.api.renewCertificate({ nodeName: this.deps.nodeName, csrPem }, this.timeout));
    return res.certificatePem;
  }

  /** One call, retried once on the next replica when this one is unreachable. */
  private async withFailover<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof TrellisError && (err.reason === "UNAVAILABLE" || err.reason === "TIMEOUT")) || this.replicas.length < 2)
        throw err;
      this.failover();
      return fn();
    }
  }

  /** Withdraws the node's route at once (the leave command); its subnet stays its own for the grace period. */
  async deregister(): Promise<void> {
    await this.withFailover(() => this.api.deregisterNode({ nodeName: this.deps.nodeName }, this.timeout));
  }
}
