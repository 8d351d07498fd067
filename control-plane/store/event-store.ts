/** A change an operator may want to watch (admin WatchEvents). */
export interface ClusterEvent {
  readonly kind: "node" | "lease" | "allocation" | "reservation";
  readonly type: "put" | "delete";
  readonly nodeName: string;
  readonly subnet: string;
  readonly address: string;
  readonly live: boolean;
  readonly revision: bigint;
}

/** Every change an operator may watch (admin WatchEvents). */
export interface EventStore {
  /**
   * Calls `onEvent` for every node, lease, allocation and reservation change from now on, until `signal`
   * aborts; `onLost` once when the watch ends by itself (compacted, etcd restarted).
   */
  watchEvents(onEvent: (event: ClusterEvent) => void, signal: AbortSignal, onLost?: (err: Error) => void): Promise<void>;
}
