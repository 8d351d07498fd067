// What every etcd store shares: one client, the key layout and the call wrapper that explains failures.
// main.ts opens one context and every store port over it (etcd-stores.ts), so a replica holds one etcd
// connection, not one per port.
import type { Etcd3, WatchBuilder, Watcher } from "etcd3";
import { createEtcdClient, defaultCallTimeoutMs, type EtcdConnection } from "./etcd-client.js";
import { createWatcher, etcdCall } from "./etcd-codec.js";
import { createKeys, type Keys } from "./keys.js";
import type { TxnKind } from "./txn-kinds.js";

export type EtcdStoreOptions = EtcdConnection & {
  /** Key root; tests give each test its own. */
  readonly root?: string;
  /** Times every etcd call and counts lost compare-and-swaps (control-plane/metrics.ts). */
  readonly metrics?: EtcdObserver;
};

/**
 * What one store call asks of etcd, as metrics label it: a key read, a listing (all of its pages), a write,
 * a delete, a transaction, a watch being created, a compaction.
 */
export type EtcdOp = "get" | "range" | "put" | "delete" | "txn" | "watch" | "compact";

export interface EtcdObserver {
  observeEtcd(op: EtcdOp, seconds: number): void;
  /** A transaction whose compare failed, so its writes did not apply: a lost race, or a stale read. */
  countTxnConflict(txn: TxnKind): void;
}

export class EtcdContext {
  readonly etcd: Etcd3;
  readonly keys: Keys;

  constructor(private readonly connection: EtcdStoreOptions) {
    this.etcd = createEtcdClient(connection);
    this.keys = createKeys(connection.root);
  }

  /**
   * Runs one etcd call, timed as `op` (failed ones too); a failure becomes a TrellisError that says what
   * was being done and why it failed.
   */
  async call<T>(op: EtcdOp, what: string, fn: () => Promise<T>): Promise<T> {
    const metrics = this.connection.metrics;
    if (!metrics) return etcdCall(what, fn, this.connection);
    const started = performance.now();
    try {
      return await etcdCall(what, fn, this.connection);
    } finally {
      metrics.observeEtcd(op, (performance.now() - started) / 1000);
    }
  }

  /** The watch `builder` describes, confirmed by etcd within the call deadline (createWatcher). */
  watch(what: string, builder: WatchBuilder): Promise<Watcher> {
    return this.call("watch", what, () => createWatcher(builder, this.connection.callTimeoutMs ?? defaultCallTimeoutMs));
  }

  /** Whether a compare-and-swap applied; one that did not is counted as a conflict of its kind. */
  applied(res: { readonly succeeded: boolean }, txn: TxnKind): boolean {
    if (!res.succeeded) this.connection.metrics?.countTxnConflict(txn);
    return res.succeeded;
  }

  close(): void {
    this.etcd.close();
  }
}

/** The base of every Etcd* store: `etcd`, `keys` and `call` of its context. */
export abstract class EtcdStore {
  protected readonly etcd: Etcd3;
  protected readonly keys: Keys;

  constructor(protected readonly context: EtcdContext) {
    this.etcd = context.etcd;
    this.keys = context.keys;
  }

  protected call<T>(op: EtcdOp, what: string, fn: () => Promise<T>): Promise<T> {
    return this.context.call(op, what, fn);
  }

  protected watch(what: string, builder: WatchBuilder): Promise<Watcher> {
    return this.context.watch(what, builder);
  }

  /** Whether a compare-and-swap applied (its compare held); one that did not is counted as a conflict of its kind. */
  protected applied(res: { readonly succeeded: boolean }, txn: TxnKind): boolean {
    return this.context.applied(res, txn);
  }
}
