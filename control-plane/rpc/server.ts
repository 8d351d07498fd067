import type { Http2ServerResponse, Http2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { JoinService, NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { addHealthService } from "../../proto/rpc/health.js";
import { serverInterceptor } from "../../proto/rpc/interceptor.js";
import { type Http2Listener, listenHttp2, serverLimits, type TlsMaterial } from "../../proto/rpc/listen.js";
import { loadShedding } from "../../proto/rpc/load-shedding.js";
import { type Peer, peerContextValues, peerKey } from "../../proto/rpc/peer-identity.js";
import { addReflectionService } from "../../proto/rpc/reflection.js";
import type { CertificateRegistry } from "../identity/certificate-registry.js";
import { createAdminService } from "./admin-service.js";
import { adminAuthorization, nodeCertificateCheck } from "./authorize.js";
import { createJoinService, createNodeService } from "./node-service.js";
import { isWatchRoutesCall, serveWatchRoutes } from "./route-stream.js";
import { requestValidation } from "./validate.js";

type NodeDeps = Parameters<typeof createNodeService>[0];
type AdminDeps = Parameters<typeof createAdminService>[0];

export interface ControlPlaneServer {
  readonly port: number;
  /** The join port, when one is served. */
  readonly joinPort?: number;
  close(): Promise<void>;
}

/** Never shed: a refused heartbeat is a node that may expire, a refused leave a route left behind. */
const livenessMethods: ReadonlySet<string> = new Set([NodeService.method.heartbeat.name, NodeService.method.deregisterNode.name]);

/** One warning per 10 s while calls are refused, with how many, instead of a line per refused call. */
function shedReport(log: Logger): (inFlight: number) => void {
  let refused = 0;
  let since = 0;
  return (inFlight) => {
    refused++;
    const now = performance.now();
    if (now - since < 10_000) return;
    log.warn({ refused, inFlight }, "overloaded: refusing unary calls (UNAVAILABLE) past the in-flight limit; heartbeats still pass");
    refused = 0;
    since = now;
  };
}

/**
 * gRPC with NodeService, AdminService, health and reflection: mutual TLS when given `tls` (every caller is
 * identified by its certificate and authorized by authorize.ts), cleartext otherwise. With `joinPort`
 * (and `tls`), JoinService too, on that port with server-only TLS: the one call for nodes that have no
 * certificate yet.
 */
export async function startControlPlaneServer(
  deps: NodeDeps &
    AdminDeps & {
      log: Logger;
      host: string;
      port: number;
      ready: () => boolean;
      tls?: TlsMaterial;
      joinPort?: number;
      registry: CertificateRegistry;
    },
): Promise<ControlPlaneServer> {
  const services: DescService[] = [NodeService, AdminService];
  // Open connections of each node, cut when its certificates are revoked (an evicted node's route stream).
  const sessionsOf = new Map<string, Set<Http2Session>>();
  deps.registry.onRevoked((node) => {
    for (const session of sessionsOf.get(node) ?? []) session.destroy();
    sessionsOf.delete(node);
  });
  const trackSession = (peer: Peer, session: Http2Session | undefined) => {
    if (typeof peer !== "object" || peer.kind !== "node" || !session) return;
    const sessions = sessionsOf.get(peer.name) ?? new Set();
    if (sessions.has(session)) return;
    sessions.add(session);
    sessionsOf.set(peer.name, sessions);
    session.once("close", () => {
      sessions.delete(session);
      if (sessions.size === 0 && sessionsOf.get(peer.name) === sessions) sessionsOf.delete(peer.name);
    });
  };
  const connectHandler = connectNodeAdapter({
    grpc: true,
    grpcWeb: false,
    connect: false,
    // No compression (connect-node's default is gzip and brotli for any client that accepts them, which
    // every connect and grpc-go client does): a route snapshot is encoded once for every stream, but
    // would be gzipped again for each one, and after a failover thousands ask at once (issue 10).
    acceptCompression: [],
    readMaxBytes: serverLimits.maxMessageBytes,
    contextValues: (req) => {
      const values = peerContextValues(req);
      trackSession(values.get(peerKey), (req as { stream?: { session?: Http2Session } }).stream?.session);
      return values;
    },
    interceptors: [
      loadShedding({ maxInFlight: serverLimits.maxUnaryInFlight, exempt: livenessMethods, onShed: shedReport(deps.log) }),
      serverInterceptor(deps.log),
      nodeCertificateCheck(deps.registry),
      requestValidation(),
      adminAuthorization(deps.log),
    ],
    routes: (router: ConnectRouter) => {
      router.service(NodeService, createNodeService(deps));
      router.service(AdminService, createAdminService(deps));
      addHealthService(router, services, deps.ready);
      addReflectionService(router, services);
    },
  });
  // Route streams skip connect-node's per-message pipeline (route-stream.ts); every other call goes through it.
  const routeStreams = { feed: deps.feed, registry: deps.registry, log: deps.log, onPeer: trackSession };
  const handler: typeof connectHandler = (req, res) => {
    if (!("stream" in req && isWatchRoutesCall(req))) return connectHandler(req, res);
    serveWatchRoutes(routeStreams, req, res as Http2ServerResponse).catch((err: unknown) => {
      deps.log.error({ err }, "route stream could not be ended cleanly");
      req.stream.destroy();
    });
  };
  const listener = await listenHttp2(handler, { port: deps.port, host: deps.host }, deps.tls);
  let joinListener: Http2Listener | undefined;
  if (deps.tls && deps.joinPort !== undefined) {
    const joinHandler = connectNodeAdapter({
      grpc: true,
      grpcWeb: false,
      connect: false,
      readMaxBytes: 64 << 10,
      interceptors: [serverInterceptor(deps.log), requestValidation()],
      routes: (router: ConnectRouter) => {
        router.service(JoinService, createJoinService(deps));
        addHealthService(router, [JoinService], deps.ready);
      },
    });
    try {
      // Open to callers without a certificate, and only for Join: far tighter bounds than the main port's.
      joinListener = await listenHttp2(
        joinHandler,
        { port: deps.joinPort, host: deps.host },
        { cert: deps.tls.cert, key: deps.tls.key },
        { maxConnections: 1_024, maxCallsInFlight: 256 },
      );
    } catch (err) {
      await listener.close();
      throw err;
    }
  }
  return {
    port: (listener.server.address() as AddressInfo).port,
    joinPort: joinListener && (joinListener.server.address() as AddressInfo).port,
    close: async () => {
      await Promise.all([listener.close(), joinListener?.close()]);
    },
  };
}
