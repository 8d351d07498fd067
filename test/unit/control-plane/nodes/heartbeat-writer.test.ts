import { afterEach, describe, expect, it, vi } from "vitest";
import { HeartbeatWriter } from "../../../../control-plane/nodes/heartbeat-writer.js";

/** A store write that completes when the test says so, recording what each write carried. */
function gatedStore() {
  const writes: Array<{ beats: Map<string, bigint>; finish(err?: Error): void }> = [];
  let revision = 10n;
  const write = (beats: ReadonlyMap<string, bigint>) =>
    new Promise<bigint>((resolve, reject) => {
      const rev = ++revision;
      writes.push({ beats: new Map(beats), finish: (err) => (err ? reject(err) : resolve(rev)) });
    });
  return { writes, write };
}

const settle = () => new Promise((r) => setImmediate(r));

afterEach(() => {
  vi.useRealTimers();
});

describe("HeartbeatWriter: heartbeats written together while earlier writes are in flight", () => {
  it("an idle writer writes a heartbeat at once, alone", async () => {
    const store = gatedStore();
    const writer = new HeartbeatWriter(store.write);
    const beat = writer.record("a", 1n);
    expect(store.writes.map((w) => [...w.beats])).toEqual([[["a", 1n]]]);
    store.writes[0]!.finish();
    await expect(beat).resolves.toBe(11n);
  });

  it("heartbeats arriving while the writes in flight are full go together in the next write, and each gets its revision", async () => {
    const store = gatedStore();
    const writer = new HeartbeatWriter(store.write, { maxInFlight: 1 });
    const first = writer.record("a", 1n);
    const rest = ["b", "c", "d"].map((n, i) => writer.record(n, BigInt(i + 2)));
    expect(store.writes).toHaveLength(1);
    store.writes[0]!.finish();
    await first;
    await settle();
    expect(store.writes.map((w) => [...w.beats.keys()])).toEqual([["a"], ["b", "c", "d"]]);
    store.writes[1]!.finish();
    await expect(Promise.all(rest)).resolves.toEqual([12n, 12n, 12n]);
  });

  it("a node heartbeating twice before its write: one key in the write, with the later time, and both calls answered", async () => {
    const store = gatedStore();
    const writer = new HeartbeatWriter(store.write, { maxInFlight: 1 });
    void writer.record("x", 1n);
    const twice = [writer.record("a", 5n), writer.record("a", 6n)];
    store.writes[0]!.finish();
    await settle();
    expect([...store.writes[1]!.beats]).toEqual([["a", 6n]]);
    store.writes[1]!.finish();
    await expect(Promise.all(twice)).resolves.toEqual([12n, 12n]);
  });

  it("no write carries more than maxPerWrite heartbeats; more in flight at once up to maxInFlight", async () => {
    const store = gatedStore();
    const writer = new HeartbeatWriter(store.write, { maxPerWrite: 3, maxInFlight: 2 });
    const beats = Array.from({ length: 9 }, (_, i) => writer.record(`n${i}`, BigInt(i)));
    expect(store.writes.map((w) => w.beats.size)).toEqual([1, 1]); // two in flight: the rest wait
    store.writes[0]!.finish();
    store.writes[1]!.finish();
    await settle();
    expect(store.writes.map((w) => w.beats.size)).toEqual([1, 1, 3, 3]);
    store.writes[2]!.finish();
    await settle();
    expect(store.writes.map((w) => w.beats.size)).toEqual([1, 1, 3, 3, 1]);
    for (const w of store.writes.slice(3)) w.finish();
    await expect(Promise.all(beats)).resolves.toHaveLength(9);
    expect(store.writes.flatMap((w) => [...w.beats.keys()]).sort()).toEqual(Array.from({ length: 9 }, (_, i) => `n${i}`));
  });

  it("with lingerMs: a heartbeat waits that long for others to share its write; a full write goes at once", async () => {
    vi.useFakeTimers();
    const store = gatedStore();
    const writer = new HeartbeatWriter(store.write, { lingerMs: 100, maxPerWrite: 4 });
    const first = [writer.record("a", 1n), writer.record("b", 1n)];
    await vi.advanceTimersByTimeAsync(99);
    expect(store.writes).toHaveLength(0);
    void writer.record("c", 1n);
    await vi.advanceTimersByTimeAsync(1); // 100 ms after the first
    expect(store.writes.map((w) => [...w.beats.keys()])).toEqual([["a", "b", "c"]]);
    store.writes[0]!.finish();
    await expect(Promise.all(first)).resolves.toEqual([11n, 11n]);
    for (const n of ["d", "e", "f", "g"]) void writer.record(n, 2n); // four: full, no wait
    expect(store.writes.map((w) => w.beats.size)).toEqual([3, 4]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(store.writes).toHaveLength(2); // nothing left lingering
  });

  it("a heartbeat whose caller gave up before a write took it is not written; one a write took is", async () => {
    const store = gatedStore();
    const writer = new HeartbeatWriter(store.write, { maxInFlight: 1 });
    const early = new AbortController();
    const taken = writer.record("x", 1n, early.signal); // written at once
    const gone = new AbortController();
    const a = writer.record("a", 1n, gone.signal);
    const b = writer.record("b", 1n);
    const shared = new AbortController();
    const c1 = writer.record("c", 1n, shared.signal);
    const c2 = writer.record("c", 2n); // still waited for: c stays
    gone.abort(new Error("deadline"));
    shared.abort(new Error("deadline"));
    early.abort(new Error("too late to matter"));
    await expect(a).rejects.toThrow("deadline");
    await expect(c1).rejects.toThrow("deadline");
    store.writes[0]!.finish();
    await expect(taken).resolves.toBe(11n);
    await settle();
    expect(store.writes.map((w) => [...w.beats])).toEqual([
      [["x", 1n]],
      [
        ["b", 1n],
        ["c", 2n],
      ],
    ]);
    store.writes[1]!.finish();
    await expect(Promise.all([b, c2])).resolves.toEqual([12n, 12n]);
    const aborted = AbortSignal.abort(new Error("already"));
    await expect(writer.record("d", 1n, aborted)).rejects.toThrow("already");
    expect(store.writes).toHaveLength(2);
  });

  it("a failed write fails every heartbeat it carried, and the next write goes on", async () => {
    const store = gatedStore();
    const writer = new HeartbeatWriter(store.write, { maxInFlight: 1 });
    const a = writer.record("a", 1n);
    const b = writer.record("b", 1n);
    const c = writer.record("c", 1n);
    store.writes[0]!.finish(new Error("etcd: could not record heartbeats"));
    await expect(a).rejects.toThrow("etcd: could not record heartbeats");
    await settle();
    store.writes[1]!.finish(new Error("still down"));
    await expect(b).rejects.toThrow("still down");
    await expect(c).rejects.toThrow("still down");
    const d = writer.record("d", 2n);
    store.writes[2]!.finish();
    await expect(d).resolves.toBe(13n);
  });
});
