// Every store port in memory, over one revisioned keyspace (memory-kv.ts) laid out and encoded as etcd holds
// it (store/keys.ts, JSON values), so transactions that span aggregates are atomic and mod revisions, key
// order and watches behave as etcd's. The Etcd* stores are the reference: each method here is its etcd
// twin's transaction spelled over MemoryKv, and test/contract/*-store.ts holds both to one contract.
// Test hooks: `compact`, `breakWatches`, `down` (an etcd outage), `beforeNodeWrite` (a replica paused
// between its reads and its commit) and `liveChanges`.
import { create, type DescMessage, fromJsonString, type MessageShape, toJsonString } from "@bufbuild/protobuf";
import type { AllocationStore, NodeAllocation } from "../../control-plane/store/allocation-store.js";
import type { ClusterConfigStore } from "../../control-plane/store/cluster-config-store.js";
import type { ClusterEvent, EventStore } from "../../control-plane/store/event-store.js";
import { createKeys, type Keys, subnetOfKey } from "../../control-plane/store/keys.js";
import type { HeartbeatEntry, LivenessStore } from "../../control-plane/store/liveness-store.js";
import {
  type ClaimConditions,
  type NodeChange,
  type NodeIpClaim,
  type NodeIpEntry,
  type NodeSnapshot,
  type NodeStore,
  type NodeWatchBatch,
  type RegistrationView,
  refuseUnreadRecord,
} from "../../control-plane/store/node-store.js";
import type { ReportWrite, RouteReportStore } from "../../control-plane/store/route-report-store.js";
import type { Stores } from "../../control-plane/store/stores.js";
import type { SubnetStore, SubnetUse } from "../../control-plane/store/subnet-store.js";
import type { Versioned } from "../../control-plane/store/versioned.js";
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
import { MemoryIdentityStore } from "./memory-identity-store.js";
import { type KvCompare, type KvEntry, type KvWrite, MemoryKv } from "./memory-kv.js";

/** What every Memory* store shares: the keyspace and the test hooks. */
export class MemoryStoreState {
  readonly kv = new MemoryKv();
  readonly keys: Keys = createKeys();
  /** While true every call fails with UNAVAILABLE, as when etcd is down or unreachable. */
  down = false;
  /**
   * Runs inside every write of a node record (claim, update, expiry, removal) before its compares are
   * checked: what the test does here happens between the caller's reads and its commit.
   */
  beforeNodeWrite: ((name: string) => Promise<void>) | undefined;
  /** Every change of an existing node record's `live` flag, in order (a new record is not a change). */
  readonly liveChanges: Array<{ name: string; live: boolean }> = [];
}

export interface MemoryStores extends Stores {
  readonly nodes: MemoryNodeStore;
  readonly liveness: MemoryLivenessStore;
  readonly subnets: MemorySubnetStore;
  readonly allocations: MemoryAllocationStore;
  readonly routeReports: MemoryRouteReportStore;
  readonly clusterConfig: MemoryClusterConfigStore;
  readonly events: MemoryEventStore;
  /** Its own state: no transaction spans identities and the other aggregates. */
  readonly identity: MemoryIdentityStore;
  /** The revision of the last write: what etcd's response headers would say. */
  readonly revision: bigint;
  /** Drops history before `revision` (default: now), as EtcdCompactor does: watches from before it are lost. */
  compact(revision?: bigint): void;
  /** Ends every open watch with onLost, as a broken stream or an etcd restored from a snapshot does. */
  breakWatches(err?: Error): void;
  /** See MemoryStoreState. */
  down: boolean;
  beforeNodeWrite: ((name: string) => Promise<void>) | undefined;
  readonly liveChanges: ReadonlyArray<{ readonly name: string; readonly live: boolean }>;
}

/** Every store port over one fresh in-memory keyspace. */
export function openMemoryStores(): MemoryStores {
  const state = new MemoryStoreState();
  return {
    nodes: new MemoryNodeStore(state),
    liveness: new MemoryLivenessStore(state),
    subnets: new MemorySubnetStore(state),
    allocations: new MemoryAllocationStore(state),
    routeReports: new MemoryRouteReportStore(state),
    clusterConfig: new MemoryClusterConfigStore(state),
    events: new MemoryEventStore(state),
    identity: new MemoryIdentityStore(),
    get revision() {
      return state.kv.revision;
    },
    compact: (revision) => state.kv.compact(revision),
    breakWatches: (err) => state.kv.breakWatches(err),
    get down() {
      return state.down;
    },
    set down(value: boolean) {
      state.down = value;
    },
    get beforeNodeWrite() {
      return state.beforeNodeWrite;
    },
    set beforeNodeWrite(hook: ((name: string) => Promise<void>) | undefined) {
      state.beforeNodeWrite = hook;
    },
    liveChanges: state.liveChanges,
  };
}

/** The base of every Memory* store: the keyspace, the key layout and the call wrapper EtcdStore has. */
abstract class MemoryStore {
  protected readonly kv: MemoryKv;
  protected readonly keys: Keys;

  constructor(protected readonly state: MemoryStoreState) {
    this.kv = state.kv;
    this.keys = state.keys;
  }

  /** Runs one "etcd call": fails while `down`; a failure that is not a TrellisError becomes UNAVAILABLE, as etcdCall does. */
  protected async call<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
    if (this.state.down) throw new TrellisError("UNAVAILABLE", `etcd: could not ${what}: no endpoint reachable (test outage)`);
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TrellisError) throw err;
      throw new TrellisError("UNAVAILABLE", `etcd: could not ${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  protected read<Desc extends DescMessage>(schema: Desc, key: string): Versioned<MessageShape<Desc>> | undefined {
    const entry = this.kv.get(key);
    return entry && { value: decode(schema, key, entry.value), modRevision: entry.modRevision };
  }

  protected list<Desc extends DescMessage>(schema: Desc, prefix: string): Array<MessageShape<Desc>> {
    return this.kv.range(prefix).entries.map(([key, entry]) => decode(schema, key, entry.value));
  }

  /** Commits a write of node record `node` and notes a change of its `live` flag. */
  protected writeNode(
    node: NodeRecord,
    compares: readonly KvCompare[],
    writes: readonly KvWrite[],
  ): { succeeded: boolean; revision: bigint } {
    const key = this.keys.node(node.name);
    const before = this.kv.get(key);
    const res = this.kv.txn(compares, writes);
    if (res.succeeded && before && decode(NodeRecordSchema, key, before.value).live !== node.live) {
      this.state.liveChanges.push({ name: node.name, live: node.live });
    }
    return res;
  }
}

/** NodeStore in memory; EtcdNodeStore is the reference. */
export class MemoryNodeStore extends MemoryStore implements NodeStore {
  findNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    return this.call(`read node ${name}`, () => this.read(NodeRecordSchema, this.keys.node(name)));
  }

  findNodeByIp(ip: string): Promise<string | undefined> {
    return this.call(`look up node IP ${ip}`, () => this.nodeIpEntry(ip).nodeName);
  }

  listNodes(): Promise<NodeSnapshot> {
    return this.call("list nodes", () => ({ revision: this.kv.revision, nodes: this.list(NodeRecordSchema, this.keys.nodesPrefix) }));
  }

  watchNodes(
    fromRevision: bigint,
    onBatch: (batch: NodeWatchBatch) => void,
    signal: AbortSignal,
    onLost?: (err: Error) => void,
  ): Promise<void> {
    const prefix = this.keys.nodesPrefix;
    return this.call("watch nodes", () =>
      this.kv.watch(
        prefix,
        fromRevision,
        (events) => {
          const changes = events.map((e): NodeChange => {
            const name = e.key.slice(prefix.length);
            return e.type === "put"
              ? { type: "put", name, node: decode(NodeRecordSchema, e.key, e.value ?? "") }
              : { type: "delete", name };
          });
          onBatch({ revision: events.at(-1)?.modRevision ?? 0n, changes }); // events come in revision order: the last is the highest
        },
        signal,
        onLost,
      ),
    );
  }

  readRegistration(name: string, ip: string): Promise<RegistrationView> {
    const k = this.keys;
    return this.call(`read what registering ${name} needs`, () => {
      const nodeIp = this.nodeIpEntry(ip);
      const node = this.read(NodeRecordSchema, k.node(name));
      if (node) return { nodeIp, node };
      return { nodeIp, reservations: this.list(SubnetReservationRecordSchema, k.reservationsPrefix) };
    });
  }

  async claimSubnet(
    lease: SubnetLeaseRecord,
    node: NodeRecord,
    nodeModRevision: bigint,
    ip: NodeIpClaim,
    conditions: ClaimConditions = {},
  ): Promise<boolean> {
    const k = this.keys;
    const subnet = Cidr.parse(lease.subnet);
    return this.call(`claim ${lease.subnet} for ${node.name}`, async () => {
      await this.state.beforeNodeWrite?.(node.name);
      const compares: KvCompare[] = [
        { key: k.subnet(subnet), modRevision: 0n },
        { key: k.node(node.name), modRevision: nodeModRevision },
        ...(conditions.reservedForNode ? [] : [{ key: k.reservation(subnet), modRevision: 0n }]),
        ...(conditions.neverUsed ? [{ key: k.freedSubnet(subnet), modRevision: 0n }] : []),
        ...this.nodeIpCompares(node, ip),
      ];
      return this.writeNode(node, compares, [
        { type: "put", key: k.subnet(subnet), value: toJsonString(SubnetLeaseRecordSchema, lease) },
        { type: "put", key: k.node(node.name), value: toJsonString(NodeRecordSchema, node) },
        { type: "put", key: k.nodeIp(node.nodeIp), value: nodeIpValue(node.name) },
        { type: "delete", key: k.freedSubnet(subnet) },
      ]).succeeded;
    });
  }

  updateNode(node: NodeRecord, modRevision: bigint, ip?: NodeIpClaim): Promise<boolean> {
    const k = this.keys;
    return this.call(`update node ${node.name}`, async () => {
      await this.state.beforeNodeWrite?.(node.name);
      const takesEntry = ip !== undefined && ip.entry.nodeName !== node.name;
      const left = ip?.previousIp !== node.nodeIp ? ip?.previousIp : undefined;
      const compares = [{ key: k.node(node.name), modRevision }, ...(ip ? this.nodeIpCompares(node, ip) : [])];
      return this.writeNode(node, compares, [
        { type: "put", key: k.node(node.name), value: toJsonString(NodeRecordSchema, node) },
        ...(takesEntry ? [{ type: "put", key: k.nodeIp(node.nodeIp), value: nodeIpValue(node.name) } as const] : []),
        ...(left !== undefined ? [{ type: "deleteIfValue", key: k.nodeIp(left), value: nodeIpValue(node.name) } as const] : []),
      ]).succeeded;
    });
  }

  async removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean> {
    refuseUnreadRecord(node.name, modRevision);
    const k = this.keys;
    const subnet = Cidr.parse(node.subnet);
    const freed = create(SubnetLeaseRecordSchema, { subnet: subnet.toString(), nodeName: node.name });
    return this.call(`remove node ${node.name}`, async () => {
      await this.state.beforeNodeWrite?.(node.name);
      return this.kv.txn(
        [{ key: k.node(node.name), modRevision }],
        [
          { type: "delete", key: k.node(node.name) },
          { type: "delete", key: k.subnet(subnet) },
          { type: "delete", key: k.heartbeat(node.name) },
          { type: "put", key: k.freedSubnet(subnet), value: toJsonString(SubnetLeaseRecordSchema, freed) },
          { type: "deleteIfValue", key: k.nodeIp(node.nodeIp), value: nodeIpValue(node.name) },
          { type: "deletePrefix", prefix: k.nodeAllocationsPrefix(node.name) },
          { type: "delete", key: k.reportedRoutes(node.name) },
        ],
      ).succeeded;
    });
  }

  private nodeIpEntry(ip: string): NodeIpEntry {
    const key = this.keys.nodeIp(ip);
    const entry = this.kv.get(key);
    return { ip, nodeName: entry && decode(NodeIpRecordSchema, key, entry.value).nodeName, modRevision: entry?.modRevision ?? 0n };
  }

  /** EtcdNodeStore.ifNodeIpHolds: the index entry is as read, and the node it named, if another one, too. */
  private nodeIpCompares(node: NodeRecord, ip: NodeIpClaim): KvCompare[] {
    if (ip.entry.ip !== node.nodeIp) {
      throw new TrellisError("INTERNAL", `node ${node.name} registers at ${node.nodeIp}, but its index entry was read for ${ip.entry.ip}`);
    }
    return [
      { key: this.keys.nodeIp(ip.entry.ip), modRevision: ip.entry.modRevision },
      ...(ip.displaced ? [{ key: this.keys.node(ip.displaced.name), modRevision: ip.displaced.modRevision }] : []),
    ];
  }
}

/** LivenessStore in memory; EtcdLivenessStore is the reference. */
export class MemoryLivenessStore extends MemoryStore implements LivenessStore {
  putHeartbeats(beats: ReadonlyMap<string, bigint>): Promise<bigint> {
    return this.call(`record heartbeats of ${[...beats.keys()].join(", ")}`, () =>
      this.kv.commit(
        [...beats].map(([name, lastSeenMs]) => ({
          type: "put" as const,
          key: this.keys.heartbeat(name),
          value: toJsonString(HeartbeatRecordSchema, create(HeartbeatRecordSchema, { lastSeenMs })),
        })),
      ),
    );
  }

  listHeartbeats(): Promise<Map<string, HeartbeatEntry>> {
    const prefix = this.keys.heartbeatsPrefix;
    return this.call(
      "list heartbeats",
      () =>
        new Map(
          this.kv
            .range(prefix)
            .entries.map(([key, e]) => [
              key.slice(prefix.length),
              { revision: e.modRevision, lastSeenMs: decode(HeartbeatRecordSchema, key, e.value).lastSeenMs },
            ]),
        ),
    );
  }

  expireNode(node: NodeRecord, nodeModRevision: bigint, heartbeatModRevision: bigint, disruptionModRevision: bigint): Promise<boolean> {
    const k = this.keys;
    return this.call(`expire node ${node.name}`, async () => {
      await this.state.beforeNodeWrite?.(node.name);
      const compares = [
        { key: k.node(node.name), modRevision: nodeModRevision },
        { key: k.heartbeat(node.name), modRevision: heartbeatModRevision },
        { key: k.disruption, modRevision: disruptionModRevision },
      ];
      return this.writeNode(node, compares, [{ type: "put", key: k.node(node.name), value: toJsonString(NodeRecordSchema, node) }])
        .succeeded;
    });
  }

  findDisruption(): Promise<Versioned<DisruptionRecord> | undefined> {
    return this.call("read disruption status", () => this.read(DisruptionRecordSchema, this.keys.disruption));
  }

  putDisruption(record: DisruptionRecord, modRevision: bigint): Promise<bigint | undefined> {
    const key = this.keys.disruption;
    return this.call("write disruption status", () => {
      const res = this.kv.txn([{ key, modRevision }], [{ type: "put", key, value: toJsonString(DisruptionRecordSchema, record) }]);
      return res.succeeded ? res.revision : undefined;
    });
  }
}

/** SubnetStore in memory; EtcdSubnetStore is the reference. */
export class MemorySubnetStore extends MemoryStore implements SubnetStore {
  listLeases(): Promise<SubnetLeaseRecord[]> {
    return this.call("list subnet leases", () => this.list(SubnetLeaseRecordSchema, this.keys.subnetsPrefix));
  }

  readSubnetUse(): Promise<SubnetUse> {
    const k = this.keys;
    return this.call("list leased and freed subnets", () => ({
      leasedSubnets: this.kv.range(k.subnetsPrefix).entries.map(([key]) => subnetOfKey(key, k.subnetsPrefix)),
      freedSubnets: this.kv
        .range(k.freedSubnetsPrefix)
        .entries.map(([key, e]) => ({ subnet: subnetOfKey(key, k.freedSubnetsPrefix), freedRevision: e.modRevision })),
    }));
  }

  listReservations(): Promise<SubnetReservationRecord[]> {
    return this.call("list reservations", () => this.list(SubnetReservationRecordSchema, this.keys.reservationsPrefix));
  }

  async createReservation(reservation: SubnetReservationRecord): Promise<boolean> {
    const key = this.keys.reservation(Cidr.parse(reservation.subnet));
    const value = toJsonString(SubnetReservationRecordSchema, reservation);
    return this.call(
      `reserve ${reservation.subnet}`,
      () => this.kv.txn([{ key, modRevision: 0n }], [{ type: "put", key, value }]).succeeded,
    );
  }

  async deleteReservation(subnet: string): Promise<void> {
    const key = this.keys.reservation(Cidr.parse(subnet));
    await this.call(`delete reservation ${subnet}`, () => this.kv.commit([{ type: "delete", key }]));
  }
}

/** AllocationStore in memory; EtcdAllocationStore is the reference. */
export class MemoryAllocationStore extends MemoryStore implements AllocationStore {
  async putAllocation(node: string, record: AllocationRecord): Promise<void> {
    const value = toJsonString(AllocationRecordSchema, record);
    await this.call(`record allocation ${record.address} of ${node}`, () =>
      this.kv.commit([{ type: "put", key: this.keys.allocation(node, record.address), value }]),
    );
  }

  async deleteAllocation(node: string, address: string): Promise<void> {
    await this.call(`release allocation ${address} of ${node}`, () =>
      this.kv.commit([{ type: "delete", key: this.keys.allocation(node, address) }]),
    );
  }

  async applyAllocations(node: string, recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void> {
    const writes: KvWrite[] = [
      ...recorded.map(
        (r) => ({ type: "put", key: this.keys.allocation(node, r.address), value: toJsonString(AllocationRecordSchema, r) }) as const,
      ),
      ...released.map((address) => ({ type: "delete", key: this.keys.allocation(node, address) }) as const),
    ];
    for (let at = 0; at < writes.length; at += 100) {
      const chunk = writes.slice(at, at + 100);
      await this.call(`sync ${chunk.length} allocations of ${node}`, () => this.kv.commit(chunk));
    }
  }

  listAllocationsPage(node: string | undefined, after: string, limit: number): Promise<{ allocations: NodeAllocation[]; next: string }> {
    const base = this.keys.allocationsPrefix;
    const prefix = node === undefined ? base : this.keys.nodeAllocationsPrefix(node);
    return this.call("list a page of allocations", () => {
      const page = this.kv.range(prefix, { from: after ? `${base}${after}\0` : prefix, limit });
      const last = page.entries.at(-1);
      return {
        allocations: page.entries.map(([key, e]) => this.allocation(key, e)),
        next: page.more && last ? last[0].slice(base.length) : "",
      };
    });
  }

  listAllocations(node?: string): Promise<NodeAllocation[]> {
    const prefix = node === undefined ? this.keys.allocationsPrefix : this.keys.nodeAllocationsPrefix(node);
    return this.call("list allocations", () => this.kv.range(prefix).entries.map(([key, e]) => this.allocation(key, e)));
  }

  countAllocations(): Promise<Map<string, number>> {
    const prefix = this.keys.allocationsPrefix;
    return this.call("count allocations", () => {
      const counts = new Map<string, number>();
      for (const [key] of this.kv.range(prefix).entries) {
        const node = key.slice(prefix.length).split("/")[0] ?? "";
        counts.set(node, (counts.get(node) ?? 0) + 1);
      }
      return counts;
    });
  }

  private allocation(key: string, entry: KvEntry): NodeAllocation {
    return {
      node: key.slice(this.keys.allocationsPrefix.length).split("/")[0] ?? "",
      record: decode(AllocationRecordSchema, key, entry.value),
    };
  }
}

/** RouteReportStore in memory; EtcdRouteReportStore is the reference. */
export class MemoryRouteReportStore extends MemoryStore implements RouteReportStore {
  putReportedRoutes(node: string, record: ReportedRoutesRecord, expectedModRevision: bigint): Promise<ReportWrite> {
    const key = this.keys.reportedRoutes(node);
    const value = toJsonString(ReportedRoutesRecordSchema, record);
    return this.call(`record routes reported by ${node}`, (): ReportWrite => {
      const registered = this.kv.get(this.keys.node(node)) !== undefined;
      if (registered && this.kv.modRevision(key) === expectedModRevision) {
        return { written: true, modRevision: this.kv.commit([{ type: "put", key, value }]) };
      }
      return { written: false, registered, current: this.read(ReportedRoutesRecordSchema, key) };
    });
  }

  findReportedRoutes(node: string): Promise<Versioned<ReportedRoutesRecord> | undefined> {
    return this.call(`read routes reported by ${node}`, () => this.read(ReportedRoutesRecordSchema, this.keys.reportedRoutes(node)));
  }

  listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>> {
    const prefix = this.keys.reportedRoutesPrefix;
    return this.call(
      "list reported routes",
      () =>
        new Map(
          this.kv.range(prefix).entries.map(([key, e]) => [key.slice(prefix.length), decode(ReportedRoutesRecordSchema, key, e.value)]),
        ),
    );
  }
}

/** ClusterConfigStore in memory; EtcdClusterConfigStore is the reference. */
export class MemoryClusterConfigStore extends MemoryStore implements ClusterConfigStore {
  ensureClusterConfig(config: ClusterConfigRecord): Promise<ClusterConfigRecord> {
    const key = this.keys.clusterConfig;
    return this.call("store the cluster config", () => {
      const stored = this.read(ClusterConfigRecordSchema, key);
      if (stored) return stored.value;
      this.kv.commit([{ type: "put", key, value: toJsonString(ClusterConfigRecordSchema, config) }]);
      return config;
    });
  }
}

/** EventStore in memory; EtcdEventStore is the reference. */
export class MemoryEventStore extends MemoryStore implements EventStore {
  watchEvents(onEvent: (event: ClusterEvent) => void, signal: AbortSignal, onLost?: (err: Error) => void): Promise<void> {
    const k = this.keys;
    return this.call("watch cluster events", () =>
      this.kv.watch(
        k.root,
        0n,
        (events) => {
          for (const e of events) {
            const value = e.type === "put" ? e.value : e.prevValue;
            const base = { type: e.type, revision: e.modRevision, nodeName: "", subnet: "", address: "", live: false } as const;
            try {
              if (e.key.startsWith(k.nodesPrefix)) {
                const node = value === undefined ? undefined : decode(NodeRecordSchema, e.key, value);
                onEvent({
                  ...base,
                  kind: "node",
                  nodeName: e.key.slice(k.nodesPrefix.length),
                  subnet: node?.subnet ?? "",
                  live: e.type === "put" && (node?.live ?? false),
                });
              } else if (e.key.startsWith(k.subnetsPrefix)) {
                const lease = value === undefined ? undefined : decode(SubnetLeaseRecordSchema, e.key, value);
                onEvent({ ...base, kind: "lease", nodeName: lease?.nodeName ?? "", subnet: lease?.subnet ?? "" });
              } else if (e.key.startsWith(k.allocationsPrefix)) {
                const [nodeName = "", address = ""] = e.key.slice(k.allocationsPrefix.length).split("/");
                onEvent({ ...base, kind: "allocation", nodeName, address });
              } else if (e.key.startsWith(k.reservationsPrefix)) {
                const r = value === undefined ? undefined : decode(SubnetReservationRecordSchema, e.key, value);
                onEvent({ ...base, kind: "reservation", nodeName: r?.nodeName ?? "", subnet: r?.subnet ?? "" });
              }
            } catch {
              // as in EtcdEventStore: an undecodable value is reported by the readers that need it
            }
          }
        },
        signal,
        onLost,
      ),
    );
  }
}

function decode<Desc extends DescMessage>(schema: Desc, key: string, value: string): MessageShape<Desc> {
  try {
    return fromJsonString(schema, value);
  } catch (err) {
    throw new TrellisError("DATA_LOSS", `etcd key ${key} does not hold a ${schema.typeName}`, { cause: err });
  }
}

/** The value of a node-ips entry naming `name`: the same bytes every time, as EtcdNodeStore writes it. */
function nodeIpValue(name: string): string {
  return toJsonString(NodeIpRecordSchema, create(NodeIpRecordSchema, { nodeName: name }));
}
