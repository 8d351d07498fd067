// What the control plane's metrics read from the domain: registrations by result, expiries, and the
// liveness view its gauges show (nodes by state, node records, disruption), on in-memory stores.
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { countNodeStates, Liveness } from "../../../../control-plane/nodes/liveness.js";
import { Registrar, type RegistrationResult } from "../../../../control-plane/nodes/registrar.js";
import { createSubnetPool, freeSubnetCount } from "../../../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../../../proto/core/cidr.js";
import { openMemoryStores } from "../../../support/memory-stores.js";

const log = pino({ level: "silent" });

function replica() {
  const stores = openMemoryStores();
  let now = 1_000;
  const clock = () => now;
  const results: RegistrationResult[] = [];
  let expiries = 0;
  const pool = createSubnetPool(Cidr.parse("10.244.0.0/16"), 24);
  const liveness = new Liveness({
    ...stores,
    log,
    clock,
    policy: { ttlMs: 10_000, graceMs: 600_000, disruptionShare: 0.5, heartbeatIntervalMs: 2_000 },
    metrics: { countExpiry: () => void expiries++ },
  });
  const registrar = new Registrar({
    ...stores,
    liveness,
    pool,
    log,
    clock,
    rand: () => 0.5,
    metrics: { countRegistration: (r) => void results.push(r) },
  });
  const register = (name: string, ip: string, mtu = 1500) => registrar.register({ name, nodeIp: ip, mtu });
  return {
    registrar,
    liveness,
    register,
    results,
    expiries: () => expiries,
    advance: (ms: number) => {
      now += ms;
    },
    pool,
  };
}

describe("registrations by result (trellis_registrations_total)", () => {
  it("new, unchanged, returned, and a failure by its reason", async () => {
    const r = replica();
    await r.register("n1", "192.168.1.11");
    await r.register("n2", "192.168.1.12");
    await r.register("n1", "192.168.1.11"); // a restart: nothing to write
    await r.register("n1", "192.168.1.11", 1400); // its MTU changed: its record is rewritten
    await r.registrar.withdraw("n2");
    await r.register("n2", "192.168.1.12"); // back after leaving
    await expect(r.register("n3", "127.0.0.1")).rejects.toThrow(/loopback/);
    await expect(r.register("n4", "192.168.1.11")).rejects.toThrow(/already registered by live node n1/);
    expect(r.results).toEqual(["new", "new", "unchanged", "returned", "returned", "invalid_argument", "already_exists"]);
  });
});

describe("the liveness view (trellis_nodes, trellis_subnets_free, trellis_disruption) and expiries", () => {
  it("is unknown before the first expiry round, then counts nodes by state as the round leaves them", async () => {
    const r = replica();
    expect(r.liveness.view).toBeUndefined();
    for (const i of [1, 2, 3]) await r.register(`n${i}`, `192.168.1.${10 + i}`);
    await r.registrar.withdraw("n3", "drained");
    await r.liveness.sweep(0);
    expect(r.liveness.view).toEqual({
      nodesByState: new Map([
        ["live", 2],
        ["withdrawn", 0],
        ["drained", 1],
        ["evicted", 0],
        ["expired", 0],
      ]),
      nodeRecords: 3,
      disruption: false,
    });
    expect(freeSubnetCount(r.pool, 3)).toBe(252); // 255 usable /24s (the first is left unused), 3 leased

    // n2 goes quiet; n1 heartbeats on: n2 expires in the round that finds it overdue, and is counted so.
    for (let t = 0; t <= 12_000; t += 1_000) {
      r.advance(1_000);
      await r.liveness.heartbeat("n1");
      await r.liveness.sweep(0);
    }
    expect(r.expiries()).toBe(1);
    expect(r.liveness.view?.nodesByState.get("live")).toBe(1);
    expect(r.liveness.view?.nodesByState.get("expired")).toBe(1);
    expect(r.liveness.view?.nodeRecords).toBe(3);
    expect(r.liveness.view?.disruption).toBe(false);
  });

  it("countNodeStates: an unknown or empty released reason counts as withdrawn", () => {
    const node = (name: string, live: boolean, releasedReason = "") => ({ name, live, releasedReason }) as never;
    const counts = countNodeStates([node("a", true), node("b", false), node("c", false, "evicted"), node("d", false, "gone fishing")]);
    expect(Object.fromEntries(counts)).toEqual({ live: 1, withdrawn: 2, drained: 0, evicted: 1, expired: 0 });
  });
});
