// Heartbeats written together (group commit). Every node's heartbeat is a write to etcd, and at fleet scale
// a replica spends more on each etcd call (grpc-js's call set-up, Node's http2 request) than on the
// heartbeat itself (issue 10). A heartbeat waits up to `lingerMs` for others, and while earlier writes are
// in flight; the next write then carries every heartbeat that arrived meanwhile, so a busy replica writes
// fewer, larger transactions.

export interface HeartbeatWriterOptions {
  /** Heartbeats in one write: etcd refuses a transaction of more operations than its --max-txn-ops (128 by default). */
  readonly maxPerWrite?: number;
  /** Writes in flight at once; more heartbeats wait and go together in the next. */
  readonly maxInFlight?: number;
  /**
   * How long a heartbeat waits for others to share its write when none is in flight (default 0: it goes at
   * once). A write is a transaction every etcd member commits; what a heartbeat waits costs nothing (a node
   * heartbeats every 10 s, and is judged over its TTL).
   */
  readonly lingerMs?: number;
}

interface Pending {
  lastSeenMs: bigint;
  readonly waiters: Array<{ resolve(revision: bigint): void; reject(err: unknown): void }>;
}

export class HeartbeatWriter {
  private readonly pending = new Map<string, Pending>();
  private inFlight = 0;
  private lingering?: NodeJS.Timeout;
  private readonly maxPerWrite: number;
  private readonly maxInFlight: number;
  private readonly lingerMs: number;

  /** `write` stores every heartbeat it is given (node name -> writer's wall clock) in one write, and returns that write's revision. */
  constructor(
    private readonly write: (beats: ReadonlyMap<string, bigint>) => Promise<bigint>,
    options: HeartbeatWriterOptions = {},
  ) {
    this.maxPerWrite = options.maxPerWrite ?? 128;
    this.maxInFlight = options.maxInFlight ?? 2;
    this.lingerMs = options.lingerMs ?? 0;
  }

  /**
   * Writes node `name`'s heartbeat; resolves with the revision of the write that carried it. When `signal`
   * aborts (its caller gave up) before a write took it, it is dropped: under overload, heartbeats that
   * waited past their callers' deadlines would be written late, as a sign of life the node gave long ago,
   * in front of the ones still waited for. The node sends another.
   */
  record(name: string, lastSeenMs: bigint, signal?: AbortSignal): Promise<bigint> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const waiter = { resolve, reject };
      const pending = this.pending.get(name);
      // A node's second heartbeat before its first was written: one key, written once, with the later time.
      if (pending) {
        pending.lastSeenMs = lastSeenMs;
        pending.waiters.push(waiter);
      } else this.pending.set(name, { lastSeenMs, waiters: [waiter] });
      signal?.addEventListener("abort", () => this.drop(name, waiter, signal.reason), { once: true });
      if (this.lingerMs === 0 || this.pending.size >= this.maxPerWrite) this.pump();
      else this.lingering ??= setTimeout(() => this.pump(), this.lingerMs);
    });
  }

  /** Takes `waiter` out of `name`'s pending heartbeat, and the heartbeat itself when nobody else waits for it; nothing once a write took it. */
  private drop(name: string, waiter: Pending["waiters"][number], reason: unknown): void {
    const pending = this.pending.get(name);
    const at = pending?.waiters.indexOf(waiter) ?? -1;
    if (!pending || at < 0) return;
    pending.waiters.splice(at, 1);
    if (pending.waiters.length === 0) this.pending.delete(name);
    waiter.reject(reason);
  }

  private pump(): void {
    clearTimeout(this.lingering);
    this.lingering = undefined;
    while (this.inFlight < this.maxInFlight && this.pending.size > 0) {
      const batch: Array<[string, Pending]> = [];
      for (const entry of this.pending) {
        batch.push(entry);
        this.pending.delete(entry[0]);
        if (batch.length === this.maxPerWrite) break;
      }
      this.inFlight++;
      this.write(new Map(batch.map(([name, p]) => [name, p.lastSeenMs])))
        .then(
          (revision) => {
            for (const [, p] of batch) for (const w of p.waiters) w.resolve(revision);
          },
          (err: unknown) => {
            for (const [, p] of batch) for (const w of p.waiters) w.reject(err);
          },
        )
        .finally(() => {
          this.inFlight--;
          this.pump();
        });
    }
  }
}
