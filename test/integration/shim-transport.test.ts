// The shim's own HTTP/2 + gRPC client (cni-shim/grpc-unary.ts) against real servers on a unix socket:
// the daemon's server (connect-node) with a stub domain, and a raw node:http2 server for what connect-node
// never sends (trailers-only replies, padding, PING, GOAWAY, a connection cut mid-call).

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createDaemonClient, deadlinesMs } from "../../cni-shim/daemon-client.js";
import { grpcStatus, unaryCall } from "../../cni-shim/grpc-unary.js";
import type { AttachmentService } from "../../node-daemon/cni/attachment-service.js";
import { type DaemonServer, startDaemonServer } from "../../node-daemon/rpc/server.js";
import { reasons, TrellisError } from "../../proto/core/errors.js";
import { protocolVersion } from "../../proto/core/protocol.js";
import { encodeGetStatusResponse, CniService as Wire } from "../../proto/gen/trellis/cni/v1/cni_wire.js";
import { nodeDial } from "../support/node-dial.js";

let dir = "";
let socketPath = "";
const cleanups: (() => Promise<void> | void)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "trellis-shim-transport-"));
  socketPath = join(dir, "cni.sock");
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

const attachment = {
  networkName: "trellis",
  containerId: "c1",
  ifName: "eth0",
  netns: "/run/netns/p",
  podNamespace: "",
  podName: "",
  podUid: "",
};

/** The daemon's real server with a stub in place of the attachment service. */
async function daemon(stub: Partial<AttachmentService>): Promise<DaemonServer> {
  const server = await startDaemonServer({
    cni: { ready: true, ...stub } as AttachmentService,
    log: pino({ level: "silent" }),
    socketPath,
    status: () => ({ subnet: "10.244.1.0/24", routesCurrent: true, detail: "" }),
  });
  cleanups.push(() => server.close());
  return server;
}

async function rejection(p: Promise<unknown>): Promise<TrellisError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TrellisError);
  return err as TrellisError;
}

describe("the shim's client against the daemon's server", () => {
  it("ADD: the reply decodes into the result the daemon built", async () => {
    const reply = {
      interfaces: [{ name: "trellis0", mac: "0a:58:0a:f4:01:01", sandbox: "", mtu: 1500 }],
      ips: [{ address: "10.244.1.7/24", gateway: "10.244.1.1", interface: 0 }],
      routes: [{ dst: "0.0.0.0/0", gw: "10.244.1.1" }],
    };
    let got: unknown;
    await daemon({
      add: async (a) => {
        got = a;
        return reply as never;
      },
    });
    const res = await createDaemonClient(socketPath, nodeDial).add(attachment);
    expect(res).toEqual(reply);
    expect(got).toMatchObject(attachment);
  });

  it.each(reasons.map((r) => [r]))("a %s failure arrives with its reason and its message", async (reason) => {
    const message = `ünïcødé ✓ 100% "quoted" ${reason.toLowerCase()}`;
    await daemon({
      check: async () => {
        throw new TrellisError(reason, message);
      },
    });
    const err = await rejection(createDaemonClient(socketPath, nodeDial).check(attachment));
    expect(err.reason).toBe(reason);
    expect(err.message).toBe(message);
  });

  it("an error the daemon did not expect arrives as INTERNAL, without its text (STYLE.md §6)", async () => {
    await daemon({
      check: async () => {
        throw new Error("secret detail of a bug");
      },
    });
    const err = await rejection(createDaemonClient(socketPath, nodeDial).check(attachment));
    expect(err.reason).toBe("INTERNAL");
    expect(err.message).toBe("internal error");
  });

  it("an unknown method is UNIMPLEMENTED, which the shim reads as a version skew", async () => {
    await daemon({});
    const reply = await unaryCall(nodeDial, socketPath, "/trellis.cni.v1.CniService/Nope", new Uint8Array(0), { timeoutMs: 5_000 });
    expect(reply.status).toBe(grpcStatus.unimplemented);
  });

  it("a large request (over 16 KiB) and a large reply (over 64 KiB) go through", async () => {
    const valid = Array.from({ length: 2_000 }, (_, i) => ({ containerId: `container-${i}`, ifName: "eth0" }));
    let seen = 0;
    await daemon({
      gc: async (_network, keys) => {
        seen = keys.length;
        return Array.from({ length: 3_000 }, (_, i) => ({ ...attachment, containerId: `released-${i}` })) as never;
      },
    });
    const reply = await unaryCall(
      nodeDial,
      socketPath,
      Wire.garbageCollect.path,
      Wire.garbageCollect.encode({ protocolVersion, networkName: "trellis", validAttachments: valid }).finish(),
      { timeoutMs: 10_000 },
    );
    expect(reply.status).toBe(0);
    expect(seen).toBe(2_000);
    expect(reply.body?.length).toBeGreaterThan(65_535);
    expect(Wire.garbageCollect.decode(reply.body ?? new Uint8Array()).released).toHaveLength(3_000);
  });

  it("a request the daemon's flow-control window could hold back is refused before it is sent", async () => {
    await daemon({});
    const reply = await unaryCall(nodeDial, socketPath, Wire.garbageCollect.path, new Uint8Array(70_000), { timeoutMs: 5_000 });
    expect(reply).toMatchObject({ status: grpcStatus.invalidArgument, notSent: true });
    expect(reply.message).toMatch(/the request is 70000 bytes; the shim sends at most 65530/);
  });

  it("a daemon that does not answer within the deadline gives TIMEOUT, not a hang", async () => {
    let release: () => void = () => undefined;
    await daemon({
      add: () =>
        new Promise((resolve) => {
          release = () => resolve({} as never);
        }),
    });
    cleanups.push(() => release());
    const started = Date.now();
    const err = await rejection(createDaemonClient(socketPath, nodeDial, { ...deadlinesMs, add: 300 }).add(attachment));
    expect(err.reason).toBe("TIMEOUT");
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("no daemon at the socket path, or a stale socket file, is UNAVAILABLE and was never sent", async () => {
    const missing = await unaryCall(nodeDial, socketPath, Wire.getStatus.path, new Uint8Array(0), { timeoutMs: 5_000 });
    expect(missing).toMatchObject({ status: grpcStatus.unavailable, notSent: true });
    expect(missing.message).toMatch(/not running \(ENOENT\)/);
    await writeFile(socketPath, "");
    const stale = await unaryCall(nodeDial, socketPath, Wire.getStatus.path, new Uint8Array(0), { timeoutMs: 5_000 });
    expect(stale).toMatchObject({ status: grpcStatus.unavailable, notSent: true });
    const err = await rejection(createDaemonClient(socketPath, nodeDial).status());
    expect(err.reason).toBe("UNAVAILABLE");
    expect(err.message).toContain(socketPath);
  });
});

/** A raw HTTP/2 server (nghttp2, as under connect-node) whose replies each test writes itself. */
async function rawServer(
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
  options: http2.ServerOptions = {},
): Promise<http2.Http2Server> {
  const server = http2.createServer(options);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => sessions.add(s));
  server.on("stream", onStream);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  );
  return server;
}

const grpcFrame = (message: Uint8Array) => {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
};
const call = () => unaryCall(nodeDial, socketPath, Wire.getStatus.path, new Uint8Array(0), { timeoutMs: 5_000 });

describe("the shim's client against replies connect-node does not send", () => {
  it("a trailers-only reply (one HEADERS with END_STREAM) carries the status, reason and message", async () => {
    await rawServer((stream) => {
      stream.respond(
        {
          ":status": 200,
          "content-type": "application/grpc",
          "grpc-status": "5",
          "grpc-message": "no%20such%20pod",
          "trellis-reason": "NOT_FOUND",
        },
        { endStream: true },
      );
    });
    const reply = await call();
    expect(reply).toMatchObject({ status: 5, message: "no such pod" });
    expect(reply.metadata.get("trellis-reason")).toBe("NOT_FOUND");
  });

  it("HTTP 503 without grpc-status is UNAVAILABLE; HTTP 200 without it is UNKNOWN", async () => {
    let http = 503;
    await rawServer((stream) => {
      stream.respond({ ":status": http, "content-type": "application/grpc" }, { endStream: true });
    });
    expect((await call()).status).toBe(grpcStatus.unavailable);
    http = 200;
    expect((await call()).status).toBe(grpcStatus.unknown);
  });

  it("padded frames, a PING and SETTINGS from the server are handled; the PING is answered", async () => {
    const body = encodeGetStatusResponse({ subnet: "10.244.9.0/24", routeState: 1, detail: "", protocolVersion: 1 }).finish();
    let pingAnswered = false;
    await rawServer(
      (stream) => {
        stream.session?.ping((err) => {
          pingAnswered = !err;
          stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
          stream.end(grpcFrame(body));
        });
      },
      { paddingStrategy: http2.constants.PADDING_STRATEGY_MAX },
    );
    const reply = await call();
    expect(reply.status).toBe(0);
    expect(pingAnswered).toBe(true);
    expect(Wire.getStatus.decode(reply.body ?? new Uint8Array()).subnet).toBe("10.244.9.0/24");
  });

  it("a connection cut mid-call is UNAVAILABLE, not a hang", async () => {
    await rawServer((stream) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      setTimeout(() => stream.session?.destroy(), 50);
    });
    const reply = await call();
    expect(reply.status).toBe(grpcStatus.unavailable);
    expect(reply.notSent).toBeFalsy();
  });

  it("a GOAWAY that does not cover the call says it was never processed", async () => {
    // nghttp2 never announces a last stream below one it has seen, so this server writes its frames itself.
    const server = net.createServer((socket) => {
      const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
      const goaway = Buffer.from([0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // last stream 0, NO_ERROR
      socket.once("data", () => socket.end(Buffer.concat([settings, goaway])));
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const reply = await call();
    expect(reply).toMatchObject({ status: grpcStatus.unavailable, notSent: true });
  });

  it("a reply that is not gRPC is refused with what it was", async () => {
    await rawServer((stream) => {
      stream.respond({ ":status": 200, "content-type": "text/html" });
      stream.end("<html>");
    });
    const reply = await call();
    expect(reply.status).toBe(grpcStatus.unknown);
    expect(reply.message).toContain("text/html");
  });
});
