/**
 * What both Trellis servers (control plane, node daemon) and their clients share about RPC: the reason
 * <-> status mapping of STYLE.md §6, one log line per call, grpc.health.v1, gRPC server reflection and
 * the HTTP/2 listener.
 * Written once here so the two programs cannot drift apart.
 */

import http2 from "node:http2";
import { create, type DescFile, type DescMessage, type DescService, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { Health, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";
import * as reflectionV1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { grpcCodeOf, isReason, logLevelOf, reasonMetadataKey, reasonOfStatus, TrellisError } from "./errors.js";

/** Domain error -> gRPC status with the reason in metadata; unknown errors leave as INTERNAL. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const e = err instanceof TrellisError ? err : new TrellisError("INTERNAL", "internal error", { cause: err });
  return new ConnectError(e.message, grpcCodeOf[e.reason] as Code, { [reasonMetadataKey]: e.reason }, undefined, e);
}

/** gRPC status -> domain error: the reason from metadata, or one derived from the code. */
export function fromConnectError(err: unknown, what: string): TrellisError {
  if (err instanceof TrellisError) return err;
  const ce = ConnectError.from(err);
  const sent = ce.metadata.get(reasonMetadataKey) ?? undefined;
  if (sent && isReason(sent)) return new TrellisError(sent, ce.rawMessage, { cause: err });
  // A peer that died mid-call (reset, refused, socket gone) is unreachable, not a bug: try again later.
  const lostPeer = /ECONNRESET|ECONNREFUSED|ENOENT|EPIPE|ECONNABORTED|socket hang up|GOAWAY|stream closed|session closed/i.test(
    `${ce.rawMessage} ${String((ce.cause as { code?: unknown } | undefined)?.code ?? "")}`,
  );
  const byStatus = reasonOfStatus(ce.code, undefined);
  const reason = byStatus === "INTERNAL" && lostPeer ? "UNAVAILABLE" : byStatus;
  return new TrellisError(reason, `${what}: ${ce.rawMessage}`, { cause: err });
}

/** Server interceptor: one log line per finished call, errors translated to statuses (STYLE.md §7). */
export function serverInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const rpc = req.method.name;
    const fail = (err: unknown): never => {
      const ce = toConnectError(err);
      const sent = ce.metadata.get(reasonMetadataKey);
      const level = sent && isReason(sent) ? logLevelOf[sent] : "error";
      const durationMs = Math.round(performance.now() - started);
      log[level](
        { rpc, code: Code[ce.code], reason: sent ?? undefined, durationMs, err },
        level === "error" ? "rpc failed" : "rpc rejected",
      );
      throw ce;
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        log.debug({ rpc, durationMs: Math.round(performance.now() - started) }, "rpc completed");
        return res;
      }
      const inner = res.message;
      async function* logged() {
        try {
          yield* inner;
          log.debug({ rpc, durationMs: Math.round(performance.now() - started) }, "rpc completed");
        } catch (err) {
          fail(err);
        }
      }
      return { ...res, message: logged() };
    } catch (err) {
      return fail(err);
    }
  };
}

/** grpc.health.v1: "" and every served service report `ready()`; other names are NOT_FOUND. */
export function addHealthService(router: ConnectRouter, services: readonly DescService[], ready: () => boolean): void {
  const known = new Set(["", ...services.map((s) => s.typeName)]);
  const status = (service: string) => {
    if (!known.has(service)) throw new ConnectError(`unknown service ${service}`, Code.NotFound);
    const s = ready() ? HealthCheckResponse_ServingStatus.SERVING : HealthCheckResponse_ServingStatus.NOT_SERVING;
    return create(HealthCheckResponseSchema, { status: s });
  };
  router.service(Health, {
    check: (req) => status(req.service),
    async *watch(req, ctx) {
      let last: HealthCheckResponse_ServingStatus | undefined;
      while (!ctx.signal.aborted) {
        const now = status(req.service);
        if (now.status !== last) yield now;
        last = now.status;
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    },
  });
}

/** gRPC server reflection, v1 and v1alpha, answered from the generated descriptors. */
export function addReflectionService(router: ConnectRouter, services: readonly DescService[]): void {
  const answer = reflectionAnswerer([...services, Health, reflectionV1.ServerReflection]);
  router.service(reflectionV1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(req);
    },
  });
  router.service(reflectionV1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        const res = answer(convert(reflectionV1.ServerReflectionRequestSchema, reflectionV1alpha.ServerReflectionRequestSchema, req));
        yield convert(reflectionV1alpha.ServerReflectionResponseSchema, reflectionV1.ServerReflectionResponseSchema, res);
      }
    },
  });
}

/** v1 and v1alpha messages are wire-identical. */
function convert<To extends DescMessage, From extends DescMessage>(to: To, from: From, msg: MessageShape<From>): MessageShape<To> {
  return fromBinary(to, toBinary(from, msg));
}

type ReflectionRequest = reflectionV1.ServerReflectionRequest;
type ReflectionResponse = reflectionV1.ServerReflectionResponse;

/** Pure: a reflection request -> its response, over the files that define `services`. */
export function reflectionAnswerer(services: readonly DescService[]): (req: ReflectionRequest) => ReflectionResponse {
  const files = new Map<string, DescFile>();
  const addFile = (file: DescFile): void => {
    if (files.has(file.name)) return;
    files.set(file.name, file);
    file.dependencies.forEach(addFile);
  };
  for (const s of services) addFile(s.file);
  const symbols = new Map<string, DescFile>();
  for (const file of files.values()) {
    for (const s of file.services) {
      symbols.set(s.typeName, file);
      for (const m of s.methods) symbols.set(`${s.typeName}.${m.name}`, file);
    }
    const addMessages = (messages: DescFile["messages"]) => {
      for (const m of messages) {
        symbols.set(m.typeName, file);
        addMessages(m.nestedMessages);
        for (const e of m.nestedEnums) symbols.set(e.typeName, file);
      }
    };
    addMessages(file.messages);
    for (const e of file.enums) symbols.set(e.typeName, file);
  }
  const withDeps = (file: DescFile): Uint8Array[] => {
    const out = new Map<string, Uint8Array>();
    const walk = (f: DescFile) => {
      if (out.has(f.name)) return;
      out.set(f.name, toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(walk);
    };
    walk(file);
    return [...out.values()];
  };
  const fileNameOf = (f: DescFile) => f.proto.name;
  const byFileName = new Map([...files.values()].map((f) => [fileNameOf(f), f]));
  const error = (code: Code, message: string): ReflectionResponse["messageResponse"] => ({
    case: "errorResponse",
    value: create(reflectionV1.ErrorResponseSchema, { errorCode: code, errorMessage: message }),
  });
  const fileResponse = (file: DescFile | undefined, what: string): ReflectionResponse["messageResponse"] =>
    file
      ? {
          case: "fileDescriptorResponse",
          value: create(reflectionV1.FileDescriptorResponseSchema, { fileDescriptorProto: withDeps(file) }),
        }
      : error(Code.NotFound, `${what} not found`);

  return (req) => {
    const r = req.messageRequest;
    let messageResponse: ReflectionResponse["messageResponse"];
    switch (r.case) {
      case "listServices":
        messageResponse = {
          case: "listServicesResponse",
          value: create(reflectionV1.ListServiceResponseSchema, {
            service: services.map((s) => create(reflectionV1.ServiceResponseSchema, { name: s.typeName })),
          }),
        };
        break;
      case "fileByFilename":
        messageResponse = fileResponse(byFileName.get(r.value), `file ${r.value}`);
        break;
      case "fileContainingSymbol":
        messageResponse = fileResponse(symbols.get(r.value.replace(/^\./, "")), `symbol ${r.value}`);
        break;
      case "allExtensionNumbersOfType":
        messageResponse = symbols.has(r.value)
          ? { case: "allExtensionNumbersResponse", value: create(reflectionV1.ExtensionNumberResponseSchema, { baseTypeName: r.value }) }
          : error(Code.NotFound, `type ${r.value} not found`);
        break;
      default:
        messageResponse = error(Code.NotFound, "extensions are not used by Trellis");
    }
    return create(reflectionV1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse });
  };
}

export interface Http2Listener {
  readonly server: http2.Http2Server;
  /** Stops accepting, lets open calls finish for up to 2 s, then cuts them. */
  close(): Promise<void>;
}

/** Serves `handler` over cleartext HTTP/2 (gRPC) on a TCP port or a unix socket path. */
export async function listenHttp2(
  handler: ReturnType<typeof connectNodeAdapter>,
  at: { port: number; host: string } | { path: string },
): Promise<Http2Listener> {
  const server = http2.createServer(handler);
  const sessions = new Set<http2.Http2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if ("path" in at) server.listen(at.path, () => resolve());
    else server.listen(at.port, at.host, () => resolve());
  });
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.close();
        server.close(() => resolve());
        setTimeout(() => {
          for (const s of sessions) s.destroy();
        }, 2_000).unref();
      }),
  };
}
