import { create, toJsonString } from "@bufbuild/protobuf";
import { type ComparatorBuilder, CompareResult, CompareTarget, type Etcd3, type IRequestOp, type Watcher } from "etcd3";
import { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import { type AllocationRecord, AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import {
  type ClusterConfigRecord,
  ClusterConfigRecordSchema,
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
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { createEtcdClient, type EtcdConnection } from "./etcd-client.js";
import { decodeRecord, endWatch, etcdCall, prefixEnd, rangePaged } from "./etcd-codec.js";
import { createKeys, type Keys } from "./keys.js";
import type {
  ClusterEvent,
  ClusterStore,
  NodeChange,
  NodeIpClaim,
  NodeSnapshot,
  NodeWatchBatch,
  RegistrationView,
  Versioned,
} from "./store.js";

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
    const res = await this.call("list subnet leases", () => rangePaged(this.etcd, this.keys.subnetsPrefix));
    return res.kvs.map((kv) => decodeRecord(SubnetLeaseRecordSchema, kv));
  }

  async findNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    const res = await this.call(`read node ${name}`, () => this.etcd.get(this.keys.node(name)).exec());
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(NodeRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async listNodes(): Promise<NodeSnapshot> {
    const res = await this.call("list nodes", () => rangePaged(this.etcd, this.keys.nodesPrefix));
    return { revision: res.revision, nodes: res.kvs.map((kv) => decodeRecord(NodeRecordSchema, kv)) };
  }

  async readRegistration(name: string, ip: string): Promise<RegistrationView> {
    const k = this.keys;
    const keysOnly = async (prefix: string): Promise<IRequestOp> => {
      const { request_range } = await this.etcd.getAll().prefix(prefix).op();
      return { request_range: { ...request_range, keys_only: true } };
    };
    const ipOp = await this.etcd.get(k.nodeIp(ip)).op();
    const res = await this.call(`read what registering ${name} needs`, async () =>
      this.etcd.kv.txn({
        // A new node: what choosing its subnet takes. A known node keeps its subnet: just its record.
        compare: [{ key: Buffer.from(k.node(name)), target: CompareTarget.Version, result: CompareResult.Equal, version: 0 }],
        success: [
          ipOp,
          await keysOnly(k.subnetsPrefix),
          await this.etcd.getAll().prefix(k.reservationsPrefix).op(),
          await keysOnly(k.freedSubnetsPrefix),
        ],
        failure: [ipOp, await this.etcd.get(k.node(name)).op()],
      }),
    );
    const ranges = res.responses.map((r) => r.response_range.kvs);
    const ipKv = ranges[0]?.[0];
    const nodeIp = {
      ip,
      nodeName: ipKv && decodeRecord(NodeIpRecordSchema, ipKv).nodeName,
      modRevision: ipKv ? BigInt(ipKv.mod_revision) : 0n,
    };
    if (!res.succeeded) {
      const nodeKv = ranges[1]?.[0];
      return { nodeIp, node: nodeKv && { value: decodeRecord(NodeRecordSchema, nodeKv), modRevision: BigInt(nodeKv.mod_revision) } };
    }
    const [, leaseKvs = [], reservationKvs = [], freedKvs = []] = ranges;
    const subnetOfKey = (key: Buffer, prefix: string) =>
      key
        .toString()
        .slice(prefix.length)
        .replace(/-(\d+)$/, "/$1");
    return {
      nodeIp,
      choice: {
        leasedSubnets: leaseKvs.map((kv) => subnetOfKey(kv.key, k.subnetsPrefix)),
        reservations: reservationKvs.map((kv) => decodeRecord(SubnetReservationRecordSchema, kv)),
        freedSubnets: freedKvs.map((kv) => ({ subnet: subnetOfKey(kv.key, k.freedSubnetsPrefix), freedRevision: BigInt(kv.mod_revision) })),
      },
    };
  }

  async claimSubnet(
    lease: SubnetLeaseRecord,
    node: NodeRecord,
    nodeModRevision: bigint,
    ip: NodeIpClaim,
    reservedForNode = false,
  ): Promise<boolean> {
    const subnet = Cidr.parse(lease.subnet);
    const leaseKey = this.keys.subnet(subnet);
    const nodeKey = this.keys.node(node.name);
    const free = this.etcd.if(leaseKey, "Version", "==", 0).and(nodeKey, "Mod", "==", String(nodeModRevision));
    // Not reserved for another node meanwhile (issue 10, finding 11): the reservation is part of the claim.
    const unreserved = reservedForNode ? free : free.and(this.keys.reservation(subnet), "Version", "==", 0);
    const res = await this.call(`claim ${lease.subnet} for ${node.name}`, () =>
      this.ifNodeIpHolds(unreserved, node, ip)
        .then(
          this.etcd.put(leaseKey).value(toJsonString(SubnetLeaseRecordSchema, lease)),
          this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)),
          this.etcd.put(this.keys.nodeIp(node.nodeIp)).value(nodeIpValue(node.name)),
          this.etcd.delete().key(this.keys.freedSubnet(subnet)),
        )
        .commit(),
    );
    return res.succeeded;
  }

  async updateNode(node: NodeRecord, modRevision: bigint, ip?: NodeIpClaim): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const compare = this.etcd.if(nodeKey, "Mod", "==", String(modRevision));
    const takesEntry = ip !== undefined && ip.entry.nodeName !== node.name;
    const left = ip?.previousIp !== node.nodeIp ? ip?.previousIp : undefined; // the address it moved away from
    const res = await this.call(`update node ${node.name}`, () =>
      (ip ? this.ifNodeIpHolds(compare, node, ip) : compare)
        .then(
          this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)),
          ...(takesEntry ? [this.etcd.put(this.keys.nodeIp(node.nodeIp)).value(nodeIpValue(node.name))] : []),
          ...(left !== undefined ? [this.deleteNodeIpIfHeldBy(left, node.name)] : []),
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

  /**
   * Adds `ip`'s condition to a registration's transaction: the node-ips entry of the node's address is
   * unchanged since it was read, and the node it named, if another one, is unchanged too (still not live
   * at that address).
   */
  private ifNodeIpHolds(txn: ComparatorBuilder, node: NodeRecord, ip: NodeIpClaim): ComparatorBuilder {
    if (ip.entry.ip !== node.nodeIp) {
      throw new TrellisError("INTERNAL", `node ${node.name} registers at ${node.nodeIp}, but its index entry was read for ${ip.entry.ip}`);
    }
    txn.and(this.keys.nodeIp(ip.entry.ip), "Mod", "==", String(ip.entry.modRevision));
    if (ip.displaced) txn.and(this.keys.node(ip.displaced.name), "Mod", "==", String(ip.displaced.modRevision));
    return txn;
  }

  /**
   * Deletes the node-ips entry of `ip` only if it names `name` (a nested transaction: the entry may name
   * another node now, which took the address over; that one's entry stays).
   */
  private deleteNodeIpIfHeldBy(ip: string, name: string): IRequestOp {
    const key = Buffer.from(this.keys.nodeIp(ip));
    return {
      request_txn: {
        compare: [{ key, target: CompareTarget.Value, result: CompareResult.Equal, value: Buffer.from(nodeIpValue(name)) }],
        success: [{ request_delete_range: { key } }],
        failure: [],
      },
    };
  }

  async removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const subnet = Cidr.parse(node.subnet);
    const freed = create(SubnetLeaseRecordSchema, { subnet: subnet.toString(), nodeName: node.name });
    const res = await this.call(`remove node ${node.name}`, () =>
      this.etcd
        .if(nodeKey, "Mod", "==", String(modRevision))
        .then(
          this.etcd.delete().key(nodeKey),
          this.etcd.delete().key(this.keys.subnet(subnet)),
          this.etcd.delete().key(this.keys.heartbeat(node.name)),
          this.etcd.put(this.keys.freedSubnet(subnet)).value(toJsonString(SubnetLeaseRecordSchema, freed)),
          this.deleteNodeIpIfHeldBy(node.nodeIp, node.name),
          // What the node reported goes with it (issue 10, finding 10): its pods' allocations, whose
          // addresses belong to the freed subnet now, and its route report.
          this.etcd.delete().prefix(this.keys.nodeAllocationsPrefix(node.name)),
          this.etcd.delete().key(this.keys.reportedRoutes(node.name)),
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
    const res = await this.call("list reported routes", () => rangePaged(this.etcd, prefix));
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), decodeRecord(ReportedRoutesRecordSchema, kv)]));
  }

  async watchEvents(onEvent: (event: ClusterEvent) => void, signal: AbortSignal, onLost?: (err: Error) => void): Promise<void> {
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
    endWatch(watcher, signal, onLost);
  }

  async getDisruption(): Promise<DisruptionRecord | undefined> {
    const res = await this.call("read disruption status", () => this.etcd.get(this.keys.disruption).exec());
    const kv = res.kvs[0];
    return kv && decodeRecord(DisruptionRecordSchema, kv);
  }

  async findDisruption(): Promise<Versioned<DisruptionRecord> | undefined> {
    const res = await this.call("read disruption status", () => this.etcd.get(this.keys.disruption).exec());
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(DisruptionRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async putDisruption(record: DisruptionRecord, modRevision: bigint): Promise<bigint | undefined> {
    const key = this.keys.disruption;
    const res = await this.call("write disruption status", () =>
      this.etcd
        .if(key, "Mod", "==", String(modRevision))
        .then(this.etcd.put(key).value(toJsonString(DisruptionRecordSchema, record)))
        .commit(),
    );
    return res.succeeded ? BigInt(res.header.revision) : undefined;
  }

  async putHeartbeat(name: string, lastSeenMs: bigint): Promise<bigint> {
    const value = toJsonString(HeartbeatRecordSchema, { $typeName: HeartbeatRecordSchema.typeName, lastSeenMs });
    const res = await this.call(`record heartbeat of ${name}`, () => this.etcd.put(this.keys.heartbeat(name)).value(value).exec());
    return BigInt(res.header.revision); // a put's revision is the key's new mod revision
  }

  async listHeartbeatRevisions(): Promise<Map<string, bigint>> {
    const prefix = this.keys.heartbeatsPrefix;
    const res = await this.call("list heartbeat revisions", () => rangePaged(this.etcd, prefix));
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), BigInt(kv.mod_revision)]));
  }

  async expireNode(
    node: NodeRecord,
    nodeModRevision: bigint,
    heartbeatModRevision: bigint,
    disruptionModRevision: bigint,
  ): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const res = await this.call(`expire node ${node.name}`, () =>
      this.etcd
        .if(nodeKey, "Mod", "==", String(nodeModRevision))
        .and(this.keys.heartbeat(node.name), "Mod", "==", String(heartbeatModRevision))
        .and(this.keys.disruption, "Mod", "==", String(disruptionModRevision))
        .then(this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)))
        .commit(),
    );
    return res.succeeded;
  }

  async listHeartbeats(): Promise<Map<string, bigint>> {
    const prefix = this.keys.heartbeatsPrefix;
    const res = await this.call("list heartbeats", () => rangePaged(this.etcd, prefix));
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
      // The highest mod revision the batch holds, never the response header's: one catch-up can arrive as
      // several responses stamped with one header revision (issue 10, finding 6).
      const revision = res.events.reduce((max, e) => (BigInt(e.kv.mod_revision) > max ? BigInt(e.kv.mod_revision) : max), 0n);
      onBatch({ revision, changes });
    });
    endWatch(watcher, signal, onLost);
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

  async listAllocationsPage(
    node: string | undefined,
    after: string,
    limit: number,
  ): Promise<{ allocations: Array<{ node: string; record: AllocationRecord }>; next: string }> {
    const base = this.keys.allocationsPrefix;
    const prefix = node === undefined ? base : this.keys.nodeAllocationsPrefix(node);
    const res = await this.call("list a page of allocations", () =>
      this.etcd.kv.range({ key: Buffer.from(after ? `${base}${after}\0` : prefix), range_end: prefixEnd(prefix), limit: String(limit) }),
    );
    const allocations = res.kvs.map((kv) => ({
      node: kv.key.toString().slice(base.length).split("/")[0] ?? "",
      record: decodeRecord(AllocationRecordSchema, kv),
    }));
    const last = res.kvs.at(-1);
    return { allocations, next: res.more && last ? last.key.toString().slice(base.length) : "" };
  }

  async ensureClusterConfig(config: ClusterConfigRecord): Promise<ClusterConfigRecord> {
    const key = this.keys.clusterConfig;
    const res = await this.call("store the cluster config", () =>
      this.etcd
        .if(key, "Version", "==", 0)
        .then(this.etcd.put(key).value(toJsonString(ClusterConfigRecordSchema, config)))
        .else(this.etcd.get(key))
        .commit(),
    );
    const kv = res.succeeded ? undefined : res.responses[0]?.response_range?.kvs[0];
    return kv ? decodeRecord(ClusterConfigRecordSchema, kv) : config;
  }

  async countAllocations(): Promise<Map<string, number>> {
    const prefix = this.keys.allocationsPrefix;
    const res = await this.call("count allocations", () => rangePaged(this.etcd, prefix, { keysOnly: true, pageSize: 5_000 }));
    const counts = new Map<string, number>();
    for (const kv of res.kvs) {
      const node = kv.key.toString().slice(prefix.length).split("/")[0] ?? "";
      counts.set(node, (counts.get(node) ?? 0) + 1);
    }
    return counts;
  }

  async listAllocations(node?: string): Promise<Array<{ node: string; record: AllocationRecord }>> {
    const prefix = node === undefined ? this.keys.allocationsPrefix : this.keys.nodeAllocationsPrefix(node);
    const res = await this.call("list allocations", () => rangePaged(this.etcd, prefix));
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

/** The value of a node-ips entry naming `name`; the same bytes every time, so transactions compare on it. */
function nodeIpValue(name: string): string {
  return toJsonString(NodeIpRecordSchema, create(NodeIpRecordSchema, { nodeName: name }));
}
