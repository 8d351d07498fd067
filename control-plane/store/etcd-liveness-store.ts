import { toJsonString } from "@bufbuild/protobuf";
import {
  type DisruptionRecord,
  DisruptionRecordSchema,
  HeartbeatRecordSchema,
  type NodeRecord,
  NodeRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, rangePaged } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import type { HeartbeatEntry, LivenessStore } from "./liveness-store.js";
import type { Versioned } from "./versioned.js";

/** LivenessStore over etcd. Heartbeats (keys of their own, so they wake no route stream), expiry and the disruption record. */
export class EtcdLivenessStore extends EtcdStore implements LivenessStore {
  async putHeartbeats(beats: ReadonlyMap<string, bigint>): Promise<bigint> {
    const names = [...beats.keys()];
    const what = names.length === 1 ? `record heartbeat of ${names[0]}` : `record heartbeats of ${names.length} nodes`;
    const res = await this.call("txn", what, async () =>
      this.etcd.kv.txn({
        compare: [],
        success: await Promise.all(
          [...beats].map(([name, lastSeenMs]) =>
            this.etcd
              .put(this.keys.heartbeat(name))
              .value(toJsonString(HeartbeatRecordSchema, { $typeName: HeartbeatRecordSchema.typeName, lastSeenMs }))
              .op(),
          ),
        ),
      }),
    );
    return BigInt(res.header.revision); // a write's revision is each key's new mod revision
  }

  async listHeartbeats(): Promise<Map<string, HeartbeatEntry>> {
    const prefix = this.keys.heartbeatsPrefix;
    const res = await this.call("range", "list heartbeats", () => rangePaged(this.etcd, prefix));
    return new Map(
      res.kvs.map((kv) => [
        kv.key.toString().slice(prefix.length),
        { revision: BigInt(kv.mod_revision), lastSeenMs: decodeRecord(HeartbeatRecordSchema, kv).lastSeenMs },
      ]),
    );
  }

  async expireNode(
    node: NodeRecord,
    nodeModRevision: bigint,
    heartbeatModRevision: bigint,
    disruptionModRevision: bigint,
  ): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const res = await this.call("txn", `expire node ${node.name}`, () =>
      this.etcd
        .if(nodeKey, "Mod", "==", String(nodeModRevision))
        .and(this.keys.heartbeat(node.name), "Mod", "==", String(heartbeatModRevision))
        .and(this.keys.disruption, "Mod", "==", String(disruptionModRevision))
        .then(this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)))
        .commit(),
    );
    return this.applied(res, "expire_node");
  }

  async findDisruption(): Promise<Versioned<DisruptionRecord> | undefined> {
    const res = await this.call("get", "read disruption status", () => this.etcd.get(this.keys.disruption).exec());
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(DisruptionRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async putDisruption(record: DisruptionRecord, modRevision: bigint): Promise<bigint | undefined> {
    const key = this.keys.disruption;
    const res = await this.call("txn", "write disruption status", () =>
      this.etcd
        .if(key, "Mod", "==", String(modRevision))
        .then(this.etcd.put(key).value(toJsonString(DisruptionRecordSchema, record)))
        .commit(),
    );
    return this.applied(res, "disruption") ? BigInt(res.header.revision) : undefined;
  }
}
