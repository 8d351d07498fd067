// sim-node: ready
// A simulated node daemon: what the real one (node-daemon/control/control-client.ts, daemon.ts,
// routes/) does towards the control plane, without netlink, pods or logging, cheap enough for thousands
// in one process. Its own HTTP/2 connection to each replica it uses, with its own certificate;
// RegisterNode (again on NOT_FOUND, with the subnet it held); Heartbeat on one timer; WatchRoutes resumed
// by revision and epoch (a snapshot replaces the table); ReportRoutes with the count and digest the daemon
// sends (SHA-256 of the sorted "dst via\n" lines of what it should hold). On a failed call or stream it
// moves to the next address after a short jittered backoff, so streams leave a replica that died; as the
// daemon's failover, moving keeps the connection it leaves (a replica that is only slow still accepts
// it). partition() cuts it off (no heartbeats, connections dropped, routes kept, as a cut network);
// heal() resumes.
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { createSecureContext, type SecureContext } from "node:tls";
import { ConnectError } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { countOnlyWaitMs } from "../../node-daemon/routes/route-reporter.js";
import { reasonMetadataKey } from "../../proto/core/errors.js";
import { NodeService, type Route, RouteEventType, type WatchRoutesResponse } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { fromConnectError } from "../../proto/rpc/connect-errors.js";
import { streamCall, unaryCall } from "./grpc-wire.js";

/** A route in a sim's table: the pods of `subnet` are reached via `via` (that node's IP). */
export interface SimRoute {
  readonly subnet: string;
  readonly via: string;
  readonly router: boolean;
}

export type RouteChangeKind = "up" | "down";
/** Called when node `node`'s route appears ("up", also when its subnet or next hop changes) or disappears ("down") in a sim's table. */
export type RouteListener = (node: string, kind: RouteChangeKind, at: number) => void;

export interface SimNodeOptions {
  readonly name: string;
  /** Underlay address, e.g. 10.200.x.y: unicast, not loopback, not in the cluster CIDR. */
  readonly nodeIp: string;
  /** Control-plane replicas, "127.0.0.1:port"; the first is used first, a failure moves to the next. */
  readonly addresses: readonly string[];
  readonly caPem: string;
  /** The node's own certificate and key (SpawnedControlPlane.nodeCredential(name)). */
  readonly credential: { readonly cert: string; readonly key: string };
  readonly heartbeatIntervalMs: number;
  /** Clock of the times given to listeners and recorded (default performance.now). Timers are real. */
  readonly now?: () => number;
  readonly mtu?: number;
  /**
   * Deadline of every unary call (default 5 s, as the daemon's); a heartbeat that misses it moves the node
   * to the next address. Shorter finds a frozen replica sooner (it must be well under the lease TTL minus
   * the heartbeat interval for nodes to move before they expire). Heartbeats adapt it as TCP does its
   * retransmission timeout (smoothed round trip plus four deviations, doubled after a miss, at most 5 s)
   * so that a loaded machine's slow answers do not turn into reconnection storms. RegisterNode and
   * DeregisterNode get at least 5 s.
   */
  readonly callTimeoutMs?: number;
  /**
   * When to send ReportRoutes after an applied stream message: "debounce" (default), as the daemon's
   * RouteReporter does, `reportDebounceMs` after the first change, later ones at least the quiet time after
   * the last report and spread at random by the table's size (countOnlyWaitMs; a sim never misses a route,
   * so its changes are count and digest only), coalescing the changes meanwhile (one timer shared by
   * every sim in the process); "each": after every applied message; "heartbeat":
   * on the next heartbeat tick; "off": never. In every mode at most one report is in flight, and one
   * that failed is sent again on the next heartbeat tick.
   */
  readonly reportMode?: "debounce" | "each" | "heartbeat" | "off";
  /** Default 1000 ms (node-daemon/routes/route-reporter.ts). */
  readonly reportDebounceMs?: number;
  /** The least quiet time, default 5000 ms; longer with more routes (route-reporter.ts quietMsFor). */
  readonly reportQuietMs?: number;
  /** Reconnect backoff, jittered uniformly between the two (default 100-500 ms). */
  readonly backoffMs?: { readonly min: number; readonly max: number };
  readonly rand?: () => number;
  readonly onRoute?: RouteListener;
}

export interface SimNodeStats {
  registrations: number;
  heartbeats: number;
  heartbeatFailures: number;
  /** Connections opened (the first one included). */
  connections: number;
  streamMessages: number;
  snapshots: number;
  streamFailures: number;
  reports: number;
  reportFailures: number;
  /**
   * Longest time between two successful heartbeats while not partitioned (heal starts counting afresh),
   * from the earlier one's request to the later one's answer: never shorter than the time between their
   * writes in etcd, so a node whose gap stayed under the TTL cannot rightly have expired.
   */
  maxHeartbeatGapMs: number;
  /** Failed calls and streams by "what reason", e.g. "heartbeat TIMEOUT" (the reason as fromConnectError gives it). */
  failures: Record<string, number>;
  lastError?: string;
}

/** SimNodeStats' counters, summed over sims (maxHeartbeatGapMs: the longest of them). */
export type SimTotals = Omit<SimNodeStats, "registrations" | "failures" | "lastError">;

export function noSimTotals(): SimTotals {
  return {
    heartbeats: 0,
    heartbeatFailures: 0,
    connections: 0,
    streamMessages: 0,
    snapshots: 0,
    streamFailures: 0,
    reports: 0,
    reportFailures: 0,
    maxHeartbeatGapMs: 0,
  };
}

/** Adds `more` into `sum`. */
export function addSimTotals(sum: SimTotals, more: SimTotals): void {
  for (const k of Object.keys(sum) as Array<keyof SimTotals>) {
    sum[k] = k === "maxHeartbeatGapMs" ? Math.max(sum[k], more[k]) : sum[k] + more[k];
  }
}

/** Errors that moving to another replica cannot fix: registration gives up on them, as the daemon does. */
const fatalRegistration = new Set(["INVALID_ARGUMENT", "ALREADY_EXISTS", "EXHAUSTED", "PERMISSION_DENIED", "UNAUTHENTICATED"]);

/** A route as the sims hold it: with its digest line ("dst via\n"). */
interface HeldRoute extends SimRoute {
  readonly line: string;
}

/**
 * Routes and node names, one copy per process for every sim in it. Each sim holding its own copy of every
 * route came to about 2.5 MiB a sim at 4799 nodes (12 GB over 10 workers), and the workers' major GCs
 * stalled them for up to 52 s: calls in flight timed out, which the bench then counted against the
 * control plane. Never emptied: a run has a few routes per node.
 */
const routes = new Map<string, HeldRoute>();
const names = new Map<string, string>();

function heldRoute(subnet: string, via: string, router: boolean): HeldRoute {
  const key = `${subnet} ${via} ${router}`;
  let r = routes.get(key);
  if (!r) {
    r = Object.freeze({ subnet, via, router, line: `${subnet} via ${via}\n` });
    routes.set(key, r);
  }
  return r;
}

function nameOf(name: string): string {
  const known = names.get(name);
  if (known !== undefined) return known;
  names.set(name, name);
  return name;
}

/**
 * Whether the replica itself answered with this error (the reason it sends in metadata): it is alive and
 * the connection works, so there is no reason to leave it. Otherwise (a deadline, a refused or reset
 * connection) the replica may be dead or frozen: move to the next address.
 */
const answered = (err: unknown) => err instanceof ConnectError && err.metadata.has(reasonMetadataKey);

/** Index of `line` in sorted `lines`, or where it would go. */
function lowerBound(lines: readonly string[], line: string): number {
  let lo = 0;
  let hi = lines.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((lines[mid] as string) < line) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Debounced reports due, of every sim in the process, sent by one shared timer (none per sim). */
const dueReports = new Map<SimNode, { readonly at: number; readonly send: () => void }>();
let reportTimer: ReturnType<typeof setInterval> | undefined;

function sendDueReports(): void {
  const now = performance.now();
  for (const [sim, due] of dueReports) {
    if (due.at > now) continue;
    dueReports.delete(sim);
    due.send();
  }
  if (dueReports.size === 0 && reportTimer) {
    clearInterval(reportTimer);
    reportTimer = undefined;
  }
}

type Connection = { readonly address: string; readonly session: Http2SessionManager };
const rpc = NodeService.method;

export class SimNode {
  readonly name: string;
  readonly nodeIp: string;
  /** Settable after construction; see RouteListener. */
  onRoute?: RouteListener;
  /** Every withdrawal from this sim's table ("down"), in order: for countFlaps. */
  readonly withdrawals: Array<{ readonly node: string; readonly at: number }> = [];
  /** When the harness first partitioned, stopped or deregistered this node (its own withdrawals are then no flaps). */
  disturbedAt?: number;
  readonly stats: SimNodeStats = { registrations: 0, ...noSimTotals(), failures: {} };

  private readonly o: SimNodeOptions;
  private readonly now: () => number;
  private readonly rand: () => number;
  private readonly callTimeoutMs: number;
  /** The heartbeat's deadline now, and the smoothed round trip and its deviation it comes from. */
  private heartbeatTimeoutMs: number;
  private srttMs?: number;
  private rttVarMs = 0;
  private table = new Map<string, HeldRoute>();
  /** Sorted "dst via\n" lines of every other node's route (host-gw), for the digest. */
  private lines: string[] = [];
  /** Nodes marked central router. */
  private readonly routers = new Set<string>();
  private digestCache?: { routeCount: number; digest: Uint8Array };
  private subnetValue = "";
  private clusterCidrValue = "";
  private revisionValue = 0n;
  private epochValue = 0n;
  private index = 0;
  /**
   * One connection per replica address, kept while the sim runs, as the daemon keeps one client per
   * replica. Moving to the next address used to abort the connection it left: at 2000 nodes on this
   * machine, calls that missed their deadline turned into new connections, the replicas' accept queues
   * filled (512 waiting), a connection took 5-10 s, and every call made on a new one timed out too.
   */
  private readonly conns = new Map<string, Connection>();
  private tls?: SecureContext;
  /** One per run between start/heal and partition/stop: aborting it ends the loops and cancels calls. */
  private life?: AbortController;
  private timer?: ReturnType<typeof setTimeout>;
  private streamLoop?: Promise<void>;
  private lastBeatOkAt?: number;
  private isPartitioned = false;
  private stopped = false;
  private reporting = false;
  private lastReportAt = Number.NEGATIVE_INFINITY;
  /** The table changed since the last report was sent. */
  private reportDirty = false;
  /** The last report failed: the next heartbeat tick sends again. */
  private reportFailed = false;

  constructor(o: SimNodeOptions) {
    if (o.addresses.length === 0) throw new Error(`sim node ${o.name}: no control-plane address`);
    this.o = o;
    this.name = o.name;
    this.nodeIp = o.nodeIp;
    this.onRoute = o.onRoute;
    this.now = o.now ?? (() => performance.now());
    this.rand = o.rand ?? Math.random;
    this.callTimeoutMs = o.callTimeoutMs ?? 5_000;
    this.heartbeatTimeoutMs = this.callTimeoutMs;
  }

  /** By node name (this node's own included): what the route stream says now. */
  get routes(): ReadonlyMap<string, SimRoute> {
    return this.table;
  }

  /** The subnet RegisterNode gave (empty before start). */
  get subnet(): string {
    return this.subnetValue;
  }

  get clusterCidr(): string {
    return this.clusterCidrValue;
  }

  /** Route-stream revision and epoch of the last applied message. */
  get revision(): bigint {
    return this.revisionValue;
  }

  get epoch(): bigint {
    return this.epochValue;
  }

  /** The replica it talks to now. */
  get address(): string {
    return this.o.addresses[this.index % this.o.addresses.length] as string;
  }

  get partitioned(): boolean {
    return this.isPartitioned;
  }

  /** Since the last successful heartbeat, or the longest gap so far if longer (while not partitioned). */
  heartbeatGapMs(): number {
    const current = this.lastBeatOkAt === undefined || this.isPartitioned ? 0 : this.now() - this.lastBeatOkAt;
    return Math.max(this.stats.maxHeartbeatGapMs, current);
  }

  /** What this node reports: how many routes it should hold and their digest (as node-daemon/routes does). */
  digest(): { routeCount: number; digest: Uint8Array } {
    if (this.digestCache) return this.digestCache;
    let lines: readonly string[] = this.lines;
    if (this.routers.size > 0) {
      // Central-router mode (proto/core/route-plan.ts desiredRoutes): the first router by name; unless it is us,
      // our one route is the cluster CIDR via it.
      const router = [...this.routers].sort((a, b) => a.localeCompare(b))[0] as string;
      const via = this.table.get(router)?.via ?? "";
      if (router !== this.name) lines = [`${this.clusterCidrValue} via ${via}\n`];
    }
    this.digestCache = { routeCount: lines.length, digest: createHash("sha256").update(lines.join("")).digest() };
    return this.digestCache;
  }

  /** Registers (retrying on another replica while none answers), then heartbeats and follows the route stream. */
  async start(): Promise<void> {
    if (this.life) throw new Error(`sim node ${this.name} started twice`);
    const life = new AbortController();
    this.life = life;
    await this.register(life.signal);
    this.run(life, this.rand() * this.o.heartbeatIntervalMs);
  }

  /** A cut network: heartbeats stop, the connection and its stream drop; the route table stays as it is. */
  partition(): void {
    if (this.isPartitioned || this.stopped) return;
    this.isPartitioned = true;
    this.disturbedAt ??= this.now();
    this.halt();
  }

  /** The network is back: reconnect, resume the stream from its revision and epoch, heartbeat again. */
  heal(): void {
    if (!this.isPartitioned || this.stopped) return;
    this.isPartitioned = false;
    this.lastBeatOkAt = undefined;
    const life = new AbortController();
    this.life = life;
    this.run(life, this.rand() * this.o.heartbeatIntervalMs);
  }

  /** Stops timers and streams and closes the connection; no DeregisterNode (a crash, or SIGTERM: the route stays). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.disturbedAt ??= this.now();
    this.halt();
    await this.streamLoop;
  }

  /**
   * A graceful leave, as the daemon's `leave` does it: stop() first, then DeregisterNode (which withdraws
   * the route at once) on a connection of its own, trying each replica in turn. With the heartbeat and
   * stream loops still running, their failures rotated the connection under the call ("connection
   * aborted") until every attempt was used up.
   */
  async deregister(): Promise<void> {
    this.disturbedAt ??= this.now();
    await this.stop();
    let last: unknown;
    try {
      for (let attempt = 0; attempt < 2 * this.o.addresses.length + 1; attempt++) {
        const c = this.connection();
        try {
          await unaryCall(c.session, rpc.deregisterNode, { nodeName: this.name }, { timeoutMs: Math.max(5_000, this.callTimeoutMs) });
          return;
        } catch (err) {
          last = fromConnectError(err, `deregister via ${c.address}`);
          this.rotate(c);
          await sleep(this.backoff());
        }
      }
      throw last;
    } finally {
      this.halt(); // closes the connection the call used
    }
  }

  private halt(): void {
    this.life?.abort();
    dueReports.delete(this);
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const c of this.conns.values()) c.session.abort();
    this.conns.clear();
  }

  private run(life: AbortController, firstBeatMs: number): void {
    this.schedule(life.signal, firstBeatMs);
    this.streamLoop = this.follow(life.signal);
  }

  private backoff(): number {
    const { min, max } = this.o.backoffMs ?? { min: 100, max: 500 };
    return min + this.rand() * (max - min);
  }

  private connection(): Connection {
    const address = this.address;
    const known = this.conns.get(address);
    if (known) return known;
    const baseUrl = `https://${address}`;
    // One TLS context per sim, made once: parsing the CA, certificate and key is most of a reconnect's cost.
    this.tls ??= createSecureContext({ ca: this.o.caPem, cert: this.o.credential.cert, key: this.o.credential.key });
    const c = { address, session: new Http2SessionManager(baseUrl, undefined, { secureContext: this.tls }) };
    this.conns.set(address, c);
    this.stats.connections++;
    return c;
  }

  /**
   * A call on `c` failed: the next calls go to the next address (unless another failure moved them
   * already). As the daemon's failover, `c` stays open, and so does a route stream on it: that stream ends
   * by itself if the replica is gone. Closing it on every slow heartbeat made each one a new stream and a
   * full snapshot, which loaded the replicas more, which slowed more heartbeats.
   */
  private rotate(c: Connection): void {
    if (c.address !== this.address) return;
    this.index = (this.index + 1) % this.o.addresses.length;
  }

  /** As the daemon's ControlClient.register: retried after 250 ms, doubling to 10 s (jittered here). */
  private async register(signal: AbortSignal): Promise<void> {
    for (let delayMs = 250; ; delayMs = Math.min(2 * delayMs, 10_000)) {
      if (signal.aborted) throw new Error(`sim node ${this.name}: stopped while registering`);
      const c = this.connection();
      const sentAt = this.now();
      try {
        const res = await unaryCall(
          c.session,
          rpc.registerNode,
          { nodeName: this.name, nodeIp: this.nodeIp, mtu: this.o.mtu ?? 1500, heldSubnet: this.subnetValue || undefined },
          { signal, timeoutMs: Math.max(5_000, this.callTimeoutMs) },
        );
        this.subnetValue = res.subnet;
        this.clusterCidrValue = res.clusterCidr;
        this.stats.registrations++;
        this.lastBeatOkAt = sentAt; // registering is a sign of life (the control plane writes the heartbeat key)
        this.adaptTimeout(this.now() - sentAt); // the first heartbeat's deadline starts from what this round trip took
        return;
      } catch (err) {
        const e = this.failed("register", err, c);
        if (signal.aborted) throw e;
        if (fatalRegistration.has(e.reason)) throw e;
        if (!answered(err)) this.rotate(c);
        await sleep(delayMs * (0.5 + this.rand() / 2), undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /** Counts a failure of `what` and keeps its message. */
  private failed(what: string, err: unknown, c: Connection) {
    const e = fromConnectError(err, `${what} of ${this.name} via ${c.address}`);
    const key = `${what} ${e.reason}`;
    this.stats.failures[key] = (this.stats.failures[key] ?? 0) + 1;
    this.stats.lastError = e.message;
    return e;
  }

  private get maxTimeoutMs(): number {
    return Math.max(5_000, this.callTimeoutMs);
  }

  /** RFC 6298: the deadline follows the round trips seen, never under callTimeoutMs nor over 5 s. */
  private adaptTimeout(rttMs: number): void {
    if (this.srttMs === undefined) {
      this.srttMs = rttMs;
      this.rttVarMs = rttMs / 2;
    } else {
      this.rttVarMs = 0.75 * this.rttVarMs + 0.25 * Math.abs(this.srttMs - rttMs);
      this.srttMs = 0.875 * this.srttMs + 0.125 * rttMs;
    }
    this.heartbeatTimeoutMs = Math.ceil(Math.min(this.maxTimeoutMs, Math.max(this.callTimeoutMs, this.srttMs + 4 * this.rttVarMs)));
  }

  private schedule(signal: AbortSignal, ms: number): void {
    if (signal.aborted) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.beat(signal), ms);
  }

  private async beat(signal: AbortSignal): Promise<void> {
    this.timer = undefined;
    if (signal.aborted) return;
    const c = this.connection();
    let next = this.o.heartbeatIntervalMs;
    const sentAt = this.now();
    try {
      await unaryCall(c.session, rpc.heartbeat, { nodeName: this.name }, { signal, timeoutMs: this.heartbeatTimeoutMs });
      const at = this.now();
      this.adaptTimeout(at - sentAt);
      if (this.lastBeatOkAt !== undefined) this.stats.maxHeartbeatGapMs = Math.max(this.stats.maxHeartbeatGapMs, at - this.lastBeatOkAt);
      this.lastBeatOkAt = sentAt;
      this.stats.heartbeats++;
    } catch (err) {
      if (signal.aborted) return;
      const e = this.failed("heartbeat", err, c);
      this.stats.heartbeatFailures++;
      if (e.reason === "NOT_FOUND") {
        // Expired or withdrawn meanwhile (or etcd restored without it): register again, asking for its subnet back.
        await this.register(signal).catch((er: unknown) => {
          this.stats.lastError = String(er);
        });
      } else if (!answered(err)) {
        this.rotate(c); // dead or frozen: the next address, soon
        next = this.backoff();
        if (e.reason === "TIMEOUT") this.heartbeatTimeoutMs = Math.min(this.maxTimeoutMs, 2 * this.heartbeatTimeoutMs);
      }
    }
    if (signal.aborted) return;
    if (this.reportFailed || (this.reportDirty && this.o.reportMode === "heartbeat")) this.sendReport(signal);
    this.schedule(signal, next);
  }

  /** WatchRoutes until `signal` aborts: resumes from its revision and epoch, on the next replica after a failure. */
  private async follow(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const c = this.connection();
      try {
        const req = { nodeName: this.name, fromRevision: this.revisionValue, epoch: this.epochValue };
        await streamCall(
          c.session,
          rpc.watchRoutes,
          req,
          (msg) => {
            this.apply(msg);
            this.requestReport(signal);
          },
          { signal },
        );
      } catch (err) {
        if (signal.aborted) return;
        this.stats.streamFailures++;
        this.failed("route stream", err, c);
        if (!answered(err)) this.rotate(c);
      }
      await sleep(this.backoff(), undefined, { signal }).catch(() => undefined);
    }
  }

  /** The table changed: report it as `reportMode` says. */
  private requestReport(signal: AbortSignal): void {
    this.reportDirty = true;
    const mode = this.o.reportMode ?? "debounce";
    if (mode === "each") this.sendReport(signal);
    else if (mode === "debounce" && !dueReports.has(this)) {
      const now = performance.now();
      const debounceMs = this.o.reportDebounceMs ?? 1_000;
      const at =
        this.lastReportAt === Number.NEGATIVE_INFINITY
          ? now + debounceMs
          : now + countOnlyWaitMs(now - this.lastReportAt, this.table.size, debounceMs, this.o.reportQuietMs ?? 5_000, this.rand);
      dueReports.set(this, { at, send: () => this.sendReport(signal) });
      reportTimer ??= setInterval(sendDueReports, 100).unref();
    }
  }

  /** ReportRoutes with the current digest, unless one is in flight (then it follows once that one is done). */
  private sendReport(signal: AbortSignal): void {
    if (this.reporting || signal.aborted || this.o.reportMode === "off") return;
    this.reporting = true;
    this.reportDirty = false;
    this.reportFailed = false;
    const { routeCount, digest } = this.digest();
    const c = this.connection();
    unaryCall(
      c.session,
      rpc.reportRoutes,
      { nodeName: this.name, revision: this.revisionValue, routeCount, digest, missing: [] },
      { signal, timeoutMs: this.maxTimeoutMs }, // not urgent: a slow answer is no reason to send it again
    )
      .then(
        () => {
          this.stats.reports++;
          this.lastReportAt = performance.now();
        },
        (err: unknown) => {
          if (signal.aborted) return;
          this.reportFailed = true; // the next heartbeat tick sends again, never a tight loop
          this.stats.reportFailures++;
          this.failed("report routes", err, c);
        },
      )
      .finally(() => {
        this.reporting = false;
        if (this.reportDirty && !this.reportFailed && !signal.aborted) this.requestReport(signal);
      });
  }

  private apply(msg: WatchRoutesResponse): void {
    const at = this.now();
    this.stats.streamMessages++;
    if (msg.snapshot) {
      this.stats.snapshots++;
      const before = this.table;
      const next = new Map<string, HeldRoute>();
      this.routers.clear();
      for (const r of msg.routes) {
        const name = nameOf(r.nodeName);
        next.set(name, heldRoute(r.subnet, r.nodeIp, r.router));
        if (r.router) this.routers.add(name);
      }
      this.table = next;
      this.lines = [];
      for (const [name, r] of next) if (name !== this.name) this.lines.push(r.line);
      this.lines.sort();
      this.digestCache = undefined;
      for (const [name, r] of next) {
        const old = before.get(name);
        if (old !== r && (!old || old.subnet !== r.subnet || old.via !== r.via)) this.emit(name, "up", at);
      }
      for (const name of before.keys()) if (!next.has(name)) this.emit(name, "down", at);
    } else {
      for (const e of msg.events) {
        if (!e.route) continue;
        if (e.type === RouteEventType.UPSERT) this.upsert(e.route, at);
        else if (e.type === RouteEventType.DELETE) this.remove(e.route.nodeName, at);
      }
    }
    this.revisionValue = msg.revision;
    this.epochValue = msg.epoch;
  }

  private upsert(r: Route, at: number): void {
    const name = nameOf(r.nodeName);
    const old = this.table.get(name);
    const route = heldRoute(r.subnet, r.nodeIp, r.router);
    if (old === route) return;
    if (old) this.unindex(name, old);
    this.table.set(name, route);
    if (r.router) this.routers.add(name);
    if (name !== this.name) this.lines.splice(lowerBound(this.lines, route.line), 0, route.line);
    this.digestCache = undefined;
    if (!old || old.subnet !== route.subnet || old.via !== route.via) this.emit(name, "up", at);
  }

  private remove(name: string, at: number): void {
    const old = this.table.get(name);
    if (!old) return;
    this.table.delete(name);
    this.unindex(name, old);
    this.digestCache = undefined;
    this.emit(name, "down", at);
  }

  private unindex(name: string, old: HeldRoute): void {
    this.routers.delete(name);
    if (name === this.name) return;
    const i = lowerBound(this.lines, old.line);
    if (this.lines[i] === old.line) this.lines.splice(i, 1);
  }

  private emit(node: string, kind: RouteChangeKind, at: number): void {
    if (kind === "down") this.withdrawals.push({ node, at });
    this.onRoute?.(node, kind, at);
  }
}

export interface Flap {
  /** The sim whose table lost the route. */
  readonly sim: string;
  /** The node whose route was withdrawn. */
  readonly node: string;
  readonly at: number;
}

/**
 * Wrongful withdrawals across `sims`: a route of node X withdrawn from a sim's table while X was never
 * partitioned, stopped or deregistered by the harness (before that moment), and is not in `killed`
 * (nodes the harness took down by other means). `since`: only withdrawals at or after it (same clock as
 * the sims' `now`).
 */
export function countFlaps(sims: Iterable<SimNode>, options: { killed?: ReadonlySet<string>; since?: number } = {}): Flap[] {
  const all = [...sims];
  const disturbedAt = new Map(all.map((s) => [s.name, s.disturbedAt ?? Number.POSITIVE_INFINITY]));
  const flaps: Flap[] = [];
  for (const s of all) {
    for (const w of s.withdrawals) {
      if (options.since !== undefined && w.at < options.since) continue;
      if (options.killed?.has(w.node)) continue;
      if ((disturbedAt.get(w.node) ?? Number.POSITIVE_INFINITY) <= w.at) continue;
      flaps.push({ sim: s.name, node: w.node, at: w.at });
    }
  }
  return flaps;
}

/**
 * The same count as events arrive, for a harness that wants it live: attach it to each sim's onRoute
 * (`sim.onRoute = counter.listener(sim.name)`), and `excuse(node)` when the harness kills a node by
 * other means than the sim's partition/stop/deregister (which excuse it by themselves).
 */
export class FlapCounter {
  readonly flaps: Flap[] = [];
  private readonly excused = new Map<string, number>();
  private readonly byName = new Map<string, SimNode>();

  constructor(sims: Iterable<SimNode> = []) {
    for (const s of sims) this.byName.set(s.name, s);
  }

  excuse(node: string, at = performance.now()): void {
    if (!this.excused.has(node)) this.excused.set(node, at);
  }

  listener(sim: string, next?: RouteListener): RouteListener {
    return (node, kind, at) => {
      if (kind === "down") {
        const excusedAt = Math.min(
          this.excused.get(node) ?? Number.POSITIVE_INFINITY,
          this.byName.get(node)?.disturbedAt ?? Number.POSITIVE_INFINITY,
        );
        if (excusedAt > at) this.flaps.push({ sim, node, at });
      }
      next?.(node, kind, at);
    };
  }
}

/** The route set every sim should converge to: each live node's subnet via its node IP, by name. */
export function expectedRoutes(live: Iterable<SimNode>): Map<string, { subnet: string; via: string }> {
  return new Map([...live].map((s) => [s.name, { subnet: s.subnet, via: s.nodeIp }]));
}

/** The names of `sims` whose table differs from `expected` (by subnet and next hop), for waiting and for messages. */
export function unconverged(sims: Iterable<SimNode>, expected: ReadonlyMap<string, { subnet: string; via: string }>): string[] {
  const off: string[] = [];
  for (const s of sims) {
    let ok = s.routes.size === expected.size;
    if (ok) {
      for (const [name, want] of expected) {
        const got = s.routes.get(name);
        if (!got || got.subnet !== want.subnet || got.via !== want.via) {
          ok = false;
          break;
        }
      }
    }
    if (!ok) off.push(s.name);
  }
  return off;
}

/** Underlay addresses for simulated nodes: 172.16.0.0/12, one per node, never .0 or .255. */
export const underlayIp = (i: number) => `172.${16 + Math.floor(i / 62_500)}.${Math.floor((i % 62_500) / 250)}.${(i % 250) + 1}`;
