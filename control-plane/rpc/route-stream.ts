// NodeService.WatchRoutes served straight on the HTTP/2 stream, beside connect-node (issue 10, 5000 nodes).
// Every stream gets every route message, so a replica writes one message per stream per publish window:
// 2500 writes a second at 2500 streams. Through connect-node each write ran the whole per-message pipeline
// (six layers of async iterables, envelope framing, the response adapter): at 5000 nodes that was the
// largest part of a replica's CPU (connect 18% self, much of the 13% in GC). Here a message is framed once
// for every stream and each stream's write is one call on its HTTP/2 stream.
//
// The same checks as the interceptors connect runs (server.ts), from the same functions: the caller's
// identity and certificate (nodeCertificateCheck), the request (validateRequest), acting only for itself
// (actFor); and the same log lines (serverInterceptor). gRPC on the wire, as connect-node speaks it: the
// request is one uncompressed message; a reply is headers, messages, and trailers with grpc-status (and
// the reason, STYLE.md §6), or the status in the headers alone when the call fails before a message.
import type { Http2ServerRequest, Http2ServerResponse, Http2Session } from "node:http2";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { reasonMetadataKey, TrellisError } from "../../proto/core/errors.js";
import { NodeService, type WatchRoutesResponse, WatchRoutesResponseSchema } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { toConnectError } from "../../proto/rpc/connect-errors.js";
import { logCallEnd } from "../../proto/rpc/interceptor.js";
import { type Peer, peerContextValues, peerKey } from "../../proto/rpc/peer-identity.js";
import type { CertificateRegistry } from "../identity/certificate-registry.js";
import type { RouteFeed } from "../routes/route-feed.js";
import { actForPeer, checkNodeCertificate } from "./authorize.js";
import { validateRequest } from "./validate.js";

const method = NodeService.method.watchRoutes;
export const watchRoutesPath = `/${NodeService.typeName}/${method.name}`;

/** A WatchRoutes request is a node name and two numbers: anything near this is not one. */
const maxRequestBytes = 4 << 10;

export interface RouteStreamDeps {
  readonly feed: Pick<RouteFeed, "subscribe">;
  readonly registry: Pick<CertificateRegistry, "isValid">;
  readonly log: Logger;
  /** Each call's peer and connection (server.ts keeps them, to cut an evicted node's streams). */
  readonly onPeer?: (peer: Peer, session: Http2Session) => void;
}

/** Whether this request is a gRPC WatchRoutes call that `serveWatchRoutes` answers (anything else goes to connect-node). */
export function isWatchRoutesCall(req: Http2ServerRequest): boolean {
  return (
    req.url === watchRoutesPath && req.method === "POST" && /^application\/grpc(\+proto)?(;|$)/.test(req.headers["content-type"] ?? "")
  );
}

/** The gRPC frame of each message, made once for every stream that sends it. */
const frames = new WeakMap<WatchRoutesResponse, Buffer>();

export function frameOf(message: WatchRoutesResponse): Buffer {
  let frame = frames.get(message);
  if (!frame) {
    const bytes = toBinary(WatchRoutesResponseSchema, message);
    frame = Buffer.allocUnsafe(5 + bytes.length);
    frame[0] = 0; // not compressed
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    frames.set(message, frame);
  }
  return frame;
}

/** grpc-timeout ("<1-8 digits><H|M|S|m|u|n>") in milliseconds; undefined when absent. */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) throw new TrellisError("INVALID_ARGUMENT", `grpc-timeout ${JSON.stringify(value.slice(0, 20))} is not a gRPC timeout`);
  const unitMs = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as "H"];
  return Number(m[1]) * unitMs;
}

/** grpc-message: percent-encoded outside printable ASCII (the gRPC HTTP/2 spec). */
export function grpcMessage(text: string): string {
  return Array.from(Buffer.from(text, "utf8"), (b) =>
    b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`,
  ).join("");
}

/** The request's one message, unframed; bounded, and refused when compressed (this server accepts no compression). */
async function readRequest(req: Http2ServerRequest): Promise<Buffer> {
  if ((req.headers["grpc-encoding"] ?? "identity") !== "identity") {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `request compressed with ${req.headers["grpc-encoding"]}; this server accepts identity only`,
    );
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxRequestBytes) throw new TrellisError("INVALID_ARGUMENT", `a WatchRoutes request is at most ${maxRequestBytes} bytes`);
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks);
  const length = body.length >= 5 ? body.readUInt32BE(1) : -1;
  if (length < 0 || body.length !== 5 + length)
    throw new TrellisError("INVALID_ARGUMENT", "a WatchRoutes request is exactly one gRPC message");
  if (body[0] !== 0) throw new TrellisError("INVALID_ARGUMENT", "the WatchRoutes request is compressed; this server accepts identity only");
  return body.subarray(5);
}

/** Waits until `res` may be written again, or the call ends. */
function drained(res: Http2ServerResponse, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

const grpcHeaders = { "content-type": "application/grpc+proto", "grpc-accept-encoding": "identity" };

/** Answers one WatchRoutes call (isWatchRoutesCall) until the caller goes away, its deadline passes, or the feed fails. */
export async function serveWatchRoutes(deps: RouteStreamDeps, req: Http2ServerRequest, res: Http2ServerResponse): Promise<void> {
  const started = performance.now();
  const call = new AbortController();
  let deadline: NodeJS.Timeout | undefined;
  let timedOut = false;
  req.stream.once("close", () => call.abort());
  try {
    const timeoutMs = parseGrpcTimeout(req.headers["grpc-timeout"] as string | undefined);
    if (timeoutMs !== undefined) {
      deadline = setTimeout(() => {
        timedOut = true;
        call.abort();
      }, timeoutMs);
    }
    const peer = peerContextValues(req).get(peerKey);
    deps.onPeer?.(peer, req.stream.session as Http2Session);
    const request = fromBinaryOrInvalid(await readRequest(req));
    validateRequest(method, request);
    await checkNodeCertificate(deps.registry, peer);
    actForPeer(peer, request.nodeName);
    res.writeHead(200, grpcHeaders);
    for await (const message of deps.feed.subscribe(call.signal, request.fromRevision, request.epoch)) {
      if (!res.write(frameOf(message))) await drained(res, call.signal);
    }
    if (timedOut) throw new TrellisError("TIMEOUT", `the route stream's deadline (grpc-timeout ${req.headers["grpc-timeout"]}) passed`);
    end(res, {});
    logCallEnd(deps.log, method.name, started);
  } catch (err) {
    if (call.signal.aborted && !timedOut) return; // the caller went away: nobody to tell
    const sent = logCallEnd(deps.log, method.name, started, err) ?? toConnectError(err);
    end(res, {
      "grpc-status": String(sent.code),
      "grpc-message": grpcMessage(sent.rawMessage),
      [reasonMetadataKey]: sent.metadata.get(reasonMetadataKey) ?? "INTERNAL",
    });
  } finally {
    clearTimeout(deadline);
  }
}

function fromBinaryOrInvalid(bytes: Uint8Array) {
  try {
    return fromBinary(method.input, bytes);
  } catch (err) {
    throw new TrellisError("INVALID_ARGUMENT", `the WatchRoutes request does not decode: ${(err as Error).message}`);
  }
}

/** Ends the call with `status` (none: OK): in the trailers after headers, or in the headers alone (trailers-only) before them. */
function end(res: Http2ServerResponse, status: Record<string, string>): void {
  if (res.stream.destroyed || res.stream.closed) return;
  const trailers = { "grpc-status": "0", ...status };
  if (res.headersSent) res.addTrailers(trailers);
  else res.writeHead(200, { ...grpcHeaders, ...trailers });
  res.end();
}
