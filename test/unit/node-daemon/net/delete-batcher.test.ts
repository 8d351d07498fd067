import { describe, expect, it } from "vitest";
import type { NetlinkPool } from "../../../../node-daemon/net/netlink-pool.js";
import { DeleteBatcher } from "../../../../node-daemon/net/rtnetlink.js";
import { type NlMessage, nlmsg } from "../../../../node-daemon/net/rtnetlink-codec.js";

const ack = (errno = 0): NlMessage[] => {
  const payload = new Uint8Array(20);
  new DataView(payload.buffer).setInt32(0, -errno, true);
  return [{ type: nlmsg.error, flags: 0, seq: 1, payload }];
};

/** A pool whose deleteLinks answers from `gone` (ENODEV) and `failGroup`, and records each batch. */
function fakePool(options: { gone?: string[]; failGroup?: boolean } = {}) {
  const batches: string[][] = [];
  let release: () => void = () => undefined;
  const pool = {
    async deleteLinks(names: readonly string[]): Promise<NlMessage[][]> {
      batches.push([...names]);
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      const each = names.map((n) => ack(options.gone?.includes(n) ? 19 : 0));
      return names.length === 1 ? each : [...each, ack(options.failGroup ? 16 : 0)];
    },
  };
  return { pool: pool as unknown as NetlinkPool, batches, next: () => release() };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("DeleteBatcher", () => {
  it("deletes asked for while one runs go together as one group in the next batch", async () => {
    const { pool, batches, next } = fakePool({ gone: ["trc"] });
    const batcher = new DeleteBatcher(pool);
    const first = batcher.delete("tra");
    await tick();
    const rest = ["trb", "trc", "trd"].map((n) => batcher.delete(n));
    next();
    await tick();
    next();
    expect(await first).toBe(true);
    expect(await Promise.all(rest)).toEqual([true, false, true]); // trc was already gone
    expect(batches).toEqual([["tra"], ["trb", "trc", "trd"]]);
  });

  it("a failed group delete fails every link of the batch, with the kernel's reason", async () => {
    const { pool, next } = fakePool({ failGroup: true });
    const batcher = new DeleteBatcher(pool);
    const first = batcher.delete("tra");
    await tick();
    const rest = ["trb", "trc"].map((n) => batcher.delete(n).catch((err: Error) => err.message));
    next();
    await tick();
    next();
    await first;
    expect(await Promise.all(rest)).toEqual([
      "could not delete trb (with 1 others, as one group): EBUSY",
      "could not delete trc (with 1 others, as one group): EBUSY",
    ]);
  });
});
