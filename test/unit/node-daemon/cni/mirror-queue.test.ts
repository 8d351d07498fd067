import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type AllocationMirror, MirrorQueue } from "../../../../node-daemon/cni/mirror-queue.js";
import { type AllocationRecord, AllocationRecordSchema } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";

const log = pino({ level: "silent" });
const rec = (address: string) => create(AllocationRecordSchema, { address });

/** A mirror whose record() is slow and release() fast: without ordering, a release would overtake. */
class SlowRecordMirror implements AllocationMirror {
  readonly held = new Set<string>();
  readonly calls: string[] = [];
  failNext = false;
  async record(r: AllocationRecord): Promise<void> {
    this.calls.push(`record ${r.address}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    if (this.failNext) {
      this.failNext = false;
      throw new Error("control plane unavailable");
    }
    this.held.add(r.address);
  }
  async release(address: string): Promise<void> {
    this.calls.push(`release ${address}`);
    this.held.delete(address);
  }
  async list(): Promise<AllocationRecord[]> {
    return [...this.held].map(rec);
  }
}

describe("MirrorQueue", () => {
  it("an ADD quickly followed by its DEL ends released in the mirror: the release never overtakes the record", async () => {
    const mirror = new SlowRecordMirror();
    const queue = new MirrorQueue(mirror, log);
    queue.record(rec("10.244.1.2"));
    queue.release("10.244.1.2");
    await queue.idle();
    expect(mirror.calls).toEqual(["record 10.244.1.2", "release 10.244.1.2"]);
    expect(mirror.held.size).toBe(0);
  });

  it("writes nothing until the caller's turn is over (the pod path answers first)", async () => {
    const mirror = new SlowRecordMirror();
    const queue = new MirrorQueue(mirror, log);
    queue.record(rec("10.244.1.2"));
    expect(mirror.calls).toEqual([]);
    await queue.idle();
    expect(mirror.calls).toEqual(["record 10.244.1.2"]);
  });

  it("a failed write does not stop the ones after it", async () => {
    const mirror = new SlowRecordMirror();
    mirror.failNext = true;
    const queue = new MirrorQueue(mirror, log);
    queue.record(rec("10.244.1.2"));
    queue.record(rec("10.244.1.3"));
    await queue.idle();
    expect([...mirror.held]).toEqual(["10.244.1.3"]);
  });

  it("keeps at most `limit` writes waiting, dropping the oldest (the periodic full sync repairs them)", async () => {
    const mirror = new SlowRecordMirror();
    const queue = new MirrorQueue(mirror, log, 3);
    for (let i = 2; i < 10; i++) queue.release(`10.244.1.${i}`);
    await queue.idle();
    expect(mirror.calls).toEqual(["release 10.244.1.7", "release 10.244.1.8", "release 10.244.1.9"]);
  });

  it("without a mirror it does nothing", async () => {
    const queue = new MirrorQueue(undefined, log);
    queue.record(rec("10.244.1.2"));
    await expect(queue.idle()).resolves.toBeUndefined();
  });
});
