// The store methods that heartbeats and expiry use, in memory, with etcd's revision semantics (every write
// bumps one counter and becomes the key's mod revision; a compare against 0n means "absent"). Not a whole
// ClusterStore: `asClusterStore` hands it to a LeaseManager, and any other method throws when called.
// Hooks let a test interleave deterministically (a replica paused between planning and committing), and
// `down` makes every call fail as an etcd outage does.
import { clone, create } from "@bufbuild/protobuf";
import type { ClusterStore, NodeSnapshot, Versioned } from "../../control-plane/store/store.js";
import { TrellisError } from "../../proto/core/errors.js";
import {
  type DisruptionRecord,
  DisruptionRecordSchema,
  type NodeRecord,
  NodeRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";

export type LivenessStore = Pick<
  ClusterStore,
  | "listNodes"
  | "findNode"
  | "updateNode"
  | "removeNode"
  | "putHeartbeat"
  | "listHeartbeats"
  | "listHeartbeatRevisions"
  | "getDisruption"
  | "findDisruption"
  | "putDisruption"
  | "expireNode"
>;

export class MemoryLivenessStore implements LivenessStore {
  private revision = 0n;
  private readonly nodes = new Map<string, Versioned<NodeRecord>>();
  private readonly heartbeats = new Map<string, Versioned<bigint>>();
  private disruption: Versioned<DisruptionRecord> | undefined;
  /** While true every call fails with UNAVAILABLE (etcd down or unreachable). */
  down = false;
  /**
   * Runs inside every write of a node record (expiry, update, removal) before its compares are checked:
   * what the test does here happens between the caller's reads and its commit.
   */
  beforeNodeWrite: ((name: string) => Promise<void>) | undefined;
  /** Every change of a node's `live` flag, in order: what route streams would carry. */
  readonly liveChanges: Array<{ name: string; live: boolean }> = [];

  /** Seeds a live node (as a registration would leave it). */
  addNode(name: string, registeredAtMs: bigint, index: number): void {
    const node = create(NodeRecordSchema, {
      name,
      nodeIp: `192.168.${index >> 8}.${index & 255}`,
      mtu: 1500,
      subnet: `10.244.${index}.0/24`,
      live: true,
      registeredAtMs,
    });
    this.nodes.set(name, { value: node, modRevision: ++this.revision });
  }

  node(name: string): NodeRecord | undefined {
    return this.nodes.get(name)?.value;
  }

  expiredNodes(): string[] {
    return [...this.nodes.values()].filter((n) => !n.value.live).map((n) => n.value.name);
  }

  disruptionRecord(): DisruptionRecord | undefined {
    return this.disruption?.value;
  }

  async listNodes(): Promise<NodeSnapshot> {
    this.check();
    return { revision: this.revision, nodes: [...this.nodes.values()].map((n) => clone(NodeRecordSchema, n.value)) };
  }

  async findNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    this.check();
    const n = this.nodes.get(name);
    return n && { value: clone(NodeRecordSchema, n.value), modRevision: n.modRevision };
  }

  async updateNode(node: NodeRecord, modRevision: bigint): Promise<boolean> {
    this.check();
    await this.beforeNodeWrite?.(node.name);
    if ((this.nodes.get(node.name)?.modRevision ?? 0n) !== modRevision) return false;
    this.setNode(node);
    return true;
  }

  async removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean> {
    this.check();
    await this.beforeNodeWrite?.(node.name);
    if ((this.nodes.get(node.name)?.modRevision ?? 0n) !== modRevision) return false;
    this.nodes.delete(node.name);
    this.heartbeats.delete(node.name);
    this.revision++;
    return true;
  }

  async expireNode(
    node: NodeRecord,
    nodeModRevision: bigint,
    heartbeatModRevision: bigint,
    disruptionModRevision: bigint,
  ): Promise<boolean> {
    this.check();
    await this.beforeNodeWrite?.(node.name);
    if ((this.nodes.get(node.name)?.modRevision ?? 0n) !== nodeModRevision) return false;
    if ((this.heartbeats.get(node.name)?.modRevision ?? 0n) !== heartbeatModRevision) return false;
    if ((this.disruption?.modRevision ?? 0n) !== disruptionModRevision) return false;
    this.setNode(node);
    return true;
  }

  async putHeartbeat(name: string, lastSeenMs: bigint): Promise<bigint> {
    this.check();
    const modRevision = ++this.revision;
    this.heartbeats.set(name, { value: lastSeenMs, modRevision });
    return modRevision;
  }

  async listHeartbeats(): Promise<Map<string, bigint>> {
    this.check();
    return new Map([...this.heartbeats].map(([name, h]) => [name, h.value]));
  }

  async listHeartbeatRevisions(): Promise<Map<string, bigint>> {
    this.check();
    return new Map([...this.heartbeats].map(([name, h]) => [name, h.modRevision]));
  }

  async getDisruption(): Promise<DisruptionRecord | undefined> {
    this.check();
    return this.disruption && clone(DisruptionRecordSchema, this.disruption.value);
  }

  async findDisruption(): Promise<Versioned<DisruptionRecord> | undefined> {
    this.check();
    return this.disruption && { value: clone(DisruptionRecordSchema, this.disruption.value), modRevision: this.disruption.modRevision };
  }

  async putDisruption(record: DisruptionRecord, modRevision: bigint): Promise<bigint | undefined> {
    this.check();
    if ((this.disruption?.modRevision ?? 0n) !== modRevision) return undefined;
    this.disruption = { value: clone(DisruptionRecordSchema, record), modRevision: ++this.revision };
    return this.disruption.modRevision;
  }

  private setNode(node: NodeRecord): void {
    const before = this.nodes.get(node.name)?.value;
    if (before?.live !== node.live) this.liveChanges.push({ name: node.name, live: node.live });
    this.nodes.set(node.name, { value: clone(NodeRecordSchema, node), modRevision: ++this.revision });
  }

  private check(): void {
    if (this.down) throw new TrellisError("UNAVAILABLE", "etcd: could not reach any endpoint (test outage)");
  }
}

/** The fake as the ClusterStore a LeaseManager takes; a method it does not have throws, naming itself. */
export function asClusterStore(store: LivenessStore): ClusterStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop in target) {
        const value: unknown = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      }
      return () => {
        throw new Error(`MemoryLivenessStore has no ${String(prop)}: the code under test uses more of the store than this fake`);
      };
    },
  }) as unknown as ClusterStore;
}
