// Keeps etcd's history bounded (issue 10, finding 1: nothing compacted etcd, so it ran into its space
// quota). Every replica compacts now and then to a revision a fixed distance behind the current one:
// streams that resume from further back get a snapshot instead (route-feed.ts), which they handle. A
// compaction to a revision already compacted is refused by etcd and harmless, so replicas need not agree
// on who does it. The database file keeps its size until an operator defragments (etcdctl defrag);
// compacted pages are reused, so it stops growing.
import { EtcdStore } from "./etcd-context.js";

export class EtcdCompactor extends EtcdStore {
  /**
   * Compacts history older than `keepRevisions` behind the current revision; returns the revision
   * compacted to, or undefined when there was nothing to do.
   */
  async compact(keepRevisions: number): Promise<bigint | undefined> {
    const status = await this.call("get", "read the current revision", () => this.etcd.kv.range({ key: Buffer.from("\0"), limit: "1" }));
    const target = BigInt(status.header.revision) - BigInt(keepRevisions);
    if (target <= 0n) return undefined;
    try {
      await this.call("compact", `compact the history to revision ${target}`, () =>
        this.etcd.kv.compact({ revision: String(target), physical: false }),
      );
    } catch (err) {
      // Another replica compacted past it already.
      if (/compacted|future revision/i.test((err as Error).message)) return undefined;
      throw err;
    }
    return target;
  }
}
