// In-memory fakes of the node daemon's seams and the shim's IO (STYLE.md §8: fakes, not call-order mocks).
// They keep state like the real thing, so tests assert outcomes; `calls` is there for "was X touched".
import { clone } from "@bufbuild/protobuf";
import { TrellisError } from "../../proto/common/errors.js";
import { AllocationRecordSchema, type AddAttachmentResponse, type AllocationRecord, type Attachment } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { DaemonClient, ShimIo } from "../../cni-shim/skel.js";
import type { BridgePlan, VethPlan } from "../../node-daemon/cni/plan.js";
import type { AllocationJournal } from "../../node-daemon/ipam/journal.js";
import type { KernelRoute, LinkInfo, Netlink, OwnedRoute } from "../../node-daemon/net/netlink.js";

/** Lets other pending promises run, so concurrent callers really interleave (no timers involved). */
const yieldTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export type NetlinkCall =
  | { readonly method: "ensureBridge"; readonly bridge: BridgePlan }
  | { readonly method: "enableIpv4Forwarding" }
  | { readonly method: "addVeth"; readonly veth: VethPlan }
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

  constructor(initialLinks: readonly LinkInfo[] = []) {
    for (const l of initialLinks) this.links.set(l.name, l);
  }

  callsOf<M extends NetlinkCall["method"]>(method: M): Extract<NetlinkCall, { method: M }>[] {
    return this.calls.filter((c): c is Extract<NetlinkCall, { method: M }> => c.method === method);
  }

  async ensureBridge(bridge: BridgePlan): Promise<void> {
    this.calls.push({ method: "ensureBridge", bridge });
    await yieldTurn();
    this.links.set(bridge.name, { name: bridge.name, kind: "bridge" });
  }

  async enableIpv4Forwarding(): Promise<void> {
    this.calls.push({ method: "enableIpv4Forwarding" });
    this.forwarding = true;
  }

  async addVeth(veth: VethPlan): Promise<void> {
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
  }

  async deleteLink(name: string): Promise<boolean> {
    this.calls.push({ method: "deleteLink", name });
    await yieldTurn();
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

  async applyRoutes(replace: readonly OwnedRoute[], remove: readonly OwnedRoute[]): Promise<void> {
    this.calls.push({ method: "applyRoutes", replace, remove });
    const gone = new Set([...remove, ...replace].map((r) => r.dst));
    this.routes = [...this.routes.filter((r) => !(r.owned && gone.has(r.dst))), ...replace.map((r) => ({ ...r, owned: true }))];
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
}
