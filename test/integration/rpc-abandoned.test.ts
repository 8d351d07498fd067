// A call its client gave up on (its deadline passed, or it cancelled) is not a server failure: the server's
// log says the client abandoned it, at the level STYLE.md §6-7 gives a peer that went away, not "rpc
// failed" at error. At 5000 simulated nodes (issue 10) every heartbeat that missed its deadline wrote an
// error line with a stack trace.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { serverInterceptor } from "../../proto/rpc/interceptor.js";
import { captureLog } from "../support/control-plane.js";
import { rawCall } from "../support/grpc-wire.js";
import { waitFor } from "../support/wait.js";

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

async function serve() {
  const { log, lines } = captureLog();
  let started = 0;
  const handler = connectNodeAdapter({
    interceptors: [serverInterceptor(log)],
    routes: (router) =>
      router.service(NodeService, {
        heartbeat: async (_req, ctx) => {
          started++;
          await sleep(5_000, undefined, { signal: ctx.signal }); // rejects with the abort when the client goes
          return {};
        },
      }),
  });
  const server = http2.createServer(handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => sessions.add(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(async () => {
    for (const s of sessions) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  closers.push(async () => void session.destroy());
  return { session, lines, started: () => started };
}

/** A Heartbeat call for node-1 without a deadline, on the bare stream (to reset it). */
function heartbeat(session: http2.ClientHttp2Session): http2.ClientHttp2Stream {
  const stream = rawCall(session, NodeService.method.heartbeat, { nodeName: "node-1" });
  stream.on("error", () => undefined);
  return stream;
}

describe("a call the client abandons", () => {
  it.each([
    ["INTERNAL_ERROR (connect's client when its deadline passes)", http2.constants.NGHTTP2_INTERNAL_ERROR],
    ["CANCEL (a cancelled call, grpc-go's deadline)", http2.constants.NGHTTP2_CANCEL],
  ])("reset with %s: logged as abandoned at warn, never as a server failure", async (_what, code) => {
    const { session, lines, started } = await serve();
    const stream = heartbeat(session);
    await waitFor("the handler to start", async () => started() === 1);
    stream.close(code);
    await waitFor("the server to log the call's end", async () => lines.some((l) => String(l.msg).startsWith("rpc ")));
    const ends = lines.filter((l) => String(l.msg).startsWith("rpc "));
    expect(ends).toEqual([expect.objectContaining({ level: 40, msg: "rpc abandoned by the client", rpc: "Heartbeat" })]);
  });
});
