import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { addHealthService } from "../../proto/rpc/health.js";
import { serverInterceptor } from "../../proto/rpc/interceptor.js";
import { listenHttp2, serverLimits } from "../../proto/rpc/listen.js";
import { addReflectionService } from "../../proto/rpc/reflection.js";
import { createAdminService } from "./admin-service.js";
import { createNodeService } from "./node-service.js";

type NodeDeps = Parameters<typeof createNodeService>[0];
type AdminDeps = Parameters<typeof createAdminService>[0];

export interface ControlPlaneServer {
  readonly port: number;
  close(): Promise<void>;
}

/** gRPC (HTTP/2 cleartext) with NodeService, AdminService, health and reflection. */
export async function startControlPlaneServer(
  deps: NodeDeps & AdminDeps & { log: Logger; host: string; port: number; ready: () => boolean },
): Promise<ControlPlaneServer> {
  const services: DescService[] = [NodeService, AdminService];
  const handler = connectNodeAdapter({
    grpc: true,
    grpcWeb: false,
    connect: false,
    readMaxBytes: serverLimits.maxMessageBytes,
    interceptors: [serverInterceptor(deps.log)],
    routes: (router: ConnectRouter) => {
      router.service(NodeService, createNodeService(deps));
      router.service(AdminService, createAdminService(deps));
      addHealthService(router, services, deps.ready);
      addReflectionService(router, services);
    },
  });
  const listener = await listenHttp2(handler, { port: deps.port, host: deps.host });
  return { port: (listener.server.address() as AddressInfo).port, close: listener.close };
}
