import { create, toJsonString } from "@bufbuild/protobuf";
import type { Etcd3, Watcher } from "etcd3";
import { Cidr } from "../../proto/core/cidr.js";
import { type AllocationRecord, AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import {
  type DisruptionRecord,
  DisruptionRecordSchema,
  HeartbeatRecordSchema,
  NodeIpRecordSchema,
  type NodeRecord,
  NodeRecordSchema,
  type ReportedRoutesRecord,
  ReportedRoutesRecordSchema,
  type SubnetLeaseRecord,
  SubnetLeaseRecordSchema,
  type SubnetReservationRecord,
  SubnetReservationRecordSchema,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { createEtcdClient, type EtcdConnection } from "./etcd-client.js";
import { decodeRecord, etcdCall } from "./etcd-codec.js";
import { createKeys, type Keys } from "./keys.js";
import type { ClusterEvent, ClusterStore, NodeChange, NodeSnapshot, NodeWatchBatch, Versioned } from "./store.js";

export type EtcdStoreOptions = EtcdConnection & {
  /** Key root; tests give each test its own. */
  readonly root?: string;
};

/** ClusterStore over etcd v3: the control plane's only authority (DESIGN.md §5). */
export class EtcdClusterStore implements ClusterStore {
  private readonly etcd: Etcd3;
  private readonly keys: Keys;
  private readonly connection: EtcdConnection;

  constructor(options: EtcdStoreOptions) {
    this.connection = options;
    this.etcd = createEtcdClient(options);
    this.keys = createKeys(options.root);
  }

  async listLeases(): Promise<SubnetLeaseRecord[]> {
    const res = await this.call("list subnet leases", () => this.etcd.getAll().prefix(this.keys.subnetsPrefix).exec());
    return res.kvs.map((kv) => decodeRecord(SubnetLeaseRecordSchema, kv));
  }

  async listLeasedSubnets(): Promise<string[]> {
    const prefix = this.keys.subnetsPrefix;
    const keys = await this.call("list leased subnets", () => this.etcd.getAll().prefix(prefix).keys());
    return keys.map((k) => k.slice(prefix.length).replace(/-(\d+)$/, "/$1"));
  }

  async findNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    const res = await this.call(`read node ${name}`, () => this.etcd.get(this.keys.node(name)).exec());
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(NodeRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async listNodes(): Promise<NodeSnapshot> {
    const res = await this.call("list nodes", () => this.etcd.getAll().prefix(this.keys.nodesPrefix).exec());
    return { revision: BigInt(res.header.revision), nodes: res.kvs.map((kv) => decodeRecord(NodeRecordSchema, kv)) };
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
          this.putNodeIp(node),
        )
        .commit(),
    );
    return res.succeeded;
  }

  async updateNode(node: NodeRecord, modRevision: bigint, previousIp?: string): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const moved = previousIp !== undefined && previousIp !== node.nodeIp;
    const res = await this.call(`update node ${node.name}`, () =>
      this.etcd
        .if(nodeKey, "Mod", "==", String(modRevision))
        .then(
          this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)),
          ...(moved ? [this.putNodeIp(node), this.etcd.delete().key(this.keys.nodeIp(previousIp))] : []),
        )
        .commit(),
    );
    return res.succeeded;
  }

  async findNodeByIp(ip: string): Promise<string | undefined> {
    const res = await this.call(`look up node IP ${ip}`, () => this.etcd.get(this.keys.nodeIp(ip)).exec());
    const kv = res.kvs[0];
    return kv && decodeRecord(NodeIpRecordSchema, kv).nodeName;
  }

  private putNodeIp(node: NodeRecord) {
    return this.etcd
      .put(this.keys.nodeIp(node.nodeIp))
      .value(toJsonString(NodeIpRecordSchema, create(NodeIpRecordSchema, { nodeName: node.name })));
  }

  async removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const leaseKey = this.keys.subnet(Cidr.parse(node.subnet));
    const res = await this.call(`remove node ${node.name}`, () =>
      this.etcd
        .if(nodeKey, "Mod", "==", String(modRevision))
        .then(
          this.etcd.delete().key(nodeKey),
          this.etcd.delete().key(leaseKey),
          this.etcd.delete().key(this.keys.heartbeat(node.name)),
          this.etcd.delete().key(this.keys.nodeIp(node.nodeIp)),
        )
        .commit(),
    );
    return res.succeeded;
  }

  async listReservations(): Promise<SubnetReservationRecord[]> {
    const res = await this.call("list reservations", () => this.etcd.getAll().prefix(this.keys.reservationsPrefix).exec());
    return res.kvs.map((kv) => decodeRecord(SubnetReservationRecordSchema, kv));
  }

  async createReservation(reservation: SubnetReservationRecord): Promise<boolean> {
    const key = this.keys.reservation(Cidr.parse(reservation.subnet));
    const res = await this.call(`reserve ${reservation.subnet}`, () =>
      this.etcd
        .if(key, "Version", "==", 0)
        .then(this.etcd.put(key).value(toJsonString(SubnetReservationRecordSchema, reservation)))
        .commit(),
    );
    return res.succeeded;
  }

  async deleteReservation(subnet: string): Promise<void> {
    await this.call(`delete reservation ${subnet}`, () =>
      this.etcd
        .delete()
        .key(this.keys.reservation(Cidr.parse(subnet)))
        .exec(),
    );
  }

  async putReportedRoutes(node: string, record: ReportedRoutesRecord): Promise<void> {
    const value = toJsonString(ReportedRoutesRecordSchema, record);
    await this.call(`record routes reported by ${node}`, () => this.etcd.put(this.keys.reportedRoutes(node)).value(value).exec());
  }

  async findReportedRoutes(node: string): Promise<ReportedRoutesRecord | undefined> {
    const res = await this.call(`read routes reported by ${node}`, () => this.etcd.get(this.keys.reportedRoutes(node)).exec());
    const kv = res.kvs[0];
    return kv && decodeRecord(ReportedRoutesRecordSchema, kv);
  }

  async listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>> {
    const prefix = this.keys.reportedRoutesPrefix;
    const res = await this.call("list reported routes", () => this.etcd.getAll().prefix(prefix).exec());
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), decodeRecord(ReportedRoutesRecordSchema, kv)]));
  }

  async watchEvents(onEvent: (event: ClusterEvent) => void, signal: AbortSignal): Promise<void> {
    const k = this.keys;
    const watcher: Watcher = await this.call("watch cluster events", () => this.etcd.watch().prefix(k.root).withPreviousKV().create());
    watcher.on("data", (res) => {
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
    });
    const stop = () => void watcher.cancel().catch(() => undefined);
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
  }

  async getDisruption(): Promise<DisruptionRecord | undefined> {
    const res = await this.call("read disruption status", () => this.etcd.get(this.keys.disruption).exec());
    const kv = res.kvs[0];
    return kv && decodeRecord(DisruptionRecordSchema, kv);
  }

  async putDisruption(record: DisruptionRecord): Promise<void> {
    await this.call("write disruption status", () =>
      this.etcd.put(this.keys.disruption).value(toJsonString(DisruptionRecordSchema, record)).exec(),
    );
  }

  async putHeartbeat(name: string, lastSeenMs: bigint): Promise<void> {
    const value = toJsonString(HeartbeatRecordSchema, { $typeName: HeartbeatRecordSchema.typeName, lastSeenMs });
    await this.call(`record heartbeat of ${name}`, () => this.etcd.put(this.keys.heartbeat(name)).value(value).exec());
  }

  async listHeartbeats(): Promise<Map<string, bigint>> {
    const prefix = this.keys.heartbeatsPrefix;
    const res = await this.call("list heartbeats", () => this.etcd.getAll().prefix(prefix).exec());
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), decodeRecord(HeartbeatRecordSchema, kv).lastSeenMs]));
  }

  async watchNodes(
    fromRevision: bigint,
    onBatch: (batch: NodeWatchBatch) => void,
    signal: AbortSignal,
    onLost?: (err: Error) => void,
  ): Promise<void> {
    const prefix = this.keys.nodesPrefix;
    const watcher: Watcher = await this.call("watch nodes", () =>
      this.etcd.watch().prefix(prefix).startRevision(String(fromRevision)).create(),
    );
    watcher.on("data", (res) => {
      if (res.events.length === 0) return;
      const changes = res.events.map((event): NodeChange => {
        const name = event.kv.key.toString().slice(prefix.length);
        return event.type === "Put" ? { type: "put", name, node: decodeRecord(NodeRecordSchema, event.kv) } : { type: "delete", name };
      });
      onBatch({ revision: BigInt(res.header.revision), changes });
    });
    // etcd3 resumes a broken stream by itself; an error here means the watch was cancelled for good.
    watcher.on("error", (err) => {
      if (signal.aborted) return;
      void watcher.cancel().catch(() => undefined);
      onLost?.(err);
    });
    const stop = () => void watcher.cancel().catch(() => undefined);
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
  }

  async putAllocation(node: string, record: AllocationRecord): Promise<void> {
    const value = toJsonString(AllocationRecordSchema, record);
    await this.call(`record allocation ${record.address} of ${node}`, () =>
      this.etcd.put(this.keys.allocation(node, record.address)).value(value).exec(),
    );
  }

  async deleteAllocation(node: string, address: string): Promise<void> {
    await this.call(`release allocation ${address} of ${node}`, () => this.etcd.delete().key(this.keys.allocation(node, address)).exec());
  }

  async applyAllocations(node: string, recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void> {
    const writes = [
      ...recorded.map((r) => this.etcd.put(this.keys.allocation(node, r.address)).value(toJsonString(AllocationRecordSchema, r))),
      ...released.map((address) => this.etcd.delete().key(this.keys.allocation(node, address))),
    ];
    // etcd refuses transactions of more than 128 operations (--max-txn-ops).
    for (let at = 0; at < writes.length; at += 100) {
      const chunk = writes.slice(at, at + 100);
      // A compare that always holds (a key's create revision is never negative): the writes apply together.
      await this.call(`sync ${chunk.length} allocations of ${node}`, () =>
        this.etcd
          .if(this.keys.allocation(node, "0.0.0.0"), "Create", ">", -1)
          .then(...chunk)
          .commit(),
      );
    }
  }

  async listAllocations(node?: string): Promise<Array<{ node: string; record: AllocationRecord }>> {
    const prefix = node === undefined ? this.keys.allocationsPrefix : this.keys.nodeAllocationsPrefix(node);
    const res = await this.call("list allocations", () => this.etcd.getAll().prefix(prefix).exec());
    return res.kvs.map((kv) => ({
      node: kv.key.toString().slice(this.keys.allocationsPrefix.length).split("/")[0] ?? "",
      record: decodeRecord(AllocationRecordSchema, kv),
    }));
  }

  async close(): Promise<void> {
    this.etcd.close();
  }

  private call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return etcdCall(what, fn, this.connection);
  }
}
