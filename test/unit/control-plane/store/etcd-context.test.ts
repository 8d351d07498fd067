// The metrics of the etcd call wrapper every Etcd* store goes through: no etcd needed (the calls here
// never reach the client); the stores' real calls are covered by the integration contract suites.
import { afterEach, describe, expect, it } from "vitest";
import { EtcdContext, type EtcdOp } from "../../../../control-plane/store/etcd-context.js";
import { TrellisError } from "../../../../proto/core/errors.js";

const contexts: EtcdContext[] = [];
afterEach(() => {
  for (const c of contexts.splice(0)) c.close();
});

function context() {
  const seen: Array<[EtcdOp, number]> = [];
  const conflicts: string[] = [];
  const c = new EtcdContext({
    endpoints: ["http://127.0.0.1:1"],
    metrics: { observeEtcd: (op, seconds) => void seen.push([op, seconds]), countTxnConflict: (txn) => void conflicts.push(txn) },
  });
  contexts.push(c);
  return { c, seen, conflicts: () => conflicts };
}

describe("EtcdContext metrics", () => {
  it("times every call by op, failed ones too (which still become UNAVAILABLE naming what was done)", async () => {
    const { c, seen } = context();
    await expect(c.call("get", "read node n1", async () => 42)).resolves.toBe(42);
    const failed = await c
      .call("txn", "claim 10.244.1.0/24 for n1", async () => Promise.reject(new Error("connection refused")))
      .catch((e) => e);
    expect(failed).toBeInstanceOf(TrellisError);
    expect((failed as TrellisError).message).toBe("etcd: could not claim 10.244.1.0/24 for n1: connection refused");
    expect(seen.map(([op]) => op)).toEqual(["get", "txn"]);
    for (const [, seconds] of seen) expect(seconds).toBeGreaterThanOrEqual(0);
  });

  it("counts a compare-and-swap whose compare failed as a conflict of its kind, and only those", () => {
    const { c, conflicts } = context();
    expect(c.applied({ succeeded: true }, "claim_subnet")).toBe(true);
    expect(conflicts()).toEqual([]);
    expect(c.applied({ succeeded: false }, "claim_subnet")).toBe(false);
    expect(c.applied({ succeeded: false }, "report_routes")).toBe(false);
    expect(conflicts()).toEqual(["claim_subnet", "report_routes"]);
  });

  it("without metrics, calls and compare results pass through", async () => {
    const c = new EtcdContext({ endpoints: ["http://127.0.0.1:1"] });
    contexts.push(c);
    await expect(c.call("put", "record heartbeat of n1", async () => "ok")).resolves.toBe("ok");
    expect(c.applied({ succeeded: false }, "update_node")).toBe(false);
  });
});
