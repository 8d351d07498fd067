// Issue 9, point 7 (DESIGN.md §6: every input from outside is bounded): malformed HTTP/2 and gRPC against
// every Trellis listener, in process, so a crash fails the test and the server's memory is measurable.
// The control plane's mutual-TLS port is reached with a viewer's certificate (an authenticated peer gone
// bad), its join port with no certificate at all (anyone on the network), the daemon's unix socket in
// cleartext. After each case the server still answers a health check, and once the abuse ends and the
// heap is collected, the heap is within 100 MiB of where it started.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import tls from "node:tls";
import v8 from "node:v8";
import vm from "node:vm";
import { gzipSync } from "node:zlib";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { encodeHeaderBlock, type Header } from "../../cni-shim/hpack.js";
import { AttachmentService } from "../../node-daemon/cni/attachment-service.js";
import { type DaemonServer, startDaemonServer } from "../../node-daemon/rpc/server.js";
import { Cidr } from "../../proto/core/cidr.js";
import type { Identity } from "../../proto/core/identity.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { type ListenerLimits, serverLimits } from "../../proto/rpc/listen.js";
import { createCertificateAuthority, generateKeyPair, issueCertificate } from "../../proto/rpc/x509.js";
import { type InProcessControlPlane, namespace, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";
import { MemoryAllocationJournal, RecordingNetlink } from "../support/fakes.js";
import { waitFor } from "../support/wait.js";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** The heap after collecting garbage until it stops shrinking. */
async function settledHeap(): Promise<number> {
  let last = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 6; i++) {
    gc();
    await delay(20);
    const now = process.memoryUsage().heapUsed;
    if (now >= last - (256 << 10)) return now;
    last = now;
  }
  return last;
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

// --- HTTP/2 frames, written by hand (RFC 9113 §4, §6) ---------------------------------------------------

const type = {
  data: 0,
  headers: 1,
  priority: 2,
  rstStream: 3,
  settings: 4,
  pushPromise: 5,
  ping: 6,
  goaway: 7,
  windowUpdate: 8,
  continuation: 9,
};
const flag = { endStream: 0x1, ack: 0x1, endHeaders: 0x4 };
const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One frame; `length` may lie about the payload. */
function frame(t: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0), length = payload.length): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(length, 0, 3);
  head[3] = t;
  head[4] = flags;
  head.writeUInt32BE(stream >>> 0, 5);
  return Buffer.concat([head, payload]);
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
/** Our SETTINGS: no dynamic HPACK table (so headers need no state), as the shim sends them. */
const clientSettings = frame(type.settings, 0, 0, Buffer.from([0, 1, 0, 0, 0, 0]));

const healthPath = "/grpc.health.v1.Health/Check";
function requestHeaders(path = healthPath, extra: Header[] = []): Buffer {
  return Buffer.from(
    encodeHeaderBlock([
      [":method", "POST"],
      [":scheme", "https"],
      [":path", path],
      [":authority", "localhost"],
      ["content-type", "application/grpc+proto"],
      ["te", "trailers"],
      ...extra,
    ]),
  );
}
/** A gRPC message frame: flag byte, 4-byte length (which may lie), payload. */
function grpcMessage(payload: Buffer, length = payload.length, compressed = false): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(length >>> 0, 1);
  return Buffer.concat([head, payload]);
}

interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

/** A byte stream to a server (past TLS when there is one) that reads the server's frames. */
class RawConnection {
  readonly frames: Frame[] = [];
  closed = false;
  private buffered = Buffer.alloc(0);
  private readonly waiters = new Set<() => void>();

  /** `ack`: acknowledge the server's SETTINGS, as every conforming client does (it applies them then). */
  constructor(
    readonly socket: net.Socket,
    ack = true,
  ) {
    socket.on("data", (bytes: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, bytes]);
      while (this.buffered.length >= 9) {
        const length = this.buffered.readUIntBE(0, 3);
        if (this.buffered.length < 9 + length) break;
        const f = {
          type: this.buffered[3] ?? 0,
          flags: this.buffered[4] ?? 0,
          stream: this.buffered.readUInt32BE(5) & 0x7fffffff,
          payload: this.buffered.subarray(9, 9 + length),
        };
        this.frames.push(f);
        if (ack && f.type === type.settings && !(f.flags & flag.ack)) void this.write(frame(type.settings, flag.ack, 0));
        this.buffered = this.buffered.subarray(9 + length);
      }
      this.wake();
    });
    socket.on("error", () => undefined); // a reset by the server is an expected outcome here
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  write(bytes: Buffer): Promise<void> {
    if (this.socket.destroyed || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      if (!this.socket.write(bytes)) this.socket.once("drain", resolve).once("close", resolve);
      else resolve();
    });
  }

  /** The error code of the server's GOAWAY, if it sent one. */
  get goaway(): number | undefined {
    const g = this.frames.find((f) => f.type === type.goaway);
    return g && g.payload.length >= 8 ? g.payload.readUInt32BE(4) : undefined;
  }

  /** Resolves true once `check` holds, false after `ms`. */
  async until(check: () => boolean, ms = 5_000): Promise<boolean> {
    if (check()) return true;
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        resolve(ok);
      };
      const waiter = () => {
        if (check()) done(true);
      };
      const timer = setTimeout(() => done(check()), ms);
      this.waiters.add(waiter);
    });
  }

  /** The connection ended: the server sent GOAWAY or closed it. */
  ended(ms = 5_000): Promise<boolean> {
    return this.until(() => this.closed || this.goaway !== undefined, ms);
  }

  close(): void {
    this.socket.destroy();
  }
}

// --- the servers under test ----------------------------------------------------------------------------

interface Target {
  readonly name: string;
  readonly maxMessageBytes: number;
  readonly limits: ListenerLimits;
  /** Connects a byte stream (TLS negotiated, h2 by ALPN, for the TCP targets). */
  socket(): Promise<net.Socket>;
  /** A node:http2 client session. */
  session(): http2.ClientHttp2Session;
  /** A normal call from a well-behaved client. */
  healthy(): Promise<void>;
  /** Raw TCP (before any TLS), for the TLS targets. */
  tcp?: () => { port: number };
}

let etcd: EtcdHandle;
let cp: InProcessControlPlane;
let daemon: DaemonServer;
let dir = "";
let socketPath = "";
let caPem = "";
const creds = new Map<string, { cert: string; key: string }>();

function hostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
}

function tlsSocket(address: string, who?: string): Promise<net.Socket> {
  const cred = who ? creds.get(who) : undefined;
  return new Promise((resolve, reject) => {
    const s = tls.connect({ ...hostPort(address), ca: caPem, ...cred, servername: "localhost", ALPNProtocols: ["h2"] });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

const healthOf = (transport: ReturnType<typeof createGrpcTransport>) => async () => {
  const res = await createClient(Health, transport).check({ service: "" }, { timeoutMs: 10_000 });
  expect(res.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
};

const targets: Target[] = [
  {
    name: "control plane, mutual TLS (a viewer's certificate)",
    maxMessageBytes: serverLimits.maxMessageBytes,
    limits: serverLimits,
    socket: () => tlsSocket(cp.address, "viewer"),
    session: () => http2.connect(`https://${cp.address}`, { ca: caPem, ...creds.get("viewer"), servername: "localhost" }),
    healthy: () => healthOf(createGrpcTransport({ baseUrl: `https://${cp.address}`, nodeOptions: { ca: caPem, ...creds.get("admin") } }))(),
    tcp: () => hostPort(cp.address),
  },
  {
    name: "control plane join port, server TLS (no certificate)",
    maxMessageBytes: 64 << 10,
    limits: { maxConnections: 1_024, maxCallsInFlight: 256 }, // control-plane/rpc/server.ts
    socket: () => tlsSocket(cp.joinAddress ?? ""),
    session: () => http2.connect(`https://${cp.joinAddress}`, { ca: caPem, servername: "localhost" }),
    healthy: () => healthOf(createGrpcTransport({ baseUrl: `https://${cp.joinAddress}`, nodeOptions: { ca: caPem } }))(),
    tcp: () => hostPort(cp.joinAddress ?? ""),
  },
  {
    name: "node daemon, unix socket",
    maxMessageBytes: serverLimits.maxMessageBytes,
    limits: serverLimits,
    socket: () =>
      new Promise((resolve, reject) => {
        const s = net.connect(socketPath);
        s.once("connect", () => resolve(s));
        s.once("error", reject);
      }),
    session: () => http2.connect("http://daemon", { createConnection: () => net.connect(socketPath) }),
    healthy: () =>
      healthOf(createGrpcTransport({ baseUrl: "http://daemon", nodeOptions: { createConnection: () => net.connect(socketPath) } }))(),
  },
];

async function credential(
  ca: Awaited<ReturnType<typeof createCertificateAuthority>>,
  identity: Identity,
  server?: { dnsNames: string[]; ips: string[] },
) {
  const keys = await generateKeyPair();
  return { cert: await issueCertificate(ca, { identity, publicKey: keys.publicKey, lifetimeS: 3600, server }), key: keys.privateKeyPem };
}

beforeAll(async () => {
  etcd = await startEtcd();
  const ca = await createCertificateAuthority("trellis-abuse-ca", 1);
  caPem = ca.certificatePem;
  creds.set("admin", await credential(ca, { kind: "admin", name: "alice" }));
  creds.set("viewer", await credential(ca, { kind: "viewer", name: "mallory" }));
  const server = await credential(ca, { kind: "control-plane", name: "cp-1" }, { dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root: namespace(), tls: { ...server, ca: caPem }, ca });

  dir = await mkdtemp(join(tmpdir(), "trellis-http2-abuse-"));
  socketPath = join(dir, "cni.sock");
  const cni = new AttachmentService({
    net: new RecordingNetlink(),
    journal: new MemoryAllocationJournal(),
    log: pino({ level: "silent" }),
    clock: Date.now,
    pathExists: async () => true,
  });
  await cni.start({ subnet: Cidr.parse("10.244.1.0/24"), bridgeName: "trellis0", mtu: 1500 });
  daemon = await startDaemonServer({
    cni,
    log: pino({ level: "silent" }),
    socketPath,
    status: () => ({ subnet: "10.244.1.0/24", routesCurrent: true, detail: "" }),
  });
});

afterAll(async () => {
  await daemon?.close();
  await cp?.stop();
  await etcd?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Opens a raw connection and sends the client preface and SETTINGS (unless told not to). */
async function connect(t: Target, { hello = true, ack = true } = {}): Promise<RawConnection> {
  const conn = new RawConnection(await t.socket(), ack);
  if (hello) await conn.write(Buffer.concat([preface, clientSettings]));
  return conn;
}

/** A health check written by hand on `stream`. */
const healthCall = (stream: number) =>
  Buffer.concat([
    frame(type.headers, flag.endHeaders, stream, requestHeaders()),
    frame(type.data, flag.endStream, stream, grpcMessage(Buffer.alloc(0))),
  ]);

/**
 * The server refused what it was sent (it ended the connection, or reset a stream), or ignored it and
 * answers a call on the same connection as if nothing had happened.
 */
async function refusedOrIgnored(c: RawConnection): Promise<string> {
  const refused = () => c.closed || c.goaway !== undefined || c.frames.some((f) => f.type === type.rstStream);
  if (await c.until(refused, 1_000)) return "refused";
  await c.write(healthCall(101));
  const answered = () => c.frames.some((f) => f.stream === 101 && f.type === type.headers && f.flags & flag.endStream);
  if (await c.until(() => refused() || answered())) return answered() ? "ignored" : "refused";
  return "neither refused nor answered";
}

/** A gRPC call's status on a node:http2 session: from the response headers (trailers-only) or trailers. */
function grpcStatusOf(req: http2.ClientHttp2Stream, ms = 10_000): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve("no answer"), ms);
    const take = (h: http2.IncomingHttpHeaders) => {
      const s = h["grpc-status"];
      if (s !== undefined) {
        clearTimeout(timer);
        resolve(String(s));
      }
    };
    req.on("response", take);
    req.on("trailers", take);
    req.on("error", (err) => {
      clearTimeout(timer);
      resolve(`stream error: ${err.message}`);
    });
    req.on("close", () => {
      clearTimeout(timer);
      resolve(`closed (rst ${req.rstCode})`);
    });
    req.resume();
  });
}

function grpcRequest(session: http2.ClientHttp2Session, extra: http2.OutgoingHttpHeaders = {}): http2.ClientHttp2Stream {
  return session.request({
    ":method": "POST",
    ":path": healthPath,
    "content-type": "application/grpc+proto",
    te: "trailers",
    ...extra,
  });
}

describe.each(targets)("$name", (t) => {
  let baseline = 0;
  const open: RawConnection[] = [];
  const sessions: http2.ClientHttp2Session[] = [];

  beforeAll(async () => {
    await t.healthy();
    baseline = await settledHeap();
  });
  afterEach(async () => {
    for (const c of open.splice(0)) c.close();
    for (const s of sessions.splice(0)) s.destroy();
    await t.healthy();
    const heap = await settledHeap();
    expect(heap - baseline, `heap ${mib(heap)} against ${mib(baseline)} before`).toBeLessThan(100 << 20);
  });
  const raw = async (options: { hello?: boolean; ack?: boolean } = {}) => {
    const c = await connect(t, options);
    open.push(c);
    return c;
  };

  it.skipIf(!t.tcp)("garbage before the TLS handshake: the connection is dropped", async () => {
    const { port } = t.tcp?.() ?? { port: 0 };
    const s = net.connect(port, "127.0.0.1");
    const c = new RawConnection(s);
    open.push(c);
    await new Promise((resolve) => s.once("connect", resolve));
    await c.write(randomBytes(64 << 10));
    expect(await c.until(() => c.closed)).toBe(true);
  });

  it.each([
    ["random bytes", () => randomBytes(64 << 10)],
    [
      "an HTTP/1.1 request",
      () => Buffer.from("POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0"),
    ],
    ["a preface cut short", () => preface.subarray(0, 10)],
    ["a preface with one byte wrong", () => Buffer.concat([preface.subarray(0, 5), Buffer.from("X"), preface.subarray(6), clientSettings])],
  ])("%s instead of the HTTP/2 preface: the connection ends", async (_what, bytes) => {
    const c = await raw({ hello: false });
    await c.write(bytes());
    if (bytes().length < preface.length) c.socket.end(); // nothing more is coming
    expect(await c.ended()).toBe(true);
  });

  it.each([
    ["SETTINGS whose length is not a multiple of 6", frame(type.settings, 0, 0, Buffer.alloc(7))],
    ["SETTINGS on a stream", frame(type.settings, 0, 1, Buffer.alloc(0))],
    ["SETTINGS ACK with a payload", frame(type.settings, flag.ack, 0, Buffer.alloc(6))],
    ["SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1", frame(type.settings, 0, 0, Buffer.from([0, 4, 0x80, 0, 0, 0]))],
    ["SETTINGS_MAX_FRAME_SIZE below 16384", frame(type.settings, 0, 0, Buffer.from([0, 5, 0, 0, 0, 1]))],
    ["a frame header claiming 16 MiB", frame(type.data, 0, 1, Buffer.alloc(0), (1 << 24) - 1)],
    ["a frame larger than SETTINGS_MAX_FRAME_SIZE", frame(type.headers, flag.endHeaders, 1, Buffer.alloc(20_000))],
    ["DATA on stream 0", frame(type.data, 0, 0, Buffer.alloc(8))],
    ["HEADERS on stream 0", frame(type.headers, flag.endHeaders, 0, requestHeaders())],
    ["HEADERS on an even (server) stream id", frame(type.headers, flag.endHeaders, 2, requestHeaders())],
    ["PING whose length is not 8", frame(type.ping, 0, 0, Buffer.alloc(7))],
    ["PING on a stream", frame(type.ping, 0, 1, Buffer.alloc(8))],
    ["WINDOW_UPDATE of 0 on the connection", frame(type.windowUpdate, 0, 0, u32(0))],
    [
      "WINDOW_UPDATE overflowing the connection window",
      Buffer.concat([frame(type.windowUpdate, 0, 0, u32(0x7fffffff)), frame(type.windowUpdate, 0, 0, u32(0x7fffffff))]),
    ],
    ["RST_STREAM on stream 0", frame(type.rstStream, 0, 0, u32(8))],
    ["RST_STREAM on an idle stream", frame(type.rstStream, 0, 11, u32(8))],
    ["GOAWAY on a stream", frame(type.goaway, 0, 1, Buffer.alloc(8))],
    ["PUSH_PROMISE from a client", frame(type.pushPromise, flag.endHeaders, 1, Buffer.concat([u32(2), requestHeaders()]))],
    ["CONTINUATION without HEADERS", frame(type.continuation, flag.endHeaders, 1, requestHeaders())],
    ["HEADERS with an HPACK index past both tables", frame(type.headers, flag.endHeaders, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))],
    ["HEADERS with a truncated HPACK literal", frame(type.headers, flag.endHeaders, 1, Buffer.from([0x00, 0x7f, 0xff, 0x0f, 0x61]))],
    [
      "HEADERS with an invalid Huffman string",
      frame(type.headers, flag.endHeaders, 1, Buffer.from([0x00, 0x84, 0x00, 0x00, 0x00, 0x00, 0x01, 0x61])),
    ],
    [
      "HEADERS with a dynamic table size above the announced one",
      frame(type.headers, flag.endHeaders, 1, Buffer.from([0x3f, 0xe1, 0xff, 0xff, 0x0f])),
    ],
    [
      "HEADERS interrupted by another stream's HEADERS",
      Buffer.concat([frame(type.headers, 0, 1, requestHeaders()), frame(type.headers, flag.endHeaders, 3, requestHeaders())]),
    ],
    [
      "HEADERS whose stream id goes backwards",
      Buffer.concat([frame(type.headers, flag.endHeaders, 5, requestHeaders()), frame(type.headers, flag.endHeaders, 3, requestHeaders())]),
    ],
    ["PRIORITY of a stream on itself", frame(type.priority, 0, 1, Buffer.concat([u32(1), Buffer.from([16])]))],
  ])("after a valid preface, %s: refused, or ignored without harm", async (_what, bytes) => {
    const c = await raw();
    await c.write(bytes);
    // Connection errors end the connection, stream errors reset the stream; nghttp2 ignores a few
    // (HEADERS on a stream id below the last one): then the connection still serves.
    expect(["refused", "ignored"]).toContain(await refusedOrIgnored(c));
  });

  it("unknown frame types, on the connection and on a stream, are ignored: the call after them succeeds", async () => {
    const c = await raw();
    await c.write(
      Buffer.concat([frame(0xfa, 0xff, 0, randomBytes(100)), frame(0x0b, 0, 1, randomBytes(16)), frame(0xff, 0, 7, Buffer.alloc(0))]),
    );
    await c.write(
      Buffer.concat([
        frame(type.headers, flag.endHeaders, 1, requestHeaders()),
        frame(type.data, flag.endStream, 1, grpcMessage(Buffer.alloc(0))),
      ]),
    );
    expect(await c.until(() => c.frames.some((f) => f.stream === 1 && f.type === type.headers && f.flags & flag.endStream))).toBe(true);
    expect(c.goaway).toBeUndefined();
    expect(c.closed).toBe(false);
  });

  it("a gRPC length prefix of 1 GiB is refused at once (RESOURCE_EXHAUSTED), without waiting for the bytes", async () => {
    const session = t.session();
    sessions.push(session);
    const req = grpcRequest(session);
    req.write(grpcMessage(Buffer.alloc(1024), 1 << 30)); // and the stream stays open
    expect(await grpcStatusOf(req, 5_000)).toBe("8");
  });

  it("a message just above the server's limit is refused with RESOURCE_EXHAUSTED", async () => {
    const session = t.session();
    sessions.push(session);
    const req = grpcRequest(session);
    req.end(grpcMessage(Buffer.alloc(t.maxMessageBytes + 1)));
    expect(await grpcStatusOf(req)).toBe("8");
  });

  it("a compressed message that inflates past the limit (a gzip bomb) is refused, and its inflation cut short", async () => {
    const session = t.session();
    sessions.push(session);
    const bomb = gzipSync(Buffer.alloc(64 << 20));
    const before = process.memoryUsage().rss;
    const req = grpcRequest(session, { "grpc-encoding": "gzip" });
    req.end(grpcMessage(bomb, bomb.length, true));
    const status = await grpcStatusOf(req);
    expect(["8", "12"]).toContain(status); // RESOURCE_EXHAUSTED, or UNIMPLEMENTED where gzip is not accepted
    expect(process.memoryUsage().rss - before).toBeLessThan(48 << 20);
  });

  it("a header list over 16 KiB is refused (RST_STREAM), once the client has acknowledged the server's SETTINGS", async () => {
    const c = await raw();
    await c.until(() => c.frames.some((f) => f.type === type.settings && !(f.flags & flag.ack)));
    await delay(50); // our ACK is on its way: the server's limits apply from it (RFC 9113 §6.5.3)
    const block = Buffer.concat([
      requestHeaders(),
      Buffer.from(
        encodeHeaderBlock([
          ["x-big", "a".repeat(15_000)],
          ["x-big2", "b".repeat(15_000)],
        ]),
      ),
    ]);
    await c.write(
      Buffer.concat([
        frame(type.headers, flag.endStream, 1, block.subarray(0, 16_000)),
        frame(type.continuation, 0, 1, block.subarray(16_000, 32_000)),
        frame(type.continuation, flag.endHeaders, 1, block.subarray(32_000)),
      ]),
    );
    expect(
      await c.until(() => c.closed || c.goaway !== undefined || c.frames.some((f) => f.type === type.rstStream && f.stream === 1)),
    ).toBe(true);
    expect(c.frames.some((f) => f.stream === 1 && f.type === type.headers)).toBe(false);
  });

  it("an endless CONTINUATION (a header block that never ends), SETTINGS never acknowledged: cut off before it costs memory", async () => {
    const c = await raw({ ack: false });
    const filler = Buffer.from(encodeHeaderBlock(Array.from({ length: 15 }, (_, i): Header => [`x-${i}`, "c".repeat(1_000)])));
    await c.write(frame(type.headers, 0, 1, requestHeaders()));
    let sent = 0;
    for (let i = 0; i < 4_000 && !c.closed && c.goaway === undefined; i++) {
      await c.write(frame(type.continuation, 0, 1, filler));
      sent += filler.length;
    }
    expect(await c.ended(), `sent ${mib(sent)} of CONTINUATION and the connection is still open`).toBe(true);
  });

  it.each([
    ["SETTINGS frames", () => frame(type.settings, 0, 0, Buffer.alloc(0))],
    ["PING frames", () => frame(type.ping, 0, 0, randomBytes(8))],
    [
      "HEADERS each reset at once (rapid reset)",
      (i: number) =>
        Buffer.concat([frame(type.headers, flag.endHeaders, 2 * i + 1, requestHeaders()), frame(type.rstStream, 0, 2 * i + 1, u32(8))]),
    ],
    ["WINDOW_UPDATEs of 1", () => frame(type.windowUpdate, 0, 0, u32(1))],
    ["empty frames of an unknown type", () => frame(0xee, 0, 0)],
  ])("a flood of 20,000 %s, never reading the answers: cut off or served, with bounded memory", async (_what, make) => {
    const c = await raw({ ack: false });
    c.socket.pause(); // never read what the server answers (ACKs, PONGs)
    const batch = 500;
    for (let i = 0; i < 20_000 && !c.closed; i += batch) {
      const sent = c.write(Buffer.concat(Array.from({ length: batch }, (_, k) => make(i + k)))).then(() => true);
      // A server that stops reading a client that does not read its answers is within its rights.
      if (!(await Promise.race([sent, delay(2_000).then(() => false)]))) break;
    }
    const heap = process.memoryUsage().heapUsed;
    expect(heap - baseline, `heap ${mib(heap)} during the flood`).toBeLessThan(200 << 20);
    c.socket.resume();
  });

  it.each([
    ["a client that acknowledged the server's SETTINGS", true],
    ["a client that never acknowledges them", false],
  ])("5,000 streams opened on one connection and never finished, by %s: the ones past 128 are refused", async (_who, ack) => {
    const c = await raw({ ack });
    const streams = 5_000;
    for (let i = 0; i < streams; i += 250) {
      const heads = Array.from({ length: 250 }, (_, k) => frame(type.headers, flag.endHeaders, 2 * (i + k) + 1, requestHeaders()));
      await c.write(Buffer.concat(heads));
      if (c.closed) break;
    }
    await c.until(
      () =>
        c.closed ||
        c.goaway !== undefined ||
        c.frames.filter((f) => f.type === type.rstStream).length >= streams - serverLimits.maxConcurrentStreams,
      5_000,
    );
    const refused = c.frames.filter((f) => f.type === type.rstStream).length;
    // Either every stream past the limit was refused (RST_STREAM REFUSED_STREAM), or the server gave up on
    // the connection (GOAWAY): never more than 128 in the handler at once.
    expect(c.goaway !== undefined || c.closed || refused >= streams - serverLimits.maxConcurrentStreams, `${refused} streams refused`).toBe(
      true,
    );
  });

  it("50 connections at once, each with 128 calls left open: at most the listener's limit are taken, all released when they go", async () => {
    const conns: RawConnection[] = [];
    for (let k = 0; k < 50; k += 10) conns.push(...(await Promise.all(Array.from({ length: 10 }, () => connect(t)))));
    open.push(...conns);
    const streams = serverLimits.maxConcurrentStreams;
    const heads = Buffer.concat(
      Array.from({ length: streams }, (_, k) => frame(type.headers, flag.endHeaders, 2 * k + 1, requestHeaders())),
    );
    await Promise.all(conns.map((c) => c.write(heads)));
    const opened = conns.length * streams;
    const refusedCount = () =>
      conns.reduce((n, c) => n + c.frames.filter((f) => f.type === type.rstStream && f.payload.readUInt32BE(0) === 7).length, 0);
    // Past the listener's limit every further call is refused (REFUSED_STREAM) before it costs anything.
    const mustRefuse = Math.max(0, opened - t.limits.maxCallsInFlight);
    await waitFor(`${mustRefuse} of ${opened} calls refused`, async () => refusedCount() >= mustRefuse, 30_000);
    // The server still answers a well-behaved client while they all hang on (once it has taken them in).
    if (mustRefuse === 0) await waitFor("a health check while they hang on", () => t.healthy().then(() => true), 30_000, 500);
    const during = process.memoryUsage().heapUsed;
    expect(during - baseline, `heap ${mib(during)} with ${opened - refusedCount()} calls open`).toBeLessThan(
      (opened - refusedCount()) * (64 << 10) + (100 << 20),
    );
    expect(conns.filter((c) => c.closed || c.goaway !== undefined)).toEqual([]);
    console.log(`${t.name}: ${opened} calls left open, ${refusedCount()} refused: heap ${mib(during - baseline)} above the start`);
  }, 90_000);

  it.skipIf(t.limits.maxConnections > 2_000)(
    "connections past the listener's limit are closed at once",
    async () => {
      const conns: RawConnection[] = [];
      let refused = 0; // closed before the TLS handshake finished
      for (let k = 0; k < t.limits.maxConnections + 100; k += 100) {
        for (const b of await Promise.allSettled(Array.from({ length: 100 }, () => connect(t)))) {
          if (b.status === "fulfilled") conns.push(b.value);
          else refused++;
        }
      }
      await delay(200);
      const kept = conns.filter((c) => !c.closed).length;
      expect(kept).toBeLessThanOrEqual(t.limits.maxConnections);
      expect(refused + conns.length - kept).toBeGreaterThanOrEqual(100);
      for (const c of conns) c.close();
      // The server counts a connection gone once it has seen it close: it takes new ones again then.
      await waitFor("a new connection taken", () => t.healthy().then(() => true), 15_000, 200);
    },
    90_000,
  );

  it("1,000 connections opened and dropped, 100 at a time, half of them mid-handshake", async () => {
    const dropped: PromiseSettledResult<void>[] = [];
    for (let wave = 0; wave < 10; wave++) {
      dropped.push(
        ...(await Promise.allSettled(
          Array.from({ length: 100 }, async (_, i) => {
            if (i % 2 === 0 && t.tcp) {
              const s = net.connect(t.tcp().port, "127.0.0.1");
              s.on("error", () => undefined);
              s.once("connect", () => s.write(randomBytes(10)));
              await delay(10);
              s.destroy();
              return;
            }
            const c = await connect(t);
            c.close();
          }),
        )),
      );
      await delay(20); // a unix socket refuses connections (EAGAIN) while its accept queue is full
    }
    expect(dropped.filter((d) => d.status === "rejected").length).toBeLessThan(50);
  });
});
