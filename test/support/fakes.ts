// In-memory fakes of the node daemon's seams and the shim's IO (STYLE.md §8: fakes, not call-order mocks).
// They keep state like the real thing, so tests assert outcomes; `calls` is there for "was X touched".
import { clone, create } from "@bufbuild/protobuf";
import type { DaemonClient, ShimIo } from "../../cni-shim/skel.js";
import type { AllocationMirror } from "../../node-daemon/cni/mirror-queue.js";
import type { PendingDelete, PendingDeletes } from "../../node-daemon/cni/pending-deletes.js";
import type { AllocationJournal } from "../../node-daemon/ipam/journal.js";
import type { BridgeSpec, KernelRoute, LinkInfo, Netlink, OwnedRoute, VethSpec, VethState } from "../../node-daemon/net/netlink.js";
import { type Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import {
  type AddAttachmentResponse,
  type AllocationRecord,
  AllocationRecordSchema,
  type Attachment,
  type AttachmentKey,
  type GetStatusResponse,
  GetStatusResponseSchema,
  RouteState,
} from "../../proto/gen/trellis/cni/v1/cni_pb.js";

/** Lets other pending promises run, so concurrent callers really interleave (no timers involved). */
const yieldTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export type NetlinkCall =
  | { readonly method: "ensureBridge"; readonly bridge: BridgeSpec }
  | { readonly method: "enableIpv4Forwarding" }
  | { readonly method: "addVeth"; readonly veth: VethSpec }
  | { readonly method: "deleteLink"; readonly name: string }
  | { readonly method: "applyRoutes"; readonly replace: readonly OwnedRoute[]; readonly remove: readonly OwnedRoute[] };

/** The node's kernel in memory: links of the node namespace, pod interfaces per netns, the main route table. */
export class RecordingNetlink implements Netlink {
  readonly links = new Map<string, LinkInfo>();
  /** Pod-side interfaces: netns -> ifName -> host veth it pairs with. */
  readonly podInterfaces = new Map<string, Map<string, string>>();
  routes: KernelRoute[] = [];
  forwarding = false;
  readonly calls: NetlinkCall[] = [];
  /** When set, the next addVeth calls throw it (and create nothing). */
  failAddVeth?: Error;
  /** deleteLink of a name listed here throws its error (and deletes nothing). */
  readonly failDeleteLink = new Map<string, Error>();

  /** Veths given to the constructor: pods fully set up before the daemon started (unless podConfig says otherwise). */
  private readonly preexisting = new Set<string>();

  constructor(initialLinks: readonly LinkInfo[] = []) {
    for (const l of initialLinks) {
      this.links.set(l.name, l);
      if (l.kind === "veth") this.preexisting.add(l.name);
    }
  }

  /** The uplink findUplink answers with; undefined: no interface holds the node IP. */
  uplink?: { name: string; mtu: number } = { name: "eth0", mtu: 1500 };

  async findUplink(nodeIp: string): Promise<{ name: string; mtu: number }> {
    if (!this.uplink) throw new TrellisError("INVALID_ARGUMENT", `no interface of this node holds --node-ip ${nodeIp}`);
    return this.uplink;
  }

  callsOf<M extends NetlinkCall["method"]>(method: M): Extract<NetlinkCall, { method: M }>[] {
    return this.calls.filter((c): c is Extract<NetlinkCall, { method: M }> => c.method === method);
  }

  async ensureBridge(bridge: BridgeSpec): Promise<void> {
    this.calls.push({ method: "ensureBridge", bridge });
    await yieldTurn();
    this.links.set(bridge.name, { name: bridge.name, kind: "bridge" });
  }

  async enableIpv4Forwarding(): Promise<void> {
    this.calls.push({ method: "enableIpv4Forwarding" });
    this.forwarding = true;
  }

  async addVeth(veth: VethSpec): Promise<void> {
    this.calls.push({ method: "addVeth", veth });
    await yieldTurn();
    if (this.failAddVeth) throw this.failAddVeth;
    const inNetns = this.podInterfaces.get(veth.netns) ?? new Map<string, string>();
    if (inNetns.has(veth.podIfName)) {
      throw new TrellisError("ALREADY_EXISTS", `interface ${veth.podIfName} already exists in ${veth.netns}`);
    }
    if (this.links.has(veth.hostName)) throw new TrellisError("KERNEL", `link ${veth.hostName} already exists`);
    inNetns.set(veth.podIfName, veth.hostName);
    this.podInterfaces.set(veth.netns, inNetns);
    this.links.set(veth.hostName, { name: veth.hostName, kind: "veth", master: veth.bridge });
    this.podConfig.set(veth.hostName, { up: true, addresses: [veth.podAddress], defaultVia: veth.gateway });
  }

  /** Pod-side configuration by host veth name; tests may edit it to break a pod. */
  readonly podConfig = new Map<string, { up: boolean; addresses: string[]; defaultVia?: string }>();

  async inspectVeth(veth: VethSpec): Promise<VethState> {
    const host = this.links.get(veth.hostName);
    const paired = this.podInterfaces.get(veth.netns)?.get(veth.podIfName);
    const complete = { up: true, addresses: [veth.podAddress], defaultVia: veth.gateway };
    const pod = paired
      ? this.podConfig.get(paired)
      : host && this.preexisting.has(veth.hostName)
        ? (this.podConfig.get(veth.hostName) ?? complete)
        : undefined;
    return { host: host && { master: host.master, up: true }, pod: pod && { ...pod } };
  }

  async deleteLink(name: string): Promise<boolean> {
    this.calls.push({ method: "deleteLink", name });
    await yieldTurn();
    const failure = this.failDeleteLink.get(name);
    if (failure) throw failure;
    const existed = this.links.delete(name);
    for (const inNetns of this.podInterfaces.values()) {
      for (const [ifName, host] of inNetns) if (host === name) inNetns.delete(ifName); // the peer goes with it
    }
    return existed;
  }

  async listLinks(): Promise<LinkInfo[]> {
    return [...this.links.values()];
  }

  async listRoutes(): Promise<KernelRoute[]> {
    return [...this.routes];
  }

  /** Next hops the kernel refuses (unreachable gateway): like RtNetlink, every other change is made, then it throws. */
  readonly failRouteVia = new Set<string>();

  async applyRoutes(replace: readonly OwnedRoute[], remove: readonly OwnedRoute[]): Promise<void> {
    this.calls.push({ method: "applyRoutes", replace, remove });
    const ok = replace.filter((r) => !this.failRouteVia.has(r.via));
    const gone = new Set([...remove, ...ok].map((r) => r.dst));
    this.routes = [...this.routes.filter((r) => !(r.owned && gone.has(r.dst))), ...ok.map((r) => ({ ...r, owned: true }))];
    const failed = replace.length - ok.length;
    if (failed > 0) throw new TrellisError("KERNEL", `could not apply ${failed} route(s): Network is unreachable`);
  }
}

/** The allocation journal in memory, with the same "reserve fails when the address is recorded" rule. */
export class MemoryAllocationJournal implements AllocationJournal {
  private readonly records = new Map<string, AllocationRecord>();
  /** When set, reserve calls throw it (a full or broken disk). */
  failReserve?: Error;

  constructor(initial: readonly AllocationRecord[] = []) {
    for (const r of initial) this.records.set(r.address, clone(AllocationRecordSchema, r));
  }

  /** Recorded addresses, sorted numerically. */
  get addresses(): string[] {
    const num = (a: string) => a.split(".").reduce((n, part) => n * 256 + Number(part), 0);
    return [...this.records.keys()].sort((a, b) => num(a) - num(b));
  }

  find(address: string): AllocationRecord | undefined {
    return this.records.get(address);
  }

  async load(): Promise<AllocationRecord[]> {
    await yieldTurn();
    return [...this.records.values()].map((r) => clone(AllocationRecordSchema, r));
  }

  async reserve(record: AllocationRecord): Promise<boolean> {
    await yieldTurn();
    if (this.failReserve) throw this.failReserve;
    if (this.records.has(record.address)) return false;
    this.records.set(record.address, clone(AllocationRecordSchema, record));
    return true;
  }

  async release(address: string): Promise<void> {
    await yieldTurn();
    this.records.delete(address);
  }
}

/** The shim's process IO: env and stdin given, stdout and stderr lines recorded. */
export class FakeShimIo implements ShimIo {
  readonly stdout: string[] = [];
  readonly errors: { fields: Record<string, unknown>; message: string }[] = [];

  constructor(
    readonly env: Readonly<Record<string, string | undefined>>,
    /** What stdin holds, or the error reading it fails with. */
    private readonly stdin: string | Error,
    private readonly existingPaths: ReadonlySet<string> = new Set(),
  ) {}

  async readStdin(): Promise<string> {
    if (this.stdin instanceof Error) throw this.stdin;
    return this.stdin;
  }

  writeStdout(text: string): void {
    this.stdout.push(text);
  }

  logError(fields: Record<string, unknown>, message: string): void {
    this.errors.push({ fields, message });
  }

  async pathExists(path: string): Promise<boolean> {
    return this.existingPaths.has(path);
  }

  /** DELs left for the daemon, by socket path. */
  readonly pendingDeletes: { socket: string; attachment: Attachment }[] = [];
  /** When set, leaving a pending delete fails with it. */
  failPendingDelete?: Error;

  async leavePendingDelete(socket: string, attachment: Attachment): Promise<void> {
    if (this.failPendingDelete) throw this.failPendingDelete;
    this.pendingDeletes.push({ socket, attachment });
  }
}

/** A node daemon as the shim sees it: answers `reply` to ADD, or throws `fail`; records every call. */
export class FakeDaemonClient implements DaemonClient {
  readonly added: Attachment[] = [];
  readonly deleted: Attachment[] = [];
  fail?: unknown;

  constructor(private readonly reply?: AddAttachmentResponse) {}

  async add(attachment: Attachment): Promise<AddAttachmentResponse> {
    this.added.push(attachment);
    if (this.fail !== undefined) throw this.fail;
    if (!this.reply) throw new Error("FakeDaemonClient has no ADD reply configured");
    return this.reply;
  }

  async delete(attachment: Attachment): Promise<void> {
    this.deleted.push(attachment);
    if (this.fail !== undefined) throw this.fail;
  }

  readonly checked: Attachment[] = [];
  readonly collected: { networkName: string; valid: readonly AttachmentKey[] }[] = [];
  statusReply: GetStatusResponse = create(GetStatusResponseSchema, { subnet: "10.244.1.0/24", routeState: RouteState.CURRENT });

  async check(attachment: Attachment): Promise<void> {
    this.checked.push(attachment);
    if (this.fail !== undefined) throw this.fail;
  }

  async gc(networkName: string, valid: readonly AttachmentKey[]): Promise<void> {
    this.collected.push({ networkName, valid });
    if (this.fail !== undefined) throw this.fail;
  }

  async status(): Promise<GetStatusResponse> {
    if (this.fail !== undefined) throw this.fail;
    return this.statusReply;
  }
}

/**
 * The control plane's copy of the node's allocations, in memory. Writes are asynchronous like the real
 * RPCs (the service fires them without awaiting); `settled()` waits until none is in flight.
 */
export class MemoryAllocationMirror implements AllocationMirror {
  private readonly records = new Map<string, AllocationRecord>();
  private readonly inFlight = new Set<Promise<unknown>>();
  /** When set, list calls throw it (the control plane is unreachable). */
  failList?: Error;
  /** When set, record and release calls throw it. */
  failWrites?: Error;
  readonly calls: (
    | { method: "record"; address: string }
    | { method: "release"; address: string }
    | { method: "sync"; recorded: string[]; released: string[] }
    | { method: "list" }
  )[] = [];

  constructor(initial: readonly AllocationRecord[] = []) {
    for (const r of initial) this.records.set(r.address, clone(AllocationRecordSchema, r));
  }

  /** Mirrored addresses, sorted numerically. */
  get addresses(): string[] {
    const num = (a: string) => a.split(".").reduce((n, part) => n * 256 + Number(part), 0);
    return [...this.records.keys()].sort((a, b) => num(a) - num(b));
  }

  find(address: string): AllocationRecord | undefined {
    return this.records.get(address);
  }

  /** Resolves once no record/release/list call is in flight, including calls started meanwhile. */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private track<T>(work: () => Promise<T>): Promise<T> {
    const p = work();
    this.inFlight.add(p);
    const done = () => this.inFlight.delete(p);
    p.then(done, done);
    return p;
  }

  record(record: AllocationRecord): Promise<void> {
    this.calls.push({ method: "record", address: record.address });
    return this.track(async () => {
      await yieldTurn();
      if (this.failWrites) throw this.failWrites;
      this.records.set(record.address, clone(AllocationRecordSchema, record));
    });
  }

  release(address: string): Promise<void> {
    this.calls.push({ method: "release", address });
    return this.track(async () => {
      await yieldTurn();
      if (this.failWrites) throw this.failWrites;
      this.records.delete(address);
    });
  }

  /** The daemon's batched write: one call, every record then every release. */
  /** When set, like the control plane: a sync recording an address outside it fails as a whole. */
  subnet?: Cidr;

  sync(recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void> {
    this.calls.push({ method: "sync", recorded: recorded.map((r) => r.address), released: [...released] });
    return this.track(async () => {
      await yieldTurn();
      if (this.failWrites) throw this.failWrites;
      const outside = this.subnet && recorded.find((r) => !this.subnet?.contains(parseIpv4(r.address)));
      if (outside) throw new TrellisError("INVALID_ARGUMENT", `address ${outside.address} is outside the node's subnet`);
      for (const r of recorded) this.records.set(r.address, clone(AllocationRecordSchema, r));
      for (const a of released) this.records.delete(a);
    });
  }

  list(): Promise<AllocationRecord[]> {
    this.calls.push({ method: "list" });
    return this.track(async () => {
      await yieldTurn();
      if (this.failList) throw this.failList;
      return [...this.records.values()].map((r) => clone(AllocationRecordSchema, r));
    });
  }
}

/** DELs the shim left while the daemon was down, in memory; an entry without attachment is an undecodable file. */
export class MemoryPendingDeletes implements PendingDeletes {
  readonly entries = new Map<string, Attachment | undefined>();
  readonly removed: string[] = [];

  constructor(initial: readonly PendingDelete[] = []) {
    for (const p of initial) this.entries.set(p.id, p.attachment);
  }

  get ids(): string[] {
    return [...this.entries.keys()].sort();
  }

  async list(): Promise<PendingDelete[]> {
    await yieldTurn();
    return [...this.entries].map(([id, attachment]) => (attachment ? { id, attachment } : { id }));
  }

  async remove(id: string): Promise<void> {
    await yieldTurn();
    this.removed.push(id);
    this.entries.delete(id);
  }

  async count(): Promise<number> {
    await yieldTurn();
    return this.entries.size;
  }
}
