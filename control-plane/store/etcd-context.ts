// What every etcd store shares: one client, the key layout and the call wrapper that explains failures.
// main.ts opens one context and every store port over it (etcd-stores.ts), so a replica holds one etcd
// connection, not one per port.
import type { Etcd3 } from "etcd3";
import { createEtcdClient, type EtcdConnection } from "./etcd-client.js";
import { etcdCall } from "./etcd-codec.js";
import { createKeys, type Keys } from "./keys.js";

export type EtcdStoreOptions = EtcdConnection & {
  /** Key root; tests give each test its own. */
  readonly root?: string;
};

export class EtcdContext {
  readonly etcd: Etcd3;
  readonly keys: Keys;

  constructor(private readonly connection: EtcdStoreOptions) {
    this.etcd = createEtcdClient(connection);
    this.keys = createKeys(connection.root);
  }

  /** Runs one etcd call; a failure becomes a TrellisError that says what was being done and why it failed. */
  call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return etcdCall(what, fn, this.connection);
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

  protected call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return this.context.call(what, fn);
  }
}
