// etcd's data model in memory, under the Memory* store twins (memory-stores.ts): one revision counter for the
// whole keyspace; a write transaction that changes anything bumps it once and stamps every key it wrote with
// it (the key's mod revision; 0n: absent); ranges in key order; watches from a revision, delivered
// asynchronously (queueMicrotask) in revision order, lost when that revision was compacted.

export interface KvEntry {
  readonly value: string;
  readonly modRevision: bigint;
}

export interface KvEvent {
  readonly type: "put" | "delete";
  readonly key: string;
  /** The new value of a put. */
  readonly value?: string;
  /** The value before the change (etcd's prev_kv), when the key existed. */
  readonly prevValue?: string;
  /** The revision of the transaction that made the change. */
  readonly modRevision: bigint;
}

/** A compare of a transaction: the key's mod revision is `modRevision` (0n: the key is absent). */
export interface KvCompare {
  readonly key: string;
  readonly modRevision: bigint;
}

export type KvWrite =
  | { readonly type: "put"; readonly key: string; readonly value: string }
  | { readonly type: "delete"; readonly key: string }
  | { readonly type: "deletePrefix"; readonly prefix: string }
  /** A nested transaction: deletes `key` only if it holds `value` before the transaction (etcd evaluates nested compares up front). */
  | { readonly type: "deleteIfValue"; readonly key: string; readonly value: string };

interface KvWatch {
  readonly prefix: string;
  readonly deliver: (events: KvEvent[]) => void;
  readonly onLost?: (err: Error) => void;
  readonly signal: AbortSignal;
  ended: boolean;
}

export class MemoryKv {
  private rev = 1n; // etcd's first write gets revision 2
  private compacted = 0n;
  private readonly entries = new Map<string, KvEntry>();
  private sortedKeys: string[] | undefined;
  /** Every change, in revision order; compaction drops the ones before the compacted revision. */
  private history: KvEvent[] = [];
  private readonly watches = new Set<KvWatch>();

  /** The revision of the last transaction that changed something. */
  get revision(): bigint {
    return this.rev;
  }

  get compactedRevision(): bigint {
    return this.compacted;
  }

  get(key: string): KvEntry | undefined {
    return this.entries.get(key);
  }

  modRevision(key: string): bigint {
    return this.entries.get(key)?.modRevision ?? 0n;
  }

  /**
   * The entries from `from` (default: `prefix`) up to the end of `prefix`'s range, in key order, as etcd's
   * range [from, prefixEnd(prefix)) with `limit` (0: no limit); `more` when the limit cut some off.
   */
  range(prefix: string, options: { from?: string; limit?: number } = {}): { entries: Array<[string, KvEntry]>; more: boolean } {
    const from = options.from ?? prefix;
    const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
    const keys = this.keys().filter((k) => k >= from && k < end);
    const limit = options.limit ?? 0;
    const taken = limit > 0 ? keys.slice(0, limit) : keys;
    return { entries: taken.map((k) => [k, this.entries.get(k) as KvEntry]), more: taken.length < keys.length };
  }

  /**
   * One transaction: when every compare holds, applies `writes` in order at one new revision (none when
   * nothing changed). Throws as etcd does when two writes name one key.
   */
  txn(compares: readonly KvCompare[], writes: readonly KvWrite[]): { succeeded: boolean; revision: bigint } {
    if (!compares.every((c) => this.modRevision(c.key) === c.modRevision)) return { succeeded: false, revision: this.rev };
    return { succeeded: true, revision: this.commit(writes) };
  }

  /** Applies `writes` unconditionally, at one new revision when they change anything; returns the revision after. */
  commit(writes: readonly KvWrite[]): bigint {
    checkDuplicates(writes);
    // Nested compares see the state before the transaction.
    const applicable = writes.filter((w) => w.type !== "deleteIfValue" || this.entries.get(w.key)?.value === w.value);
    const revision = this.rev + 1n;
    const events: KvEvent[] = [];
    for (const w of applicable) {
      if (w.type === "put") {
        const prev = this.entries.get(w.key);
        if (!prev) this.sortedKeys = undefined;
        this.entries.set(w.key, { value: w.value, modRevision: revision });
        events.push({ type: "put", key: w.key, value: w.value, ...(prev ? { prevValue: prev.value } : {}), modRevision: revision });
        continue;
      }
      const doomed = w.type === "deletePrefix" ? this.keys().filter((k) => k.startsWith(w.prefix)) : [w.key];
      for (const key of doomed) {
        const prev = this.entries.get(key);
        if (!prev) continue;
        this.entries.delete(key);
        this.sortedKeys = undefined;
        events.push({ type: "delete", key, prevValue: prev.value, modRevision: revision });
      }
    }
    if (events.length === 0) return this.rev;
    this.rev = revision;
    this.history.push(...events);
    for (const w of this.watches) this.notify(w, events);
    return revision;
  }

  /**
   * Calls `deliver` with the changes under `prefix` from `fromRevision` on (0n: from the next revision):
   * first the ones already made, in one call, then one call per transaction; until `signal` aborts. When
   * `fromRevision` was compacted, calls `onLost` instead.
   */
  watch(
    prefix: string,
    fromRevision: bigint,
    deliver: (events: KvEvent[]) => void,
    signal: AbortSignal,
    onLost?: (err: Error) => void,
  ): void {
    if (signal.aborted) return;
    const w: KvWatch = { prefix, deliver, signal, ended: false, ...(onLost ? { onLost } : {}) };
    const start = fromRevision === 0n ? this.rev + 1n : fromRevision;
    if (start < this.compacted) {
      this.lose(w, new Error(`etcdserver: mvcc: required revision has been compacted (watch from ${start}, compacted ${this.compacted})`));
      return;
    }
    this.watches.add(w);
    signal.addEventListener("abort", () => this.watches.delete(w), { once: true });
    this.notify(
      w,
      this.history.filter((e) => e.modRevision >= start),
    );
  }

  /** Drops the history before `revision` (default: the current one): watches from before it are lost. */
  compact(revision = this.rev): void {
    if (revision > this.rev) throw new RangeError(`etcdserver: mvcc: required revision is a future revision (${revision} > ${this.rev})`);
    if (revision <= this.compacted) return;
    this.compacted = revision;
    this.history = this.history.filter((e) => e.modRevision >= revision);
  }

  /** Ends every open watch with `onLost`, as a broken stream or a restarted etcd does. */
  breakWatches(err = new Error("etcd watch stream disconnected")): void {
    for (const w of [...this.watches]) {
      this.watches.delete(w);
      this.lose(w, err);
    }
  }

  private notify(w: KvWatch, events: readonly KvEvent[]): void {
    const mine = events.filter((e) => e.key.startsWith(w.prefix));
    if (mine.length === 0) return;
    queueMicrotask(() => {
      if (!w.ended && !w.signal.aborted) w.deliver(mine);
    });
  }

  private lose(w: KvWatch, err: Error): void {
    queueMicrotask(() => {
      if (w.ended || w.signal.aborted) return;
      w.ended = true;
      w.onLost?.(err);
    });
  }

  private keys(): string[] {
    this.sortedKeys ??= [...this.entries.keys()].sort();
    return this.sortedKeys;
  }
}

/**
 * etcd refuses a transaction that puts one key twice, or puts a key it also deletes ("duplicate key given in
 * txn request"); deleting a key twice is allowed.
 */
function checkDuplicates(writes: readonly KvWrite[]): void {
  const puts = new Set<string>();
  const deleted = (key: string) =>
    writes.some((w) => (w.type === "deletePrefix" ? key.startsWith(w.prefix) : w.type !== "put" && w.key === key));
  for (const w of writes) {
    if (w.type !== "put") continue;
    if (puts.has(w.key) || deleted(w.key)) throw new Error("etcdserver: duplicate key given in txn request");
    puts.add(w.key);
  }
}
