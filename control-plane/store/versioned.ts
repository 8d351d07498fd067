/** A value read from the store together with the etcd revision that last modified it. */
export interface Versioned<T> {
  readonly value: T;
  /** etcd mod_revision of the key; 0n means "absent" in compare operations. */
  readonly modRevision: bigint;
}
