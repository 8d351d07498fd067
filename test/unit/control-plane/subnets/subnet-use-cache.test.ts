// The replica's cached view of leased and freed subnets (issue 10: registration without reading every
// lease), with an injected clock and a store read the test releases by hand.
import { describe, expect, it } from "vitest";
import type { SubnetUse } from "../../../../control-plane/store/subnet-store.js";
import { createSubnetPool } from "../../../../control-plane/subnets/subnet-pool.js";
import { SubnetUseCache } from "../../../../control-plane/subnets/subnet-use-cache.js";
import { Cidr } from "../../../../proto/core/cidr.js";

const pool = createSubnetPool(Cidr.parse("10.244.0.0/16"), 24);
const cidr = (text: string) => Cidr.parse(text);

/** A store read that answers (nothing leased, nothing freed) only when the test says. */
function fakeStore() {
  const store = {
    reads: 0,
    pending: [] as { resolve: (use: SubnetUse) => void; reject: (err: Error) => void }[],
    read: () => {
      store.reads++;
      return new Promise<SubnetUse>((resolve, reject) => store.pending.push({ resolve, reject }));
    },
    answer: () => {
      for (const p of store.pending.splice(0)) p.resolve({ leasedSubnets: [], freedSubnets: [] });
    },
    fail: () => {
      for (const p of store.pending.splice(0)) p.reject(new Error("etcd: could not list subnets/: 4 DEADLINE_EXCEEDED"));
    },
  };
  return store;
}

/** Lets every promise already settled run its callbacks. */
const settled = () => new Promise((resolve) => setImmediate(resolve));

describe("SubnetUseCache", () => {
  it("reads once for callers that ask together, and again only once the view is older than its maximum age", async () => {
    const store = fakeStore();
    let now = 0;
    const cache = new SubnetUseCache(pool, store.read, 1_000, () => now);
    const both = Promise.all([cache.get(), cache.get()]);
    store.answer();
    const [first, second] = await both;
    expect(first).toBe(second);
    expect(store.reads).toBe(1);
    now = 999;
    expect(await cache.get()).toBe(first);
    expect(store.reads).toBe(1);
    now = 1_000;
    expect(await cache.get()).toBe(first); // stale: handed out at once, and read again meanwhile
    expect(await cache.get()).toBe(first);
    expect(store.reads).toBe(2);
    store.answer();
    await settled();
    expect(await cache.get()).not.toBe(first);
    expect(store.reads).toBe(2);
  });

  it("a stale view is handed out without waiting for the read, and a read that fails keeps it (issue 10: at 4000 nodes a slow etcd list failed every registration waiting on it)", async () => {
    const store = fakeStore();
    let now = 0;
    const cache = new SubnetUseCache(pool, store.read, 1_000, () => now);
    const pending = cache.get();
    store.answer();
    const first = await pending;
    now = 5_000;
    let answered = false;
    void cache.get().then(() => {
      answered = true;
    });
    await settled();
    expect(answered).toBe(true); // the read started is still on its way
    store.fail();
    await settled();
    expect(await cache.get()).toBe(first);
    expect(store.reads).toBe(3); // the failed read left the view stale: the next get read again
    store.answer();
  });

  it("counts a subnet noted as taken until a read that started after the note, which shows the truth", async () => {
    const store = fakeStore();
    let now = 0;
    const cache = new SubnetUseCache(pool, store.read, 1_000, () => now);
    const before = cache.get();
    now = 5;
    cache.noteTaken("10.244.1.0/24"); // claimed while the read was on its way: the read may lack it
    store.answer();
    expect((await before).isFree(cidr("10.244.1.0/24"))).toBe(false);
    now = 2_000;
    await cache.get(); // stale: read again, starting after the note: the store's answer (here: not leased) wins
    store.answer();
    await settled();
    expect((await cache.get()).isFree(cidr("10.244.1.0/24"))).toBe(true);
  });

  it("marks a noted subnet in the view it hands out", async () => {
    const store = fakeStore();
    const cache = new SubnetUseCache(pool, store.read, 1_000, () => 0);
    const pending = cache.get();
    store.answer();
    const view = await pending;
    expect(view.pick().toString()).toBe("10.244.1.0/24");
    cache.noteTaken("10.244.1.0/24");
    expect((await cache.get()).pick().toString()).toBe("10.244.2.0/24");
  });

  it("after invalidate(), reads again, even when a read that started before it is still on its way", async () => {
    const store = fakeStore();
    const cache = new SubnetUseCache(pool, store.read, Number.POSITIVE_INFINITY, () => 0);
    const old = cache.get();
    cache.invalidate(); // e.g. this replica freed a subnet after that read started
    const fresh = cache.get();
    expect(store.reads).toBe(2);
    store.answer();
    await Promise.all([old, fresh]);
    expect(await cache.get()).toBe(await fresh);
    expect(store.reads).toBe(2);
  });
});
