// rtnetlink messages (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h), pure: building
// the requests the daemon sends and parsing the kernel's replies. Only what Trellis uses: links (bridge,
// veth with its peer born in another netns), IPv4 addresses and IPv4 routes of the main table.

export const nlmsg = { error: 2, done: 3 } as const;
export const nlmFlags = {
  request: 0x1,
  multi: 0x2,
  ack: 0x4,
  dump: 0x300,
  replace: 0x100,
  excl: 0x200,
  create: 0x400,
  /** In NLMSG_ERROR: the original request was cut (NETLINK_CAP_ACK); TLVs follow (NETLINK_EXT_ACK). */
  capped: 0x100,
  ackTlvs: 0x200,
} as const;
export const rtm = {
  newLink: 16,
  delLink: 17,
  getLink: 18,
  setLink: 19,
  newAddr: 20,
  getAddr: 22,
  newRoute: 24,
  delRoute: 25,
  getRoute: 26,
} as const;
const ifla = { address: 1, ifname: 3, mtu: 4, master: 10, linkinfo: 18, group: 27, netNsFd: 28 } as const;
const iflaInfo = { kind: 1, data: 2 } as const;
const vethInfoPeer = 1;
const ifa = { address: 1, local: 2 } as const;
const rta = { dst: 1, oif: 4, gateway: 5, table: 15 } as const;
const nlaNested = 0x8000;
const afInet = 2;
export const iffUp = 0x1;
export const rtTableMain = 254;
const rtnUnicast = 1;
const rtScopeUniverse = 0;
/** In a delete: match any scope (what `ip route del` sends). */
const rtScopeNowhere = 255;
/** What `ip route add` stamps when no protocol is given. */
const rtprotBoot = 3;

/** One request: the message type, flags and body; the sequence number is set when it is sent. */
export interface NlRequest {
  readonly type: number;
  readonly flags: number;
  readonly body: Uint8Array;
}

/** One message of a reply datagram. */
export interface NlMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly payload: Uint8Array;
}

const align4 = (n: number) => (n + 3) & ~3;

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + align4(p.length), 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += align4(p.length);
  }
  return out;
}

function attr(type: number, value: Uint8Array): Uint8Array {
  const out = new Uint8Array(align4(4 + value.length));
  const v = new DataView(out.buffer);
  v.setUint16(0, 4 + value.length, true);
  v.setUint16(2, type, true);
  out.set(value, 4);
  return out;
}

const nested = (type: number, ...children: Uint8Array[]) => attr(type | nlaNested, concat(children));
const u32 = (type: number, value: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value, true);
  return attr(type, b);
};
const str = (type: number, value: string) => attr(type, new TextEncoder().encode(`${value}\0`));
const mac = (type: number, value: string) => attr(type, Uint8Array.from(value.split(":").map((h) => Number.parseInt(h, 16))));
const ipv4 = (type: number, value: string) => attr(type, Uint8Array.from(value.split(".").map(Number)));

/** struct ifinfomsg: family, type, index, flags, change. */
function ifinfomsg(o: { index?: number; flags?: number; change?: number } = {}): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setInt32(4, o.index ?? 0, true);
  v.setUint32(8, o.flags ?? 0, true);
  v.setUint32(12, o.change ?? 0, true);
  return b;
}

/** struct ifaddrmsg: family, prefix length, flags, scope, index. */
function ifaddrmsg(prefixLength: number, index: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint8(0, afInet);
  v.setUint8(1, prefixLength);
  v.setUint32(4, index, true);
  return b;
}

/** struct rtmsg for IPv4 unicast routes of the main table. */
function rtmsg(dstLength: number, protocol: number, scope = rtScopeUniverse): Uint8Array {
  const b = new Uint8Array(12);
  b.set([afInet, dstLength, 0, 0, rtTableMain, protocol, scope, rtnUnicast]);
  return b;
}

const ackOf = (type: number, flags: number, ...parts: Uint8Array[]): NlRequest => ({
  type,
  flags: nlmFlags.request | nlmFlags.ack | flags,
  body: concat(parts),
});

export const requests = {
  getLinkByName: (name: string) => ackOf(rtm.getLink, 0, ifinfomsg(), str(ifla.ifname, name)),
  dumpLinks: (): NlRequest => ({ type: rtm.getLink, flags: nlmFlags.request | nlmFlags.dump, body: ifinfomsg() }),
  dumpAddresses: (): NlRequest => ({ type: rtm.getAddr, flags: nlmFlags.request | nlmFlags.dump, body: ifaddrmsg(0, 0) }),
  dumpRoutes: (): NlRequest => ({ type: rtm.getRoute, flags: nlmFlags.request | nlmFlags.dump, body: rtmsg(0, 0) }),
  newBridge: (name: string) =>
    ackOf(
      rtm.newLink,
      nlmFlags.create | nlmFlags.excl,
      ifinfomsg(),
      str(ifla.ifname, name),
      nested(ifla.linkinfo, str(iflaInfo.kind, "bridge")),
    ),
  /** Sets a link's MAC and MTU and brings it up. */
  setLink: (index: number, o: { mac?: string; mtu?: number; up?: boolean }) =>
    ackOf(
      rtm.setLink,
      0,
      ifinfomsg({ index, flags: o.up ? iffUp : 0, change: o.up === undefined ? 0 : iffUp }),
      ...(o.mac ? [mac(ifla.address, o.mac)] : []),
      ...(o.mtu ? [u32(ifla.mtu, o.mtu)] : []),
    ),
  /** A veth pair: the host end up on `master`, the peer created directly inside the netns open as `peerNetnsFd`. */
  newVeth: (v: { host: string; hostMac: string; peer: string; peerMac: string; mtu: number; master: number; peerNetnsFd: number }) =>
    ackOf(
      rtm.newLink,
      nlmFlags.create | nlmFlags.excl,
      ifinfomsg({ flags: iffUp, change: iffUp }),
      str(ifla.ifname, v.host),
      mac(ifla.address, v.hostMac),
      u32(ifla.mtu, v.mtu),
      u32(ifla.master, v.master),
      nested(
        ifla.linkinfo,
        str(iflaInfo.kind, "veth"),
        nested(
          iflaInfo.data,
          attr(
            vethInfoPeer,
            concat([
              ifinfomsg(),
              str(ifla.ifname, v.peer),
              mac(ifla.address, v.peerMac),
              u32(ifla.mtu, v.mtu),
              u32(ifla.netNsFd, v.peerNetnsFd),
            ]),
          ),
        ),
      ),
    ),
  delLinkByName: (name: string) => ackOf(rtm.delLink, 0, ifinfomsg(), str(ifla.ifname, name)),
  /** Puts a link (by name) into a device group, so that one request can delete the whole group. */
  setLinkGroup: (name: string, group: number) => ackOf(rtm.setLink, 0, ifinfomsg(), str(ifla.ifname, name), u32(ifla.group, group)),
  /** Deletes every link of a device group in one unregister: one RCU wait for all of them, not one each. */
  delLinkGroup: (group: number) => ackOf(rtm.delLink, 0, ifinfomsg(), u32(ifla.group, group)),
  /** An IPv4 address ("10.244.1.5/24") on a link. */
  newAddress: (index: number, cidr: string) => {
    const [ip = "", prefix = "32"] = cidr.split("/");
    return ackOf(
      rtm.newAddr,
      nlmFlags.create | nlmFlags.excl,
      ifaddrmsg(Number(prefix), index),
      ipv4(ifa.local, ip),
      ipv4(ifa.address, ip),
    );
  },
  /** `ip route add default via <gateway> dev <index>`. */
  newDefaultRoute: (gateway: string, oif: number) =>
    ackOf(rtm.newRoute, nlmFlags.create | nlmFlags.excl, rtmsg(0, rtprotBoot), ipv4(rta.gateway, gateway), u32(rta.oif, oif)),
  /** `ip route replace <dst> via <via> proto <protocol>`. */
  replaceRoute: (dst: string, via: string, protocol: number) => {
    const [ip = "", prefix = "32"] = dst.split("/");
    return ackOf(
      rtm.newRoute,
      nlmFlags.create | nlmFlags.replace,
      rtmsg(Number(prefix), protocol),
      ipv4(rta.dst, ip),
      ipv4(rta.gateway, via),
    );
  },
  /** `ip route del <dst> proto <protocol>`: the kernel deletes it only when the protocol matches. */
  delRoute: (dst: string, protocol: number) => {
    const [ip = "", prefix = "32"] = dst.split("/");
    return ackOf(rtm.delRoute, 0, rtmsg(Number(prefix), protocol, rtScopeNowhere), ipv4(rta.dst, ip));
  },
};

/** The bytes of one request with its sequence number. */
export function encodeRequest(req: NlRequest, seq: number): Uint8Array {
  const out = new Uint8Array(16 + req.body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length, true);
  v.setUint16(4, req.type, true);
  v.setUint16(6, req.flags, true);
  v.setUint32(8, seq, true);
  out.set(req.body, 16);
  return out;
}

/** Splits one received datagram into its messages. */
export function parseMessages(datagram: Uint8Array): NlMessage[] {
  const out: NlMessage[] = [];
  const v = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  for (let at = 0; at + 16 <= datagram.length; ) {
    const length = v.getUint32(at, true);
    if (length < 16 || at + length > datagram.length) throw new Error(`netlink message of length ${length} does not fit its datagram`);
    out.push({
      type: v.getUint16(at + 4, true),
      flags: v.getUint16(at + 6, true),
      seq: v.getUint32(at + 8, true),
      payload: datagram.subarray(at + 16, at + length),
    });
    at += align4(length);
  }
  return out;
}

/** An NLMSG_ERROR: errno 0 is an ACK; otherwise the kernel's extended-ACK text when it sent one. */
export function parseError(payload: Uint8Array, flags: number): { errno: number; message?: string } {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const errno = Math.abs(v.getInt32(0, true));
  if (errno === 0 || !(flags & nlmFlags.ackTlvs)) return { errno };
  const original = v.getUint32(4, true);
  const tlvAt = 4 + (flags & nlmFlags.capped ? 16 : align4(original));
  const text = attributes(payload.subarray(tlvAt)).get(1); // NLMSGERR_ATTR_MSG
  return { errno, message: text ? cString(text) : undefined };
}

/** Attributes by type (the last of a type wins; nested flag stripped). */
function attributes(bytes: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at + 4 <= bytes.length; ) {
    const length = v.getUint16(at, true);
    if (length < 4 || at + length > bytes.length) break;
    out.set(v.getUint16(at + 2, true) & ~nlaNested, bytes.subarray(at + 4, at + length));
    at += align4(length);
  }
  return out;
}

const cString = (b: Uint8Array) => new TextDecoder().decode(b.subarray(0, b.indexOf(0) < 0 ? b.length : b.indexOf(0)));
const readU32 = (b: Uint8Array | undefined) =>
  b && b.length >= 4 ? new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true) : undefined;
const readIpv4 = (b: Uint8Array | undefined) => (b && b.length === 4 ? Array.from(b).join(".") : undefined);

export interface NlLink {
  readonly index: number;
  readonly name: string;
  readonly up: boolean;
  readonly master?: number;
  readonly kind?: string;
  readonly mtu?: number;
}

export function parseLink(payload: Uint8Array): NlLink {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const attrs = attributes(payload.subarray(16));
  const info = attrs.get(ifla.linkinfo);
  const kind = info ? attributes(info).get(iflaInfo.kind) : undefined;
  const name = attrs.get(ifla.ifname);
  return {
    index: v.getInt32(4, true),
    name: name ? cString(name) : "",
    up: (v.getUint32(8, true) & iffUp) !== 0,
    master: readU32(attrs.get(ifla.master)),
    kind: kind ? cString(kind) : undefined,
    mtu: readU32(attrs.get(ifla.mtu)),
  };
}

export interface NlAddress {
  readonly index: number;
  /** "10.244.1.5/24" */
  readonly cidr: string;
}

/** An IPv4 address message; undefined for other families. */
export function parseAddress(payload: Uint8Array): NlAddress | undefined {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (v.getUint8(0) !== afInet) return undefined;
  const attrs = attributes(payload.subarray(8));
  const ip = readIpv4(attrs.get(ifa.local) ?? attrs.get(ifa.address));
  return ip ? { index: v.getUint32(4, true), cidr: `${ip}/${v.getUint8(1)}` } : undefined;
}

export interface NlRoute {
  /** Canonical CIDR; "0.0.0.0/0" for the default route. */
  readonly dst: string;
  readonly via?: string;
  readonly oif?: number;
  readonly protocol: number;
  readonly table: number;
}

/** An IPv4 route message; undefined for other families. */
export function parseRoute(payload: Uint8Array): NlRoute | undefined {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (v.getUint8(0) !== afInet) return undefined;
  const attrs = attributes(payload.subarray(12));
  return {
    dst: `${readIpv4(attrs.get(rta.dst)) ?? "0.0.0.0"}/${v.getUint8(1)}`,
    via: readIpv4(attrs.get(rta.gateway)),
    oif: readU32(attrs.get(rta.oif)),
    protocol: v.getUint8(5),
    table: readU32(attrs.get(rta.table)) ?? v.getUint8(4),
  };
}
