// WatchRoutes served on the HTTP/2 stream without connect-node (control-plane/rpc/route-stream.ts), against
// the clients that call it: connect-node's gRPC client (the daemon's), and a bare HTTP/2 client for what
// that client hides (the deadline the server enforces, a caller that never reads).
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { isWatchRoutesCall, serveWatchRoutes } from "../../control-plane/rpc/route-stream.js";
import { TrellisError } from "../../proto/core/errors.js";
import {
  NodeService,
  RouteSchema,
  type WatchRoutesResponse,
  WatchRoutesResponseSchema,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { fromConnectError } from "../../proto/rpc/connect-errors.js";
import { captureLog } from "../support/control-plane.js";
import { rawCall } from "../support/grpc-wire.js";
import { waitFor } from "../support/wait.js";

/** A feed that yields `messages`, then `thenThrow` if given, else waits for the caller to go; counts its streams and pulls. */
function fakeFeed(messages: () => Iterable<WatchRoutesResponse>, thenThrow?: Error) {
  const state = { open: 0, pulled: 0, asked: [] as Array<[bigint, bigint]> };
  return {
    state,
    async *subscribe(signal: AbortSignal, fromRevision = 0n, epoch = 0n): AsyncGenerator<WatchRoutesResponse> {
      state.open++;
      state.asked.push([fromRevision, epoch]);
      try {
        for (const m of messages()) {
          if (signal.aborted) return;
          state.pulled++;
          yield m;
        }
        if (thenThrow) throw thenThrow;
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      } finally {
        state.open--;
      }
    },
  };
}

const servers: http2.Http2Server[] = [];
const sessions = new Set<http2.ServerHttp2Session>();
afterEach(async () => {
  for (const s of sessions) s.destroy();
  sessions.clear();
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
});

async function serve(feed: ReturnType<typeof fakeFeed>) {
  const { log, lines } = captureLog();
  const server = http2.createServer((req, res) => {
    if (isWatchRoutesCall(req)) void serveWatchRoutes({ feed, registry: { isValid: async () => true }, log }, req, res);
    else res.writeHead(404).end();
  });
  servers.push(server);
  server.on("session", (s) => sessions.add(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = createClient(NodeService, createGrpcTransport({ baseUrl: url }));
  return { url, client, lines };
}

const change = (revision: bigint, subnet: string) =>
  create(WatchRoutesResponseSchema, {
    revision,
    epoch: 7n,
    routes: [create(RouteSchema, { nodeName: "n2", subnet, nodeIp: "192.168.1.12" })],
  });

/** A WatchRoutes call for `nodeName` on a bare HTTP/2 session. */
const rawWatch = (session: http2.ClientHttp2Session, nodeName: string, headers: http2.OutgoingHttpHeaders = {}) =>
  rawCall(session, NodeService.method.watchRoutes, { nodeName }, headers);

describe("WatchRoutes on the bare HTTP/2 stream", () => {
  it("a connect gRPC client gets every message the feed yields, and the feed hears the revision and epoch asked", async () => {
    const sent = [change(5n, "10.244.2.0/24"), change(6n, "10.244.3.0/24")];
    const feed = fakeFeed(() => sent);
    const { client, lines } = await serve(feed);
    const stop = new AbortController();
    const got: WatchRoutesResponse[] = [];
    for await (const m of client.watchRoutes({ nodeName: "n1", fromRevision: 4n, epoch: 7n }, { signal: stop.signal })) {
      got.push(m);
      if (got.length === sent.length) break;
    }
    expect(got).toEqual(sent);
    expect(feed.state.asked).toEqual([[4n, 7n]]);
    stop.abort();
    // The client went away: the stream leaves the feed, and nothing is logged as a failure.
    await waitFor("the stream to leave the feed", async () => feed.state.open === 0);
    expect(lines.filter((l) => (l.level as number) >= 40)).toEqual([]);
  });

  it("a request the validator refuses ends at once with INVALID_ARGUMENT and the reason, as connect would send it", async () => {
    const feed = fakeFeed(() => []);
    const { client, lines } = await serve(feed);
    const err = await (async () => {
      for await (const _ of client.watchRoutes({ nodeName: "Not A Node Name" })) return undefined;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    const domain = fromConnectError(err, "watch routes");
    expect(domain.reason).toBe("INVALID_ARGUMENT");
    expect(domain.message).toMatch(/node_name/);
    expect(feed.state.asked).toEqual([]);
    expect(lines.find((l) => l.msg === "rpc rejected")).toMatchObject({ rpc: "WatchRoutes", reason: "INVALID_ARGUMENT" });
  });

  it("a feed that fails mid-stream ends the call with its status in the trailers, after what was sent", async () => {
    const feed = fakeFeed(() => [change(5n, "10.244.2.0/24")], new TrellisError("UNAVAILABLE", "route feed stopped; retry"));
    const { client } = await serve(feed);
    const got: WatchRoutesResponse[] = [];
    const err = await (async () => {
      for await (const m of client.watchRoutes({ nodeName: "n1" })) got.push(m);
    })().catch((e: unknown) => e);
    expect(got).toHaveLength(1);
    expect(fromConnectError(err, "watch routes")).toMatchObject({ reason: "UNAVAILABLE", message: "route feed stopped; retry" });
  });

  it("the server ends a stream whose grpc-timeout passed with DEADLINE_EXCEEDED, and leaves the feed", async () => {
    const feed = fakeFeed(() => [change(5n, "10.244.2.0/24")]);
    const { url } = await serve(feed);
    const session = http2.connect(url);
    try {
      const stream = rawWatch(session, "n1", { "grpc-timeout": "300m" });
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("trailers", resolve));
      stream.resume();
      expect(await trailers).toMatchObject({ "grpc-status": String(Code.DeadlineExceeded), "trellis-reason": "TIMEOUT" });
      await waitFor("the stream to leave the feed", async () => feed.state.open === 0);
    } finally {
      session.destroy();
    }
  });

  it("a caller that never reads holds the feed back: nothing is pulled past what HTTP/2 flow control lets through", async () => {
    const big = create(WatchRoutesResponseSchema, {
      revision: 1n,
      routes: Array.from({ length: 2_000 }, (_, i) =>
        create(RouteSchema, { nodeName: `n${i}`, subnet: `10.${i >> 8}.${i & 255}.0/24`, nodeIp: "192.168.1.1" }),
      ),
    });
    const feed = fakeFeed(function* () {
      for (;;) yield big; // ~90 KB each, for ever
    });
    const { url } = await serve(feed);
    const session = http2.connect(url);
    try {
      const stream = rawWatch(session, "n1");
      stream.pause(); // never reads
      await waitFor("the feed to be asked", async () => feed.state.pulled > 0);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(feed.state.pulled).toBeLessThan(5);
    } finally {
      session.destroy();
    }
    await waitFor("the stream to leave the feed", async () => feed.state.open === 0);
  });
});
