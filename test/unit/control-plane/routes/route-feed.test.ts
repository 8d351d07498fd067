// RouteFeed on an in-memory store: what its metrics and the daemons' apply lag read (the feed's epochs,
// resumes and fan-out are tested against etcd in test/integration/route-feed-epochs.test.ts).
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { publishWindowMs, RouteFeed } from "../../../../control-plane/routes/route-feed.js";
import { RouteEventType, type WatchRoutesResponse } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { changeNode, registerNode } from "../../../contract/node-store.js";
import { openMemoryStores } from "../../../support/memory-stores.js";
import { waitFor } from "../../../support/wait.js";

/** Reads a stream's messages into `into` as they come, until `signal` aborts. */
async function follow(stream: AsyncGenerator<WatchRoutesResponse>, into: WatchRoutesResponse[]): Promise<void> {
  for await (const msg of stream) into.push(msg);
}

const until = (what: string, ok: () => boolean) => waitFor(what, async () => ok(), 5_000, 5);

describe("RouteFeed", () => {
  it("a watch that breaks (etcd's revision did not go back) is followed by the changes missed meanwhile, in the same epoch: no stream gets a snapshot (issue 10: at 4000 nodes each dropped etcd connection sent every stream every route)", async () => {
    const stores = openMemoryStores();
    const stop = new AbortController();
    const feed = new RouteFeed({ nodes: stores.nodes, log: pino({ level: "silent" }), reloadDelayMs: 100, coalesceMs: 0 });
    await registerNode(stores, "n1", "192.168.1.11", "10.244.1.0/24");
    await registerNode(stores, "n2", "192.168.1.12", "10.244.2.0/24");
    await feed.start(stop.signal);
    const epoch = feed.epoch;
    const got: WatchRoutesResponse[] = [];
    const done = follow(feed.subscribe(stop.signal), got);
    await until("the snapshot", () => got.length === 1);
    stores.breakWatches(new Error("14 UNAVAILABLE: Connection dropped"));
    await registerNode(stores, "n3", "192.168.1.13", "10.244.3.0/24"); // while the feed has no watch
    await changeNode(stores, "n1", { live: false, releasedReason: "drained" });
    await until("the missed changes", () => got.length === 2);
    const [, missed] = got;
    expect(missed?.snapshot).toBe(false);
    expect(missed?.epoch).toBe(epoch);
    expect(missed?.revision).toBe(stores.revision);
    expect(missed?.events.map((e) => [e.type, e.route?.nodeName]).sort()).toEqual(
      [
        [RouteEventType.UPSERT, "n3"],
        [RouteEventType.DELETE, "n1"],
      ].sort(),
    );
    expect(feed.epoch).toBe(epoch);
    await registerNode(stores, "n4", "192.168.1.14", "10.244.4.0/24"); // and the new watch delivers what follows
    await until("the next change", () => got.length === 3);
    expect(got[2]?.events.map((e) => e.route?.nodeName)).toEqual(["n4"]);
    stop.abort();
    await done;
  });

  it("counts the streams open on it (trellis_route_streams)", async () => {
    const stores = openMemoryStores();
    const stop = new AbortController();
    const feed = new RouteFeed({ nodes: stores.nodes, log: pino({ level: "silent" }) });
    await feed.start(stop.signal);
    expect(feed.streams).toBe(0);
    const first = new AbortController();
    const second = new AbortController();
    const got: WatchRoutesResponse[] = [];
    const a = follow(feed.subscribe(first.signal), got);
    const b = follow(feed.subscribe(second.signal), []);
    await until("two streams", () => feed.streams === 2);
    first.abort();
    await a;
    expect(feed.streams).toBe(1);
    second.abort();
    await b;
    expect(feed.streams).toBe(0);
    stop.abort();
  });

  it("stamps each change with when it saw it committed (decided_at_ms), never a snapshot", async () => {
    const stores = openMemoryStores();
    const stop = new AbortController();
    let now = 1_700_000_000_000;
    const feed = new RouteFeed({ nodes: stores.nodes, log: pino({ level: "silent" }), clock: () => now });
    await registerNode(stores, "n1", "192.168.1.11", "10.244.1.0/24");
    await feed.start(stop.signal);
    const got: WatchRoutesResponse[] = [];
    const stream = new AbortController();
    const done = follow(feed.subscribe(stream.signal), got);
    await until("the snapshot", () => got.length === 1);
    now += 5_000;
    await registerNode(stores, "n2", "192.168.1.12", "10.244.2.0/24");
    await until("the change", () => got.length === 2);
    now += 5_000;
    await changeNode(stores, "n2", { live: false, releasedReason: "drained" });
    await until("the next change", () => got.length === 3);
    expect(got.map((m) => [m.snapshot, m.decidedAtMs])).toEqual([
      [true, 0n],
      [false, 1_700_000_005_000n],
      [false, 1_700_000_010_000n],
    ]);
    stream.abort();
    await done;
    stop.abort();
  });

  it("publishes a change at once, and the changes that follow within coalesceMs as one message (issue 10: fan-out)", async () => {
    const stores = openMemoryStores();
    const stop = new AbortController();
    const feed = new RouteFeed({ nodes: stores.nodes, log: pino({ level: "silent" }), coalesceMs: 400 });
    await feed.start(stop.signal);
    const got: WatchRoutesResponse[] = [];
    const stream = new AbortController();
    const done = follow(feed.subscribe(stream.signal), got);
    await until("the snapshot", () => got.length === 1);
    await registerNode(stores, "n1", "192.168.1.11", "10.244.1.0/24");
    await until("the first change, at once", () => got.length === 2);
    const n2 = await registerNode(stores, "n2", "192.168.1.12", "10.244.2.0/24");
    const n3 = await registerNode(stores, "n3", "192.168.1.13", "10.244.3.0/24");
    // A stream that starts now sees the published table: n1 only, then the held-back changes.
    const late: WatchRoutesResponse[] = [];
    const lateStream = new AbortController();
    const lateDone = follow(feed.subscribe(lateStream.signal), late);
    await until("the late snapshot", () => late.length === 1);
    expect(late[0]?.routes.map((r) => r.nodeName)).toEqual(["n1"]);
    expect(got).toHaveLength(2);
    await until("the held-back changes", () => got.length === 3);
    expect(got[2]?.events.map((e) => e.route?.nodeName)).toEqual(["n2", "n3"]);
    expect(got[2]?.revision).toBe(n3.modRevision);
    expect(got[2]?.revision).toBeGreaterThan(n2.modRevision);
    await until("the late stream's changes", () => late.length === 2);
    expect(late[1]).toBe(got[2]); // one message object for every stream: encoded once
    // A stream resuming after the first change gets exactly the merged message.
    const resumed: WatchRoutesResponse[] = [];
    const resumedStream = new AbortController();
    const resumedDone = follow(feed.subscribe(resumedStream.signal, got[1]?.revision ?? 0n, feed.epoch), resumed);
    await until("the resumed stream", () => resumed.length === 1);
    expect(resumed[0]).toBe(got[2]);
    for (const c of [stream, lateStream, resumedStream]) c.abort();
    await Promise.all([done, lateDone, resumedDone]);
    stop.abort();
  });

  it("holds a node live from the first change it sees, before publishing it, until the node withdraws (Liveness.heartbeat reads it)", async () => {
    const stores = openMemoryStores();
    const stop = new AbortController();
    const feed = new RouteFeed({ nodes: stores.nodes, log: pino({ level: "silent" }), coalesceMs: 60_000 });
    await registerNode(stores, "n1", "192.168.1.11", "10.244.1.0/24");
    expect(feed.holdsLive("n1")).toBe(false); // not started: holds nothing
    await feed.start(stop.signal);
    expect(feed.holdsLive("n1")).toBe(true);
    const got: WatchRoutesResponse[] = [];
    const stream = new AbortController();
    const done = follow(feed.subscribe(stream.signal), got);
    await registerNode(stores, "n0", "192.168.1.10", "10.244.0.0/24"); // published at once; what follows is held for 60 s
    await until("the first change", () => got.length === 2);
    await registerNode(stores, "n2", "192.168.1.12", "10.244.2.0/24");
    await until("n2 seen while held", () => feed.holdsLive("n2"));
    await changeNode(stores, "n1", { live: false, releasedReason: "drained" });
    await until("n1 withdrawn while held", () => !feed.holdsLive("n1"));
    expect(got).toHaveLength(2); // neither published yet
    expect(feed.holdsLive("n0")).toBe(true);
    expect(feed.holdsLive("nobody")).toBe(false);
    stream.abort();
    await done;
    stop.abort();
  });

  it("holds changes longer the more streams it feeds, within 500 ms", () => {
    expect(publishWindowMs(0, 100)).toBe(100);
    expect(publishWindowMs(200, 100)).toBe(100);
    expect(publishWindowMs(600, 100)).toBe(300);
    expect(publishWindowMs(1_000, 100)).toBe(500);
    expect(publishWindowMs(50_000, 100)).toBe(500);
    expect(publishWindowMs(1, 0)).toBe(0.5);
  });

  it("holds changes at least as long as the last fan-out took, within 1 s", () => {
    expect(publishWindowMs(1_000, 100, 50)).toBe(500);
    expect(publishWindowMs(1_000, 100, 800)).toBe(800);
    expect(publishWindowMs(5_000, 100, 60_000)).toBe(1_000);
  });

  it("wakes the streams a slice per turn of the event loop, and times the whole fan-out (issue 10: 5000 nodes)", async () => {
    const stores = openMemoryStores();
    const stop = new AbortController();
    const turns: (() => void)[] = [];
    let now = 1_000;
    const feed = new RouteFeed({
      nodes: stores.nodes,
      log: pino({ level: "silent" }),
      coalesceMs: 10,
      fanOutSlice: 2,
      nextTurn: (fn) => turns.push(fn),
      monotonic: () => now,
    });
    await feed.start(stop.signal);
    const streams = Array.from({ length: 5 }, () => ({ got: [] as WatchRoutesResponse[], stop: new AbortController() }));
    const done = streams.map((s) => follow(feed.subscribe(s.stop.signal), s.got));
    const counts = () => streams.map((s) => s.got.length);
    await until("every snapshot", () => counts().every((n) => n === 1));
    expect(feed.windowMs).toBe(10);

    await registerNode(stores, "n1", "192.168.1.11", "10.244.1.0/24");
    await until("the first slice", () => counts()[1] === 2);
    expect(counts()).toEqual([2, 2, 1, 1, 1]); // the rest wait for later turns
    turns.shift()?.();
    await until("the second slice", () => counts()[3] === 2);
    expect(counts()).toEqual([2, 2, 2, 2, 1]);
    turns.shift()?.();
    await until("the last slice", () => counts()[4] === 2);
    expect(turns).toHaveLength(1); // the turn after the last slice: the fan-out is timed there
    now += 300;
    turns.shift()?.();
    expect(feed.windowMs).toBe(300);
    expect(new Set(streams.map((s) => s.got[1]))).toHaveLength(1); // one message object for all: encoded once

    for (const s of streams) s.stop.abort();
    await Promise.all(done);
    stop.abort();
  });
});
