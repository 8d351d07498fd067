import { clone, create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { AllocationMirror } from "../../../../node-daemon/cni/mirror-queue.js";
import { applyRouteMessage, ControlClient, type ControlPlaneApi, type RouteSet } from "../../../../node-daemon/control/control-client.js";
import { hostVethName } from "../../../../node-daemon/net/names.js";
import { type Reason, TrellisError } from "../../../../proto/core/errors.js";
import { type AllocationRecord, AllocationRecordSchema, AttachmentSchema } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";
import {
  type RegisterNodeResponse,
  type Route,
  type RouteEvent,
  RouteEventSchema,
  RouteEventType,
  RouteSchema,
  type WatchRoutesResponse,
  WatchRoutesResponseSchema,
} from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { rejectsWith } from "../../expect-error.js";

const route = (nodeName: string, subnet: string, nodeIp: string) => create(RouteSchema, { nodeName, subnet, nodeIp });
const upsert = (r: ReturnType<typeof route>) => create(RouteEventSchema, { type: RouteEventType.UPSERT, route: r });
const remove = (r: ReturnType<typeof route>) => create(RouteEventSchema, { type: RouteEventType.DELETE, route: r });
const snapshot = (routes: ReturnType<typeof route>[], revision = 10n) =>
  create(WatchRoutesResponseSchema, { snapshot: true, routes, revision });
const events = (evs: RouteEvent[], revision = 11n) => create(WatchRoutesResponseSchema, { snapshot: false, events: evs, revision });
const plain = (set: RouteSet) => Object.fromEntries([...set].map(([k, r]) => [k, `${r.subnet} via ${r.nodeIp}`]));

const a = route("a", "10.244.1.0/24", "192.168.0.1");
const b = route("b", "10.244.2.0/24", "192.168.0.2");
const c = route("c", "10.244.3.0/24", "192.168.0.3");
const start: RouteSet = new Map([
  ["a", a],
  ["b", b],
]);

describe("applyRouteMessage", () => {
  it("a snapshot replaces the whole set", () => {
    const next = applyRouteMessage(start, snapshot([c]));
    expect(plain(next)).toEqual({ c: "10.244.3.0/24 via 192.168.0.3" });
  });

  it("an empty snapshot clears the set", () => {
    expect(applyRouteMessage(start, snapshot([])).size).toBe(0);
  });

  it("events patch the set: upsert adds, upsert changes, delete removes", () => {
    const next = applyRouteMessage(start, events([upsert(c), upsert(route("a", "10.244.1.0/24", "192.168.0.11")), remove(b)]));
    expect(plain(next)).toEqual({ a: "10.244.1.0/24 via 192.168.0.11", c: "10.244.3.0/24 via 192.168.0.3" });
  });

  it("a delete of an unknown route changes nothing", () => {
    expect(plain(applyRouteMessage(start, events([remove(c)])))).toEqual(plain(start));
  });

  it("events without a route, or of an unspecified type, are ignored", () => {
    const noRoute = create(RouteEventSchema, { type: RouteEventType.UPSERT });
    const unspecified = create(RouteEventSchema, { type: RouteEventType.UNSPECIFIED, route: c });
    expect(plain(applyRouteMessage(start, events([noRoute, unspecified])))).toEqual(plain(start));
  });

  it("events in a snapshot message apply on top of the snapshot", () => {
    const msg = create(WatchRoutesResponseSchema, { snapshot: true, routes: [a, b], events: [remove(a), upsert(c)], revision: 5n });
    expect(Object.keys(plain(applyRouteMessage(new Map(), msg))).sort()).toEqual(["b", "c"]);
  });

  it("later events win within one message", () => {
    const next = applyRouteMessage(new Map(), events([upsert(c), remove(c), upsert(route("c", "10.244.30.0/24", "192.168.0.3"))]));
    expect(plain(next)).toEqual({ c: "10.244.30.0/24 via 192.168.0.3" });
  });

  it("never mutates the set it was given", () => {
    const before = plain(start);
    applyRouteMessage(start, events([remove(a), upsert(c)]));
    applyRouteMessage(start, snapshot([]));
    expect(plain(start)).toEqual(before);
  });
});

/** Resolves waiters once a counter reaches their number: "wait on events", never on time. */
class Counter {
  count = 0;
  private waiters: { n: number; resolve: () => void }[] = [];

  bump(): void {
    this.count++;
    for (const w of this.waiters.filter((w) => w.n <= this.count)) w.resolve();
    this.waiters = this.waiters.filter((w) => w.n > this.count);
  }

  reached(n: number): Promise<void> {
    return n <= this.count ? Promise.resolve() : new Promise((resolve) => this.waiters.push({ n, resolve }));
  }
}

/** One WatchRoutes stream, fed by the test; the reader's pulls are counted. */
class RouteStream {
  private readonly queue: Array<{ msg: WatchRoutesResponse } | { err: Error } | { end: true }> = [];
  private wake?: () => void;
  /** The reader asked for its n-th message: it has fully handled message n-1. */
  readonly pulls = new Counter();

  push(msg: WatchRoutesResponse): void {
    this.queue.push({ msg });
    this.wake?.();
  }

  fail(err: Error): void {
    this.queue.push({ err });
    this.wake?.();
  }

  end(): void {
    this.queue.push({ end: true });
    this.wake?.();
  }

  async *read(signal?: AbortSignal): AsyncGenerator<WatchRoutesResponse> {
    for (;;) {
      this.pulls.bump();
      while (this.queue.length === 0) {
        if (signal?.aborted) throw new TrellisError("UNAVAILABLE", "the call was aborted");
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          signal?.addEventListener("abort", () => resolve(), { once: true });
        });
      }
      const item = this.queue.shift();
      if (!item || "end" in item) return;
      if ("err" in item) throw item.err;
      yield item.msg;
    }
  }
}

/** The control plane's store of mirrored allocations, shared by every replica (it lives in etcd). */
class FakeStore {
  readonly allocations = new Map<string, Map<string, AllocationRecord>>(); // node -> address -> record

  of(node: string): Map<string, AllocationRecord> {
    const m = this.allocations.get(node) ?? new Map<string, AllocationRecord>();
    this.allocations.set(node, m);
    return m;
  }
}

type ApiCall = { method: string; nodeName: string; timeoutMs?: number; fromRevision?: bigint };

/** One control-plane replica as the daemon reaches it; `down` makes every call fail with it. */
class FakeReplica implements ControlPlaneApi {
  readonly calls: ApiCall[] = [];
  readonly watches = new Counter();
  /** Streams handed to the next WatchRoutes calls; once used up, a call gets a stream that never sends. */
  readonly streams: RouteStream[] = [];
  down?: Error;

  constructor(private readonly store: FakeStore) {}

  private enter(call: ApiCall): void {
    this.calls.push(call);
    if (this.down) throw this.down;
  }

  async registerNode(): Promise<RegisterNodeResponse> {
    throw new Error("registerNode is not used by these tests");
  }

  async heartbeat(): Promise<unknown> {
    throw new Error("heartbeat is not used by these tests");
  }

  async deregisterNode(): Promise<unknown> {
    throw new Error("deregisterNode is not used by these tests");
  }

  async renewCertificate(): Promise<{ certificatePem: string }> {
    throw new Error("renewCertificate is not used by these tests");
  }

  watchRoutes(req: { nodeName: string; fromRevision: bigint }, options?: { signal?: AbortSignal }): AsyncIterable<WatchRoutesResponse> {
    this.watches.bump();
    this.enter({ method: "watchRoutes", nodeName: req.nodeName, fromRevision: req.fromRevision });
    return (this.streams.shift() ?? new RouteStream()).read(options?.signal);
  }

  async syncAllocations(
    req: { nodeName: string; recorded: AllocationRecord[]; released: string[] },
    options?: { timeoutMs?: number },
  ): Promise<unknown> {
    this.enter({ method: "syncAllocations", nodeName: req.nodeName, timeoutMs: options?.timeoutMs });
    for (const r of req.recorded) this.store.of(req.nodeName).set(r.address, clone(AllocationRecordSchema, r));
    for (const a of req.released) this.store.of(req.nodeName).delete(a);
    return {};
  }

  async listNodeAllocations(req: { nodeName: string }, options?: { timeoutMs?: number }): Promise<{ allocations: AllocationRecord[] }> {
    this.enter({ method: "listNodeAllocations", nodeName: req.nodeName, timeoutMs: options?.timeoutMs });
    return { allocations: [...this.store.of(req.nodeName).values()].map((r) => clone(AllocationRecordSchema, r)) };
  }

  readonly reported: Array<{ nodeName: string; revision: bigint; routeCount: number; missing: string[] }> = [];

  async reportRoutes(req: { nodeName: string; revision: bigint; routeCount: number; missing: Route[] }): Promise<void> {
    this.reported.push({
      nodeName: req.nodeName,
      revision: req.revision,
      routeCount: req.routeCount,
      missing: req.missing.map((r) => `${r.subnet} via ${r.nodeIp}`),
    });
  }
}

function cluster(replicaCount: number, opts: { callTimeoutMs?: number } = {}) {
  const store = new FakeStore();
  const replicas = Array.from({ length: replicaCount }, () => new FakeReplica(store));
  const sleeps: number[] = [];
  const client = new ControlClient({
    replicas,
    log: pino({ level: "silent" }),
    nodeName: "node-1",
    nodeIp: "192.168.56.11",
    mtu: 1450,
    sleep: async (ms) => void sleeps.push(ms),
    ...opts,
  });
  return { client, replicas, store, sleeps };
}

const allocation = (address: string, containerId: string) =>
  create(AllocationRecordSchema, {
    address,
    attachment: create(AttachmentSchema, { networkName: "trellis", containerId, ifName: "eth0" }),
    hostVeth: hostVethName(containerId, "eth0"),
    createdAtMs: 1n,
  });
const methods = (r: FakeReplica) => r.calls.map((c) => c.method);

describe("ControlClient as the allocation mirror", () => {
  it("is an AllocationMirror", () => {
    const mirror: AllocationMirror = cluster(1).client;
    expect(typeof mirror.sync).toBe("function");
  });

  it("record, list and release go to the control plane under the node's name", async () => {
    const { client, replicas, store } = cluster(1);
    await client.sync([allocation("10.244.3.2", "a1")], []);
    await client.sync([allocation("10.244.3.3", "a2")], []);
    expect([...store.of("node-1").keys()]).toEqual(["10.244.3.2", "10.244.3.3"]);
    expect((await client.list()).map((r) => [r.address, r.attachment?.containerId])).toEqual([
      ["10.244.3.2", "a1"],
      ["10.244.3.3", "a2"],
    ]);
    await client.sync([], ["10.244.3.2"]);
    expect((await client.list()).map((r) => r.address)).toEqual(["10.244.3.3"]);
    expect(replicas[0]?.calls.every((c) => c.nodeName === "node-1")).toBe(true);
    expect(store.allocations.size).toBe(1);
  });

  it.each<[string, number | undefined, number]>([
    ["the default", undefined, 5_000],
    ["callTimeoutMs", 750, 750],
  ])("every call carries a deadline (%s)", async (_what, callTimeoutMs, expected) => {
    const { client, replicas } = cluster(1, callTimeoutMs === undefined ? {} : { callTimeoutMs });
    await client.sync([allocation("10.244.3.2", "a1")], []);
    await client.list();
    await client.sync([], ["10.244.3.2"]);
    expect(replicas[0]?.calls.map((c) => c.timeoutMs)).toEqual([expected, expected, expected]);
  });

  it.each<[Reason]>([["UNAVAILABLE"], ["TIMEOUT"]])(
    "a replica failing with %s: the call is retried once on the next, which then stays current",
    async (reason) => {
      const { client, replicas, store } = cluster(2);
      const [first, second] = replicas;
      if (!first || !second) throw new Error("two replicas expected");
      first.down = new TrellisError(reason, "replica 1 unreachable");
      await client.sync([allocation("10.244.3.2", "a1")], []);
      expect([...store.of("node-1").keys()]).toEqual(["10.244.3.2"]);
      expect(methods(first)).toEqual(["syncAllocations"]);
      expect(methods(second)).toEqual(["syncAllocations"]);

      expect((await client.list()).map((r) => r.address)).toEqual(["10.244.3.2"]);
      await client.sync([], ["10.244.3.2"]);
      expect(methods(first)).toEqual(["syncAllocations"]); // not asked again
      expect(methods(second)).toEqual(["syncAllocations", "listNodeAllocations", "syncAllocations"]);
    },
  );

  it.each<[string, "record" | "release" | "list"]>([
    ["record", "record"],
    ["release", "release"],
    ["list", "list"],
  ])("%s with every replica down fails UNAVAILABLE after exactly one retry", async (_what, op) => {
    const { client, replicas } = cluster(3);
    for (const r of replicas) r.down = new TrellisError("UNAVAILABLE", "unreachable");
    const call =
      op === "record"
        ? client.sync([allocation("10.244.3.2", "a1")], [])
        : op === "release"
          ? client.sync([], ["10.244.3.2"])
          : client.list();
    await rejectsWith(call, "UNAVAILABLE");
    expect(replicas.map((r) => r.calls.length)).toEqual([1, 1, 0]);
  });

  it("with one replica there is no retry", async () => {
    const { client, replicas } = cluster(1);
    const only = replicas[0];
    if (!only) throw new Error("one replica expected");
    only.down = new TrellisError("UNAVAILABLE", "unreachable");
    await rejectsWith(client.list(), "UNAVAILABLE");
    expect(only.calls).toHaveLength(1);
  });

  it.each<[Reason]>([["INVALID_ARGUMENT"], ["NOT_FOUND"], ["INTERNAL"]])("%s is not retried on another replica", async (reason) => {
    const { client, replicas } = cluster(2);
    const [first, second] = replicas;
    if (!first || !second) throw new Error("two replicas expected");
    first.down = new TrellisError(reason, "refused");
    await rejectsWith(client.sync([allocation("10.244.3.2", "a1")], []), reason);
    expect(first.calls).toHaveLength(1);
    expect(second.calls).toEqual([]);
  });

  it("a non-Trellis error is not retried either", async () => {
    const { client, replicas } = cluster(2);
    const [first, second] = replicas;
    if (!first || !second) throw new Error("two replicas expected");
    first.down = new RangeError("bug");
    await expect(client.list()).rejects.toBeInstanceOf(RangeError);
    expect(second.calls).toEqual([]);
  });
});

describe("ControlClient.routesCurrent", () => {
  const snap = (revision: bigint) => snapshot([a, b], revision);

  /** Starts watchRoutes on a cluster whose replicas hand out the given streams; returns how to stop it. */
  function watching(
    replicaCount: number,
    streams: RouteStream[][],
    onRoutes: (routes: RouteSet, revision: bigint, decidedAtMs?: number) => Promise<void> = async () => undefined,
  ) {
    const c = cluster(replicaCount);
    for (const [i, r] of c.replicas.entries()) r.streams.push(...(streams[i] ?? []));
    const stop = new AbortController();
    const done = c.client.watchRoutes(onRoutes, stop.signal);
    return { ...c, stop, done };
  }

  it("is stale, saying why, before any route set arrived", async () => {
    const stream = new RouteStream();
    const { client, stop, done } = watching(1, [[stream]]);
    expect(client.routesCurrent).toEqual({ current: false, detail: "no route set received yet" });
    await stream.pulls.reached(1); // connected, nothing received yet
    expect(client.routesCurrent.current).toBe(false);
    stop.abort();
    await done;
  });

  it("turns current once the first message is applied, not before", async () => {
    const stream = new RouteStream();
    const seenInOnRoutes: boolean[] = [];
    let client: ControlClient | undefined;
    const w = watching(1, [[stream]], async () => void seenInOnRoutes.push(client?.routesCurrent.current ?? true));
    client = w.client;
    stream.push(snap(10n));
    await stream.pulls.reached(2);
    expect(seenInOnRoutes).toEqual([false]);
    expect(client.routesCurrent).toEqual({ current: true, detail: "" });
    w.stop.abort();
    await w.done;
  });

  it("turns stale with the error when the stream breaks, and current again once the resumed stream delivers", async () => {
    const first = new RouteStream();
    const second = new RouteStream();
    const { client, replicas, stop, done } = watching(2, [[first], [second]]);
    first.push(snap(10n));
    await first.pulls.reached(2);
    expect(client.routesCurrent.current).toBe(true);

    first.fail(new TrellisError("UNAVAILABLE", "connection reset by peer"));
    await replicas[1]?.watches.reached(1); // failed over to the next replica
    expect(client.routesCurrent.current).toBe(false);
    expect(client.routesCurrent.detail).toContain("connection reset by peer");
    expect(replicas[1]?.calls[0]?.fromRevision).toBe(10n); // resumes where it stopped

    second.push(events([upsert(c)], 11n));
    await second.pulls.reached(2);
    expect(client.routesCurrent).toEqual({ current: true, detail: "" });
    stop.abort();
    await done;
  });

  it("turns stale when the stream ends", async () => {
    const first = new RouteStream();
    const second = new RouteStream();
    const { client, replicas, stop, done } = watching(1, [[first, second]]);
    first.push(snap(10n));
    await first.pulls.reached(2);
    first.end();
    await replicas[0]?.watches.reached(2);
    expect(client.routesCurrent.current).toBe(false);
    expect(client.routesCurrent.detail).toContain("ended");
    stop.abort();
    await done;
  });

  it("turns stale when applying the routes fails", async () => {
    const first = new RouteStream();
    const second = new RouteStream();
    let calls = 0;
    const { client, replicas, stop, done } = watching(1, [[first, second]], async () => {
      if (++calls === 2) throw new TrellisError("KERNEL", "ip route replace failed");
    });
    first.push(snap(10n));
    await first.pulls.reached(2);
    expect(client.routesCurrent.current).toBe(true);
    first.push(events([upsert(c)], 11n));
    await replicas[0]?.watches.reached(2);
    expect(client.routesCurrent.current).toBe(false);
    expect(client.routesCurrent.detail).toContain("ip route replace failed");
    stop.abort();
    await done;
  });

  it("hands on when the control plane decided a change, never for a snapshot (its decisions are of any age)", async () => {
    const stream = new RouteStream();
    const seen: Array<[bigint, number | undefined]> = [];
    const { stop, done } = watching(1, [[stream]], async (_routes, revision, decidedAtMs) => void seen.push([revision, decidedAtMs]));
    stream.push(create(WatchRoutesResponseSchema, { snapshot: true, routes: [a], revision: 10n, decidedAtMs: 1_700_000_000_000n }));
    stream.push(create(WatchRoutesResponseSchema, { events: [upsert(b)], revision: 11n, decidedAtMs: 1_700_000_000_123n }));
    stream.push(events([upsert(c)], 12n)); // from a control plane before decided_at_ms: 0
    await stream.pulls.reached(4);
    expect(seen).toEqual([
      [10n, undefined],
      [11n, 1_700_000_000_123],
      [12n, undefined],
    ]);
    stop.abort();
    await done;
  });

  it("aborting ends watchRoutes", async () => {
    const stream = new RouteStream();
    const { stop, done } = watching(1, [[stream]]);
    await stream.pulls.reached(1);
    stop.abort();
    await expect(done).resolves.toBeUndefined();
  });
});
