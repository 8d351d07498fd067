import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { type Cidr, formatIpv4, parseIpv4 } from "../../proto/core/cidr.js";
import { containerIdPattern, invalidIfNameReason } from "../../proto/core/cni-names.js";
import { TrellisError } from "../../proto/core/errors.js";
import {
  type AddAttachmentResponse,
  type AllocationRecord,
  AllocationRecordSchema,
  type Attachment,
  type AttachmentKey,
} from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { AllocationJournal } from "../ipam/journal.js";
import { pickFreeAddress } from "../ipam/pod-allocator.js";
import { hostVethName } from "../net/names.js";
import type { BridgeSpec, Netlink, VethSpec } from "../net/netlink.js";
import { Admission } from "./admission.js";
import { AllocationIndex, attachmentKey } from "./allocation-index.js";
import { type AllocationMirror, MirrorQueue, mirrorBatchLimit } from "./mirror-queue.js";
import type { PendingDeletes } from "./pending-deletes.js";
import { planBridge, planVeth, resultOf, vethProblems } from "./plan.js";
import { isInterruptedAdd, orphanVeths, planStart } from "./start-plan.js";

export interface AttachmentServiceDeps {
  readonly net: Netlink;
  readonly journal: AllocationJournal;
  readonly log: Logger;
  readonly clock: () => number;
  readonly pathExists: (path: string) => Promise<boolean>;
  readonly mirror?: AllocationMirror;
  readonly pendingDeletes?: PendingDeletes;
  /** Pod operations worked on at once (the rest wait in order), and how many may wait (default 32 and 4096). */
  readonly concurrency?: { readonly limit: number; readonly maxWaiting: number };
  /** Times the steps of pod calls (trellis_cni_phase_duration_seconds). */
  readonly metrics?: PhaseObserver;
}

/** The steps of a pod call that are timed: choosing an address, recording or releasing it durably, netlink. */
export type CniPhase = "allocation" | "fsync" | "kernel";

export interface PhaseObserver {
  observePhase(phase: CniPhase, seconds: number): void;
}

export interface NodeLease {
  readonly subnet: Cidr;
  readonly bridgeName: string;
  readonly mtu: number;
}

/**
 * The node's pod attachments: the single writer of pod addresses in the node's subnet. Every address is
 * recorded durably before ADD answers and released durably before DEL answers.
 */
export class AttachmentService {
  private lease?: { subnet: Cidr; bridge: BridgeSpec };
  private readonly index = new AllocationIndex();
  private readonly mirrorQueue: MirrorQueue;
  private readonly admission: Admission;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: AttachmentServiceDeps) {
    this.mirrorQueue = new MirrorQueue(deps.mirror, deps.log);
    this.admission = new Admission(deps.concurrency?.limit ?? 32, deps.concurrency?.maxWaiting ?? 4096);
  }

  /** Resolves once the mirror writes of every ADD and DEL so far were attempted. */
  mirrorIdle(): Promise<void> {
    return this.mirrorQueue.idle();
  }

  get ready(): boolean {
    return this.lease !== undefined;
  }

  get allocations(): readonly AllocationRecord[] {
    return this.index.records();
  }

  /** Pod addresses allocated now (trellis_pod_addresses_in_use). */
  get allocationCount(): number {
    return this.index.size;
  }

  /**
   * Sets the node up for its lease (bridge, forwarding) and reconciles the journal with the kernel before
   * serving: addresses of pods whose veth is gone are released, veths no record explains are deleted.
   */
  async start(lease: NodeLease): Promise<void> {
    const { net, journal, log, mirror } = this.deps;
    const bridge = planBridge(lease.bridgeName, lease.subnet, lease.mtu);
    await net.ensureBridge(bridge);
    await net.enableIpv4Forwarding();
    log.info({ bridge: bridge.name, gateway: bridge.address, subnet: lease.subnet.toString() }, "bridge ready");

    const links = await net.listLinks();
    const local = await journal.load();
    // A node whose state dir was lost: the control plane's copy, confirmed by the kernel, restores it.
    const remote = mirror
      ? await mirror.list().catch((err: unknown) => {
          log.warn({ err }, "could not read the control plane's copy of this node's allocations; using the local record only");
          return [];
        })
      : [];
    const plan = planStart(local, remote, links);
    const verify = [...plan.verify];
    for (const record of plan.restore) {
      if (await journal.reserve(record)) {
        verify.push(record);
        log.warn(
          { address: record.address, containerId: record.attachment?.containerId, hostVeth: record.hostVeth },
          "allocation restored from the control plane",
        );
      }
    }
    for (const record of plan.release) {
      await journal.release(record.address);
      log.info(
        { address: record.address, containerId: record.attachment?.containerId, hostVeth: record.hostVeth },
        "released address of a pod that is gone",
      );
    }
    let newest: AllocationRecord | undefined;
    for (const record of verify) {
      if (await this.undoInterruptedAdd(record, lease.subnet, bridge)) continue;
      this.index.add(record);
      if (!newest || record.createdAtMs > newest.createdAtMs) newest = record;
    }
    for (const name of orphanVeths(links, this.index.records(), bridge.name)) {
      await net.deleteLink(name);
      log.info({ hostVeth: name }, "deleted veth no allocation explains (an ADD interrupted by a crash)");
    }
    if (newest) this.index.lastAddress = parseIpv4(newest.address);
    this.lease = { subnet: lease.subnet, bridge };
    await this.completePendingDeletes();
    log.info({ subnet: lease.subnet.toString() }, `${this.index.size} allocations restored`);
    await this.syncMirror();
  }

  /** Undoes an ADD that a crash cut short (start-plan.ts isInterruptedAdd); true when it did. */
  private async undoInterruptedAdd(record: AllocationRecord, subnet: Cidr, bridge: BridgeSpec): Promise<boolean> {
    const address = parseIpv4(record.address);
    if (!record.attachment || !subnet.contains(address)) return false;
    const veth = planVeth(record.attachment, subnet, address, bridge);
    if (!isInterruptedAdd(veth, await this.deps.net.inspectVeth(veth))) return false;
    await this.deps.net.deleteLink(record.hostVeth);
    await this.deps.journal.release(record.address);
    this.deps.log.warn(
      { address: record.address, containerId: record.attachment.containerId, hostVeth: record.hostVeth },
      "undid an ADD interrupted by a crash",
    );
    return true;
  }

  /** DELs the shim left while the daemon was down: done now, so no address leaks and no pod waits. */
  async completePendingDeletes(): Promise<void> {
    const pending = this.deps.pendingDeletes;
    if (!pending) return;
    for (const p of await pending.list()) {
      try {
        if (p.attachment) {
          await this.delete(p.attachment);
          this.deps.log.info({ containerId: p.attachment.containerId, ifName: p.attachment.ifName }, "pending delete completed");
        } else {
          this.deps.log.warn({ key: p.id }, "unreadable pending delete dropped");
        }
      } catch (err) {
        // A request that can never succeed is dropped; anything else stays for the next round.
        if (!(err instanceof TrellisError && err.reason === "INVALID_ARGUMENT")) {
          this.deps.log.warn({ err, key: p.id }, "pending delete failed; will retry");
          continue;
        }
        this.deps.log.warn({ err, key: p.id }, "invalid pending delete dropped");
      }
      await pending.remove(p.id);
    }
  }

  /** Makes the control plane's copy equal to the journal (after start, and periodically). */
  async syncMirror(): Promise<void> {
    const mirror = this.deps.mirror;
    if (!mirror) return;
    try {
      const remote = new Map((await mirror.list()).map((r) => [r.address, r]));
      // Only addresses of the node's current subnet: the control plane refuses the others (pods stranded
      // by a subnet change), and one refused record would fail every sync from then on (issue 10, finding 10).
      const subnet = this.lease?.subnet;
      const stranded = new Set(subnet ? this.index.outside(subnet).map((r) => r.address) : []);
      const recorded = this.index.records().filter((r) => !stranded.has(r.address) && remote.get(r.address)?.hostVeth !== r.hostVeth);
      const released = [...remote.keys()].filter((address) => !this.index.has(address));
      for (let at = 0; at < Math.max(recorded.length, released.length); at += mirrorBatchLimit) {
        await mirror.sync(recorded.slice(at, at + mirrorBatchLimit), released.slice(at, at + mirrorBatchLimit));
      }
    } catch (err) {
      this.deps.log.warn({ err }, "could not sync allocations to the control plane; will retry");
    }
  }

  /**
   * The node got another subnet (its lease expired and was handed on while it was cut off): new pods get
   * addresses of `lease.subnet` from now on; the bridge keeps the old gateway too, for the pods still on it.
   */
  async moveTo(lease: NodeLease): Promise<void> {
    const bridge = planBridge(lease.bridgeName, lease.subnet, lease.mtu);
    await this.deps.net.ensureBridge(bridge);
    this.lease = { subnet: lease.subnet, bridge };
    this.index.lastAddress = undefined;
  }

  /** Allocations outside the current subnet: pods to recreate after a subnet change. */
  get strandedAllocations(): AllocationRecord[] {
    const subnet = this.lease?.subnet;
    return subnet ? this.index.outside(subnet) : [];
  }

  async add(attachment: Attachment): Promise<AddAttachmentResponse> {
    const lease = this.requireLease();
    await this.validate(attachment, true);
    return this.withLock(attachmentKey(attachment), async () => {
      const existing = this.index.find(attachment);
      if (existing) {
        throw new TrellisError(
          "ALREADY_EXISTS",
          `container ${attachment.containerId} already has interface ${attachment.ifName} with address ${existing.address}; DEL it before adding it again`,
        );
      }
      const { record, veth } = await this.attach(attachment, lease);
      this.deps.log.info(
        {
          containerId: attachment.containerId,
          ifName: attachment.ifName,
          address: veth.podAddress,
          hostVeth: veth.hostName,
          podName: attachment.podName,
          podNamespace: attachment.podNamespace,
        },
        "pod attached",
      );
      this.mirrorQueue.record(record);
      return resultOf(veth, lease.bridge);
    });
  }

  /** Undoes ADD; succeeds when there is nothing to undo. */
  async delete(attachment: Attachment): Promise<void> {
    await this.validate(attachment, false);
    await this.withLock(attachmentKey(attachment), async () => {
      const record = this.index.find(attachment);
      const hostVeth = record?.hostVeth ?? hostVethName(attachment.containerId, attachment.ifName);
      const deleted = await this.timed("kernel", () => this.deps.net.deleteLink(hostVeth));
      if (record) await this.forget(record);
      if (record || deleted) {
        this.deps.log.info(
          { containerId: attachment.containerId, ifName: attachment.ifName, address: record?.address, hostVeth },
          "pod detached",
        );
      }
    });
  }

  /** CHECK: throws naming every difference between the kernel and what ADD made. */
  async check(attachment: Attachment): Promise<void> {
    const lease = this.requireLease();
    await this.validate(attachment, true);
    const record = this.index.find(attachment);
    if (!record) {
      throw new TrellisError(
        "NOT_FOUND",
        `container ${attachment.containerId} has no interface ${attachment.ifName} in network ${attachment.networkName}`,
      );
    }
    const veth = planVeth(attachment, lease.subnet, parseIpv4(record.address), lease.bridge);
    const problems = vethProblems(veth, await this.timed("kernel", () => this.deps.net.inspectVeth(veth)));
    if (problems.length > 0) {
      throw new TrellisError(
        "KERNEL",
        `attachment ${attachment.containerId}/${attachment.ifName} is not as ADD left it: ${problems.join("; ")}`,
      );
    }
  }

  /** GC: releases every attachment of `networkName` not in `valid`; reports what it could not remove. */
  async gc(networkName: string, valid: readonly AttachmentKey[]): Promise<Attachment[]> {
    this.requireLease();
    const keep = new Set(valid.map((k) => attachmentKey({ networkName, containerId: k.containerId, ifName: k.ifName })));
    const released: Attachment[] = [];
    const failures: string[] = [];
    for (const record of this.index.records()) {
      const a = record.attachment;
      if (!a || a.networkName !== networkName || keep.has(attachmentKey(a))) continue;
      try {
        await this.delete(a);
        released.push(a);
      } catch (err) {
        failures.push(`${a.containerId}/${a.ifName} (${record.address}): ${(err as Error).message}`);
      }
    }
    if (released.length > 0) this.deps.log.info({ command: "GC" }, `garbage collection released ${released.length} attachments`);
    if (failures.length > 0)
      throw new TrellisError("KERNEL", `GC could not release ${failures.length} attachments: ${failures.join("; ")}`);
    return released;
  }

  private requireLease() {
    if (!this.lease) throw new TrellisError("UNAVAILABLE", "the node daemon has no subnet lease yet; try again shortly");
    return this.lease;
  }

  private async validate(a: Attachment, needsNetns: boolean): Promise<void> {
    if (!containerIdPattern.test(a.containerId)) {
      throw new TrellisError("INVALID_ARGUMENT", `container id ${JSON.stringify(a.containerId)} is not a valid CNI container id`);
    }
    const ifReason = invalidIfNameReason(a.ifName);
    if (ifReason) throw new TrellisError("INVALID_ARGUMENT", `interface name ${JSON.stringify(a.ifName)} ${ifReason}`);
    if (!needsNetns) return;
    if (!a.netns) throw new TrellisError("INVALID_ARGUMENT", "netns is required");
    if (!(await this.deps.pathExists(a.netns))) {
      throw new TrellisError("INVALID_ARGUMENT", `netns ${a.netns} does not exist`);
    }
  }

  /**
   * Chooses an address (in memory first, so concurrent ADDs never pick the same one), then records it
   * durably and does the kernel work side by side; it returns only once both are done, and undoes
   * whichever succeeded when the other failed. Crash-safe in any order: at start, a record without its
   * veth is released and a veth without its record is deleted (start-plan.ts).
   */
  private async attach(
    attachment: Attachment,
    lease: { subnet: Cidr; bridge: BridgeSpec },
  ): Promise<{ record: AllocationRecord; veth: VethSpec }> {
    for (;;) {
      const choosing = performance.now();
      const address = pickFreeAddress(lease.subnet, this.index.taken, this.index.lastAddress);
      this.deps.metrics?.observePhase("allocation", (performance.now() - choosing) / 1000);
      this.index.lastAddress = address;
      const record = create(AllocationRecordSchema, {
        address: formatIpv4(address),
        attachment,
        hostVeth: hostVethName(attachment.containerId, attachment.ifName),
        createdAtMs: BigInt(this.deps.clock()),
      });
      const veth = planVeth(attachment, lease.subnet, address, lease.bridge);
      this.index.add(record);
      const [durable, kernel] = await Promise.allSettled([
        this.timed("fsync", () => this.deps.journal.reserve(record)),
        this.timed("kernel", () => this.deps.net.addVeth(veth)),
      ]);
      const reserved = durable.status === "fulfilled" && durable.value;
      if (reserved && kernel.status === "fulfilled") return { record, veth };
      if (kernel.status === "fulfilled") {
        await this.timed("kernel", () => this.deps.net.deleteLink(veth.hostName)).catch((err: unknown) => {
          this.deps.log.warn(
            { err, hostVeth: veth.hostName },
            "could not undo a veth whose address was not recorded; the next start deletes it",
          );
        });
      }
      if (reserved) {
        await this.forget(record); // the kernel refused: the address is free again
        throw kernel.status === "rejected" ? kernel.reason : new Error("unreachable");
      }
      this.index.remove(record);
      if (durable.status === "rejected") throw durable.reason;
      // Recorded on disk but unknown in memory: only another writer could have put it there. Skip it.
      this.index.taken.add(address);
      this.deps.log.warn({ address: record.address }, "address already recorded on disk; skipping it");
      if (kernel.status === "rejected") throw kernel.reason;
    }
  }

  private async forget(record: AllocationRecord): Promise<void> {
    await this.timed("fsync", () => this.deps.journal.release(record.address));
    this.index.remove(record);
    this.mirrorQueue.release(record.address);
  }

  /** `work`, timed as `phase` whether it succeeds or fails (with metrics; else just `work`). */
  private async timed<T>(phase: CniPhase, work: () => Promise<T>): Promise<T> {
    const metrics = this.deps.metrics;
    if (!metrics) return work();
    const started = performance.now();
    try {
      return await work();
    } finally {
      metrics.observePhase(phase, (performance.now() - started) / 1000);
    }
  }

  /** One operation on one attachment at a time, and at most `concurrency.limit` operations in all. */
  private async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.admission.run(() => this.withKeyLock(key, fn));
  }

  private async withKeyLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.locks.set(key, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(key) === next) this.locks.delete(key);
    }
  }
}
