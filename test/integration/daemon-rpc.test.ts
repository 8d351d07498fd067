import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AttachmentService } from "../../node-daemon/cni/attachment-service.js";
import { type DaemonServer, startDaemonServer } from "../../node-daemon/rpc/server.js";
import { Cidr } from "../../proto/core/cidr.js";
import { protocolVersion } from "../../proto/core/protocol.js";
import { CniService as CniServiceDesc } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { serverLimits } from "../../proto/rpc/listen.js";
import { run } from "../support/exec.js";
import { MemoryAllocationJournal, RecordingNetlink } from "../support/fakes.js";
import { root } from "../support/lab.js";

// The daemon's unix-socket server in process, on fakes for the kernel and the journal: the protocol
// version handshake, the socket's mode, and stale-socket handling.
let dir: string;
let socketPath: string;
let server: DaemonServer | undefined;

async function start(): Promise<DaemonServer> {
  const cni = new AttachmentService({
    net: new RecordingNetlink(),
    journal: new MemoryAllocationJournal(),
    log: pino({ level: "silent" }),
    clock: Date.now,
    pathExists: async () => true,
  });
  await cni.start({ subnet: Cidr.parse("10.244.1.0/24"), bridgeName: "trellis0", mtu: 1500 });
  return startDaemonServer({
    cni,
    log: pino({ level: "silent" }),
    socketPath,
    status: () => ({ subnet: "10.244.1.0/24", routesCurrent: true, detail: "" }),
  });
}

const client = () =>
  createClient(
    CniServiceDesc,
    createGrpcTransport({ baseUrl: "http://daemon", nodeOptions: { createConnection: () => net.connect(socketPath) } }),
  );

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "trellis-daemon-rpc-"));
  socketPath = join(dir, "run", "cni.sock");
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

describe("node daemon socket", () => {
  it("is a root-only (0600) socket", async () => {
    server = await start();
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
  });

  it.each([protocolVersion - 1, protocolVersion, protocolVersion + 1])("serves a shim one protocol version apart (%i)", async (version) => {
    server = await start();
    const res = await client().getStatus({ protocolVersion: version });
    expect(res.subnet).toBe("10.244.1.0/24");
  });

  it.each([protocolVersion + 2, protocolVersion + 5])("refuses a shim further apart (%i) with a clear VERSION_SKEW", async (version) => {
    server = await start();
    const err = await client()
      .getStatus({ protocolVersion: version })
      .catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((err as ConnectError).metadata.get("trellis-reason")).toBe("VERSION_SKEW");
    expect((err as ConnectError).rawMessage).toMatch(/install the matching trellis shim/);
  });

  it("answers buf curl on the unix socket through reflection alone (as an operator would debug it)", async () => {
    server = await start();
    const buf = (...args: string[]) =>
      run(join(root, "node_modules", ".bin", "buf"), [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--unix-socket",
        socketPath,
        ...args,
      ]);
    const listed = await buf("--list-methods", "http://localhost");
    expect(listed.stdout.split("\n").filter(Boolean)).toEqual(
      expect.arrayContaining(["trellis.cni.v1.CniService/AddAttachment", "trellis.cni.v1.CniService/GetStatus"]),
    );
    const status = await buf("-d", `{"protocolVersion":${protocolVersion}}`, "http://localhost/trellis.cni.v1.CniService/GetStatus");
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ subnet: "10.244.1.0/24", routeState: "ROUTE_STATE_CURRENT" });
  });

  it("refuses a message over 4 MiB with RESOURCE_EXHAUSTED, keeps serving, and caps streams per connection", async () => {
    server = await start();
    const huge = Array.from({ length: 150_000 }, (_, i) => ({ containerId: `container-${i}-${"x".repeat(16)}`, ifName: "eth0" }));
    const err = await client()
      .garbageCollect({ protocolVersion, networkName: "trellis", validAttachments: huge })
      .catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((await client().getStatus({ protocolVersion })).subnet).toBe("10.244.1.0/24");
    const session = http2.connect("http://daemon", { createConnection: () => net.connect(socketPath) });
    try {
      const settings = await new Promise<http2.Settings>((resolve) => session.once("remoteSettings", resolve));
      expect(settings.maxConcurrentStreams).toBe(serverLimits.maxConcurrentStreams);
    } finally {
      session.destroy();
    }
  });

  it("replaces a stale socket file left by a daemon killed with SIGKILL", async () => {
    await mkdir(join(dir, "run"));
    const dead = spawn(process.execPath, [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(socketPath)}, () => console.log("up"))`,
    ]);
    await new Promise((resolve) => dead.stdout.once("data", resolve));
    dead.kill("SIGKILL");
    await new Promise((resolve) => dead.once("exit", resolve));
    expect((await stat(socketPath)).isSocket()).toBe(true); // left behind, nobody answers on it
    server = await start();
    expect((await client().getStatus({ protocolVersion })).subnet).toBe("10.244.1.0/24");
  });

  it("refuses to start while another daemon serves the socket", async () => {
    server = await start();
    await expect(start()).rejects.toThrow(/another daemon is serving/);
  });
});
