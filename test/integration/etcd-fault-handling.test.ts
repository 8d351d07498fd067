// How the control plane's etcd client treats a call that misses its deadline (issue 10, 5000 nodes). etcd3's
// defaults count it as a host failure: three in a row open the host's circuit breaker, and every call to
// that host is then refused for 5 s; and each is retried twice more, with a fresh deadline each time. On a
// replica whose own event loop lags (seen: 5-7 s at 3400 nodes) every call misses its deadline, so the
// breakers of every host opened together, heartbeats were refused wholesale, and their retries fed the
// overload. A deadline says the call took too long, not that the host is gone.
import { afterEach, describe, expect, it } from "vitest";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe("etcd calls that miss their deadline", () => {
  it("fail once, within about their deadline, and do not shut the replica off from an etcd that answers again", async () => {
    const etcd: EtcdHandle = await startEtcd();
    cleanups.push(() => etcd.stop());
    const store: EtcdStores = openEtcdStores({ endpoints: [etcd.endpoint], root: namespace(), callTimeoutMs: 1_000 });
    cleanups.push(async () => store.close());
    expect(await store.nodes.findNode("n1")).toBeUndefined(); // connected

    process.kill(etcd.pid, "SIGSTOP");
    try {
      for (let i = 0; i < 4; i++) {
        const started = performance.now();
        await expect(store.nodes.findNode("n1")).rejects.toMatchObject({ name: "TrellisError", reason: "UNAVAILABLE" });
        // One deadline (1 s), not three (retried with a fresh deadline each time).
        expect(performance.now() - started, `call ${i + 1}`).toBeLessThan(2_500);
      }
    } finally {
      process.kill(etcd.pid, "SIGCONT");
    }
    // Not "the circuit breaker is open" for the next 5 s: etcd answers, so the call succeeds.
    expect(await store.nodes.findNode("n1")).toBeUndefined();
  });
});
