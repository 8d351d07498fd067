import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { TrellisError } from "../../proto/core/errors.js";
import { type RouteEvent, type WatchRoutesResponse, WatchRoutesResponseSchema } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { NodeStore, NodeWatchBatch } from "../store/node-store.js";
import { applyNodeChanges, diffTables, type RouteTable, tableOf } from "./route-table.js";

export interface RouteFeedDeps {
  readonly nodes: NodeStore;
  readonly log: Logger;
  /** How many change messages are kept for resuming streams (older resumes get a snapshot). */
  readonly historySize?: number;
  /** Wait before reloading after the etcd watch failed (compaction, etcd gone). */
  readonly reloadDelayMs?: number;
  /** Messages a stream may have queued; beyond them it is sent one fresh snapshot instead (default 256). */
  readonly maxQueued?: number;
  /** A new epoch (random by default). */
  readonly newEpoch?: () => bigint;
  /** Wall clock: change messages carry when this replica saw the change committed (decided_at_ms; default Date.now). */
  readonly clock?: () => number;
  /**
   * A change is published at once when none was in the last window; changes that follow within it wait
   * for its end and go out as one message. The window is `coalesceMs` (default 100), longer with many
   * streams: see publishWindowMs. Every stream gets every message, so a burst of joins at N nodes was N
   * messages to each of N streams; held together, a burst costs each stream a few messages (issue 10).
   */
  readonly coalesceMs?: number;
  /**
   * Streams woken per turn of the event loop when a message goes out (default 64). Each stream's write
   * runs through connect-node's pipeline (a few hundred microseconds on a loaded machine); woken all at
   * once, 2500 streams held the loop for over half a second, and registrations, heartbeats and TLS
   * handshakes waited behind them until they timed out (issue 10, 5000 nodes). The server accepts new
   * connections once per turn, so the turns between slices matter as much as the slices.
   */
  readonly fanOutSlice?: number;
  /** Defers the next slice of wakes to a later turn of the event loop (default setImmediate). */
  readonly nextTurn?: (fn: () => void) => void;
  /** Monotonic milliseconds (default performance.now): the publish window and the fan-out's duration. */
  readonly monotonic?: () => number;
}

/** Changes seen but not yet published: the table and revision after them, and their events. */
interface Held {
  table: RouteTable;
  revision: bigint;
  readonly events: RouteEvent[];
  /** When the first of them was seen (decided_at_ms of the message). */
  readonly decidedAtMs: bigint;
}

interface Subscriber {
  queue: WatchRoutesResponse[];
  /** The stream fell behind by more than maxQueued messages: its next message is a fresh snapshot. */
  behind: boolean;
  wake?: () => void;
}

/**
 * How long changes are held together with `streams` open: at least `minMs`; with many streams, long
 * enough that each stream gets at most two change messages a second (each costs connect-node ~60 us of
 * CPU however small it is), up to 500 ms, so that a change still reaches every node well within the
 * 1 s DESIGN.md §8 asks: 200 streams: 100 ms; 1000 or more: 500 ms. And at least as long as the last
 * fan-out took (`fanOutMs`), up to 1 s: on a machine short of CPU, fanning out then takes about half of
 * the replica's time, and registrations and heartbeats get the rest. Pure.
 */
export function publishWindowMs(streams: number, minMs: number, fanOutMs = 0): number {
  return Math.max(minMs, Math.min(500, streams / 2), Math.min(1_000, fanOutMs));
}

const randomEpoch = () => BigInt(`0x${randomBytes(8).toString("hex")}`) | 1n;

/**
 * One etcd watch on the node records, fanned out to every WatchRoutes stream. A stream starts with a
 * snapshot of the route table, or, when the caller names an epoch and revision this feed still holds
 * the changes after, with just those changes; then every change follows, stamped with the highest mod
 * revision it covers. When the etcd watch breaks (its revision was compacted, etcd restarted or was
 * restored from a snapshot), the feed reloads under a new epoch and sends every stream a fresh
 * snapshot (DESIGN.md §2, route stream epochs). A stream that does not keep up is not queued for
 * without bound: past `maxQueued` messages its queue is dropped for one snapshot.
 */
export class RouteFeed {
  private table: RouteTable = new Map();
  private revision = 0n;
  /** Change messages after `historyFloor`, oldest first. */
  private history: WatchRoutesResponse[] = [];
  private historyFloor = 0n;
  private readonly subscribers = new Set<Subscriber>();
  private started: Promise<void> | undefined;
  private signal?: AbortSignal;
  private epochValue = 0n;
  private lastSnapshot?: { readonly table: RouteTable; readonly message: WatchRoutesResponse };
  private held?: Held;
  private heldTimer?: NodeJS.Timeout;
  private lastPublishedAt = Number.NEGATIVE_INFINITY;
  /** How long the last fan-out took, from its first wake to the turn after its last. */
  private lastFanOutMs = 0;

  constructor(private readonly deps: RouteFeedDeps) {}

  get epoch(): bigint {
    return this.epochValue;
  }

  /** Route streams open on this replica now (trellis_route_streams). */
  get streams(): number {
    return this.subscribers.size;
  }

  /** Whether node `name` has a route, as of the newest change this feed has seen (held ones too): whether it is live. */
  holdsLive(name: string): boolean {
    return (this.held?.table ?? this.table).has(name);
  }

  /** How long a change that follows a published one is held now (publishWindowMs). */
  get windowMs(): number {
    return publishWindowMs(this.subscribers.size, this.deps.coalesceMs ?? 100, this.lastFanOutMs);
  }

  private now(): number {
    return this.deps.monotonic ? this.deps.monotonic() : performance.now();
  }

  /** Loads the table and starts the watch; resolves once the feed can serve snapshots. */
  start(signal: AbortSignal): Promise<void> {
    this.signal = signal;
    this.started ??= this.load(signal).catch((err: unknown) => {
      this.started = undefined; // let the caller retry
      throw err;
    });
    return this.started;
  }

  /**
   * Reads the table and watches from after it. A reload (the watch was lost) whose etcd history went on
   * (a dropped connection, a compaction) keeps the epoch: every stream holds the published table, and what
   * it missed is the difference, published as one change. Only a history that went back (etcd restored
   * from an older snapshot) makes the streams' revisions meaningless: a new epoch, a snapshot for each. At
   * 4000 simulated nodes etcd connections dropped under load, and each drop sent every stream every route.
   */
  private async load(signal: AbortSignal): Promise<void> {
    const snapshot = await this.deps.nodes.listNodes();
    const reloaded = this.epochValue !== 0n;
    const resume = reloaded && snapshot.revision >= this.revision;
    const table = tableOf(snapshot.nodes);
    this.dropHeld(); // not published yet: the difference from the published table holds them
    if (resume) {
      const events = diffTables(this.table, table);
      if (events.length > 0) {
        this.held = { table, revision: snapshot.revision, events, decidedAtMs: BigInt((this.deps.clock ?? Date.now)()) };
        this.publish();
      }
    } else {
      this.epochValue = (this.deps.newEpoch ?? randomEpoch)();
      this.history = [];
      this.historyFloor = snapshot.revision;
    }
    this.table = table;
    this.revision = snapshot.revision;
    await this.deps.nodes.watchNodes(
      snapshot.revision + 1n,
      (batch) => this.onBatch(batch),
      signal,
      (err) => this.onWatchLost(err),
    );
    if (reloaded && !resume) this.broadcast(this.snapshot());
    this.deps.log.info(
      { revision: String(this.revision), epoch: String(this.epochValue) },
      !reloaded
        ? "route feed started"
        : resume
          ? "route feed reloaded; streams sent what they missed"
          : "route feed reloaded under a new epoch (etcd's history went back); streams resynced",
    );
  }

  private onWatchLost(err: Error): void {
    this.deps.log.warn(
      { err, revision: String(this.revision) },
      "route watch lost (connection dropped, compacted, or etcd restarted); reloading the table",
    );
    const retry = async (): Promise<void> => {
      const signal = this.signal;
      if (!signal || signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, this.deps.reloadDelayMs ?? 500));
      await this.load(signal).catch((e: unknown) => {
        this.deps.log.warn({ err: e }, "route feed reload failed; retrying");
        return retry();
      });
    };
    void retry();
  }

  private onBatch(batch: NodeWatchBatch): void {
    const held = this.held;
    // Held changes are nobody's yet: applied in place. A published table is shared (snapshots): copied.
    const { next, events } = applyNodeChanges(held?.table ?? this.table, batch.changes, held !== undefined);
    if (!held) {
      if (events.length === 0) {
        this.table = next;
        this.revision = batch.revision;
        return;
      }
      this.held = { table: next, revision: batch.revision, events, decidedAtMs: BigInt((this.deps.clock ?? Date.now)()) };
    } else {
      held.table = next;
      held.revision = batch.revision;
      held.events.push(...events);
    }
    const wait = this.lastPublishedAt + this.windowMs - this.now();
    if (wait <= 0) this.publish();
    else this.heldTimer ??= setTimeout(() => this.publish(), wait);
  }

  /** Publishes the held changes as one message, stamped with the highest mod revision they cover. */
  private publish(): void {
    const held = this.held;
    this.dropHeld();
    if (!held || this.signal?.aborted) return;
    this.table = held.table;
    this.revision = held.revision;
    this.lastPublishedAt = this.now();
    const msg = create(WatchRoutesResponseSchema, {
      revision: held.revision,
      events: held.events,
      epoch: this.epochValue,
      decidedAtMs: held.decidedAtMs,
    });
    this.history.push(msg);
    const max = this.deps.historySize ?? 4096;
    if (this.history.length > max) {
      const dropped = this.history.splice(0, this.history.length - max);
      this.historyFloor = dropped[dropped.length - 1]?.revision ?? this.historyFloor;
    }
    this.broadcast(msg);
  }

  private dropHeld(): void {
    clearTimeout(this.heldTimer);
    this.heldTimer = undefined;
    this.held = undefined;
  }

  /** Queues `msg` for every stream at once (so each sees messages in order), then wakes them in slices. */
  private broadcast(msg: WatchRoutesResponse): void {
    const max = this.deps.maxQueued ?? 256;
    const subs = [...this.subscribers];
    for (const sub of subs) {
      if (msg.snapshot) {
        sub.queue = [msg];
        sub.behind = false;
      } else if (sub.behind) {
        // A snapshot is due anyway: it will hold this change.
      } else if (sub.queue.length >= max) {
        sub.queue = [];
        sub.behind = true;
      } else sub.queue.push(msg);
    }
    this.wakeInSlices(subs, this.now());
  }

  /**
   * Wakes `subs` a slice per turn of the event loop: a woken stream writes its message in the microtasks
   * that follow, so between slices the loop serves other calls. The first slice is woken now. Records
   * how long it all took, for the next publish window.
   */
  private wakeInSlices(subs: readonly Subscriber[], startedAt: number, from = 0): void {
    const slice = this.deps.fanOutSlice ?? 64;
    const nextTurn = this.deps.nextTurn ?? setImmediate;
    for (const sub of subs.slice(from, from + slice)) sub.wake?.();
    if (from + slice < subs.length) nextTurn(() => this.wakeInSlices(subs, startedAt, from + slice));
    else nextTurn(() => (this.lastFanOutMs = this.now() - startedAt));
  }

  /**
   * The snapshot of the table now; one object for every stream that asks until the table changes, so the
   * RPC layer encodes it once for all of them (after a failover, thousands of streams ask at once).
   */
  private snapshot(): WatchRoutesResponse {
    const cached = this.lastSnapshot;
    if (cached && cached.table === this.table && cached.message.epoch === this.epochValue && cached.message.revision === this.revision)
      return cached.message;
    const message = create(WatchRoutesResponseSchema, {
      revision: this.revision,
      snapshot: true,
      routes: [...this.table.values()],
      epoch: this.epochValue,
    });
    this.lastSnapshot = { table: this.table, message };
    return message;
  }

  /**
   * The first messages of a stream that has applied everything up to `fromRevision` (0: nothing) of
   * `epoch`: the changes since, when this feed is still in that epoch and holds them; else a snapshot.
   */
  private catchUp(fromRevision: bigint, epoch: bigint): WatchRoutesResponse[] {
    const resumable = fromRevision > 0n && epoch === this.epochValue && fromRevision >= this.historyFloor && fromRevision <= this.revision;
    if (resumable) return this.history.filter((m) => m.revision > fromRevision);
    return [this.snapshot()];
  }

  /** The route stream of one daemon, until `signal` aborts. */
  async *subscribe(signal: AbortSignal, fromRevision = 0n, epoch = 0n): AsyncGenerator<WatchRoutesResponse> {
    if (!this.started) throw new TrellisError("UNAVAILABLE", "route feed is not started yet; retry shortly");
    await this.started;
    const sub: Subscriber = { queue: this.catchUp(fromRevision, epoch), behind: false };
    this.subscribers.add(sub);
    const onAbort = () => sub.wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (sub.behind) {
          sub.behind = false;
          sub.queue = [];
          yield this.snapshot();
          continue;
        }
        const msg = sub.queue.shift();
        if (msg) {
          yield msg;
          continue;
        }
        await new Promise<void>((resolve) => (sub.wake = resolve));
        sub.wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.subscribers.delete(sub);
    }
  }
}
