import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { addHealthService } from "../../proto/rpc/health.js";
import { serverInterceptor } from "../../proto/rpc/interceptor.js";
import { listenHttp2, serverLimits, type TlsMaterial } from "../../proto/rpc/listen.js";
import { peerContextValues } from "../../proto/rpc/peer-identity.js";
import { addReflectionService } from "../../proto/rpc/reflection.js";
import { createAdminService } from "./admin-service.js";
import { adminAuthorization } from "./authorize.js";
import { createNodeService } from "./node-service.js";

type NodeDeps = Parameters<typeof createNodeService>[0];
type AdminDeps = Parameters<typeof createAdminService>[0];

export interface ControlPlaneServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * gRPC with NodeService, AdminService, health and reflection: mutual TLS when given `tls` (every caller is
 * identified by its certificate and authorized by authorize.ts), cleartext otherwise.
 */
export async function startControlPlaneServer(
  deps: NodeDeps & AdminDeps & { log: Logger; host: string; port: number; ready: () => boolean; tls?: TlsMaterial },
): Promise<ControlPlaneServer> {
  const services: DescService[] = [NodeService, AdminService];
  const handler = connectNodeAdapter({
    grpc: true,
    grpcWeb: false,
    connect: false,
    readMaxBytes: serverLimits.maxMessageBytes,
    contextValues: peerContextValues,
    interceptors: [serverInterceptor(deps.log), adminAuthorization(deps.log)],
    routes: (router: ConnectRouter) => {
      router.service(NodeService, createNodeService(deps));
      router.service(AdminService, createAdminService(deps));
      addHealthService(router, services, deps.ready);
      addReflectionService(router, services);
    },
  });
  const listener = await listenHttp2(handler, { port: deps.port, host: deps.host }, deps.tls);
  return { port: (listener.server.address() as AddressInfo).port, close: listener.close };
}
