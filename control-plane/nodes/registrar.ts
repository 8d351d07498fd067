import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { type Reason, TrellisError } from "../../proto/core/errors.js";
import { checkNodeName } from "../../proto/core/node-name.js";
import {
  type NodeRecord,
  NodeRecordSchema,
  SubnetLeaseRecordSchema,
  type SubnetReservationRecord,
  SubnetReservationRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { NodeIpClaim, NodeIpEntry, NodeStore } from "../store/node-store.js";
import type { SubnetStore } from "../store/subnet-store.js";
import type { FreeSubnets, SubnetPool } from "../subnets/subnet-pool.js";
import { SubnetUseCache } from "../subnets/subnet-use-cache.js";
import type { Liveness } from "./liveness.js";

export interface RegistrarDeps {
  readonly nodes: NodeStore;
  readonly subnets: SubnetStore;
  /** Told of every registration: a node registering is a sign of life. */
  readonly liveness: Liveness;
  readonly pool: SubnetPool;
  readonly log: Logger;
  /** Wall clock, for the times records show operators. */
  readonly clock: () => number;
  readonly rand: () => number;
  /** How many lost etcd races a registration tolerates before it gives up with CONFLICT. */
  readonly maxRaces?: number;
  /** How old the cached view of leased and freed subnets may be when a new node's subnet is chosen from it (default 1 s). */
  readonly subnetUseMaxAgeMs?: number;
  /** Counts registrations by result (trellis_registrations_total). */
  readonly metrics?: RegistrationObserver;
}

/**
 * How a registration ended: "new" (a subnet leased), "returned" (a known node registered again, its
 * record rewritten), "unchanged" (already live as it asks: nothing written), or the reason it failed, in
 * lower case ("exhausted", "conflict", "already_exists", "invalid_argument", "unavailable", ...).
 */
export type RegistrationResult = "new" | "returned" | "unchanged" | Lowercase<Reason>;

export interface RegistrationObserver {
  countRegistration(result: RegistrationResult): void;
}

/**
 * Why a node is not live: its daemon's leave command ("withdrawn"), an admin's DrainNode ("drained") or
 * EvictNode ("evicted", which also revokes its certificates), or missed heartbeats ("expired").
 */
export type ReleaseReason = "withdrawn" | "drained" | "evicted" | "expired";

export interface Registration {
  readonly name: string;
  readonly nodeIp: string;
  readonly mtu: number;
  /** The subnet the node holds now, if any (its pods have addresses of it). */
  readonly heldSubnet?: string;
  /** The registering daemon process (new at each start); "" or absent: not checked. */
  readonly instance?: string;
}

/**
 * Registration and the ways a node leaves: hands each node one subnet of the pool and gives it back when
 * the node returns. All authority is in the store (etcd transactions).
 */
export class Registrar {
  private readonly maxRaces: number;
  /**
   * Subnets this replica's registrations are claiming right now: a burst of new nodes through one replica
   * picks different ones instead of all racing for the lowest free subnet (each lost race is another round
   * trip).
   */
  private readonly claiming = new Set<string>();
  private readonly subnetUse: SubnetUseCache;

  constructor(private readonly deps: RegistrarDeps) {
    this.maxRaces = deps.maxRaces ?? 16;
    this.subnetUse = new SubnetUseCache(deps.pool, () => deps.subnets.readSubnetUse(), deps.subnetUseMaxAgeMs);
  }

  /** Registers a node and returns its record; a node registering again gets its own subnet back. */
  async register(reg: Registration): Promise<NodeRecord> {
    const metrics = this.deps.metrics;
    try {
      const { node, result } = await this.registerNode(reg);
      metrics?.countRegistration(result);
      return node;
    } catch (err) {
      metrics?.countRegistration(err instanceof TrellisError ? (err.reason.toLowerCase() as Lowercase<Reason>) : "internal");
      throw err;
    }
  }

  private async registerNode(reg: Registration): Promise<{ node: NodeRecord; result: RegistrationResult }> {
    validateRegistration(reg, this.deps.pool);
    const { nodes: store, log } = this.deps;
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      // One read of the node, its address and the reservations; a new node's subnet comes from the cached
      // view of leased and freed subnets. The write below is a transaction against both.
      const view = await store.readRegistration(reg.name, reg.nodeIp);
      const existing = view.node;
      const current = existing?.value;
      const sameInstance = !reg.instance || current?.instance === reg.instance;
      if (current?.live && current.nodeIp === reg.nodeIp && current.mtu === reg.mtu && sameInstance)
        return { node: current, result: "unchanged" };
      if (current?.live && current.nodeIp !== reg.nodeIp) {
        // Re-pointing a live node would send its pods' traffic elsewhere (or a cloned machine would take
        // turns with it): a node moves only once it left (drain, or its lease expired).
        throw new TrellisError(
          "ALREADY_EXISTS",
          `node ${reg.name} is live at ${current.nodeIp}; a registration cannot move it to ${reg.nodeIp}: stop the node at ${current.nodeIp} and drain it (DrainNode), or wait until its lease expires`,
        );
      }
      if (current && !current.live && current.releasedReason === "drained" && reg.instance && current.instance === reg.instance) {
        // A drain sticks while the daemon that was drained runs: its heartbeats fail and it would register
        // again at once. A restarted daemon (a new instance) is an operator bringing the node back.
        throw new TrellisError(
          "CONFLICT",
          `node ${reg.name} was drained by an admin (AdminService.DrainNode) at ${new Date(Number(current.releasedAtMs)).toISOString()}; it stays out while this daemon runs: restart the daemon to bring the node back, or stop it (trellis-node-daemon leave) to take it out for good`,
        );
      }
      // The node-ips index says who holds the address; the write below holds only if it is unchanged.
      const ip = await this.claimNodeIp(reg, view.nodeIp, current?.nodeIp);
      if (existing && current) {
        const next = create(NodeRecordSchema, {
          ...current,
          nodeIp: reg.nodeIp,
          mtu: reg.mtu,
          live: true,
          releasedAtMs: 0n,
          releasedReason: "",
          instance: reg.instance ?? "",
        });
        // Coming back is a sign of life: without the heartbeat, the node would look overdue (by its old
        // heartbeat) until its first one, and an expiry round in between would withdraw it again. Written
        // beside the record, not before it: a registration is two etcd round trips, the read and this.
        const [, updated] = await Promise.all([
          this.deps.liveness.recordHeartbeat(reg.name),
          store.updateNode(next, existing.modRevision, ip),
        ]);
        if (updated) {
          log.info({ node: reg.name, subnet: next.subnet }, "node registered again");
          this.logTakeover(reg, ip);
          return { node: next, result: "returned" };
        }
      } else {
        const reservations = view.reservations ?? [];
        const free = await this.subnetUse.get();
        const mine = reservations.find((r) => r.nodeName === reg.name);
        if (mine && !free.isFree(Cidr.parse(mine.subnet, "stored reservation"))) {
          const holder = (await this.deps.subnets.listLeases()).find((l) => l.subnet === mine.subnet);
          if (holder) {
            throw new TrellisError(
              "CONFLICT",
              `subnet ${mine.subnet} is reserved for ${reg.name} but leased by ${holder.nodeName}; release that lease (ReleaseLease) first`,
            );
          }
        }
        const othersReserved = reservations.filter((r) => r.nodeName !== reg.name).map((r) => Cidr.parse(r.subnet, "stored reservation"));
        const held = mine ? undefined : this.heldSubnet(reg, free, othersReserved);
        const picked = mine || held ? undefined : await this.pick(free, othersReserved, attempt);
        const subnet = mine?.subnet ?? held ?? picked?.subnet.toString() ?? "";
        const now = BigInt(this.deps.clock());
        const node = create(NodeRecordSchema, {
          name: reg.name,
          nodeIp: reg.nodeIp,
          mtu: reg.mtu,
          subnet,
          live: true,
          registeredAtMs: now,
          instance: reg.instance ?? "",
        });
        const lease = create(SubnetLeaseRecordSchema, { subnet, nodeName: reg.name, leasedAtMs: now });
        if (this.claiming.has(subnet)) continue; // a reserved or held subnet another registration here is claiming
        this.claiming.add(subnet);
        const conditions = { reservedForNode: mine !== undefined, neverUsed: picked?.neverUsed };
        const claimed = await store.claimSubnet(lease, node, 0n, ip, conditions).finally(() => this.claiming.delete(subnet));
        // Either way the view may lack it: leased now, or taken by a claim it did not show. A held subnet
        // that could not be claimed is read again, not skipped: the node must get it back if it is free.
        if (claimed || picked) this.subnetUse.noteTaken(subnet);
        else this.subnetUse.invalidate();
        if (claimed) {
          log.info({ node: reg.name, subnet }, "subnet leased");
          this.logTakeover(reg, ip);
          this.deps.liveness.sawNewNode(reg.name);
          return { node, result: "new" };
        }
      }
      log.debug({ node: reg.name, attempt }, "registration race lost, retrying");
    }
    throw new TrellisError("CONFLICT", `could not register node ${reg.name}: lost ${this.maxRaces} etcd races in a row`);
  }

  /**
   * A subnet for a new node from the cached view: the lowest free on a first attempt, a random one after a
   * lost race. A view with none free is read again once before the pool counts as exhausted (the view may
   * predate a subnet freed meanwhile).
   */
  private async pick(free: FreeSubnets, reserved: readonly Cidr[], attempt: number): Promise<{ subnet: Cidr; neverUsed: boolean }> {
    const alsoTaken = [...reserved, ...[...this.claiming].map((c) => Cidr.parse(c))];
    const rand = attempt === 1 ? undefined : this.deps.rand;
    const choose = (f: FreeSubnets) => {
      const subnet = f.pick(rand, alsoTaken);
      return { subnet, neverUsed: !f.wasFreed(subnet) };
    };
    try {
      return choose(free);
    } catch (err) {
      if (!(err instanceof TrellisError && err.reason === "EXHAUSTED")) throw err;
      this.subnetUse.invalidate();
      return choose(await this.subnetUse.get());
    }
  }

  /**
   * The subnet a node says it holds (its pods have addresses of it), when that subnet is free and not
   * reserved for another node: after etcd was restored from an older snapshot the node's record may be
   * gone, and it must get its own subnet back rather than one another node's pods use (issue 10,
   * finding 5). Undefined when it holds none, or it is not free: then the node gets another one.
   */
  private heldSubnet(reg: Registration, free: FreeSubnets, reserved: readonly Cidr[]): string | undefined {
    if (!reg.heldSubnet) return undefined;
    const held = Cidr.parse(reg.heldSubnet, "subnet");
    const pool = this.deps.pool;
    const fits = held.prefixLength === pool.prefixLength && pool.cluster.covers(held);
    if (!fits || !free.isFree(held, reserved)) {
      this.deps.log.warn(
        { node: reg.name, subnet: reg.heldSubnet },
        `node ${reg.name} holds ${reg.heldSubnet}, which is ${fits ? "leased or reserved by another node" : "not a subnet of this cluster"}: it gets another one, and its pods there must be recreated`,
      );
      return undefined;
    }
    return held.toString();
  }

  /**
   * Makes `name` the cluster's central router, or host-gw again (DESIGN.md §6: cluster config that only an
   * admin sets). At most one node is the router: turning it on for one turns it off for any other.
   */
  async setRouter(name: string, router: boolean): Promise<NodeRecord> {
    if (router) {
      for (const other of (await this.deps.nodes.listNodes()).nodes) {
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
      if (await this.deps.nodes.updateNode(next, existing.modRevision)) {
        this.deps.log.info({ node: name, router }, router ? "node is now the central router" : "node is no longer the central router");
        return next;
      }
    }
    throw new TrellisError("CONFLICT", `could not change router mode of node ${name}: lost ${this.maxRaces} etcd races in a row`);
  }

  /**
   * Takes a node's route out of the cluster at once (leave, drain, eviction); its subnet stays its own for
   * the grace period, so it gets it back when it returns.
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
      if (await this.deps.nodes.updateNode(next, existing.modRevision)) {
        this.deps.log.info({ node: name, subnet: next.subnet, reason }, `node ${reason}`);
        return;
      }
    }
    throw new TrellisError("CONFLICT", `could not withdraw node ${name}: lost ${this.maxRaces} etcd races in a row`);
  }

  /**
   * Frees the subnet of a node that is not live (withdrawn, evicted or expired) now, skipping the grace
   * period (admin ReleaseLease). A live node's subnet is refused: its pods hold addresses of it. The removal
   * is a transaction against the record read here, so a node that came back meanwhile keeps its subnet.
   */
  async release(subnetText: string): Promise<string> {
    const subnet = Cidr.parse(subnetText, "subnet").toString();
    for (let attempt = 1; attempt <= this.maxRaces; attempt++) {
      const lease = (await this.deps.subnets.listLeases()).find((l) => l.subnet === subnet);
      if (!lease) throw new TrellisError("NOT_FOUND", `subnet ${subnet} is not leased`);
      const node = await this.deps.nodes.findNode(lease.nodeName);
      if (!node) throw new TrellisError("DATA_LOSS", `subnet ${subnet} is leased by ${lease.nodeName}, which has no node record`);
      if (node.value.live) {
        throw new TrellisError(
          "CONFLICT",
          `subnet ${subnet} is leased by ${lease.nodeName}, which is live: drain it (DrainNode) or evict it (EvictNode) first, then release its subnet`,
        );
      }
      if (await this.deps.nodes.removeNode(node.value, node.modRevision)) {
        this.subnetUse.invalidate();
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
    const { pool, subnets: store } = this.deps;
    if (subnet.prefixLength !== pool.prefixLength || !pool.cluster.covers(subnet)) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `subnet ${subnet.toString()} is not a /${pool.prefixLength} node subnet of cluster CIDR ${pool.cluster.toString()}`,
      );
    }
    const holder = (await this.deps.subnets.listLeases()).find((l) => Cidr.parse(l.subnet).overlaps(subnet) && l.nodeName !== node);
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

  private async getNode(name: string) {
    const existing = await this.deps.nodes.findNode(name);
    if (!existing) throw new TrellisError("NOT_FOUND", `node ${name} is not registered; register it first`);
    return existing;
  }

  /**
   * The condition this registration's write puts on the node-ips index (the authority on who holds an
   * address): the entry is free or names this node, or names a node that is no longer live at that address,
   * which this node then takes the address over from. A live other holder refuses the registration.
   */
  private async claimNodeIp(reg: Registration, entry: NodeIpEntry, previousIp: string | undefined): Promise<NodeIpClaim> {
    const holder = entry.nodeName;
    if (holder === undefined || holder === reg.name) return { entry, previousIp };
    const other = await this.deps.nodes.findNode(holder);
    if (other?.value.live && other.value.nodeIp === reg.nodeIp) {
      throw new TrellisError(
        "ALREADY_EXISTS",
        `node IP ${reg.nodeIp} is already registered by live node ${holder}; give ${reg.name} its own --node-ip, or, if ${holder} no longer runs at ${reg.nodeIp}, evict it first (EvictNode)`,
      );
    }
    return { entry, previousIp, displaced: { name: holder, modRevision: other?.modRevision ?? 0n } };
  }

  private logTakeover(reg: Registration, ip: NodeIpClaim): void {
    if (ip.displaced) {
      this.deps.log.info({ node: reg.name, address: reg.nodeIp }, `node IP taken over from ${ip.displaced.name}, which is not live there`);
    }
  }
}

function validateRegistration(reg: Registration, pool: SubnetPool): void {
  checkNodeName(reg.name, "node_name");
  const ip = parseIpv4(reg.nodeIp, "node_ip");
  // Every other node routes this node's pods via this address (issue 10, finding 7): one that cannot be a
  // next hop would cost those routes on every node.
  if (Cidr.parse("127.0.0.0/8").contains(ip)) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `node_ip ${reg.nodeIp} is a loopback address; give the node's address on the node network (--node-ip)`,
    );
  }
  if (pool.cluster.contains(ip)) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `node_ip ${reg.nodeIp} is inside the pod network ${pool.cluster.toString()}; give the node's address on the node network (--node-ip)`,
    );
  }
  checkMtu(reg.mtu);
}

/** A node's MTU: 576 (the least every IPv4 host must take) to 65535; throws INVALID_ARGUMENT. Pure. */
export function checkMtu(mtu: number): number {
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) {
    throw new TrellisError("INVALID_ARGUMENT", `mtu ${mtu} is not between 576 and 65535`);
  }
  return mtu;
}
