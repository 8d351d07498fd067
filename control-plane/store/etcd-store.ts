import { fromJsonString, toJsonString, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Etcd3, type IKeyValue, type Watcher } from "etcd3";
import { TrellisError } from "../../proto/common/errors.js";
import { Cidr } from "../../proto/common/cidr.js";
import { AllocationRecordSchema, type AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import {
  HeartbeatRecordSchema,
  NodeRecordSchema,
  SubnetLeaseRecordSchema,
  type NodeRecord,
  type SubnetLeaseRecord,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { ClusterStore, NodeChange, NodeSnapshot, NodeWatchBatch, Versioned } from "./store.js";
import { createKeys, type Keys } from "./keys.js";

export interface EtcdStoreOptions {
  readonly endpoints: readonly string[];
  /** Key root; tests give each test its own. */
  readonly root?: string;
  /** Deadline of one etcd call. */
  readonly callTimeoutMs?: number;
}

/** ClusterStore over etcd v3: the control plane's only authority (DESIGN.md §5). */
export class EtcdClusterStore implements ClusterStore {
  private readonly etcd: Etcd3;
  private readonly keys: Keys;

  constructor(options: EtcdStoreOptions) {
    const callTimeoutMs = options.callTimeoutMs ?? 5_000;
    this.etcd = new Etcd3({
      hosts: [...options.endpoints],
      dialTimeout: callTimeoutMs,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    });
    this.keys = createKeys(options.root);
  }

  async listLeases(): Promise<SubnetLeaseRecord[]> {
    const res = await this.call("list subnet leases", () => this.etcd.getAll().prefix(this.keys.subnetsPrefix).exec());
    return res.kvs.map((kv) => decode(SubnetLeaseRecordSchema, kv));
  }

  async findNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    const res = await this.call(`read node ${name}`, () => this.etcd.get(this.keys.node(name)).exec());
    const kv = res.kvs[0];
    return kv && { value: decode(NodeRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async listNodes(): Promise<NodeSnapshot> {
    const res = await this.call("list nodes", () => this.etcd.getAll().prefix(this.keys.nodesPrefix).exec());
    return { revision: BigInt(res.header.revision), nodes: res.kvs.map((kv) => decode(NodeRecordSchema, kv)) };
  }

  async claimSubnet(lease: SubnetLeaseRecord, node: NodeRecord, nodeModRevision: bigint): Promise<boolean> {
    const leaseKey = this.keys.subnet(Cidr.parse(lease.subnet));
    const nodeKey = this.keys.node(node.name);
    const res = await this.call(`claim ${lease.subnet} for ${node.name}`, () =>
      this.etcd
        .if(leaseKey, "Version", "==", 0)
        .and(nodeKey, "Mod", "==", String(nodeModRevision))
        .then(
          this.etcd.put(leaseKey).value(toJsonString(SubnetLeaseRecordSchema, lease)),
          this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)),
        )
        .commit(),
    );
    return res.succeeded;
  }

  async updateNode(node: NodeRecord, modRevision: bigint): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const res = await this.call(`update node ${node.name}`, () =>
      this.etcd
        .if(nodeKey, "Mod", "==", String(modRevision))
        .then(this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)))
        .commit(),
    );
    return res.succeeded;
  }

  async putHeartbeat(name: string, lastSeenMs: bigint): Promise<void> {
    const value = toJsonString(HeartbeatRecordSchema, { $typeName: HeartbeatRecordSchema.typeName, lastSeenMs });
    await this.call(`record heartbeat of ${name}`, () => this.etcd.put(this.keys.heartbeat(name)).value(value).exec());
  }

  async listHeartbeats(): Promise<Map<string, bigint>> {
    const prefix = this.keys.heartbeatsPrefix;
    const res = await this.call("list heartbeats", () => this.etcd.getAll().prefix(prefix).exec());
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), decode(HeartbeatRecordSchema, kv).lastSeenMs]));
  }

  async watchNodes(fromRevision: bigint, onBatch: (batch: NodeWatchBatch) => void, signal: AbortSignal): Promise<void> {
    const prefix = this.keys.nodesPrefix;
    const watcher: Watcher = await this.call("watch nodes", () =>
      this.etcd.watch().prefix(prefix).startRevision(String(fromRevision)).create(),
    );
    watcher.on("data", (res) => {
      if (res.events.length === 0) return;
      const changes = res.events.map((event): NodeChange => {
        const name = event.kv.key.toString().slice(prefix.length);
        return event.type === "Put" ? { type: "put", name, node: decode(NodeRecordSchema, event.kv) } : { type: "delete", name };
      });
      onBatch({ revision: BigInt(res.header.revision), changes });
    });
    const stop = () => void watcher.cancel().catch(() => undefined);
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
  }

  async putAllocation(node: string, record: AllocationRecord): Promise<void> {
    const value = toJsonString(AllocationRecordSchema, record);
    await this.call(`record allocation ${record.address} of ${node}`, () => this.etcd.put(this.keys.allocation(node, record.address)).value(value).exec());
  }

  async deleteAllocation(node: string, address: string): Promise<void> {
    await this.call(`release allocation ${address} of ${node}`, () => this.etcd.delete().key(this.keys.allocation(node, address)).exec());
  }

  async listAllocations(node?: string): Promise<Array<{ node: string; record: AllocationRecord }>> {
    const prefix = node === undefined ? this.keys.allocationsPrefix : this.keys.nodeAllocationsPrefix(node);
    const res = await this.call("list allocations", () => this.etcd.getAll().prefix(prefix).exec());
    return res.kvs.map((kv) => ({
      node: kv.key.toString().slice(this.keys.allocationsPrefix.length).split("/")[0] ?? "",
      record: decode(AllocationRecordSchema, kv),
    }));
  }

  async close(): Promise<void> {
    this.etcd.close();
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TrellisError) throw err;
      throw new TrellisError("UNAVAILABLE", `etcd: could not ${what}: ${(err as Error).message}`, { cause: err });
    }
  }
}

function decode<Desc extends DescMessage>(schema: Desc, kv: IKeyValue): MessageShape<Desc> {
  try {
    return fromJsonString(schema, kv.value.toString());
  } catch (err) {
    throw new TrellisError("DATA_LOSS", `etcd key ${kv.key.toString()} does not hold a ${schema.typeName}`, { cause: err });
  }
}
