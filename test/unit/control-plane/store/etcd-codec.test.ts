import { EventEmitter } from "node:events";
import type { IWatchResponse, Watcher } from "etcd3";
import { describe, expect, it } from "vitest";
import { followWatch } from "../../../../control-plane/store/etcd-codec.js";

/** The part of etcd3's Watcher that followWatch uses: its events and cancel(). */
function fakeWatcher(): Watcher & { cancelled: number } {
  const w = new EventEmitter() as EventEmitter & { cancelled: number; cancel(): Promise<void> };
  w.cancelled = 0;
  w.cancel = async () => {
    w.cancelled++;
  };
  return w as unknown as Watcher & { cancelled: number };
}

const response = { events: [], header: { revision: "7" } } as unknown as IWatchResponse;

describe("followWatch", () => {
  it("delivers data until the signal aborts, and none that arrives after (cancel is asynchronous)", () => {
    const w = fakeWatcher();
    const life = new AbortController();
    const seen: IWatchResponse[] = [];
    followWatch(w, life.signal, (res) => seen.push(res));
    w.emit("data", response);
    life.abort();
    w.emit("data", response);
    expect(seen).toHaveLength(1);
    expect(w.cancelled).toBe(1);
  });

  it("reports a broken stream once, and delivers nothing after it (the caller starts over)", () => {
    const w = fakeWatcher();
    const lost: Error[] = [];
    const seen: IWatchResponse[] = [];
    followWatch(
      w,
      new AbortController().signal,
      (res) => seen.push(res),
      (err) => lost.push(err),
    );
    w.emit("disconnected", undefined);
    w.emit("error", new Error("compacted"));
    w.emit("data", response);
    expect(lost.map((e) => e.message)).toEqual(["etcd watch stream disconnected"]);
    expect(seen).toEqual([]);
  });

  it("reports nothing lost once the signal aborted", () => {
    const w = fakeWatcher();
    const life = new AbortController();
    const lost: Error[] = [];
    followWatch(
      w,
      life.signal,
      () => undefined,
      (err) => lost.push(err),
    );
    life.abort();
    w.emit("error", new Error("cancelled"));
    expect(lost).toEqual([]);
  });
});
