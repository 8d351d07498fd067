import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import { checkNodeName } from "../../proto/core/node-name.js";
import {
  DisruptionRecordSchema,
  type NodeRecord,
  NodeRecordSchema,
  SubnetLeaseRecordSchema,
  type SubnetReservationRecord,
  SubnetReservationRecordSchema,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { ClusterStore } from "../store/store.js";
import { type ExpiryPlan, type ExpiryPolicy, planExpiry } from "./lease-expiry.js";
import { pickFreeSubnet, type SubnetPool } from "./subnet-pool.js";

export interface LeaseManagerDeps {
  readonly store: ClusterStore;
  readonly pool: SubnetPool;
  readonly log: Logger;
  readonly clock: () => number;
  readonly rand: () => number;
  readonly policy: ExpiryPolicy;
  /** How many lost etcd races a registration tolerates before it gives up with CONFLICT. */
  readonly maxRaces?: number;
}

export type ReleaseReason = "withdrawn" | "evicted" | "expired";

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
    let ipChecked = false;
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      const existing = await store.findNode(reg.name);
      const current = existing?.value;
      if (current?.live && current.nodeIp === reg.nodeIp && current.mtu === reg.mtu) return current;
      if (current?.live && current.nodeIp !== reg.nodeIp) {
        // Re-pointing a live node would send its pods' traffic elsewhere (or a cloned machine would take
        // turns with it): a node moves only once it left (drain, or its lease expired).
        throw new TrellisError(
          "ALREADY_EXISTS",
          `node ${reg.name} is live at ${current.nodeIp}; a registration cannot move it to ${reg.nodeIp}: stop the node at ${current.nodeIp} and drain it (EvictNode), or wait until its lease expires`,
        );
      }
      // Only a new node or a changed address can collide with another node's address: check those once.
      if (!ipChecked && current?.nodeIp !== reg.nodeIp) await this.rejectDuplicateIp(reg);
      ipChecked = true;
      if (existing && current) {
        // Coming back is a sign of life: without this, the node would look overdue (by its old heartbeat)
        // until its first heartbeat, and an expiry round in between would withdraw it again.
        await store.putHeartbeat(reg.name, BigInt(this.deps.clock()));
        const next = create(NodeRecordSchema, {
          ...current,
          nodeIp: reg.nodeIp,
          mtu: reg.mtu,
          live: true,
          releasedAtMs: 0n,
          releasedReason: "",
        });
        if (await store.updateNode(next, existing.modRevision, current.nodeIp)) {
          log.info({ node: reg.name, subnet: next.subnet }, "node registered again");
          return next;
        }
      } else {
        const leasedSubnets = await store.listLeasedSubnets();
        const leased = leasedSubnets.map((s) => Cidr.parse(s, "stored lease key"));
        const reservations = await store.listReservations();
        const mine = reservations.find((r) => r.nodeName === reg.name);
        if (mine && leasedSubnets.includes(mine.subnet)) {
          const holder = (await store.listLeases()).find((l) => l.subnet === mine.subnet);
          if (holder) {
            throw new TrellisError(
              "CONFLICT",
              `subnet ${mine.subnet} is reserved for ${reg.name} but leased by ${holder.nodeName}; release that lease (ReleaseLease) first`,
            );
          }
        }
        const othersReserved = reservations.filter((r) => r.nodeName !== reg.name).map((r) => Cidr.parse(r.subnet, "stored reservation"));
        const subnet =
          mine?.subnet ?? pickFreeSubnet(pool, [...leased, ...othersReserved], attempt === 1 ? undefined : this.deps.rand).toString();
        const now = BigInt(this.deps.clock());
        const node = create(NodeRecordSchema, {
          name: reg.name,
          nodeIp: reg.nodeIp,
          mtu: reg.mtu,
          subnet,
          live: true,
          registeredAtMs: now,
        });
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

  /**
   * Makes `name` the cluster's central router, or host-gw again (DESIGN.md §6: cluster config that only an
   * admin sets). At most one node is the router: turning it on for one turns it off for any other.
   */
  async setRouter(name: string, router: boolean): Promise<NodeRecord> {
    if (router) {
      for (const other of (await this.deps.store.listNodes()).nodes) {
        if (other.router && other.name !== name) await this.updateRouterFlag(other.name, false);
      }
    }
    return this.updateRouterFlag(name, router);
  }

  private async updateRouterFlag(name: string, router: boolean): Promise<NodeRecord> {
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      const existing = await this.getNode(name);
      if (existing.value.router === router) return existing.value;
      const next = create(NodeRecordSchema, { ...existing.value, router });
      if (await this.deps.store.updateNode(next, existing.modRevision)) {
        this.deps.log.info({ node: name, router }, router ? "node is now the central router" : "node is no longer the central router");
        return next;
      }
    }
    throw new TrellisError("CONFLICT", `could not change router mode of node ${name}: lost ${this.maxRaces} etcd races in a row`);
  }

  /**
   * Takes a node's route out of the cluster at once (graceful shutdown, eviction); its subnet stays its
   * own for the grace period, so it gets it back when it returns.
   */
  async withdraw(name: string, reason: ReleaseReason = "withdrawn"): Promise<void> {
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      const existing = await this.getNode(name);
      if (!existing.value.live) return;
      const next = create(NodeRecordSchema, {
        ...existing.value,
        live: false,
        releasedAtMs: BigInt(this.deps.clock()),
        releasedReason: reason,
      });
      if (await this.deps.store.updateNode(next, existing.modRevision)) {
        this.deps.log.info({ node: name, subnet: next.subnet, reason }, `node ${reason}`);
        return;
      }
    }
    throw new TrellisError("CONFLICT", `could not withdraw node ${name}: lost ${this.maxRaces} etcd races in a row`);
  }

  /** Frees a node's subnet now, skipping the grace period (admin ReleaseLease). */
  async release(subnetText: string): Promise<string> {
    const subnet = Cidr.parse(subnetText, "subnet").toString();
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      const lease = (await this.deps.store.listLeases()).find((l) => l.subnet === subnet);
      if (!lease) throw new TrellisError("NOT_FOUND", `subnet ${subnet} is not leased`);
      const node = await this.deps.store.findNode(lease.nodeName);
      if (!node) throw new TrellisError("DATA_LOSS", `subnet ${subnet} is leased by ${lease.nodeName}, which has no node record`);
      if (await this.deps.store.removeNode(node.value, node.modRevision)) {
        this.deps.log.info({ node: lease.nodeName, subnet }, "subnet lease released");
        return lease.nodeName;
      }
    }
    throw new TrellisError("CONFLICT", `could not release ${subnet}: lost ${this.maxRaces} etcd races in a row`);
  }

  /** Pins `subnetText` to `node`: only that node will lease it. */
  async reserve(subnetText: string, node: string): Promise<SubnetReservationRecord> {
    checkNodeName(node, "node_name");
    const subnet = Cidr.parse(subnetText, "subnet");
    const { pool, store } = this.deps;
    if (subnet.prefixLength !== pool.prefixLength || !pool.cluster.covers(subnet)) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `subnet ${subnet.toString()} is not a /${pool.prefixLength} node subnet of cluster CIDR ${pool.cluster.toString()}`,
      );
    }
    const holder = (await store.listLeases()).find((l) => Cidr.parse(l.subnet).overlaps(subnet) && l.nodeName !== node);
    if (holder) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `subnet ${subnet.toString()} overlaps the lease of node ${holder.nodeName}; release that lease first`,
      );
    }
    const reservation = create(SubnetReservationRecordSchema, {
      subnet: subnet.toString(),
      nodeName: node,
      createdAtMs: BigInt(this.deps.clock()),
    });
    if (!(await store.createReservation(reservation))) {
      throw new TrellisError("ALREADY_EXISTS", `subnet ${subnet.toString()} is reserved already`);
    }
    this.deps.log.info({ node, subnet: subnet.toString() }, "subnet reserved");
    return reservation;
  }

  async heartbeat(name: string): Promise<void> {
    const node = await this.getNode(name);
    if (!node.value.live) {
      throw new TrellisError("NOT_FOUND", `node ${name} is not live (${node.value.releasedReason || "withdrawn"}); register it again`);
    }
    await this.deps.store.putHeartbeat(name, BigInt(this.deps.clock()));
  }

  /**
   * One expiry round: nodes overdue by the TTL lose their route, unless so many are overdue at once that
   * it is a disruption on our side; nodes past the grace period lose their subnet. Every write is a
   * transaction against the record it read, so replicas sweeping at once do no harm.
   */
  async sweep(healthySinceMs: number): Promise<ExpiryPlan> {
    const { store, log, policy } = this.deps;
    const [{ nodes }, heartbeats] = await Promise.all([store.listNodes(), store.listHeartbeats()]);
    const nowMs = this.deps.clock();
    const plan = planExpiry({ nodes, heartbeats, nowMs, healthySinceMs }, policy);
    for (const name of plan.expire) {
      const found = await store.findNode(name);
      if (!found?.value.live) continue;
      const next = create(NodeRecordSchema, { ...found.value, live: false, releasedAtMs: BigInt(nowMs), releasedReason: "expired" });
      if (await store.updateNode(next, found.modRevision))
        log.warn({ node: name, subnet: next.subnet }, "node missed its heartbeats for the lease TTL; route withdrawn");
    }
    for (const name of plan.free) {
      const found = await store.findNode(name);
      if (!found || found.value.live) continue;
      if (await store.removeNode(found.value, found.modRevision))
        log.info({ node: name, subnet: found.value.subnet }, "grace period over; subnet freed");
    }
    await this.recordDisruption(plan, nowMs);
    return plan;
  }

  private async recordDisruption(plan: ExpiryPlan, nowMs: number): Promise<void> {
    const { store, log } = this.deps;
    const before = await store.getDisruption();
    const active = plan.keptInDisruption.length > 0;
    const overdue = [...plan.keptInDisruption].sort();
    if (!active && !before?.active) return;
    if (active && before?.active && before.overdueNodes.join() === overdue.join()) return;
    const since = active ? (before?.active ? before.sinceMs : BigInt(nowMs)) : 0n;
    await store.putDisruption(
      create(DisruptionRecordSchema, { active, sinceMs: since, overdueNodes: overdue, liveNodes: BigInt(plan.liveCount) }),
    );
    if (active)
      log.warn(
        { reason: "disruption" },
        `${overdue.length} of ${plan.liveCount} live nodes missed heartbeats at once: keeping their routes (disruption mode)`,
      );
    else log.info({ reason: "disruption" }, "disruption over: heartbeats are back");
  }

  private async getNode(name: string) {
    const existing = await this.deps.store.findNode(name);
    if (!existing) throw new TrellisError("NOT_FOUND", `node ${name} is not registered; register it first`);
    return existing;
  }

  private async rejectDuplicateIp(reg: Registration): Promise<void> {
    const holder = await this.deps.store.findNodeByIp(reg.nodeIp);
    if (!holder || holder === reg.name) return;
    const other = await this.deps.store.findNode(holder);
    if (other?.value.live && other.value.nodeIp === reg.nodeIp) {
      throw new TrellisError(
        "ALREADY_EXISTS",
        `node IP ${reg.nodeIp} is already registered by live node ${holder}; give ${reg.name} its own --node-ip`,
      );
    }
  }
}

function validateRegistration(reg: Registration): void {
  checkNodeName(reg.name, "node_name");
  parseIpv4(reg.nodeIp, "node_ip");
  checkMtu(reg.mtu);
}

/** A node's MTU: 576 (the least every IPv4 host must take) to 65535; throws INVALID_ARGUMENT. Pure. */
export function checkMtu(mtu: number): number {
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) {
    throw new TrellisError("INVALID_ARGUMENT", `mtu ${mtu} is not between 576 and 65535`);
  }
  return mtu;
}

/**
 * Runs expiry rounds and remembers since when etcd has answered without interruption: after an outage
 * of ours (etcd, or this replica just started) every live node gets a full TTL again before anything
 * expires, since no node could heartbeat through it.
 */
export class ExpiryLoop {
  private healthySinceMs: number;
  private healthy = true;

  constructor(private readonly deps: { leases: LeaseManager; clock: () => number; log: Logger }) {
    this.healthySinceMs = deps.clock();
  }

  async tick(): Promise<ExpiryPlan | undefined> {
    const startedMs = this.deps.clock();
    try {
      const plan = await this.deps.leases.sweep(this.healthy ? this.healthySinceMs : startedMs);
      if (!this.healthy) {
        this.healthy = true;
        this.healthySinceMs = startedMs;
        this.deps.log.info("etcd answers again: every live node gets a full lease TTL");
      }
      return plan;
    } catch (err) {
      if (this.healthy) this.deps.log.warn({ err }, "lease expiry round failed; no node expires until etcd answers again");
      this.healthy = false;
      return undefined;
    }
  }
}
