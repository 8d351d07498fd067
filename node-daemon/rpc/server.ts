import { chmod, mkdir, unlink } from "node:fs/promises";
import net from "node:net";
import { dirname } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { TrellisError } from "../../proto/core/errors.js";
import { maxProtocolSkew, protocolVersion } from "../../proto/core/protocol.js";
import {
  type Attachment,
  CheckAttachmentResponseSchema,
  CniService as CniServiceDesc,
  DeleteAttachmentResponseSchema,
  GarbageCollectResponseSchema,
  GetStatusResponseSchema,
  RouteState,
} from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { addHealthService } from "../../proto/rpc/health.js";
import { serverInterceptor } from "../../proto/rpc/interceptor.js";
import { type Http2Listener, listenHttp2, serverLimits } from "../../proto/rpc/listen.js";
import { addReflectionService } from "../../proto/rpc/reflection.js";
import type { AttachmentService } from "../cni/attachment-service.js";
import { type CniRequestObserver, cniMetricsInterceptor } from "./cni-metrics.js";

export interface DaemonServer {
  close(): Promise<void>;
}

function checkVersion(version: number): void {
  if (Math.abs(version - protocolVersion) > maxProtocolSkew) {
    throw new TrellisError(
      "VERSION_SKEW",
      `shim speaks protocol ${version}, daemon speaks ${protocolVersion} (at most ${maxProtocolSkew} apart); install the matching trellis shim`,
    );
  }
}

function attachmentOf(a: Attachment | undefined): Attachment {
  if (!a) throw new TrellisError("INVALID_ARGUMENT", "request carries no attachment");
  return a;
}

/** Serves the shim on a root-only unix socket (mode 0600): CniService, health, reflection. */
export interface DaemonServerDeps {
  readonly cni: AttachmentService;
  readonly log: Logger;
  readonly socketPath: string;
  /** The node's subnet and whether its routes are current, for STATUS. */
  readonly status: () => { subnet: string; routesCurrent: boolean; detail: string };
  /** Counts and times every CNI request (trellis_cni_requests_total and _duration_seconds). */
  readonly metrics?: CniRequestObserver;
}

export async function startDaemonServer(deps: DaemonServerDeps): Promise<DaemonServer> {
  const { cni, log, socketPath } = deps;
  const handler = connectNodeAdapter({
    grpc: true,
    grpcWeb: false,
    connect: false,
    readMaxBytes: serverLimits.maxMessageBytes,
    interceptors: [serverInterceptor(log), ...(deps.metrics ? [cniMetricsInterceptor(deps.metrics)] : [])],
    routes: (router: ConnectRouter) => {
      router.service(CniServiceDesc, {
        async addAttachment(req) {
          checkVersion(req.protocolVersion);
          return cni.add(attachmentOf(req.attachment));
        },
        async deleteAttachment(req) {
          checkVersion(req.protocolVersion);
          await cni.delete(attachmentOf(req.attachment));
          return create(DeleteAttachmentResponseSchema);
        },
        async checkAttachment(req) {
          checkVersion(req.protocolVersion);
          await cni.check(attachmentOf(req.attachment));
          return create(CheckAttachmentResponseSchema);
        },
        async garbageCollect(req) {
          checkVersion(req.protocolVersion);
          if (!req.networkName) throw new TrellisError("INVALID_ARGUMENT", "network_name is required");
          return create(GarbageCollectResponseSchema, { released: await cni.gc(req.networkName, req.validAttachments) });
        },
        getStatus(req) {
          checkVersion(req.protocolVersion);
          if (!cni.ready) throw new TrellisError("UNAVAILABLE", "the node daemon has no subnet lease yet");
          const s = deps.status();
          return create(GetStatusResponseSchema, {
            subnet: s.subnet,
            routeState: s.routesCurrent ? RouteState.CURRENT : RouteState.STALE,
            detail: s.detail,
            protocolVersion,
          });
        },
      });
      addHealthService(router, [CniServiceDesc], () => cni.ready);
      addReflectionService(router, [CniServiceDesc]);
    },
  });
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  await removeStaleSocket(socketPath);
  const oldMask = process.umask(0o177); // the socket is born 0600: no window where others may connect
  let listener: Http2Listener;
  try {
    listener = await listenHttp2(handler, { path: socketPath });
  } finally {
    process.umask(oldMask);
  }
  await chmod(socketPath, 0o600);
  log.info({ address: socketPath }, "serving the CNI shim");
  return { close: listener.close };
}

/** A socket file left by a dead daemon is removed; one a live daemon answers on is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (live) {
    throw new TrellisError("ALREADY_EXISTS", `another daemon is serving ${path}; stop it or choose another --socket`);
  }
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}
