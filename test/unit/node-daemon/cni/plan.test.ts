import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { planBridge, planVeth, resultOf, vethProblems } from "../../../../node-daemon/cni/plan.js";
import { hostVethName } from "../../../../node-daemon/net/names.js";
import type { VethState } from "../../../../node-daemon/net/netlink.js";
import { Cidr, parseIpv4 } from "../../../../proto/core/cidr.js";
import { AttachmentSchema } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";

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
    expect(planBridge("trellis0", subnet, 1450)).toEqual({
      name: "trellis0",
      mac: "0a:5a:0a:f4:03:01",
      address: "10.244.3.1/24",
      mtu: 1450,
    });
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

describe("vethProblems", () => {
  const bridge = planBridge("trellis0", subnet, 1450);
  const veth = planVeth(attachment, subnet, parseIpv4("10.244.3.7"), bridge);
  const host = hostVethName("c0ffee", "eth0");
  const healthy: VethState = {
    host: { master: "trellis0", up: true },
    pod: { up: true, addresses: ["10.244.3.7/24"], defaultVia: "10.244.3.1" },
  };
  const pod = healthy.pod ?? { up: true, addresses: [] };

  it("is empty when the kernel holds what ADD made", () => {
    expect(vethProblems(veth, healthy)).toEqual([]);
  });

  it("tolerates extra addresses on the pod interface", () => {
    expect(vethProblems(veth, { ...healthy, pod: { ...pod, addresses: ["fe80::1/64", "10.244.3.7/24"] } })).toEqual([]);
  });

  it.each<[string, VethState, string[]]>([
    ["host veth missing", { pod }, [`host interface ${host} is missing`]],
    ["host veth on no bridge", { ...healthy, host: { up: true } }, [`host interface ${host} is not a port of trellis0`]],
    [
      "host veth on another bridge",
      { ...healthy, host: { master: "docker0", up: true } },
      [`host interface ${host} is not a port of trellis0`],
    ],
    ["host veth down", { ...healthy, host: { master: "trellis0", up: false } }, [`host interface ${host} is down`]],
    ["pod interface missing", { host: healthy.host }, ["interface eth0 is missing in /var/run/netns/pod1"]],
    ["pod interface down", { ...healthy, pod: { ...pod, up: false } }, ["interface eth0 in /var/run/netns/pod1 is down"]],
    [
      "pod address missing",
      { ...healthy, pod: { ...pod, addresses: [] } },
      ["interface eth0 in /var/run/netns/pod1 lacks address 10.244.3.7/24"],
    ],
    [
      "pod address with another prefix",
      { ...healthy, pod: { ...pod, addresses: ["10.244.3.7/16"] } },
      ["interface eth0 in /var/run/netns/pod1 lacks address 10.244.3.7/24"],
    ],
    [
      "another pod address",
      { ...healthy, pod: { ...pod, addresses: ["10.244.3.8/24"] } },
      ["interface eth0 in /var/run/netns/pod1 lacks address 10.244.3.7/24"],
    ],
    [
      "no default route",
      { ...healthy, pod: { up: true, addresses: ["10.244.3.7/24"] } },
      ["/var/run/netns/pod1 has no default route via 10.244.3.1 on eth0"],
    ],
    [
      "default route via another gateway",
      { ...healthy, pod: { ...pod, defaultVia: "10.244.3.254" } },
      ["/var/run/netns/pod1 has no default route via 10.244.3.1 on eth0"],
    ],
  ])("%s: names it", (_what, state, problems) => {
    expect(vethProblems(veth, state)).toEqual(problems);
  });

  it("names every problem at once, host first", () => {
    expect(vethProblems(veth, { host: { master: "docker0", up: false }, pod: { up: false, addresses: [] } })).toEqual([
      `host interface ${host} is not a port of trellis0`,
      `host interface ${host} is down`,
      "interface eth0 in /var/run/netns/pod1 is down",
      "interface eth0 in /var/run/netns/pod1 lacks address 10.244.3.7/24",
      "/var/run/netns/pod1 has no default route via 10.244.3.1 on eth0",
    ]);
  });

  it("both ends missing: two problems, no details of either", () => {
    expect(vethProblems(veth, {})).toEqual([`host interface ${host} is missing`, "interface eth0 is missing in /var/run/netns/pod1"]);
  });
});
