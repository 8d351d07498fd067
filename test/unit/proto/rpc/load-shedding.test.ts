// Issue 10: an overloaded replica refuses unary calls past its bound at once, never heartbeats or streams.
import { Code, ConnectError, type StreamRequest, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { reasonMetadataKey } from "../../../../proto/core/errors.js";
import { loadShedding } from "../../../../proto/rpc/load-shedding.js";

type Next = (req: UnaryRequest | StreamRequest) => Promise<UnaryResponse>;

/** A call the test ends by hand: its handler runs until `finish()`. */
function pendingCalls() {
  const finishers: (() => void)[] = [];
  const next: Next = () =>
    new Promise<UnaryResponse>((resolve) => finishers.push(() => resolve({ stream: false } as unknown as UnaryResponse)));
  return { next, finishOne: () => finishers.shift()?.() };
}

const call = (name: string, stream = false) => ({ stream, method: { name } }) as unknown as UnaryRequest;

describe("loadShedding", () => {
  it("refuses a unary call past maxInFlight with UNAVAILABLE, and admits again once one ends", async () => {
    const shed: number[] = [];
    const { next, finishOne } = pendingCalls();
    const handle = loadShedding({ maxInFlight: 2, exempt: new Set(), onShed: (n) => shed.push(n) })(next);
    const first = handle(call("RegisterNode"));
    const second = handle(call("ReportRoutes"));
    const refused = await handle(call("RegisterNode")).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.Unavailable);
    expect((refused as ConnectError).metadata.get(reasonMetadataKey)).toBe("UNAVAILABLE");
    expect(shed).toEqual([2]);
    finishOne();
    await first;
    const third = handle(call("RegisterNode")); // a slot is free again
    finishOne();
    finishOne();
    await Promise.all([second, third]);
    expect(shed).toHaveLength(1);
  });

  it("never refuses an exempt method (heartbeats) nor a stream, and does not count them", async () => {
    const { next, finishOne } = pendingCalls();
    const handle = loadShedding({ maxInFlight: 1, exempt: new Set(["Heartbeat"]) })(next);
    const calls = [handle(call("Heartbeat")), handle(call("Heartbeat")), handle(call("WatchRoutes", true)), handle(call("RegisterNode"))];
    await expect(handle(call("ReportRoutes"))).rejects.toThrow(/limit/);
    for (let i = 0; i < calls.length; i++) finishOne();
    await Promise.all(calls);
  });

  it("a call that fails frees its slot too", async () => {
    let fail = true;
    const handle = loadShedding({ maxInFlight: 1, exempt: new Set() })(async () => {
      if (fail) throw new Error("etcd went away");
      return { stream: false } as unknown as UnaryResponse;
    });
    await expect(handle(call("RegisterNode"))).rejects.toThrow("etcd went away");
    fail = false;
    await expect(handle(call("RegisterNode"))).resolves.toBeDefined();
  });
});
