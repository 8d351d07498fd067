import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { type CniCommand, cniCodeOfFailure, cniCodeOfSuccess, cniMetricsInterceptor } from "../../../../node-daemon/rpc/cni-metrics.js";
import { TrellisError } from "../../../../proto/core/errors.js";
import { Health } from "../../../../proto/gen/grpc/health/v1/health_pb.js";
import { CniService, GetStatusResponseSchema, RouteState } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";

describe("the CNI code of a daemon answer, as the shim reports it", () => {
  it.each<[CniCommand, unknown, number]>([
    ["ADD", new TrellisError("EXHAUSTED", "full"), 101],
    ["ADD", new TrellisError("INVALID_ARGUMENT", "bad"), 7],
    ["ADD", new TrellisError("UNAVAILABLE", "busy"), 11],
    ["ADD", new TrellisError("KERNEL", "veth"), 999],
    ["ADD", new Error("a bug"), 999],
    ["CHECK", new TrellisError("NOT_FOUND", "gone"), 3],
    ["DEL", new TrellisError("NOT_FOUND", "gone"), 0],
    ["DEL", new TrellisError("UNAVAILABLE", "busy"), 0],
    ["DEL", new TrellisError("KERNEL", "stuck"), 999],
    ["GC", new TrellisError("KERNEL", "some left"), 999],
    ["STATUS", new TrellisError("UNAVAILABLE", "no lease"), 50],
    ["STATUS", new TrellisError("VERSION_SKEW", "old shim"), 102],
    ["ADD", new ConnectError("exhausted", Code.ResourceExhausted, { "trellis-reason": "EXHAUSTED" }), 101],
    ["ADD", new ConnectError("no reason", Code.Internal), 999],
  ])("%s failing with %s: %i", (command, err, code) => {
    expect(cniCodeOfFailure(command, err)).toBe(code);
  });

  it.each<[CniCommand, unknown, number]>([
    ["ADD", {}, 0],
    ["DEL", {}, 0],
    ["STATUS", create(GetStatusResponseSchema, { routeState: RouteState.CURRENT }), 0],
    ["STATUS", create(GetStatusResponseSchema, { routeState: RouteState.STALE }), 51],
  ])("%s succeeding with %j: %i", (command, message, code) => {
    expect(cniCodeOfSuccess(command, message)).toBe(code);
  });
});

describe("cniMetricsInterceptor", () => {
  const observed: Array<[string, number]> = [];
  const interceptor = cniMetricsInterceptor({ observeCni: (command, code, seconds) => observed.push([`${command} ${code}`, seconds]) });
  const call = (service: { typeName: string }, method: string, answer: () => Promise<unknown>) =>
    // The fields of a request and response the interceptor reads.
    interceptor(answer as never)({ service, method: { name: method } } as never);

  it("observes each CNI call with its command, code and duration, passing answers and errors through", async () => {
    observed.length = 0;
    const ok = { stream: false, message: {} };
    await expect(call(CniService, "AddAttachment", async () => ok)).resolves.toBe(ok);
    const err = new TrellisError("EXHAUSTED", "no address left");
    await expect(call(CniService, "AddAttachment", async () => Promise.reject(err))).rejects.toBe(err);
    await expect(call(CniService, "DeleteAttachment", async () => Promise.reject(new TrellisError("NOT_FOUND", "gone")))).rejects.toThrow(
      "gone",
    );
    await call(CniService, "GetStatus", async () => ({ stream: false, message: create(GetStatusResponseSchema) }));
    expect(observed.map(([what]) => what)).toEqual(["ADD 0", "ADD 101", "DEL 0", "STATUS 51"]);
    for (const [, seconds] of observed) expect(seconds).toBeGreaterThanOrEqual(0);
  });

  it("leaves other services' calls alone (health, reflection)", async () => {
    observed.length = 0;
    await call(Health, "Check", async () => ({ stream: false, message: {} }));
    await call(CniService, "NoSuchMethod", async () => ({ stream: false, message: {} }));
    expect(observed).toEqual([]);
  });
});
