// A bare gRPC client on an HTTP/2 session, for the simulated nodes (sim-node.ts), thousands to a process.
// Same wire as connect-node's gRPC transport (the daemon's client): one uncompressed request message; the
// reply's messages; the status in the trailers, or in the headers alone (trailers-only). It skips connect's
// per-call pipeline: at 1000 nodes connect's client code was about a fifth of a worker's busy CPU, most of
// it the layers of async iterables each route-stream message went through, and these workers share the
// machine with the replicas they measure. Errors are ConnectErrors with the status's code, message and
// trailers as metadata, as connect's client throws them, so the sims read them with fromConnectError.
import { type ClientHttp2Session, type ClientHttp2Stream, constants, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";

export interface WireCallOptions {
  readonly signal?: AbortSignal;
  /** Deadline: sent as grpc-timeout, and the call is cancelled locally when it passes. */
  readonly timeoutMs?: number;
}

/** No reply of ours comes near this; a larger length prefix means the stream is not what we think it is. */
const maxMessageBytes = 64 << 20;

const deadlineMessage = "the operation timed out"; // connect's, which the benches group failures by

/** `input` as `method`'s request on the wire: one uncompressed, length-prefixed message. */
function requestFrame<I extends DescMessage>(method: { readonly input: I }, input: MessageInitShape<I>): Buffer {
  const body = toBinary(method.input, create(method.input, input));
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  return frame;
}

/**
 * A call of `method` on a plain HTTP/2 session, its stream handed back as it is: for tests that need what a
 * client hides (resetting the stream, a deadline header, a caller that never reads).
 */
export function rawCall<I extends DescMessage, O extends DescMessage>(
  session: ClientHttp2Session,
  method: DescMethodUnary<I, O> | DescMethodServerStreaming<I, O>,
  input: MessageInitShape<I>,
  headers: OutgoingHttpHeaders = {},
): ClientHttp2Stream {
  const stream = session.request({
    ":method": "POST",
    ":path": `/${method.parent.typeName}/${method.name}`,
    "content-type": "application/grpc",
    te: "trailers",
    ...headers,
  });
  stream.end(requestFrame(method, input));
  return stream;
}

/** One call's outcome from its status headers or trailers: undefined when they carry no grpc-status. */
function statusError(h: IncomingHttpHeaders): ConnectError | undefined | "ok" {
  const status = h["grpc-status"];
  if (status === undefined) return undefined;
  const code = Number(status);
  if (code === 0) return "ok";
  const metadata = new Headers();
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(":") || k === "grpc-status" || k === "grpc-message" || v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [String(v)]) metadata.append(k, one);
  }
  let message = String(h["grpc-message"] ?? "");
  try {
    message = decodeURIComponent(message);
  } catch {
    // not percent-encoded after all: keep it as sent
  }
  return new ConnectError(message, Number.isInteger(code) && code > 0 && code <= 16 ? (code as Code) : Code.Unknown, metadata);
}

/**
 * Calls `method` with `input` on `session` and hands each reply message to `onMessage` as it arrives;
 * resolves on status OK, rejects with a ConnectError otherwise (also when the connection fails, the
 * deadline passes or `signal` aborts).
 */
function call<I extends DescMessage, O extends DescMessage>(
  session: Http2SessionManager,
  method: DescMethodUnary<I, O> | DescMethodServerStreaming<I, O>,
  input: MessageInitShape<I>,
  onMessage: (m: MessageShape<O>) => void,
  opts: WireCallOptions,
): Promise<void> {
  const frame = requestFrame(method, input);
  const headers: Record<string, string> = { "content-type": "application/grpc+proto", te: "trailers" };
  if (opts.timeoutMs !== undefined) headers["grpc-timeout"] = `${Math.max(1, Math.ceil(opts.timeoutMs))}m`;

  return new Promise<void>((resolve, reject) => {
    let stream: ClientHttp2Stream | undefined;
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (err?: ConnectError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (stream && !stream.closed) stream.close(constants.NGHTTP2_CANCEL);
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => finish(new ConnectError("the operation was aborted", Code.Canceled));
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    if (opts.timeoutMs !== undefined)
      timer = setTimeout(() => finish(new ConnectError(deadlineMessage, Code.DeadlineExceeded)), opts.timeoutMs);

    session.request("POST", `/${method.parent.typeName}/${method.name}`, headers, {}).then(
      (s) => {
        stream = s;
        if (settled) return void s.close(constants.NGHTTP2_CANCEL);
        let outcome: ConnectError | undefined | "ok";
        let pending: Buffer = Buffer.alloc(0);
        s.on("response", (h) => {
          if (h[":status"] !== 200) outcome = new ConnectError(`HTTP status ${h[":status"]}`, Code.Unavailable);
          else outcome = statusError(h); // trailers-only
        });
        s.on("trailers", (h) => {
          outcome ??= statusError(h);
        });
        s.on("data", (chunk: Buffer) => {
          pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
          while (pending.length >= 5 && !settled) {
            const length = pending.readUInt32BE(1);
            if (pending[0] !== 0 || length > maxMessageBytes)
              return finish(
                new ConnectError(`reply message ${pending[0] !== 0 ? "compressed" : `of ${length} bytes`}: not accepted`, Code.Internal),
              );
            if (pending.length < 5 + length) break;
            let message: MessageShape<O>;
            try {
              message = fromBinary(method.output, pending.subarray(5, 5 + length));
            } catch (err) {
              return finish(new ConnectError(`reply message does not decode: ${String(err)}`, Code.Internal));
            }
            pending = pending.subarray(5 + length);
            try {
              onMessage(message);
            } catch (err) {
              return finish(new ConnectError(`handling a reply message failed: ${String(err)}`, Code.Internal, undefined, undefined, err));
            }
          }
        });
        s.on("error", () => undefined); // the close below says what happened
        s.on("close", () => {
          if (outcome === "ok") return finish();
          finish(outcome ?? new ConnectError(`stream closed without a status (HTTP/2 code ${s.rstCode})`, Code.Unavailable));
        });
        s.end(frame);
      },
      (err: unknown) => finish(new ConnectError(`connection failed: ${String(err)}`, Code.Unavailable, undefined, undefined, err)),
    );
  });
}

/** A unary call: its one reply message. */
export async function unaryCall<I extends DescMessage, O extends DescMessage>(
  session: Http2SessionManager,
  method: DescMethodUnary<I, O>,
  input: MessageInitShape<I>,
  opts: WireCallOptions = {},
): Promise<MessageShape<O>> {
  let reply: MessageShape<O> | undefined;
  let count = 0;
  await call(
    session,
    method,
    input,
    (m) => {
      reply = m;
      count++;
    },
    opts,
  );
  if (count !== 1 || !reply) throw new ConnectError(`a unary reply carried ${count} messages`, Code.Internal);
  return reply;
}

/** A server-streaming call: `onMessage` for each message; resolves when the server ends the stream with OK. */
export function streamCall<I extends DescMessage, O extends DescMessage>(
  session: Http2SessionManager,
  method: DescMethodServerStreaming<I, O>,
  input: MessageInitShape<I>,
  onMessage: (m: MessageShape<O>) => void,
  opts: WireCallOptions = {},
): Promise<void> {
  return call(session, method, input, onMessage, opts);
}
