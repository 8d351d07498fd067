// How every Etcd* store calls etcd and reads its values back (DESIGN.md §6: every etcd value read back is
// validated): failures become UNAVAILABLE naming what was being done; a value that is not the record it
// should be is DATA_LOSS naming its key.

import { once } from "node:events";
import { type DescMessage, fromJsonString, type MessageShape } from "@bufbuild/protobuf";
import type { Etcd3, IKeyValue, IWatchResponse, WatchBuilder, Watcher } from "etcd3";
import { TrellisError } from "../../proto/core/errors.js";
import { type EtcdConnection, explainEtcdFailure } from "./etcd-client.js";

export async function etcdCall<T>(what: string, fn: () => Promise<T>, connection?: EtcdConnection): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof TrellisError) throw err;
    throw new TrellisError("UNAVAILABLE", `etcd: could not ${what}: ${explainEtcdFailure(err, connection)}`, { cause: err });
  }
}

export function decodeRecord<Desc extends DescMessage>(schema: Desc, kv: IKeyValue): MessageShape<Desc> {
  try {
    return fromJsonString(schema, kv.value.toString());
  } catch (err) {
    throw new TrellisError("DATA_LOSS", `etcd key ${kv.key.toString()} does not hold a ${schema.typeName}`, { cause: err });
  }
}

/**
 * The watch `builder` describes, once etcd has confirmed it; fails after `timeoutMs` without that, and
 * cancels it. etcd3's own create() waits through any number of reconnects, so a replica whose etcd
 * stopped answering as it started watching waited forever without saying why.
 */
export async function createWatcher(builder: WatchBuilder, timeoutMs: number): Promise<Watcher> {
  const watcher = builder.watcher();
  const deadline = AbortSignal.timeout(timeoutMs);
  try {
    await once(watcher, "connected", { signal: deadline }); // rejects on the watcher's "error" too
    return watcher;
  } catch (err) {
    void watcher.cancel().catch(() => undefined);
    throw deadline.aborted ? new Error(`etcd did not confirm the watch within ${timeoutMs} ms`) : err;
  }
}

/**
 * Delivers `watcher`'s responses to `onData` until `signal` aborts, then ends it; calls `onLost` once when
 * it ends by itself: an error (its revision was compacted) or a broken stream. etcd3 would resume a
 * broken stream from a revision of its choosing, which after etcd was restored from an older snapshot
 * lies in the future, so nothing would ever be delivered (issue 10, finding 5); every watcher of ours
 * starts over from a fresh listing instead. Nothing is delivered after either end: cancel() is
 * asynchronous, and responses etcd sent before it took effect would reach a stopped owner.
 */
export function followWatch(
  watcher: Watcher,
  signal: AbortSignal,
  onData: (res: IWatchResponse) => void,
  onLost?: (err: Error) => void,
): void {
  let lost = false;
  const lose = (err: Error | undefined) => {
    if (signal.aborted || lost) return;
    lost = true;
    void watcher.cancel().catch(() => undefined);
    onLost?.(err ?? new Error("etcd watch stream disconnected"));
  };
  watcher.on("data", (res: IWatchResponse) => {
    if (!signal.aborted && !lost) onData(res);
  });
  watcher.on("error", lose);
  watcher.on("disconnected", lose);
  const stop = () => void watcher.cancel().catch(() => undefined);
  if (signal.aborted) stop();
  else signal.addEventListener("abort", stop, { once: true });
}

/** The end of the key range holding every key that starts with `prefix`. */
export function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1] = (end[end.length - 1] ?? 0) + 1;
  return end;
}

/** Keys per page of a paged read: a page stays far below gRPC's 4 MiB message limit. */
export const etcdPageSize = 500;

/**
 * Every key-value under `prefix`, read in pages of `pageSize` at one revision (the first page's), so the
 * result is one consistent view however large it is (issue 10, finding 2: one response over 4 MiB
 * fails). Returns the kvs and that revision.
 */
export async function rangePaged(
  etcd: Etcd3,
  prefix: string,
  options: { keysOnly?: boolean; pageSize?: number } = {},
): Promise<{ kvs: IKeyValue[]; revision: bigint }> {
  const end = prefixEnd(prefix);
  const kvs: IKeyValue[] = [];
  let key = Buffer.from(prefix);
  let revision: string | undefined;
  for (;;) {
    const res = await etcd.kv.range({
      key,
      range_end: end,
      limit: String(options.pageSize ?? etcdPageSize),
      keys_only: options.keysOnly ?? false,
      ...(revision ? { revision } : {}),
    });
    revision ??= res.header.revision;
    kvs.push(...res.kvs);
    const last = res.kvs.at(-1);
    if (!res.more || !last) return { kvs, revision: BigInt(revision) };
    key = Buffer.concat([last.key, Buffer.from([0])]);
  }
}
