import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  GetClusterConfigResponseSchema,
  ListNodesResponseSchema,
  NodeSchema,
  type AdminService,
} from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import type { ClusterStore } from "../store/store.js";
import type { SubnetPool } from "../ipam/subnet-pool.js";

export function createAdminService(deps: { store: ClusterStore; pool: SubnetPool }): ServiceImpl<typeof AdminService> {
  return {
    async listNodes() {
      const [{ nodes }, heartbeats] = await Promise.all([deps.store.listNodes(), deps.store.listHeartbeats()]);
      return create(ListNodesResponseSchema, {
        nodes: nodes.map((n) => {
          const lastSeen = heartbeats.get(n.name);
          return create(NodeSchema, {
            name: n.name,
            nodeIp: n.nodeIp,
            subnet: n.subnet,
            live: n.live,
            mtu: n.mtu,
            registeredAt: timestampFromMs(Number(n.registeredAtMs)),
            lastSeen: lastSeen === undefined ? undefined : timestampFromMs(Number(lastSeen)),
          });
        }),
      });
    },
    getClusterConfig() {
      return create(GetClusterConfigResponseSchema, {
        clusterCidr: deps.pool.cluster.toString(),
        subnetPrefixLength: deps.pool.prefixLength,
      });
    },
  };
}
