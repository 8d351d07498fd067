import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { addHealthService, addReflectionService, serverInterceptor } from "../../proto/common/rpc.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
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
    interceptors: [serverInterceptor(deps.log)],
    routes: (router: ConnectRouter) => {
      router.service(NodeService, createNodeService(deps));
      router.service(AdminService, createAdminService(deps));
      addHealthService(router, services, deps.ready);
      addReflectionService(router, services);
    },
  });
  const server = http2.createServer(handler);
  const sessions = new Set<http2.Http2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(deps.port, deps.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.close();
        server.close(() => resolve());
        setTimeout(() => sessions.forEach((s) => s.destroy()), 2_000).unref();
      }),
  };
}
