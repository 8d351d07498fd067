// One unary gRPC call over HTTP/2 (RFC 9113; grpc/doc/PROTOCOL-HTTP2.md) on a byte stream the caller
// dials: the shim's whole transport, so it loads no HTTP/2 or socket library (notes/thin-shim-anchors.md).
// Pure over the `Conn` port: cni-shim/bun-socket.ts dials the daemon in the shim; tests dial with node:net.
//
// The request goes out in one write: preface, SETTINGS (no dynamic HPACK table, no push, large stream
// windows), a connection WINDOW_UPDATE (so replies of any allowed size need no further flow control),
// HEADERS and DATA. Replies: headers + DATA + trailers, or trailers-only; SETTINGS are acknowledged and
// PINGs echoed; RST_STREAM, GOAWAY and EOF end the call with a status, as a gRPC client would.
import { decodeHeaderBlock, encodeHeaderBlock, type Header } from "./hpack.js";

/** A connected byte stream to the server. */
export interface Conn {
  write(bytes: Uint8Array): void;
  close(): void;
}

export interface ConnEvents {
  data(bytes: Uint8Array): void;
  /** The stream ended (EOF or error); no more data follows. */
  closed(err?: Error): void;
}

/** Connects to `address`; rejects (with the system error, e.g. ENOENT) when nobody listens there. */
export type Dial = (address: string, events: ConnEvents) => Promise<Conn>;

/** gRPC status codes the client itself produces. */
export const grpcStatus = {
  ok: 0,
  cancelled: 1,
  unknown: 2,
  invalidArgument: 3,
  deadlineExceeded: 4,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
} as const;

export interface UnaryReply {
  /** gRPC status: 0 is success. */
  readonly status: number;
  readonly message: string;
  /** Response headers and trailers, lowercase names (later values win). */
  readonly metadata: ReadonlyMap<string, string>;
  /** The reply message, when the status is 0. */
  readonly body?: Uint8Array;
  /** True when the call may not have reached the server's handler at all (safe to retry anything). */
  readonly notSent?: boolean;
}

export interface UnaryOptions {
  readonly timeoutMs: number;
  /** Largest reply message accepted. */
  readonly maxReplyBytes?: number;
}

const frameType = { data: 0, headers: 1, rstStream: 3, settings: 4, ping: 6, goaway: 7, windowUpdate: 8, continuation: 9 } as const;
const flags = { endStream: 0x1, ack: 0x1, endHeaders: 0x4, padded: 0x8, priority: 0x20 } as const;
const settings = { headerTableSize: 0x1, enablePush: 0x2, initialWindowSize: 0x4 } as const;
const maxWindow = 0x7fffffff;
const maxFrameSize = 16_384;
/** HTTP/2's initial flow-control window: a request this small is never held back by the server. */
const maxRequestBytes = 65_535;
const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const streamId = 1;

function frame(type: number, flagBits: number, stream: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, (payload.length << 8) | type);
  v.setUint8(4, flagBits);
  v.setUint32(5, stream & maxWindow);
  out.set(payload, 9);
  return out;
}

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/** A SETTINGS payload: (identifier, value) pairs. */
function settingsPayload(pairs: readonly (readonly [number, number])[]): Uint8Array {
  const out = new Uint8Array(pairs.length * 6);
  const v = new DataView(out.buffer);
  pairs.forEach(([id, value], i) => {
    v.setUint16(i * 6, id);
    v.setUint32(i * 6 + 2, value);
  });
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Every byte the client sends for one call. */
export function requestBytes(authority: string, path: string, message: Uint8Array, timeoutMs: number): Uint8Array {
  const headers: Header[] = [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", authority],
    ["content-type", "application/grpc+proto"],
    ["te", "trailers"],
    ["grpc-timeout", `${Math.max(1, Math.ceil(timeoutMs))}m`],
  ];
  const block = encodeHeaderBlock(headers);
  if (block.length > maxFrameSize) throw new Error("request headers exceed one HTTP/2 frame");
  const grpcMessage = new Uint8Array(5 + message.length);
  new DataView(grpcMessage.buffer).setUint32(1, message.length);
  grpcMessage.set(message, 5);
  const parts: Uint8Array[] = [
    preface,
    frame(
      frameType.settings,
      0,
      0,
      settingsPayload([
        [settings.headerTableSize, 0],
        [settings.enablePush, 0],
        [settings.initialWindowSize, maxWindow],
      ]),
    ),
    frame(frameType.windowUpdate, 0, 0, u32(maxWindow - 65_535)), // the connection window starts at 65,535
    frame(frameType.headers, flags.endHeaders, streamId, block),
  ];
  for (let at = 0; at < grpcMessage.length; at += maxFrameSize) {
    const chunk = grpcMessage.subarray(at, at + maxFrameSize);
    parts.push(frame(frameType.data, at + maxFrameSize >= grpcMessage.length ? flags.endStream : 0, streamId, chunk));
  }
  return concat(parts);
}

/** Maps a reply without grpc-status by its HTTP status (grpc/doc/http-grpc-status-mapping.md). */
function statusOfHttp(http: string | undefined): number {
  const table: Record<string, number> = { "400": 13, "401": 16, "403": 7, "404": 12, "429": 14, "502": 14, "503": 14, "504": 14 };
  return table[http ?? ""] ?? grpcStatus.unknown;
}

/** grpc-message is percent-encoded UTF-8; decode leniently (a bad escape stays as it is). */
export function decodeGrpcMessage(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Reads frames from the connection and turns them into the call's outcome. */
class ReplyReader {
  private buffered: Uint8Array = new Uint8Array(0);
  private headerBlock: Uint8Array[] = [];
  private headerBlockEnds = false;
  private blocks = 0;
  private readonly body: Uint8Array[] = [];
  private bodyBytes = 0;
  readonly metadata = new Map<string, string>();
  private httpStatus: string | undefined;
  outcome: UnaryReply | undefined;

  constructor(
    private readonly send: (bytes: Uint8Array) => void,
    private readonly maxReplyBytes: number,
  ) {}

  push(bytes: Uint8Array): void {
    this.buffered = this.buffered.length ? concat([this.buffered, bytes]) : bytes;
    while (!this.outcome && this.buffered.length >= 9) {
      const v = new DataView(this.buffered.buffer, this.buffered.byteOffset, this.buffered.byteLength);
      const length = v.getUint32(0) >>> 8;
      if (length > maxFrameSize) {
        this.fail(grpcStatus.internal, `the daemon sent a ${length}-byte frame (largest allowed ${maxFrameSize})`);
        return;
      }
      if (this.buffered.length < 9 + length) return;
      const type = v.getUint8(3);
      const flagBits = v.getUint8(4);
      const stream = v.getUint32(5) & maxWindow;
      const payload = this.buffered.subarray(9, 9 + length);
      this.buffered = this.buffered.subarray(9 + length);
      this.onFrame(type, flagBits, stream, payload);
    }
  }

  private fail(status: number, message: string, notSent = false): void {
    this.outcome ??= { status, message, metadata: this.metadata, notSent };
  }

  private onFrame(type: number, flagBits: number, stream: number, payload: Uint8Array): void {
    const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    if (this.headerBlock.length > 0 && type !== frameType.continuation) {
      this.fail(grpcStatus.internal, "the daemon interrupted a header block (HTTP/2 protocol error)");
      return;
    }
    switch (type) {
      case frameType.settings:
        if (!(flagBits & flags.ack)) this.send(frame(frameType.settings, flags.ack, 0));
        return;
      case frameType.ping:
        if (!(flagBits & flags.ack)) this.send(frame(frameType.ping, flags.ack, 0, payload));
        return;
      case frameType.goaway: {
        const lastStream = payload.length >= 4 ? v.getUint32(0) & maxWindow : 0;
        // A GOAWAY that covers our stream lets it finish; one that does not means it was never processed.
        if (lastStream < streamId) this.fail(grpcStatus.unavailable, "the daemon is shutting down and did not take the call", true);
        return;
      }
      case frameType.rstStream:
        if (stream === streamId) {
          const code = payload.length >= 4 ? v.getUint32(0) : 0;
          // REFUSED_STREAM (7): not processed, safe to retry.
          this.fail(grpcStatus.unavailable, `the daemon reset the call (HTTP/2 error ${code})`, code === 7);
        }
        return;
      case frameType.headers:
      case frameType.continuation:
        if (stream !== streamId) return;
        {
          this.onHeaders(type, flagBits, payload);
          return;
        }
      case frameType.data:
        if (stream !== streamId) return;
        {
          this.onData(flagBits, payload);
          return;
        }
      default:
        return; // WINDOW_UPDATE, PRIORITY, unknown types: nothing to do (RFC 9113 §5.5)
    }
  }

  private unpad(flagBits: number, payload: Uint8Array): Uint8Array | undefined {
    if (!(flagBits & flags.padded)) return payload;
    const pad = payload[0] ?? 0;
    if (pad >= payload.length) {
      this.fail(grpcStatus.internal, "the daemon sent a frame with too much padding (HTTP/2 protocol error)");
      return undefined;
    }
    return payload.subarray(1, payload.length - pad);
  }

  private onHeaders(type: number, flagBits: number, payload: Uint8Array): void {
    let fragment: Uint8Array | undefined = payload;
    if (type === frameType.headers) {
      fragment = this.unpad(flagBits, payload);
      if (fragment && flagBits & flags.priority) fragment = fragment.subarray(5);
      this.headerBlockEnds = (flagBits & flags.endStream) !== 0;
    }
    if (!fragment) return;
    this.headerBlock.push(fragment);
    if (!(flagBits & flags.endHeaders)) return;
    const block = concat(this.headerBlock);
    this.headerBlock = [];
    let fields: Header[];
    try {
      fields = decodeHeaderBlock(block);
    } catch (err) {
      this.fail(grpcStatus.internal, `could not decode the daemon's reply headers: ${(err as Error).message}`);
      return;
    }
    this.blocks++;
    for (const [name, value] of fields) {
      if (name === ":status") this.httpStatus = value;
      else this.metadata.set(name, value);
    }
    if (this.blocks === 1) {
      const contentType = this.metadata.get("content-type") ?? "";
      if (this.httpStatus !== "200") {
        this.fail(statusOfHttp(this.httpStatus), `the daemon answered HTTP ${this.httpStatus ?? "without a status"}`);
        return;
      }
      if (!contentType.startsWith("application/grpc")) {
        this.fail(grpcStatus.unknown, `the daemon answered content-type ${JSON.stringify(contentType)}, not gRPC`);
        return;
      }
    }
    if (this.headerBlockEnds) this.finish();
  }

  private onData(flagBits: number, payload: Uint8Array): void {
    const data = this.unpad(flagBits, payload);
    if (!data) return;
    this.bodyBytes += data.length;
    if (this.bodyBytes > this.maxReplyBytes + 5) {
      this.fail(grpcStatus.internal, `the daemon's reply exceeds ${this.maxReplyBytes} bytes`);
      return;
    }
    this.body.push(data);
    if (flagBits & flags.endStream) this.finish(); // DATA with END_STREAM and no trailers: no grpc-status
  }

  private finish(): void {
    const raw = this.metadata.get("grpc-status");
    const status = raw === undefined ? statusOfHttp(this.httpStatus) : Number(raw);
    const message = decodeGrpcMessage(this.metadata.get("grpc-message") ?? "");
    if (raw === undefined) {
      this.fail(status, "the daemon's reply has no grpc-status");
      return;
    }
    if (!Number.isInteger(status)) {
      this.fail(grpcStatus.internal, `the daemon sent grpc-status ${JSON.stringify(raw)}`);
      return;
    }
    if (status !== grpcStatus.ok) {
      this.fail(status, message);
      return;
    }
    const bytes = concat(this.body);
    if (bytes.length < 5) {
      this.fail(grpcStatus.internal, "the daemon's reply holds no message");
      return;
    }
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (v.getUint8(0) !== 0) {
      this.fail(grpcStatus.internal, "the daemon sent a compressed message the shim did not ask for");
      return;
    }
    const length = v.getUint32(1);
    if (length !== bytes.length - 5) {
      this.fail(grpcStatus.internal, "the daemon's reply message is truncated or has trailing bytes");
      return;
    }
    this.outcome = { status, message, metadata: this.metadata, body: bytes.subarray(5) };
  }
}

/**
 * Makes one call and resolves with its outcome; never rejects. A dial failure is UNAVAILABLE with
 * `notSent`; the deadline is DEADLINE_EXCEEDED (the stream is reset, as gRPC clients do).
 */
export async function unaryCall(
  dial: Dial,
  address: string,
  path: string,
  message: Uint8Array,
  options: UnaryOptions,
): Promise<UnaryReply> {
  const started = performance.now();
  if (message.length + 5 > maxRequestBytes) {
    // Within the server's initial flow-control window, so the request never waits for a WINDOW_UPDATE.
    // Oversized inputs (a huge container id, pod name or GC list) made it: INVALID_ARGUMENT, not a bug.
    return {
      status: grpcStatus.invalidArgument,
      message: `the request is ${message.length} bytes; the shim sends at most ${maxRequestBytes - 5}`,
      metadata: new Map(),
      notSent: true,
    };
  }
  return new Promise<UnaryReply>((resolve) => {
    let conn: Conn | undefined;
    let settled = false;
    const done = (reply: UnaryReply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn?.close();
      resolve(reply);
    };
    const reader = new ReplyReader((bytes) => conn?.write(bytes), options.maxReplyBytes ?? 4 << 20);
    const timer = setTimeout(() => {
      conn?.write(frame(frameType.rstStream, 0, streamId, u32(8))); // CANCEL
      done({ status: grpcStatus.deadlineExceeded, message: `no answer within ${options.timeoutMs} ms`, metadata: reader.metadata });
    }, options.timeoutMs);
    dial(address, {
      data(bytes) {
        reader.push(bytes);
        if (reader.outcome) done(reader.outcome);
      },
      closed(err) {
        const why = err ? `: ${err.message}` : "";
        done({
          status: grpcStatus.unavailable,
          message: `the daemon closed the connection before answering${why}`,
          metadata: reader.metadata,
        });
      },
    }).then(
      (c) => {
        conn = c;
        if (settled) return c.close();
        const left = options.timeoutMs - (performance.now() - started);
        c.write(requestBytes("trellis-daemon", path, message, left));
      },
      (err: unknown) => {
        const code = (err as { code?: string }).code;
        const text = code === "ENOENT" || code === "ECONNREFUSED" ? "the daemon is not running" : "could not connect";
        done({
          status: grpcStatus.unavailable,
          message: `${text} (${code ?? (err as Error).message})`,
          metadata: new Map(),
          notSent: true,
        });
      },
    );
  });
}
