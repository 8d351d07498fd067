import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type AllocationMirror, MirrorQueue } from "../../../../node-daemon/cni/mirror-queue.js";
import { type AllocationRecord, AllocationRecordSchema } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";

const log = pino({ level: "silent" });
const rec = (address: string) => create(AllocationRecordSchema, { address });

/** A mirror whose calls are slow and recorded; `failNext` makes the next call fail. */
class SlowMirror implements AllocationMirror {
  readonly held = new Set<string>();
  readonly calls: string[] = [];
  failNext = false;
  async sync(recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void> {
    this.calls.push(`sync +[${recorded.map((r) => r.address).join(",")}] -[${released.join(",")}]`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    if (this.failNext) {
      this.failNext = false;
      throw new Error("control plane unavailable");
    }
    for (const r of recorded) this.held.add(r.address);
    for (const a of released) this.held.delete(a);
  }
  async list(): Promise<AllocationRecord[]> {
    return [...this.held].map(rec);
  }
}

describe("MirrorQueue", () => {
  it("an ADD quickly followed by its DEL ends released in the mirror: only the last write of an address is sent", async () => {
    const mirror = new SlowMirror();
    const queue = new MirrorQueue(mirror, log);
    queue.record(rec("10.244.1.2"));
    queue.release("10.244.1.2");
    queue.record(rec("10.244.1.3"));
    await queue.idle();
    expect(mirror.calls).toEqual(["sync +[10.244.1.3] -[10.244.1.2]"]);
    expect([...mirror.held]).toEqual(["10.244.1.3"]);
  });

  it("writes made while a batch is in flight go in the next batch, in order", async () => {
    const mirror = new SlowMirror();
    const queue = new MirrorQueue(mirror, log);
    queue.record(rec("10.244.1.2"));
    await new Promise((resolve) => setTimeout(resolve, 5)); // the first batch is on its way
    queue.release("10.244.1.2");
    await queue.idle();
    expect(mirror.calls).toEqual(["sync +[10.244.1.2] -[]", "sync +[] -[10.244.1.2]"]);
    expect(mirror.held.size).toBe(0);
  });

  it("writes nothing until the caller's turn is over (the pod path answers first)", async () => {
    const mirror = new SlowMirror();
    const queue = new MirrorQueue(mirror, log);
    queue.record(rec("10.244.1.2"));
    expect(mirror.calls).toEqual([]);
    await queue.idle();
    expect(mirror.calls).toHaveLength(1);
  });

  it("a failed batch does not stop the ones after it", async () => {
    const mirror = new SlowMirror();
    mirror.failNext = true;
    const queue = new MirrorQueue(mirror, log);
    queue.record(rec("10.244.1.2"));
    await new Promise((resolve) => setTimeout(resolve, 5));
    queue.record(rec("10.244.1.3"));
    await queue.idle();
    expect([...mirror.held]).toEqual(["10.244.1.3"]);
  });

  it("keeps at most `limit` writes waiting, dropping the oldest (the periodic full sync repairs them)", async () => {
    const mirror = new SlowMirror();
    const queue = new MirrorQueue(mirror, log, 3);
    for (let i = 2; i < 10; i++) queue.release(`10.244.1.${i}`);
    await queue.idle();
    expect(mirror.calls).toEqual(["sync +[] -[10.244.1.7,10.244.1.8,10.244.1.9]"]);
  });

  it("sends at most 500 writes per call", async () => {
    const mirror = new SlowMirror();
    const queue = new MirrorQueue(mirror, log);
    for (let i = 0; i < 1200; i++) queue.release(`10.${i >> 8}.${i & 255}.1`);
    await queue.idle();
    expect(mirror.calls).toHaveLength(3);
  });

  it("without a mirror it does nothing", async () => {
    const queue = new MirrorQueue(undefined, log);
    queue.record(rec("10.244.1.2"));
    await expect(queue.idle()).resolves.toBeUndefined();
  });
});
