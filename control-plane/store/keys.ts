import type { Cidr } from "../../proto/core/cidr.js";

/** The one place etcd keys are spelled (STYLE.md §4): everything lives under one versioned prefix. */
export function createKeys(root = "/trellis/v1") {
  return {
    nodesPrefix: `${root}/nodes/`,
    node: (name: string) => `${root}/nodes/${name}`,
    nodeIp: (ip: string) => `${root}/node-ips/${ip}`,
    subnetsPrefix: `${root}/subnets/`,
    subnet: (subnet: Cidr) => `${root}/subnets/${subnet.toString().replace("/", "-")}`,
    /**
     * One key per subnet freed and not leased since, written in the transaction that freed it: its mod
     * revision orders freed subnets, the one freed longest ago first (DESIGN.md §2: back of the line).
     */
    freedSubnetsPrefix: `${root}/freed-subnets/`,
    freedSubnet: (subnet: Cidr) => `${root}/freed-subnets/${subnet.toString().replace("/", "-")}`,
    heartbeatsPrefix: `${root}/heartbeats/`,
    heartbeat: (name: string) => `${root}/heartbeats/${name}`,
    reservationsPrefix: `${root}/reservations/`,
    reservation: (subnet: Cidr) => `${root}/reservations/${subnet.toString().replace("/", "-")}`,
    disruption: `${root}/status/disruption`,
    clusterConfig: `${root}/config/cluster`,
    reportedRoutesPrefix: `${root}/reported-routes/`,
    reportedRoutes: (name: string) => `${root}/reported-routes/${name}`,
    joinTokensPrefix: `${root}/join-tokens/`,
    joinToken: (id: string) => `${root}/join-tokens/${id}`,
    nodeCertificatesPrefix: `${root}/node-certificates/`,
    nodeCertificates: (node: string) => `${root}/node-certificates/${node}`,
    root: `${root}/`,
    allocationsPrefix: `${root}/allocations/`,
    nodeAllocationsPrefix: (node: string) => `${root}/allocations/${node}/`,
    allocation: (node: string, address: string) => `${root}/allocations/${node}/${address}`,
  };
}

export type Keys = ReturnType<typeof createKeys>;

/** The subnet a key under a subnet prefix names: ".../subnets/10.244.3.0-24" is "10.244.3.0/24". */
export function subnetOfKey(key: string, prefix: string): string {
  return key.slice(prefix.length).replace(/-(\d+)$/, "/$1");
}
