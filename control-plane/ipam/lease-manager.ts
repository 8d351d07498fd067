import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { Cidr, parseIpv4 } from "../../proto/common/cidr.js";
import { TrellisError } from "../../proto/common/errors.js";
import { checkNodeName } from "../../proto/common/node-name.js";
import {
  NodeRecordSchema,
  SubnetLeaseRecordSchema,
  type NodeRecord,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { ClusterStore } from "../store/store.js";
import { pickFreeSubnet, type SubnetPool } from "./subnet-pool.js";

export interface LeaseManagerDeps {
  readonly store: ClusterStore;
  readonly pool: SubnetPool;
  readonly log: Logger;
  readonly clock: () => number;
  readonly rand: () => number;
  /** How many lost etcd races a registration tolerates before it gives up with CONFLICT. */
  readonly maxRaces?: number;
}

export interface Registration {
  readonly name: string;
  readonly nodeIp: string;
  readonly mtu: number;
}

/** Hands each node one subnet of the pool; all authority is in the store (etcd transactions). */
export class LeaseManager {
  private readonly maxRaces: number;

  constructor(private readonly deps: LeaseManagerDeps) {
    this.maxRaces = deps.maxRaces ?? 16;
  }

  /** Registers a node and returns its record; a node registering again gets its own subnet back. */
  async register(reg: Registration): Promise<NodeRecord> {
    validateRegistration(reg);
    const { store, pool, log } = this.deps;
    await this.rejectDuplicateIp(reg);
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      const existing = await store.findNode(reg.name);
      if (existing) {
        const current = existing.value;
        if (current.live && current.nodeIp === reg.nodeIp && current.mtu === reg.mtu) return current;
        const next = create(NodeRecordSchema, { ...current, nodeIp: reg.nodeIp, mtu: reg.mtu, live: true });
        if (await store.updateNode(next, existing.modRevision)) {
          log.info({ node: reg.name, subnet: next.subnet }, "node registered again");
          return next;
        }
      } else {
        const leased = (await store.listLeases()).map((l) => Cidr.parse(l.subnet, `stored lease of ${l.nodeName}`));
        const subnet = pickFreeSubnet(pool, leased, attempt === 1 ? undefined : this.deps.rand).toString();
        const now = BigInt(this.deps.clock());
        const node = create(NodeRecordSchema, { name: reg.name, nodeIp: reg.nodeIp, mtu: reg.mtu, subnet, live: true, registeredAtMs: now });
        const lease = create(SubnetLeaseRecordSchema, { subnet, nodeName: reg.name, leasedAtMs: now });
        if (await store.claimSubnet(lease, node, 0n)) {
          log.info({ node: reg.name, subnet }, "subnet leased");
          return node;
        }
      }
      log.debug({ node: reg.name, attempt }, "registration race lost, retrying");
    }
    throw new TrellisError("CONFLICT", `could not register node ${reg.name}: lost ${this.maxRaces} etcd races in a row`);
  }

  /** Withdraws a node's route (graceful shutdown); its subnet stays reserved for it. */
  async withdraw(name: string): Promise<void> {
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      const existing = await this.getNode(name);
      if (!existing.value.live) return;
      const next = create(NodeRecordSchema, { ...existing.value, live: false });
      if (await this.deps.store.updateNode(next, existing.modRevision)) {
        this.deps.log.info({ node: name, subnet: next.subnet }, "node withdrawn");
        return;
      }
    }
    throw new TrellisError("CONFLICT", `could not withdraw node ${name}: lost ${this.maxRaces} etcd races in a row`);
  }

  async heartbeat(name: string): Promise<void> {
    await this.getNode(name);
    await this.deps.store.putHeartbeat(name, BigInt(this.deps.clock()));
  }

  private async getNode(name: string) {
    const existing = await this.deps.store.findNode(name);
    if (!existing) throw new TrellisError("NOT_FOUND", `node ${name} is not registered; register it first`);
    return existing;
  }

  private async rejectDuplicateIp(reg: Registration): Promise<void> {
    const { nodes } = await this.deps.store.listNodes();
    const other = nodes.find((n) => n.live && n.nodeIp === reg.nodeIp && n.name !== reg.name);
    if (other) {
      throw new TrellisError(
        "ALREADY_EXISTS",
        `node IP ${reg.nodeIp} is already registered by live node ${other.name}; give ${reg.name} its own --node-ip`,
      );
    }
  }
}

function validateRegistration(reg: Registration): void {
  checkNodeName(reg.name, "node_name");
  parseIpv4(reg.nodeIp, "node_ip");
  if (!Number.isInteger(reg.mtu) || reg.mtu < 576 || reg.mtu > 65535) {
    throw new TrellisError("INVALID_ARGUMENT", `mtu ${reg.mtu} is not between 576 and 65535`);
  }
}
