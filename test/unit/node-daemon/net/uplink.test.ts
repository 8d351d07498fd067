import { describe, expect, it } from "vitest";
import { findUplink } from "../../../../node-daemon/net/uplink.js";
import { trellisErrorOf } from "../../expect-error.js";

const links = [
  { index: 1, name: "lo", mtu: 65536 },
  { index: 2, name: "eth0", mtu: 9000 },
  { index: 3, name: "trellis0", mtu: 1500 },
];
const addresses = [
  { index: 1, cidr: "127.0.0.1/8" },
  { index: 2, cidr: "192.168.1.11/24" },
  { index: 3, cidr: "10.244.1.1/24" },
];

describe("findUplink", () => {
  it("is the interface that holds the node IP, with its MTU", () => {
    expect(findUplink(links, addresses, "192.168.1.11")).toEqual({ name: "eth0", mtu: 9000 });
  });

  it("says when no interface holds the node IP, which addresses there are, and what to do", () => {
    const err = trellisErrorOf(() => findUplink(links, addresses, "192.168.1.99"));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toBe(
      "no interface of this node holds --node-ip 192.168.1.99, so the pod MTU cannot follow the node's uplink (addresses here: lo 127.0.0.1/8, eth0 192.168.1.11/24, trellis0 10.244.1.1/24); give the node's own underlay address as --node-ip, or set --mtu",
    );
  });

  it("says when the uplink has no MTU attribute", () => {
    const err = trellisErrorOf(() => findUplink([{ index: 2, name: "eth0" }], addresses, "192.168.1.11"));
    expect(err.message).toMatch(/could not read the MTU of eth0.*set --mtu/);
  });
});
