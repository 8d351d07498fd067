// A watch that etcd never confirms fails within the call deadline instead of waiting forever: etcd3's own
// create() waits through any number of reconnects, so a replica whose etcd stopped answering just as it
// started its route feed never said why, and never became ready (seen in CI: no "route feed started").
import { afterEach, describe, expect, it } from "vitest";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, freePort, startEtcd } from "../support/etcd.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

function open(endpoint: string): EtcdStores {
  const store = openEtcdStores({ endpoints: [endpoint], root: namespace(), callTimeoutMs: 1_000 });
  cleanups.push(async () => store.close());
  return store;
}

const within = async <T>(ms: number, p: Promise<T>): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
};

describe("creating an etcd watch", () => {
  it("with no etcd at the endpoint: every watch fails with UNAVAILABLE, saying which, within the call deadline", async () => {
    const store = open(`http://127.0.0.1:${await freePort()}`);
    const signal = new AbortController().signal;
    await expect(
      within(
        5_000,
        store.nodes.watchNodes(1n, () => undefined, signal),
      ),
    ).rejects.toMatchObject({
      name: "TrellisError",
      reason: "UNAVAILABLE",
      message: expect.stringMatching(/^etcd: could not watch nodes: /),
    });
    await expect(
      within(
        5_000,
        store.events.watchEvents(() => undefined, signal),
      ),
    ).rejects.toMatchObject({
      reason: "UNAVAILABLE",
      message: expect.stringMatching(/^etcd: could not watch cluster events: /),
    });
  });

  it("with etcd stopped (SIGSTOP) after a read: the watch fails within the deadline, and one made once it continues works", async () => {
    const etcd: EtcdHandle = await startEtcd();
    cleanups.push(() => etcd.stop());
    const store = open(etcd.endpoint);
    const { revision } = await store.nodes.listNodes();
    const stop = new AbortController();
    cleanups.push(async () => stop.abort());
    process.kill(etcd.pid, "SIGSTOP");
    try {
      await expect(
        within(
          5_000,
          store.nodes.watchNodes(revision + 1n, () => undefined, stop.signal),
        ),
      ).rejects.toMatchObject({
        reason: "UNAVAILABLE",
        message: expect.stringMatching(/^etcd: could not watch nodes: etcd did not confirm the watch within 1000 ms/),
      });
    } finally {
      process.kill(etcd.pid, "SIGCONT");
    }
    await within(
      10_000,
      store.nodes.watchNodes(revision + 1n, () => undefined, stop.signal),
    );
  });
});
