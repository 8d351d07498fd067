// The rtnetlink codec, pure. Requests are read back with the same parsers the daemon uses on the kernel's
// replies (a kernel reply to GET has the layout of the matching NEW request); e2e tests run it against
// the kernel.
import { describe, expect, it } from "vitest";
import {
  encodeRequest,
  nlmFlags,
  nlmsg,
  parseAddress,
  parseError,
  parseLink,
  parseMessages,
  parseRoute,
  requests,
  rtm,
  rtTableMain,
} from "../../../../node-daemon/net/rtnetlink-codec.js";

const le32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, n, true);
  return b;
};

describe("rtnetlink codec", () => {
  it("frames a request: length, type, flags, sequence, then the body", () => {
    const bytes = encodeRequest(requests.getLinkByName("trellis0"), 7);
    const v = new DataView(bytes.buffer);
    expect(v.getUint32(0, true)).toBe(bytes.length);
    expect(v.getUint16(4, true)).toBe(rtm.getLink);
    expect(v.getUint16(6, true)).toBe(nlmFlags.request | nlmFlags.ack);
    expect(v.getUint32(8, true)).toBe(7);
    expect(bytes.length % 4).toBe(0);
  });

  it("a bridge request reads back as a bridge link", () => {
    expect(parseLink(requests.newBridge("trellis0").body)).toMatchObject({ name: "trellis0", kind: "bridge", up: false });
  });

  it("a veth request carries the host end up on its master, and the peer with its name, MAC, MTU and netns fd", () => {
    const req = requests.newVeth({
      host: "tr0123456789a",
      hostMac: "0a:58:0a:f4:01:05",
      peer: "eth0",
      peerMac: "0a:58:0a:f4:01:06",
      mtu: 1450,
      master: 4,
      peerNetnsFd: 23,
    });
    expect(req.flags & (nlmFlags.create | nlmFlags.excl)).toBe(nlmFlags.create | nlmFlags.excl);
    expect(parseLink(req.body)).toMatchObject({ name: "tr0123456789a", up: true, master: 4, kind: "veth", mtu: 1450 });
    const text = Buffer.from(req.body);
    expect(text.includes(Buffer.from("eth0\0"))).toBe(true);
    expect(text.includes(Buffer.from([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x06]))).toBe(true);
    expect(text.includes(Buffer.concat([Buffer.from([8, 0, 28, 0]), le32(23)]))).toBe(true); // IFLA_NET_NS_FD
  });

  it("addresses and routes read back as written", () => {
    expect(parseAddress(requests.newAddress(9, "10.244.1.5/24").body)).toEqual({ index: 9, cidr: "10.244.1.5/24" });
    expect(parseRoute(requests.replaceRoute("10.244.2.0/24", "192.168.1.12", 201).body)).toEqual({
      dst: "10.244.2.0/24",
      via: "192.168.1.12",
      oif: undefined,
      protocol: 201,
      table: rtTableMain,
    });
    expect(parseRoute(requests.newDefaultRoute("10.244.1.1", 3).body)).toMatchObject({ dst: "0.0.0.0/0", via: "10.244.1.1", oif: 3 });
  });

  it("splits a datagram into its messages and refuses a length that overruns it", () => {
    const a = encodeRequest(requests.getLinkByName("lo"), 1);
    const b = encodeRequest(requests.dumpRoutes(), 2);
    expect(parseMessages(Buffer.concat([a, b])).map((m) => [m.type, m.seq])).toEqual([
      [rtm.getLink, 1],
      [rtm.getRoute, 2],
    ]);
    const bad = Uint8Array.from(a);
    new DataView(bad.buffer).setUint32(0, 4096, true);
    expect(() => parseMessages(bad)).toThrow(/does not fit/);
  });

  it("reads an ACK, an error, and the kernel's extended-ACK message", () => {
    expect(parseError(Buffer.concat([le32(0), new Uint8Array(16)]), 0)).toEqual({ errno: 0 });
    expect(parseError(Buffer.concat([le32(-17), new Uint8Array(16)]), 0)).toEqual({ errno: 17 });
    const msg = Buffer.from("Nexthop has invalid gateway\0");
    const tlv = Buffer.alloc(4 + ((msg.length + 3) & ~3));
    tlv.writeUInt16LE(4 + msg.length, 0);
    tlv.writeUInt16LE(1, 2); // NLMSGERR_ATTR_MSG
    msg.copy(tlv, 4);
    const payload = Buffer.concat([le32(-101), new Uint8Array(16), tlv]);
    expect(parseError(payload, nlmFlags.capped | nlmFlags.ackTlvs)).toEqual({ errno: 101, message: "Nexthop has invalid gateway" });
    expect(nlmsg.error).toBe(2);
  });
});
