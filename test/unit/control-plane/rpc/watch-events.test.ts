// Issue 10, finding 12: an admin WatchEvents stream is bounded, and ends (instead of hanging) when its
// etcd watch ends.
import type { HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createAdminService } from "../../../../control-plane/rpc/admin-service.js";
import type { ClusterEvent, EventStore } from "../../../../control-plane/store/event-store.js";

const event: ClusterEvent = { kind: "node", type: "put", nodeName: "n1", subnet: "", address: "", live: true, revision: 1n };

function serviceWith(watch: EventStore["watchEvents"]) {
  const events: EventStore = { watchEvents: watch };
  return createAdminService({ stores: { events } } as unknown as Parameters<typeof createAdminService>[0]);
}

const ctx = (signal: AbortSignal) => ({ signal }) as unknown as HandlerContext;

async function drain(stream: AsyncIterable<unknown>): Promise<{ got: number; err?: Error }> {
  let got = 0;
  try {
    for await (const _ of stream) got++;
  } catch (err) {
    return { got, err: err as Error };
  }
  return { got };
}

describe("AdminService.WatchEvents", () => {
  it("a client that falls more than 10,000 events behind gets what was queued, then EXHAUSTED, and the watch stops", async () => {
    let watchSignal: AbortSignal | undefined;
    const svc = serviceWith(async (onEvent, signal) => {
      watchSignal = signal;
      for (let i = 0; i < 50_000; i++) onEvent(event);
    });
    const { got, err } = await drain(svc.watchEvents({} as never, ctx(new AbortController().signal)) as AsyncIterable<unknown>);
    expect(got).toBe(10_000);
    expect(err).toMatchObject({ reason: "EXHAUSTED" });
    expect(err?.message).toMatch(/fell 10000 events behind/);
    expect(watchSignal?.aborted).toBe(true);
  });

  it("a watch lost to compaction or an etcd restart ends the stream with UNAVAILABLE instead of hanging", async () => {
    const svc = serviceWith(async (onEvent, _signal, onLost) => {
      onEvent(event);
      setTimeout(() => onLost?.(new Error("mvcc: required revision has been compacted")), 10);
    });
    const { got, err } = await drain(svc.watchEvents({} as never, ctx(new AbortController().signal)) as AsyncIterable<unknown>);
    expect(got).toBe(1);
    expect(err).toMatchObject({ reason: "UNAVAILABLE" });
    expect(err?.message).toMatch(/compacted.*call WatchEvents again/);
  });
});
