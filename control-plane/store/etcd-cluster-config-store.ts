import { toJsonString } from "@bufbuild/protobuf";
import { type ClusterConfigRecord, ClusterConfigRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { ClusterConfigStore } from "./cluster-config-store.js";
import { decodeRecord } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";

/** ClusterConfigStore over etcd. The cluster config: written once by the first replica (DESIGN.md §5). */
export class EtcdClusterConfigStore extends EtcdStore implements ClusterConfigStore {
  async ensureClusterConfig(config: ClusterConfigRecord): Promise<ClusterConfigRecord> {
    const key = this.keys.clusterConfig;
    const res = await this.call("txn", "store the cluster config", () =>
      this.etcd
        .if(key, "Version", "==", 0)
        .then(this.etcd.put(key).value(toJsonString(ClusterConfigRecordSchema, config)))
        .else(this.etcd.get(key))
        .commit(),
    );
    const kv = res.succeeded ? undefined : res.responses[0]?.response_range?.kvs[0];
    return kv ? decodeRecord(ClusterConfigRecordSchema, kv) : config;
  }
}
