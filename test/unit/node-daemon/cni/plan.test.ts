import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Cidr, parseIpv4 } from "../../../../proto/common/cidr.js";
import { AttachmentSchema } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";
import { planBridge, planVeth, resultOf } from "../../../../node-daemon/cni/plan.js";
import { hostVethName } from "../../../../node-daemon/net/names.js";

const subnet = Cidr.parse("10.244.3.0/24");
const attachment = create(AttachmentSchema, {
  networkName: "trellis",
  containerId: "c0ffee",
  ifName: "eth0",
  netns: "/var/run/netns/pod1",
  podNamespace: "default",
  podName: "web-1",
});

describe("planBridge", () => {
  it("puts the gateway (.1) with the subnet's prefix on the bridge, with a bridge MAC", () => {
    expect(planBridge("trellis0", subnet, 1450)).toEqual({ name: "trellis0", mac: "0a:5a:0a:f4:03:01", address: "10.244.3.1/24", mtu: 1450 });
  });

  it("works for a non-octet prefix", () => {
    expect(planBridge("br0", Cidr.parse("10.244.3.64/26"), 1500).address).toBe("10.244.3.65/26");
  });
});

describe("planVeth", () => {
  it("derives names, MACs, address and gateway from the attachment and the address", () => {
    const bridge = planBridge("trellis0", subnet, 1450);
    expect(planVeth(attachment, subnet, parseIpv4("10.244.3.7"), bridge)).toEqual({
      bridge: "trellis0",
      hostName: hostVethName("c0ffee", "eth0"),
      hostMac: "0a:59:0a:f4:03:07",
      podIfName: "eth0",
      podMac: "0a:58:0a:f4:03:07",
      netns: "/var/run/netns/pod1",
      mtu: 1450,
      podAddress: "10.244.3.7/24",
      gateway: "10.244.3.1",
    });
  });
});

describe("resultOf", () => {
  const bridge = planBridge("trellis0", subnet, 1450);
  const veth = planVeth(attachment, subnet, parseIpv4("10.244.3.7"), bridge);
  const res = resultOf(veth, bridge);

  it("lists bridge, host veth and pod interface; only the pod interface has a sandbox", () => {
    expect(res.interfaces.map((i) => ({ name: i.name, mac: i.mac, mtu: i.mtu, sandbox: i.sandbox }))).toEqual([
      { name: "trellis0", mac: "0a:5a:0a:f4:03:01", mtu: 1450, sandbox: "" },
      { name: veth.hostName, mac: "0a:59:0a:f4:03:07", mtu: 1450, sandbox: "" },
      { name: "eth0", mac: "0a:58:0a:f4:03:07", mtu: 1450, sandbox: "/var/run/netns/pod1" },
    ]);
  });

  it("the one IP is on interface index 2 (the pod interface), gateway .1", () => {
    expect(res.ips).toHaveLength(1);
    expect(res.ips[0]).toMatchObject({ address: "10.244.3.7/24", gateway: "10.244.3.1", interface: 2 });
    expect(res.interfaces[res.ips[0]?.interface ?? -1]?.sandbox).toBe("/var/run/netns/pod1");
  });

  it("routes everything via the gateway", () => {
    expect(res.routes.map((r) => ({ dst: r.dst, gw: r.gw }))).toEqual([{ dst: "0.0.0.0/0", gw: "10.244.3.1" }]);
  });
});
