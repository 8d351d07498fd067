import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { TrellisError } from "../../proto/common/errors.js";
import { WatchRoutesResponseSchema, type WatchRoutesResponse } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { ClusterStore, NodeWatchBatch } from "../store/store.js";
import { applyNodeChanges, tableOf, type RouteTable } from "./route-table.js";

export interface RouteFeedDeps {
  readonly store: ClusterStore;
  readonly log: Logger;
}

interface Subscriber {
  readonly queue: WatchRoutesResponse[];
  wake?: () => void;
}

/**
 * One etcd watch on the node records, fanned out to every WatchRoutes stream: each subscriber gets a
 * snapshot of the route table first, then every change, each stamped with its etcd revision.
 */
export class RouteFeed {
  private table: RouteTable = new Map();
  private revision = 0n;
  private readonly subscribers = new Set<Subscriber>();
  private started: Promise<void> | undefined;

  constructor(private readonly deps: RouteFeedDeps) {}

  /** Loads the table and starts the watch; resolves once the feed can serve snapshots. */
  start(signal: AbortSignal): Promise<void> {
    this.started ??= this.load(signal).catch((err: unknown) => {
      this.started = undefined; // let the caller retry
      throw err;
    });
    return this.started;
  }

  private async load(signal: AbortSignal): Promise<void> {
    const snapshot = await this.deps.store.listNodes();
    this.table = tableOf(snapshot.nodes);
    this.revision = snapshot.revision;
    await this.deps.store.watchNodes(snapshot.revision + 1n, (batch) => this.onBatch(batch), signal);
    this.deps.log.info({ revision: String(this.revision) }, "route feed started");
  }

  private onBatch(batch: NodeWatchBatch): void {
    const { next, events } = applyNodeChanges(this.table, batch.changes);
    this.table = next;
    this.revision = batch.revision;
    if (events.length === 0) return;
    const msg = create(WatchRoutesResponseSchema, { revision: batch.revision, events });
    for (const sub of this.subscribers) {
      sub.queue.push(msg);
      sub.wake?.();
    }
  }

  /** The route stream of one daemon: a snapshot, then changes, until `signal` aborts. */
  async *subscribe(signal: AbortSignal): AsyncGenerator<WatchRoutesResponse> {
    if (!this.started) throw new TrellisError("UNAVAILABLE", "route feed is not started yet; retry shortly");
    await this.started;
    const snapshot = create(WatchRoutesResponseSchema, {
      revision: this.revision,
      snapshot: true,
      routes: [...this.table.values()],
    });
    const sub: Subscriber = { queue: [snapshot] };
    this.subscribers.add(sub);
    const onAbort = () => sub.wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!signal.aborted) {
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

  get subscriberCount(): number {
    return this.subscribers.size;
  }
}
