import { create } from "@bufbuild/protobuf";
import { type Cidr, formatIpv4 } from "../../proto/core/cidr.js";
import {
  type AddAttachmentResponse,
  AddAttachmentResponseSchema,
  type Attachment,
  InterfaceSchema,
  IpConfigSchema,
  RouteSchema,
} from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { gatewayOf } from "../ipam/pod-allocator.js";
import { hostVethName, macFor } from "../net/names.js";
import type { BridgeSpec, VethSpec, VethState } from "../net/netlink.js";

export function planBridge(name: string, subnet: Cidr, mtu: number): BridgeSpec {
  const gateway = gatewayOf(subnet);
  return { name, mac: macFor(gateway, "bridge"), address: `${formatIpv4(gateway)}/${subnet.prefixLength}`, mtu };
}

export function planVeth(attachment: Attachment, subnet: Cidr, address: bigint, bridge: BridgeSpec): VethSpec {
  return {
    bridge: bridge.name,
    hostName: hostVethName(attachment.containerId, attachment.ifName),
    hostMac: macFor(address, "host"),
    podIfName: attachment.ifName,
    podMac: macFor(address, "pod"),
    netns: attachment.netns,
    mtu: bridge.mtu,
    podAddress: `${formatIpv4(address)}/${subnet.prefixLength}`,
    gateway: formatIpv4(gatewayOf(subnet)),
  };
}

/** The CNI result of a finished ADD: bridge, host veth, pod interface (index 2) and its address. */
export function resultOf(veth: VethSpec, bridge: BridgeSpec): AddAttachmentResponse {
  return create(AddAttachmentResponseSchema, {
    interfaces: [
      create(InterfaceSchema, { name: bridge.name, mac: bridge.mac, mtu: bridge.mtu }),
      create(InterfaceSchema, { name: veth.hostName, mac: veth.hostMac, mtu: veth.mtu }),
      create(InterfaceSchema, { name: veth.podIfName, mac: veth.podMac, mtu: veth.mtu, sandbox: veth.netns }),
    ],
    ips: [create(IpConfigSchema, { address: veth.podAddress, gateway: veth.gateway, interface: 2 })],
    routes: [create(RouteSchema, { dst: "0.0.0.0/0", gw: veth.gateway })],
  });
}

/** What differs between the kernel and what ADD made, one phrase per difference; empty when all is well. Pure. */
export function vethProblems(veth: VethSpec, state: VethState): string[] {
  const problems: string[] = [];
  if (!state.host) problems.push(`host interface ${veth.hostName} is missing`);
  else {
    if (state.host.master !== veth.bridge) problems.push(`host interface ${veth.hostName} is not a port of ${veth.bridge}`);
    if (!state.host.up) problems.push(`host interface ${veth.hostName} is down`);
  }
  if (!state.pod) problems.push(`interface ${veth.podIfName} is missing in ${veth.netns}`);
  else {
    if (!state.pod.up) problems.push(`interface ${veth.podIfName} in ${veth.netns} is down`);
    if (!state.pod.addresses.includes(veth.podAddress))
      problems.push(`interface ${veth.podIfName} in ${veth.netns} lacks address ${veth.podAddress}`);
    if (state.pod.defaultVia !== veth.gateway) problems.push(`${veth.netns} has no default route via ${veth.gateway} on ${veth.podIfName}`);
  }
  return problems;
}

/**
 * The cniVersion values the daemon writes into its conflist (--cni-version): 1.0.0 for any CNI 1.x runtime,
 * 1.1.0 for runtimes whose libcni has STATUS and GC. The shim answers every version of supportedCniVersions.
 */
export const conflistCniVersions = ["1.0.0", "1.1.0"] as const;
export type ConflistCniVersion = (typeof conflistCniVersions)[number];

/** The CNI network config list a runtime reads (DESIGN.md §4, installation). */
export function conflistFor(daemonSocket: string, cniVersion: ConflistCniVersion = "1.0.0"): Record<string, unknown> {
  return { cniVersion, name: "trellis", plugins: [{ type: "trellis", daemonSocket }] };
}
