// A worker thread of the netlink pool (netlink-pool.ts): it sends rtnetlink requests and reads the replies
// with blocking syscalls, so the kernel's waits (a veth delete holds the caller 16-36 ms) never block the
// daemon's event loop, and several workers let those waits overlap. A request for another network
// namespace gets a socket created inside it: this thread enters the namespace (setns) only around
// socket(), and aborts the process if it cannot come back; the daemon's main thread never switches.
// koffi calls the few libc functions Node does not offer (setns, socket, setsockopt): no compile step.
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import koffi from "koffi";
import type { VethSpec } from "./netlink.js";
import {
  encodeRequest,
  type NlMessage,
  type NlRequest,
  nlmFlags,
  nlmsg,
  parseError,
  parseLink,
  parseMessages,
  requests,
} from "./rtnetlink-codec.js";

/**
 * A job from the pool: requests for one namespace (undefined: the daemon's own), or a whole veth set-up,
 * whose later steps need what the kernel answered to earlier ones (link indexes), done here in one go.
 */
export type NetlinkJob =
  | { readonly id: number; readonly kind: "transact"; readonly netns?: string; readonly requests: readonly NlRequest[] }
  | { readonly id: number; readonly kind: "addVeth"; readonly veth: VethSpec }
  | { readonly id: number; readonly kind: "deleteLinks"; readonly names: readonly string[]; readonly group: number };

/** The messages each request got back (for a dump: every part; for an ACKed request: its NLMSG_ERROR last). */
export type NetlinkJobResult =
  | { readonly id: number; readonly replies: NlMessage[][] }
  | { readonly id: number; readonly error: { readonly code?: string; readonly message: string } };

const libc = koffi.load("libc.so.6");
const setns = libc.func("int setns(int fd, int nstype)");
const socketCall = libc.func("int socket(int domain, int type, int protocol)");
const setsockopt = libc.func("int setsockopt(int fd, int level, int name, const void *value, uint32_t len)");
const strerror = libc.func("const char *strerror(int errnum)");
// Sockets made by socket() above are closed by libc too: node:fs's close of a descriptor it did not open
// prints "closed but not opened in unmanaged mode" in a worker, once per pod operation.
const closeSocket = libc.func("int close(int fd)");

const cloneNewNet = 0x40000000;
const afNetlink = 16;
const sockRawCloexec = 3 | 0x80000;
const solNetlink = 270;
const solSocket = 1;
const replyTimeoutS = 10;

class SysError extends Error {
  constructor(
    what: string,
    readonly errno: number,
  ) {
    super(`${what}: ${strerror(errno) as string}`);
  }
}

function setOption(fd: number, level: number, name: number, value: Buffer): void {
  if (setsockopt(fd, level, name, value, value.length) !== 0) throw new SysError(`setsockopt ${level}/${name}`, koffi.errno());
}

function int32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value);
  return b;
}

/** A blocking NETLINK_ROUTE socket in this thread's current namespace; a lost reply fails after 10 s. */
function openSocket(): number {
  const fd = socketCall(afNetlink, sockRawCloexec, 0) as number;
  if (fd < 0) throw new SysError("socket(AF_NETLINK)", koffi.errno());
  try {
    setOption(fd, solNetlink, 10, int32(1)); // NETLINK_CAP_ACK: errors do not echo the whole request
    setOption(fd, solNetlink, 11, int32(1)); // NETLINK_EXT_ACK: the kernel says why a request failed
    setOption(fd, solSocket, 33, int32(4 << 20)); // SO_RCVBUFFORCE: room for large dumps
    const timeval = Buffer.alloc(16);
    timeval.writeBigInt64LE(BigInt(replyTimeoutS));
    setOption(fd, solSocket, 20, timeval); // SO_RCVTIMEO
  } catch (err) {
    closeSocket(fd);
    throw err;
  }
  return fd;
}

const home = openSync("/proc/thread-self/ns/net", "r");

/** A socket created inside the namespace at `path`; this thread is back in its own namespace when it returns. */
function socketIn(path: string): number {
  const target = openSync(path, "r");
  try {
    if (setns(target, cloneNewNet) !== 0) throw new SysError(`setns into ${path}`, koffi.errno());
  } finally {
    closeSync(target);
  }
  try {
    return openSocket();
  } finally {
    // Never carry on in a pod's namespace: every later request of this thread would go to the wrong place.
    if (setns(home, cloneNewNet) !== 0) process.abort();
  }
}

let own: number | undefined;
let seq = 0;
const buffer = Buffer.alloc(1 << 20);

/** Writes requests in one datagram and reads until each has its ACK, error or end of dump. */
function exchange(fd: number, requests: readonly NlRequest[], out: NlMessage[][], firstIndex: number): void {
  const pending = new Map<number, number>();
  const encoded = requests.map((req, i) => {
    seq = (seq + 1) >>> 0 || 1;
    pending.set(seq, firstIndex + i);
    return encodeRequest(req, seq);
  });
  const bytes = Buffer.concat(encoded);
  if (writeSync(fd, bytes) !== bytes.length) throw new Error("netlink socket took only part of the requests");
  while (pending.size > 0) {
    const n = readSync(fd, buffer, 0, buffer.length, null);
    for (const m of parseMessages(buffer.subarray(0, n))) {
      const index = pending.get(m.seq);
      if (index === undefined) continue; // a late reply to an earlier, failed job
      if (m.type !== nlmsg.done) out[index]?.push({ ...m, payload: Uint8Array.from(m.payload) });
      if (m.type === nlmsg.done || m.type === nlmsg.error) pending.delete(m.seq);
    }
  }
}

/**
 * Sends requests and collects each one's replies. Requests that are not dumps share a write; a socket
 * runs one dump at a time (a second one is refused with EBUSY), so each dump goes alone.
 */
function transact(fd: number, requests: readonly NlRequest[]): NlMessage[][] {
  const out: NlMessage[][] = requests.map(() => []);
  let from = 0;
  for (let i = 0; i <= requests.length; i++) {
    const req = requests[i];
    const isDump = req !== undefined && (req.flags & nlmFlags.dump) === nlmFlags.dump;
    if (i === requests.length || isDump) {
      if (i > from) exchange(fd, requests.slice(from, i), out, from);
      if (req && isDump) exchange(fd, [req], out, i);
      from = i + 1;
    }
  }
  return out;
}

const failed = (replies: readonly NlMessage[]) => replies.some((m) => m.type === nlmsg.error && parseError(m.payload, m.flags).errno !== 0);

/**
 * The steps of veth set-up, each one's replies in order: the bridge's link, the pair (the peer created in
 * the pod's namespace), the pod interface's link, then its address, up and default route. It stops at the
 * first step the kernel refuses; undoing what was made is the caller's (it knows what to report).
 */
function addVeth(v: VethSpec): NlMessage[][] {
  const own = ownSocket();
  const out: NlMessage[][] = [];
  const [bridge = []] = transact(own, [requests.getLinkByName(v.bridge)]);
  out.push(bridge);
  const bridgeLink = bridge.find((m) => m.type !== nlmsg.error);
  if (failed(bridge) || !bridgeLink) return out;
  const netns = openSync(v.netns, "r");
  try {
    const [pair = []] = transact(own, [
      requests.newVeth({
        host: v.hostName,
        hostMac: v.hostMac,
        peer: v.podIfName,
        peerMac: v.podMac,
        mtu: v.mtu,
        master: parseLink(bridgeLink.payload).index,
        peerNetnsFd: netns,
      }),
    ]);
    out.push(pair);
    if (failed(pair)) return out;
  } finally {
    closeSync(netns);
  }
  const pod = socketIn(v.netns);
  try {
    const [link = []] = transact(pod, [requests.getLinkByName(v.podIfName)]);
    out.push(link);
    const podLink = link.find((m) => m.type !== nlmsg.error);
    if (failed(link) || !podLink) return out;
    const index = parseLink(podLink.payload).index;
    out.push(
      ...transact(pod, [
        requests.newAddress(index, v.podAddress),
        requests.setLink(index, { up: true }),
        requests.newDefaultRoute(v.gateway, index),
      ]),
    );
    return out;
  } finally {
    closeSocket(pod);
  }
}

/**
 * Deletes links of the daemon's namespace: one by name, several as one device group (each link is put in
 * `group`, then the group is deleted in one request), since every delete costs an RCU wait of 16-36 ms
 * and a group pays it once. Replies: each name's group (or delete) step, then the group delete.
 */
function deleteLinks(names: readonly string[], group: number): NlMessage[][] {
  const own = ownSocket();
  if (names.length === 1) return transact(own, [requests.delLinkByName(names[0] ?? "")]);
  const grouped = transact(
    own,
    names.map((n) => requests.setLinkGroup(n, group)),
  );
  if (grouped.every(failed)) return [...grouped, []];
  return [...grouped, ...transact(own, [requests.delLinkGroup(group)])];
}

function ownSocket(): number {
  own ??= openSocket();
  return own;
}

function run(job: NetlinkJob): NetlinkJobResult {
  let fd: number | undefined;
  try {
    if (job.kind === "addVeth") return { id: job.id, replies: addVeth(job.veth) };
    if (job.kind === "deleteLinks") return { id: job.id, replies: deleteLinks(job.names, job.group) };
    fd = job.netns ? socketIn(job.netns) : ownSocket();
    return { id: job.id, replies: transact(fd, job.requests) };
  } catch (err) {
    if ((fd === own || job.kind !== "transact") && own !== undefined) {
      closeSocket(own); // replies may still be in flight on it: start afresh
      own = undefined;
    }
    const code = (err as { code?: string }).code ?? (err instanceof SysError ? `errno ${err.errno}` : undefined);
    return { id: job.id, error: { code, message: (err as Error).message } };
  } finally {
    if (job.kind === "transact" && job.netns && fd !== undefined) closeSocket(fd);
  }
}

parentPort?.on("message", (job: NetlinkJob) => parentPort?.postMessage(run(job)));
