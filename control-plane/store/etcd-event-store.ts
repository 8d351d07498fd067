import type { IWatchResponse } from "etcd3";
import { NodeRecordSchema, SubnetLeaseRecordSchema, SubnetReservationRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, followWatch } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import type { ClusterEvent, EventStore } from "./event-store.js";

/** EventStore over etcd. One watch over the whole root, turned into the events operators watch. */
export class EtcdEventStore extends EtcdStore implements EventStore {
  async watchEvents(onEvent: (event: ClusterEvent) => void, signal: AbortSignal, onLost?: (err: Error) => void): Promise<void> {
    const k = this.keys;
    const watcher = await this.watch("watch cluster events", this.etcd.watch().prefix(k.root).withPreviousKV());
    const onData = (res: IWatchResponse) => {
      const revision = BigInt(res.header.revision);
      for (const e of res.events) {
        const key = e.kv.key.toString();
        const type = e.type === "Put" ? "put" : "delete";
        const kv = type === "put" ? e.kv : e.prev_kv;
        const base = { type, revision, nodeName: "", subnet: "", address: "", live: false } as const;
        try {
          if (key.startsWith(k.nodesPrefix)) {
            const node = kv && decodeRecord(NodeRecordSchema, kv);
            onEvent({
              ...base,
              kind: "node",
              nodeName: key.slice(k.nodesPrefix.length),
              subnet: node?.subnet ?? "",
              live: type === "put" && (node?.live ?? false),
            });
          } else if (key.startsWith(k.subnetsPrefix)) {
            const lease = kv && decodeRecord(SubnetLeaseRecordSchema, kv);
            onEvent({ ...base, kind: "lease", nodeName: lease?.nodeName ?? "", subnet: lease?.subnet ?? "" });
          } else if (key.startsWith(k.allocationsPrefix)) {
            const [nodeName = "", address = ""] = key.slice(k.allocationsPrefix.length).split("/");
            onEvent({ ...base, kind: "allocation", nodeName, address });
          } else if (key.startsWith(k.reservationsPrefix)) {
            const r = kv && decodeRecord(SubnetReservationRecordSchema, kv);
            onEvent({ ...base, kind: "reservation", nodeName: r?.nodeName ?? "", subnet: r?.subnet ?? "" });
          }
        } catch {
          // an undecodable value is reported by the readers that need it; events carry what they can
        }
      }
    };
    followWatch(watcher, signal, onData, onLost);
  }
}
