// Liveness and expiry (DESIGN.md §2) with Liveness and ExpiryLoop replicas over one in-memory store,
// driven by an injected clock in fixed steps: heartbeats spread over the interval, replicas sweeping at
// their own offsets, partitions, clock skew between replicas, and a replica paused between planning and
// committing. Every interleaving is deterministic.
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { ExpiryPolicy } from "../../../../control-plane/nodes/expiry-plan.js";
import { ExpiryLoop, type Liveness } from "../../../../control-plane/nodes/liveness.js";
import { createSubnetPool } from "../../../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../../../proto/core/cidr.js";
import { type DisruptionRecord, DisruptionRecordSchema } from "../../../../proto/gen/trellis/store/v1/store_pb.js";
import { changeNode, registerNode } from "../../../contract/node-store.js";
import { replicaServices } from "../../../support/control-plane.js";
import { openMemoryStores } from "../../../support/memory-stores.js";
import { seeded } from "../../../support/prng.js";

const ttlMs = 40_000;
const intervalMs = 10_000;
/** What main.ts sweeps at with a 40 s TTL. */
const sweepMs = 5_000;
const stepMs = 100;
const policy: ExpiryPolicy = { ttlMs, graceMs: 600_000, disruptionShare: 0.33, heartbeatIntervalMs: intervalMs };
/** Wall-clock start of every simulation: replicas' clocks are this plus the simulated time (plus a skew). */
const epoch = 1_800_000_000_000;
const log = pino({ level: "silent" });
const pool = createSubnetPool(Cidr.parse("10.244.0.0/16"), 24);

interface Replica {
  readonly liveness: Liveness;
  readonly loop: ExpiryLoop;
  readonly sweepOffsetMs: number;
}

/**
 * Daemons heartbeating every 10 s with their phases spread over the interval (evenly, or drawn at random),
 * node i through replica i mod R; replica r sweeping every 5 s from its own offset. Time moves in 100 ms
 * steps.
 */
class Cluster {
  /** Simulated time, ms since the start. */
  t = 0;
  readonly store = openMemoryStores();
  readonly replicas: Replica[] = [];
  /** Nodes that send no heartbeats (partitioned or dead). */
  readonly silent = new Set<string>();
  /** Simulated time of each node's last heartbeat that reached etcd. */
  readonly lastBeat = new Map<string, number>();
  /** Simulated time each node went not-live. */
  readonly expiredAt = new Map<string, number>();
  /** Whether any replica kept overdue nodes' routes, or the record said disruption, at any step. */
  disruptionSeen = false;
  /** Replicas that do not sweep (paused). */
  readonly paused = new Set<number>();

  private readonly phases: number[];
  /** The nodes registered, before the first step. */
  private readonly seeded: Promise<void>;

  /** `rand` (seeded) draws heartbeat phases and sweep offsets; without it they are spread evenly. */
  constructor(
    readonly nodeCount: number,
    replicaCount: number,
    skewsMs: readonly number[] = [],
    rand?: () => number,
  ) {
    const onStep = (ms: number) => Math.floor(ms / stepMs) * stepMs;
    this.phases = Array.from({ length: nodeCount }, (_, i) => onStep(rand ? rand() * intervalMs : (i * intervalMs) / nodeCount));
    this.seeded = this.seed();
    for (let r = 0; r < replicaCount; r++)
      this.addReplica(skewsMs[r] ?? 0, rand ? onStep(rand() * sweepMs) : 300 + onStep((r * sweepMs) / replicaCount));
  }

  private async seed(): Promise<void> {
    for (let i = 0; i < this.nodeCount; i++) {
      const n = i + 1;
      await registerNode(this.store, this.name(i), `192.168.${n >> 8}.${n & 255}`, `10.244.${n}.0/24`);
    }
  }

  /** Names of the nodes that are not live. */
  async expiredNodes(): Promise<string[]> {
    return (await this.store.nodes.listNodes()).nodes.filter((n) => !n.live).map((n) => n.name);
  }

  async disruptionRecord(): Promise<DisruptionRecord | undefined> {
    return (await this.store.liveness.findDisruption())?.value;
  }

  name(i: number): string {
    return `n${i}`;
  }

  /** A replica (starting now) whose clock reads the simulated time plus `skewMs`. */
  addReplica(skewMs: number, sweepOffsetMs: number): Replica {
    const clock = () => epoch + this.t + skewMs;
    const { liveness } = replicaServices(this.store, { pool, log, clock, policy });
    const replica = { liveness, loop: new ExpiryLoop({ liveness, clock, log }), sweepOffsetMs };
    this.replicas.push(replica);
    return replica;
  }

  phase(i: number): number {
    return this.phases[i] ?? 0;
  }

  async runUntil(endMs: number): Promise<void> {
    await this.seeded;
    while (this.t < endMs) {
      this.t += stepMs;
      await this.step();
    }
  }

  private async step(): Promise<void> {
    for (let i = 0; i < this.nodeCount; i++) {
      const name = this.name(i);
      if (this.silent.has(name) || (this.t - this.phase(i)) % intervalMs !== 0) continue;
      // a daemon heartbeats through its replica, or the next one while that one is paused
      const via = this.replicas.map((_, k) => (i + k) % this.replicas.length).find((r) => !this.paused.has(r));
      if (via === undefined) continue;
      try {
        await this.replicas[via]?.liveness.heartbeat(name);
        this.lastBeat.set(name, this.t);
      } catch {
        // expired (a daemon would register again) or etcd down: either way no heartbeat reached etcd
      }
    }
    for (const [r, replica] of this.replicas.entries()) {
      if (this.paused.has(r) || (this.t - replica.sweepOffsetMs) % sweepMs !== 0) continue;
      const plan = await replica.loop.tick();
      if (plan && plan.keptInDisruption.length > 0) this.disruptionSeen = true; // kept routes of overdue nodes
    }
    for (const { name, live } of this.store.liveChanges) if (!live && !this.expiredAt.has(name)) this.expiredAt.set(name, this.t);
    if (!this.store.down && (await this.disruptionRecord())?.active) this.disruptionSeen = true;
  }
}

/** mulberry32: a small seeded generator, so random trials are the same on every run. */

describe("disruption: many nodes going quiet over several seconds keep their routes", () => {
  it.each([
    { share: "100%", replicas: 1, partitioned: (_i: number) => true },
    { share: "100%", replicas: 3, partitioned: (_i: number) => true },
    { share: "50%", replicas: 1, partitioned: (i: number) => i % 2 === 0 },
    { share: "50%", replicas: 3, partitioned: (i: number) => i % 2 === 0 },
  ])(
    "a $share partition of 100 nodes, $replicas replica(s): zero expired, and nothing when it heals",
    async ({ replicas, partitioned }) => {
      const cluster = new Cluster(100, replicas);
      await cluster.runUntil(60_000);
      expect(cluster.store.liveChanges).toEqual([]);
      const cut = Array.from({ length: 100 }, (_, i) => i)
        .filter(partitioned)
        .map((i) => cluster.name(i));
      for (const name of cut) cluster.silent.add(name);
      await cluster.runUntil(60_000 + 3 * ttlMs);
      expect(await cluster.expiredNodes()).toEqual([]);
      expect(await cluster.disruptionRecord()).toMatchObject({ active: true, liveNodes: 100n });
      expect([...((await cluster.disruptionRecord())?.overdueNodes ?? [])].sort()).toEqual([...cut].sort());

      cluster.silent.clear(); // the partition heals
      await cluster.runUntil(60_000 + 3 * ttlMs + 2 * ttlMs);
      expect(cluster.store.liveChanges).toEqual([]);
      expect((await cluster.disruptionRecord())?.active).toBe(false);
    },
  );

  it.each([1, 3])(
    "random heartbeat phases and sweep offsets, 5 trials of full and half partitions, %i replica(s): zero expired",
    async (replicas) => {
      const rand = seeded(10 + replicas);
      for (let trial = 0; trial < 5; trial++) {
        for (const partitioned of [() => true, () => rand() < 0.5]) {
          const cluster = new Cluster(100, replicas, [], rand);
          await cluster.runUntil(60_000);
          for (let i = 0; i < 100; i++) if (partitioned()) cluster.silent.add(cluster.name(i));
          const partitionAt = 60_000 + Math.floor(rand() * 100) * stepMs;
          await cluster.runUntil(partitionAt + 3 * ttlMs);
          expect(await cluster.expiredNodes(), `trial ${trial}`).toEqual([]);
        }
      }
    },
  );

  it.each([1, 3])("one node of 100 that dies expires after the TTL, within one sweep more (%i replica(s))", async (replicas) => {
    const cluster = new Cluster(100, replicas);
    await cluster.runUntil(60_000);
    cluster.silent.add("n42");
    const last = cluster.lastBeat.get("n42") ?? 0;
    await cluster.runUntil(60_000 + 2 * ttlMs);
    expect(await cluster.expiredNodes()).toEqual(["n42"]);
    const at = cluster.expiredAt.get("n42") ?? Number.NaN;
    expect(at).toBeGreaterThan(last + ttlMs);
    expect(at).toBeLessThanOrEqual(last + ttlMs + sweepMs);
    expect(cluster.disruptionSeen).toBe(false);
  });

  it("an expiry planned before another replica recorded a disruption does not commit", async () => {
    const cluster = new Cluster(10, 2);
    await cluster.runUntil(20_000);
    cluster.silent.add("n3");
    await cluster.runUntil(20_000 + ttlMs - sweepMs); // n3 nearly overdue
    let recorded = false;
    cluster.store.beforeNodeWrite = async (name) => {
      if (name !== "n3" || recorded) return;
      recorded = true; // between this replica's reads and its commit, another one enters disruption mode
      const before = await cluster.store.liveness.findDisruption();
      await cluster.store.liveness.putDisruption(
        create(DisruptionRecordSchema, { active: true, sinceMs: BigInt(epoch + cluster.t), liveNodes: 10n }),
        before?.modRevision ?? 0n,
      );
    };
    await cluster.runUntil(20_000 + ttlMs + 2 * sweepMs);
    expect(recorded).toBe(true);
    expect(await cluster.expiredNodes()).toEqual([]);
  });
});

describe("liveness is judged by each replica's own clock, from when it saw the heartbeat key change", () => {
  it.each([60_000, -60_000])(
    "replica B's clock %i ms off replica A's: no flaps, no disruption, a dead node still expires",
    async (skewMs) => {
      const cluster = new Cluster(100, 2, [0, skewMs]);
      await cluster.runUntil(3 * ttlMs);
      expect(cluster.store.liveChanges).toEqual([]);
      expect(cluster.disruptionSeen).toBe(false);
      cluster.silent.add("n7");
      const last = cluster.lastBeat.get("n7") ?? 0;
      await cluster.runUntil(3 * ttlMs + 2 * ttlMs);
      expect(await cluster.expiredNodes()).toEqual(["n7"]);
      expect(cluster.expiredAt.get("n7")).toBeLessThanOrEqual(last + ttlMs + sweepMs);
      expect(cluster.disruptionSeen).toBe(false);
    },
  );

  it("a replica paused between planning and committing cannot expire a node that heartbeated meanwhile", async () => {
    const cluster = new Cluster(10, 2);
    await cluster.runUntil(20_000);
    cluster.silent.add("n4"); // n4 goes quiet: heartbeats through replica 0
    let resumedAt: number | undefined;
    cluster.store.beforeNodeWrite = async (name) => {
      if (name !== "n4" || resumedAt !== undefined) return;
      // The replica planned n4's expiry and stopped (GC, SIGSTOP) before committing; meanwhile n4 comes
      // back and heartbeats through the other replica.
      resumedAt = cluster.t;
      cluster.silent.delete("n4");
      await cluster.replicas[1]?.liveness.heartbeat("n4");
      cluster.lastBeat.set("n4", cluster.t);
    };
    await cluster.runUntil(20_000 + ttlMs + 2 * sweepMs);
    expect(resumedAt).toBeDefined();
    expect(cluster.store.liveChanges).toEqual([]);
    // and a node that really stops after that still expires
    cluster.store.beforeNodeWrite = undefined;
    cluster.silent.add("n4");
    const last = cluster.lastBeat.get("n4") ?? 0;
    await cluster.runUntil(cluster.t + 2 * ttlMs);
    expect(await cluster.expiredNodes()).toEqual(["n4"]);
    expect(cluster.expiredAt.get("n4")).toBeLessThanOrEqual(last + ttlMs + sweepMs);
  });

  it("a replica stopped for twice the TTL expires nobody that heartbeated through another replica meanwhile", async () => {
    const cluster = new Cluster(10, 2);
    await cluster.runUntil(20_000);
    cluster.paused.add(0);
    await cluster.runUntil(20_000 + 2 * ttlMs);
    cluster.paused.delete(0);
    await cluster.runUntil(20_000 + 3 * ttlMs);
    expect(cluster.store.liveChanges).toEqual([]);
  });

  it("after etcd comes back, every live node gets a full TTL before anything expires", async () => {
    const cluster = new Cluster(10, 2);
    await cluster.runUntil(20_000);
    cluster.silent.add("n5"); // dies during the outage
    cluster.store.down = true;
    await cluster.runUntil(20_000 + 3 * ttlMs);
    cluster.store.down = false;
    const backAt = cluster.t;
    await cluster.runUntil(backAt + ttlMs);
    expect(cluster.store.liveChanges).toEqual([]);
    await cluster.runUntil(backAt + ttlMs + 2 * sweepMs);
    expect(await cluster.expiredNodes()).toEqual(["n5"]);
  });

  it("a replica that starts gives every live node a full TTL: it never saw their heartbeats", async () => {
    const cluster = new Cluster(10, 0);
    cluster.silent.add("n5"); // n5 never heartbeats, and no replica ran for five TTLs
    await cluster.runUntil(5 * ttlMs);
    const startedAt = cluster.t;
    cluster.addReplica(0, 0);
    await cluster.runUntil(startedAt + ttlMs);
    expect(cluster.store.liveChanges).toEqual([]);
    // first seen at the replica's first round, then a full TTL, then the next round
    await cluster.runUntil(startedAt + ttlMs + 2 * sweepMs);
    expect(await cluster.expiredNodes()).toEqual(["n5"]);
  });
});

describe("the grace period is judged by each replica's own clock too", () => {
  it.each([11 * 60_000, -11 * 60_000])(
    "a replica whose clock is %i ms off frees a withdrawn node's subnet only after the grace period by its own clock",
    async (skewMs) => {
      const cluster = new Cluster(3, 2, [skewMs, 0]);
      await cluster.runUntil(20_000);
      cluster.silent.add("n1");
      // withdrawn through the replica with the right clock, which writes its wall clock into the record
      await changeNode(cluster.store, "n1", { live: false, releasedAtMs: BigInt(epoch + cluster.t), releasedReason: "withdrawn" });
      const withdrawnAt = cluster.t;
      await cluster.runUntil(withdrawnAt + 3 * sweepMs);
      expect((await cluster.store.nodes.findNode("n1"))?.value.live).toBe(false); // still holds its subnet
      await cluster.runUntil(withdrawnAt + policy.graceMs - sweepMs);
      expect(await cluster.store.nodes.findNode("n1")).toBeDefined();
      await cluster.runUntil(withdrawnAt + policy.graceMs + 2 * sweepMs);
      expect(await cluster.store.nodes.findNode("n1")).toBeUndefined(); // freed
    },
  );
});
