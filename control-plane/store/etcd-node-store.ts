import { create, toJsonString } from "@bufbuild/protobuf";
import { type ComparatorBuilder, CompareResult, CompareTarget, type IRequestOp, type IWatchResponse } from "etcd3";
import { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import {
  NodeIpRecordSchema,
  type NodeRecord,
  NodeRecordSchema,
  type SubnetLeaseRecord,
  SubnetLeaseRecordSchema,
  SubnetReservationRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, followWatch, rangePaged } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import {
  type ClaimConditions,
  type NodeChange,
  type NodeIpClaim,
  type NodeSnapshot,
  type NodeStore,
  type NodeWatchBatch,
  type RegistrationView,
  refuseUnreadRecord,
} from "./node-store.js";
import type { Versioned } from "./versioned.js";

/** NodeStore over etcd. Node records, the node-ips index and the subnet lease a registration writes with them (DESIGN.md §2, §5). */
export class EtcdNodeStore extends EtcdStore implements NodeStore {
  async findNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    const res = await this.call("get", `read node ${name}`, () => this.etcd.get(this.keys.node(name)).exec());
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(NodeRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async findNodeByIp(ip: string): Promise<string | undefined> {
    const res = await this.call("get", `look up node IP ${ip}`, () => this.etcd.get(this.keys.nodeIp(ip)).exec());
    const kv = res.kvs[0];
    return kv && decodeRecord(NodeIpRecordSchema, kv).nodeName;
  }

  async listNodes(): Promise<NodeSnapshot> {
    const res = await this.call("range", "list nodes", () => rangePaged(this.etcd, this.keys.nodesPrefix));
    return { revision: res.revision, nodes: res.kvs.map((kv) => decodeRecord(NodeRecordSchema, kv)) };
  }

  async watchNodes(
    fromRevision: bigint,
    onBatch: (batch: NodeWatchBatch) => void,
    signal: AbortSignal,
    onLost?: (err: Error) => void,
  ): Promise<void> {
    const prefix = this.keys.nodesPrefix;
    const watcher = await this.watch("watch nodes", this.etcd.watch().prefix(prefix).startRevision(String(fromRevision)));
    const onData = (res: IWatchResponse) => {
      if (res.events.length === 0) return;
      const changes = res.events.map((event): NodeChange => {
        const name = event.kv.key.toString().slice(prefix.length);
        return event.type === "Put" ? { type: "put", name, node: decodeRecord(NodeRecordSchema, event.kv) } : { type: "delete", name };
      });
      // The highest mod revision the batch holds, never the response header's: one catch-up can arrive as
      // several responses stamped with one header revision (issue 10, finding 6).
      const revision = res.events.reduce((max, e) => (BigInt(e.kv.mod_revision) > max ? BigInt(e.kv.mod_revision) : max), 0n);
      onBatch({ revision, changes });
    };
    followWatch(watcher, signal, onData, onLost);
  }

  async readRegistration(name: string, ip: string): Promise<RegistrationView> {
    const k = this.keys;
    const ipOp = await this.etcd.get(k.nodeIp(ip)).op();
    const res = await this.call("txn", `read what registering ${name} needs`, async () =>
      this.etcd.kv.txn({
        // A new node: the reservations (one may be its own). A known node keeps its subnet: just its record.
        compare: [{ key: Buffer.from(k.node(name)), target: CompareTarget.Version, result: CompareResult.Equal, version: 0 }],
        success: [ipOp, await this.etcd.getAll().prefix(k.reservationsPrefix).op()],
        failure: [ipOp, await this.etcd.get(k.node(name)).op()],
      }),
    );
    const [ipKvs = [], second = []] = res.responses.map((r) => r.response_range.kvs);
    const ipKv = ipKvs[0];
    const nodeIp = {
      ip,
      nodeName: ipKv && decodeRecord(NodeIpRecordSchema, ipKv).nodeName,
      modRevision: ipKv ? BigInt(ipKv.mod_revision) : 0n,
    };
    if (res.succeeded) return { nodeIp, reservations: second.map((kv) => decodeRecord(SubnetReservationRecordSchema, kv)) };
    const nodeKv = second[0];
    return { nodeIp, node: nodeKv && { value: decodeRecord(NodeRecordSchema, nodeKv), modRevision: BigInt(nodeKv.mod_revision) } };
  }

  async claimSubnet(
    lease: SubnetLeaseRecord,
    node: NodeRecord,
    nodeModRevision: bigint,
    ip: NodeIpClaim,
    conditions: ClaimConditions = {},
  ): Promise<boolean> {
    const subnet = Cidr.parse(lease.subnet);
    const leaseKey = this.keys.subnet(subnet);
    const nodeKey = this.keys.node(node.name);
    const compare = this.etcd.if(leaseKey, "Version", "==", 0).and(nodeKey, "Mod", "==", String(nodeModRevision));
    // Not reserved for another node meanwhile (issue 10, finding 11): the reservation is part of the claim.
    if (!conditions.reservedForNode) compare.and(this.keys.reservation(subnet), "Version", "==", 0);
    if (conditions.neverUsed) compare.and(this.keys.freedSubnet(subnet), "Version", "==", 0);
    const res = await this.call("txn", `claim ${lease.subnet} for ${node.name}`, () =>
      this.ifNodeIpHolds(compare, node, ip)
        .then(
          this.etcd.put(leaseKey).value(toJsonString(SubnetLeaseRecordSchema, lease)),
          this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)),
          this.etcd.put(this.keys.nodeIp(node.nodeIp)).value(nodeIpValue(node.name)),
          this.etcd.delete().key(this.keys.freedSubnet(subnet)),
        )
        .commit(),
    );
    return this.applied(res, "claim_subnet");
  }

  async updateNode(node: NodeRecord, modRevision: bigint, ip?: NodeIpClaim): Promise<boolean> {
    const nodeKey = this.keys.node(node.name);
    const compare = this.etcd.if(nodeKey, "Mod", "==", String(modRevision));
    const takesEntry = ip !== undefined && ip.entry.nodeName !== node.name;
    const left = ip?.previousIp !== node.nodeIp ? ip?.previousIp : undefined; // the address it moved away from
    const res = await this.call("txn", `update node ${node.name}`, () =>
      (ip ? this.ifNodeIpHolds(compare, node, ip) : compare)
        .then(
          this.etcd.put(nodeKey).value(toJsonString(NodeRecordSchema, node)),
          ...(takesEntry ? [this.etcd.put(this.keys.nodeIp(node.nodeIp)).value(nodeIpValue(node.name))] : []),
          ...(left !== undefined ? [this.deleteNodeIpIfHeldBy(left, node.name)] : []),
        )
        .commit(),
    );
    return this.applied(res, "update_node");
  }

  async removeNode(node: NodeRecord, modRevision: bigint): Promise<boolean> {
    refuseUnreadRecord(node.name, modRevision);
    const nodeKey = this.keys.node(node.name);
    const subnet = Cidr.parse(node.subnet);
    const freed = create(SubnetLeaseRecordSchema, { subnet: subnet.toString(), nodeName: node.name });
    const res = await this.call("txn", `remove node ${node.name}`, () =>
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
    return this.applied(res, "remove_node");
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
}

/** The value of a node-ips entry naming `name`; the same bytes every time, so transactions compare on it. */
function nodeIpValue(name: string): string {
  return toJsonString(NodeIpRecordSchema, create(NodeIpRecordSchema, { nodeName: name }));
}
