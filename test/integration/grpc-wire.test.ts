// The simulated nodes' bare gRPC client (test/support/grpc-wire.ts) against a connect-node server, the kind
// the control plane runs: what it returns and throws must read as connect's own client would make them.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter, Http2SessionManager } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { TrellisError } from "../../proto/core/errors.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { fromConnectError, toConnectError } from "../../proto/rpc/connect-errors.js";
import { streamCall, unaryCall } from "../support/grpc-wire.js";
import { waitFor } from "../support/wait.js";

const rpc = NodeService.method;
const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function serve(impl: Partial<ServiceImpl<typeof NodeService>>): Promise<Http2SessionManager> {
  const server = http2.createServer(connectNodeAdapter({ routes: (router) => router.service(NodeService, impl) }));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => sessions.add(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => {
    for (const s of sessions) s.destroy();
    return new Promise((resolve) => server.close(() => resolve()));
  });
  const session = new Http2SessionManager(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  closers.push(() => session.abort());
  return session;
}

describe("bare gRPC client (sim nodes)", () => {
  it("a unary call returns the reply message", async () => {
    const session = await serve({
      registerNode: (req) => ({ subnet: `10.244.${req.mtu - 1400}.0/24`, clusterCidr: "10.244.0.0/16" }),
    });
    const res = await unaryCall(session, rpc.registerNode, { nodeName: "n1", nodeIp: "172.16.0.1", mtu: 1403 }, { timeoutMs: 5_000 });
    expect(res).toMatchObject({ subnet: "10.244.3.0/24", clusterCidr: "10.244.0.0/16" });
  });

  it("a domain error arrives with its reason and message, as fromConnectError reads connect's", async () => {
    const session = await serve({
      heartbeat: () => {
        throw toConnectError(new TrellisError("NOT_FOUND", "node n1 is not registered; register it first"));
      },
    });
    const err = await unaryCall(session, rpc.heartbeat, { nodeName: "n1" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect(fromConnectError(err, "heartbeat")).toMatchObject({
      reason: "NOT_FOUND",
      message: "node n1 is not registered; register it first",
    });
  });

  it("a call past its deadline fails as connect's does, and the server is told the deadline", async () => {
    let serverDeadline: number | undefined;
    const session = await serve({
      heartbeat: async (_req, ctx) => {
        serverDeadline = ctx.timeoutMs();
        await sleep(2_000, undefined, { signal: ctx.signal }).catch(() => undefined);
        return {};
      },
    });
    const started = performance.now();
    const err = await unaryCall(session, rpc.heartbeat, { nodeName: "n1" }, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(err).toMatchObject({ code: Code.DeadlineExceeded, rawMessage: "the operation timed out" });
    expect(fromConnectError(err, "heartbeat").reason).toBe("TIMEOUT");
    expect(serverDeadline).toBeGreaterThan(0);
    expect(serverDeadline).toBeLessThanOrEqual(200);
  });

  it("a stream hands over each message, then the error in the trailers", async () => {
    const session = await serve({
      async *watchRoutes() {
        for (let r = 1n; r <= 3n; r++) yield { revision: r, epoch: 9n };
        throw toConnectError(new TrellisError("UNAVAILABLE", "route feed stopped; retry"));
      },
    });
    const got: bigint[] = [];
    const err = await streamCall(session, rpc.watchRoutes, { nodeName: "n1" }, (m) => got.push(m.revision)).catch((e: unknown) => e);
    expect(got).toEqual([1n, 2n, 3n]);
    expect(fromConnectError(err, "watch")).toMatchObject({ reason: "UNAVAILABLE", message: "route feed stopped; retry" });
  });

  it("a stream refused before any message (trailers-only) fails with the status, and one ended cleanly resolves", async () => {
    const session = await serve({
      // biome-ignore lint/correctness/useYield: refused before the first message
      async *watchRoutes(req) {
        if (req.nodeName !== "n1") throw toConnectError(new TrellisError("PERMISSION_DENIED", `acting for ${req.nodeName} é`));
      },
    });
    const err = await streamCall(session, rpc.watchRoutes, { nodeName: "n2" }, () => undefined).catch((e: unknown) => e);
    expect(fromConnectError(err, "watch")).toMatchObject({ reason: "PERMISSION_DENIED", message: "acting for n2 é" });
    await expect(streamCall(session, rpc.watchRoutes, { nodeName: "n1" }, () => undefined)).resolves.toBeUndefined();
  });

  it("aborting a stream cancels it on the server too", async () => {
    let serverAborted = false;
    const session = await serve({
      async *watchRoutes(_req, ctx) {
        yield { revision: 1n };
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        serverAborted = true;
      },
    });
    const stop = new AbortController();
    const call = streamCall(session, rpc.watchRoutes, { nodeName: "n1" }, () => stop.abort(), { signal: stop.signal });
    await expect(call).rejects.toMatchObject({ code: Code.Canceled });
    await waitFor("the server to see the cancel", async () => serverAborted);
  });

  it("no server at the address: UNAVAILABLE, so a sim moves to the next replica", async () => {
    const server = http2.createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    await new Promise((resolve) => server.close(resolve));
    const session = new Http2SessionManager(`http://127.0.0.1:${port}`);
    closers.push(() => session.abort());
    const err = await unaryCall(session, rpc.heartbeat, { nodeName: "n1" }, { timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(fromConnectError(err, "heartbeat").reason).toBe("UNAVAILABLE");
  });
});
