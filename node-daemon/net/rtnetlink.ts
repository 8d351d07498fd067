// The node's kernel work over rtnetlink from the daemon itself: no process is spawned per pod. Requests are
// built and replies parsed here (rtnetlink-codec.ts); the syscalls run on the pool's worker threads.
import { writeFile } from "node:fs/promises";
import { TrellisError } from "../../proto/core/errors.js";
import { trellisRouteProtocol } from "../../proto/core/protocol.js";
import type { BridgeSpec, KernelRoute, LinkInfo, Netlink, OwnedRoute, VethSpec, VethState } from "./netlink.js";
import type { NetlinkPool } from "./netlink-pool.js";
import {
  type NlLink,
  type NlMessage,
  type NlRequest,
  nlmsg,
  parseAddress,
  parseError,
  parseLink,
  parseRoute,
  requests,
  rtm,
  rtTableMain,
} from "./rtnetlink-codec.js";
import { findUplink, type Uplink } from "./uplink.js";

const errnoNames: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  95: "EOPNOTSUPP",
  99: "EADDRNOTAVAIL",
  101: "ENETUNREACH",
  105: "ENOBUFS",
};
const eexist = 17;
const enodev = 19;
const esrch = 3;

/** A kernel refusal of one request, with its errno and the kernel's own words when it gave them. */
export class NetlinkError extends TrellisError {
  constructor(
    what: string,
    readonly errno: number,
    kernelMessage?: string,
  ) {
    super("KERNEL", `${what}: ${errnoNames[errno] ?? `errno ${errno}`}${kernelMessage ? ` (${kernelMessage})` : ""}`);
  }
}

/** The data messages of a reply; throws when it ends in an error. */
function check(replies: readonly NlMessage[] | undefined, what: string): NlMessage[] {
  const data: NlMessage[] = [];
  for (const m of replies ?? []) {
    if (m.type !== nlmsg.error) data.push(m);
    else {
      const { errno, message } = parseError(m.payload, m.flags);
      if (errno !== 0) throw new NetlinkError(what, errno, message);
    }
  }
  return data;
}

const isErrno = (err: unknown, errno: number) => err instanceof NetlinkError && err.errno === errno;

/** The link of a GETLINK reply; undefined when there is no such link. */
function linkOrUndefined(replies: readonly NlMessage[] | undefined, what: string): NlLink | undefined {
  try {
    const [m] = check(replies, what);
    return m ? parseLink(m.payload) : undefined;
  } catch (err) {
    if (isErrno(err, enodev)) return undefined;
    throw err;
  }
}

/**
 * Deletes links of the node's namespace, coalescing the ones asked for while a delete is running into one
 * device-group delete: the kernel's 16-36 ms RCU wait is paid once per batch instead of once per link,
 * so a burst of DELs is not serialised behind it, and one worker stays free for ADDs.
 */
export class DeleteBatcher {
  private waiting = new Map<string, { resolve: (deleted: boolean) => void; reject: (err: Error) => void }[]>();
  private running = false;
  private batches = 0;

  constructor(private readonly pool: NetlinkPool) {}

  delete(name: string): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.waiting.set(name, [...(this.waiting.get(name) ?? []), { resolve, reject }]);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.waiting.size > 0) {
      const batch = this.waiting;
      this.waiting = new Map();
      const names = [...batch.keys()];
      const settle = (name: string, outcome: boolean | Error) => {
        for (const w of batch.get(name) ?? []) {
          if (outcome instanceof Error) w.reject(outcome);
          else w.resolve(outcome);
        }
      };
      try {
        // A group number of our own for this batch ("tr" in the high half), never the default group 0.
        const group = 0x74720000 + (this.batches++ % 0xffff) + 1;
        const replies = await this.pool.deleteLinks(names, group);
        const groupDelete = names.length > 1 ? replies[names.length] : undefined;
        names.forEach((name, i) => {
          try {
            check(replies[i], `could not delete ${name}`);
            if (groupDelete) check(groupDelete, `could not delete ${name} (with ${names.length - 1} others, as one group)`);
            settle(name, true);
          } catch (err) {
            settle(name, isErrno(err, enodev) ? false : (err as Error));
          }
        });
      } catch (err) {
        for (const name of names) settle(name, err as Error);
      }
    }
    this.running = false;
  }
}

export class RtNetlink implements Netlink {
  private readonly deletes: DeleteBatcher;

  constructor(private readonly pool: NetlinkPool) {
    this.deletes = new DeleteBatcher(pool);
  }

  private async one(netns: string | undefined, req: NlRequest, what: string): Promise<NlMessage[]> {
    const [replies] = await this.pool.transact(netns, [req]);
    return check(replies, what);
  }

  private async findLink(name: string, netns?: string): Promise<NlLink | undefined> {
    const [replies] = await this.pool.transact(netns, [requests.getLinkByName(name)]);
    return linkOrUndefined(replies, `could not read link ${name}`);
  }

  async ensureBridge(bridge: BridgeSpec): Promise<void> {
    let link = await this.findLink(bridge.name);
    if (!link) {
      await this.one(undefined, requests.newBridge(bridge.name), `could not create bridge ${bridge.name}`).catch((err: unknown) => {
        if (!isErrno(err, eexist)) throw err; // another start made it meanwhile
      });
      link = await this.findLink(bridge.name);
    }
    if (!link) throw new TrellisError("KERNEL", `bridge ${bridge.name} vanished right after it was created`);
    if (link.kind !== "bridge") {
      throw new TrellisError(
        "KERNEL",
        `${bridge.name} exists and is a ${link.kind ?? "plain"} link, not a bridge; choose another --bridge`,
      );
    }
    const index = link.index;
    await this.one(
      undefined,
      requests.setLink(index, { mac: bridge.mac, mtu: bridge.mtu, up: true }),
      `could not set up bridge ${bridge.name}`,
    );
    const [dump] = await this.pool.transact(undefined, [requests.dumpAddresses()]);
    const has = check(dump, "could not list addresses").some((m) => {
      const a = parseAddress(m.payload);
      return a?.index === index && a.cidr === bridge.address;
    });
    if (!has) {
      await this.one(undefined, requests.newAddress(index, bridge.address), `could not add ${bridge.address} to ${bridge.name}`).catch(
        (err: unknown) => {
          if (!isErrno(err, eexist)) throw err;
        },
      );
    }
  }

  async enableIpv4Forwarding(): Promise<void> {
    try {
      await writeFile("/proc/sys/net/ipv4/ip_forward", "1\n");
    } catch (err) {
      throw new TrellisError("KERNEL", "could not enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)", { cause: err });
    }
  }

  async addVeth(v: VethSpec): Promise<void> {
    const [bridge, pair, podLink, ...podSide] = await this.pool.addVeth(v).catch(async (err: unknown) => {
      // The job may have failed after the pair was made (the netns vanished, no file descriptors left):
      // deleting the host end deletes its peer; nothing to delete is fine.
      await this.deleteLink(v.hostName).catch(() => undefined);
      if (err instanceof TrellisError && err.reason === "NOT_FOUND") {
        throw new TrellisError("NOT_FOUND", `network namespace ${v.netns} does not exist`, { cause: err });
      }
      throw err;
    });
    try {
      check(bridge, `could not read bridge ${v.bridge}`);
    } catch (err) {
      if (isErrno(err, enodev))
        throw new TrellisError("UNAVAILABLE", `bridge ${v.bridge} is missing; the daemon recreates it when it restarts`);
      throw err;
    }
    try {
      check(pair, `could not create veth ${v.hostName} with ${v.podIfName} in ${v.netns}`);
    } catch (err) {
      if (!isErrno(err, eexist)) throw err; // one message: the kernel made nothing
      const hostExists = (await this.findLink(v.hostName)) !== undefined;
      throw new TrellisError(
        "ALREADY_EXISTS",
        hostExists
          ? `host interface ${v.hostName} already exists: the attachment is being set up by another call`
          : `interface ${v.podIfName} already exists in ${v.netns}; choose another CNI_IFNAME or delete it first`,
        { cause: err },
      );
    }
    try {
      check(podLink, `could not read ${v.podIfName} in ${v.netns}`);
      check(podSide[0], `could not add ${v.podAddress} to ${v.podIfName} in ${v.netns}`);
      check(podSide[1], `could not bring ${v.podIfName} up in ${v.netns}`);
      check(podSide[2], `could not add the default route via ${v.gateway} in ${v.netns}`);
      if (podSide.length < 3) throw new TrellisError("KERNEL", `the pod side of ${v.hostName} in ${v.netns} was not configured`);
    } catch (err) {
      // Never leave a half-made pair behind: deleting the host end deletes its peer.
      await this.deleteLink(v.hostName).catch(() => undefined);
      throw err;
    }
  }

  async inspectVeth(v: VethSpec): Promise<VethState> {
    // Two jobs side by side: the host end with the bridge (to name its master), and the pod's side.
    const [[hostReplies, bridgeReplies], pod] = await Promise.all([
      this.pool.transact(undefined, [requests.getLinkByName(v.hostName), requests.getLinkByName(v.bridge)]),
      this.inspectPod(v),
    ]);
    const host = linkOrUndefined(hostReplies, `could not read link ${v.hostName}`);
    const bridge = linkOrUndefined(bridgeReplies, `could not read bridge ${v.bridge}`);
    if (!host) return { pod };
    const master = host.master === undefined ? undefined : host.master === bridge?.index ? v.bridge : `link ${host.master}`;
    return { host: { master, up: host.up }, pod };
  }

  private async inspectPod(v: VethSpec): Promise<VethState["pod"]> {
    let replies: NlMessage[][];
    try {
      replies = await this.pool.transact(v.netns, [requests.getLinkByName(v.podIfName), requests.dumpAddresses(), requests.dumpRoutes()]);
    } catch (err) {
      if (err instanceof TrellisError && err.reason === "NOT_FOUND") return undefined; // the namespace is gone
      throw err;
    }
    const link = linkOrUndefined(replies[0], `could not read ${v.podIfName} in ${v.netns}`);
    if (!link) return undefined;
    const index = link.index;
    const addresses = check(replies[1], `could not list addresses in ${v.netns}`)
      .map((m) => parseAddress(m.payload))
      .filter((a) => a?.index === index)
      .map((a) => a?.cidr ?? "");
    const defaultRoute = check(replies[2], `could not list routes in ${v.netns}`)
      .map((m) => parseRoute(m.payload))
      .find((r) => r?.table === rtTableMain && r.dst === "0.0.0.0/0" && r.oif === index);
    return { up: link.up, addresses, defaultVia: defaultRoute?.via };
  }

  deleteLink(name: string): Promise<boolean> {
    return this.deletes.delete(name);
  }

  async listLinks(): Promise<LinkInfo[]> {
    const [dump] = await this.pool.transact(undefined, [requests.dumpLinks()]);
    const links = check(dump, "could not list links")
      .filter((m) => m.type === rtm.newLink)
      .map((m) => parseLink(m.payload));
    const names = new Map(links.map((l) => [l.index, l.name]));
    return links.map((l) => ({ name: l.name, master: l.master ? names.get(l.master) : undefined, kind: l.kind }));
  }

  async listRoutes(): Promise<KernelRoute[]> {
    const [dump] = await this.pool.transact(undefined, [requests.dumpRoutes()]);
    return check(dump, "could not list routes")
      .map((m) => parseRoute(m.payload))
      .filter((r) => r !== undefined && r.table === rtTableMain)
      .map((r) => ({ dst: r?.dst ?? "", via: r?.via ?? "", owned: r?.protocol === trellisRouteProtocol }));
  }

  async findUplink(nodeIp: string): Promise<Uplink> {
    const [linkDump, addressDump] = await this.pool.transact(undefined, [requests.dumpLinks(), requests.dumpAddresses()]);
    const links = check(linkDump, "could not list links")
      .filter((m) => m.type === rtm.newLink)
      .map((m) => parseLink(m.payload));
    const addresses = check(addressDump, "could not list addresses").flatMap((m) => parseAddress(m.payload) ?? []);
    return findUplink(links, addresses, nodeIp);
  }

  /** Applies every change, even after one fails; then names each route the kernel refused. */
  async applyRoutes(replace: readonly OwnedRoute[], remove: readonly OwnedRoute[]): Promise<void> {
    const changes = [
      ...remove.map((r) => ({ req: requests.delRoute(r.dst, trellisRouteProtocol), what: `delete ${r.dst}`, gone: true })),
      ...replace.map((r) => ({
        req: requests.replaceRoute(r.dst, r.via, trellisRouteProtocol),
        what: `${r.dst} via ${r.via}`,
        gone: false,
      })),
    ];
    const failures: string[] = [];
    for (let at = 0; at < changes.length; at += 256) {
      const batch = changes.slice(at, at + 256);
      const replies = await this.pool.transact(
        undefined,
        batch.map((c) => c.req),
      );
      batch.forEach((c, i) => {
        try {
          check(replies[i], c.what);
        } catch (err) {
          if (!(c.gone && isErrno(err, esrch))) failures.push((err as Error).message); // deleting a route already gone is done
        }
      });
    }
    if (failures.length > 0) throw new TrellisError("KERNEL", `could not apply ${failures.length} route(s): ${failures.join("; ")}`);
  }
}
