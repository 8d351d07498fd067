// Chaos at 200 simulated nodes (test/support/sim-node.ts: each with its own mutual-TLS connection,
// heartbeats, the route stream and digest reports, as a daemon does) against real control-plane replicas
// and a real etcd. Each case asserts routes, not timings (DESIGN.md §2, "Liveness and expiry" and "Our
// outage never cuts pod traffic"): a partition of half the nodes, etcd restored from a snapshot, a
// replica stopped (SIGSTOP) for twice the TTL, a replica whose wall clock is a minute off.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ExpiryLoop } from "../../control-plane/nodes/liveness.js";
import { createJoinApi } from "../../node-daemon/rpc/control-plane-client.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { createCertificateRequest, generateKeyPair } from "../../proto/rpc/x509.js";
import {
  createNodeJoiner,
  type JoinedNodes,
  namespace,
  type SpawnedControlPlane,
  spawnControlPlane,
  startInProcessControlPlane,
} from "../support/control-plane.js";
import { type EtcdHandle, freePort, snapshotEtcd, startEtcd, startRestoredEtcd } from "../support/etcd.js";
import { createTestPki, mtlsTransport, type TestPki } from "../support/pki.js";
import { countFlaps, expectedRoutes, SimNode, unconverged } from "../support/sim-node.js";
import { waitFor } from "../support/wait.js";

const nodeCount = 200;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

let pki: TestPki;
let etcd: EtcdHandle;
beforeAll(async () => {
  [pki, etcd] = await Promise.all([createTestPki(), startEtcd()]);
});
afterAll(async () => {
  await etcd?.stop();
  await pki?.destroy();
});

/** A unicast underlay address outside the cluster CIDR (10.244.0.0/16) for node i. */
const nodeIp = (i: number) => `10.200.${Math.floor(i / 250)}.${(i % 250) + 1}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < items.length; i = next++) await fn(items[i] as T);
    }),
  );
}

/** `count` replicas (built dist/, own processes) over one etcd root, nodes joined in-process (createNodeJoiner). */
async function replicas(options: { etcd: string; root: string; count: number; ttlS: number }): Promise<SpawnedControlPlane[]> {
  const joined: JoinedNodes = new Map();
  const joiner = createNodeJoiner({ etcd: [options.etcd], root: options.root, pki });
  cleanups.push(() => joiner.close());
  const args = ["--lease-ttl", String(options.ttlS)];
  const started = await Promise.all(
    Array.from({ length: options.count }, () =>
      spawnControlPlane({ etcd: [options.etcd], root: options.root, pki, joined, join: joiner.join, args }),
    ),
  );
  for (const r of started) cleanups.push(() => r.destroy());
  return started;
}

/** Sims `from` .. `to - 1`, each with its credential from `credentialOf` and the addresses `addressesOf(i)` gives. */
async function makeSims(
  from: number,
  to: number,
  options: {
    credentialOf: (name: string) => Promise<{ cert: string; key: string }>;
    addressesOf: (i: number) => string[];
    heartbeatIntervalMs: number;
    callTimeoutMs?: number;
  },
): Promise<SimNode[]> {
  const sims: SimNode[] = [];
  const indexes = Array.from({ length: to - from }, (_, k) => from + k);
  await pool(indexes, 16, async (i) => {
    const name = `sim-${i}`;
    sims.push(
      new SimNode({
        name,
        nodeIp: nodeIp(i),
        addresses: options.addressesOf(i),
        caPem: pki.caPem,
        credential: await options.credentialOf(name),
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        callTimeoutMs: options.callTimeoutMs,
      }),
    );
  });
  sims.sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }));
  cleanups.push(() => Promise.all(sims.map((s) => s.stop())).then(() => undefined));
  return sims;
}

/** Starts (registers) sims 16 at a time, as nodes booting together. */
const startAll = (sims: readonly SimNode[]) => pool(sims, 16, (s) => s.start());

/** Waits until every sim in `sims` holds exactly `expected`; the error says how many do not, and how one differs. */
async function converged(sims: readonly SimNode[], expected: ReturnType<typeof expectedRoutes>, what: string, timeoutMs = 60_000) {
  try {
    await waitFor(what, async () => unconverged(sims, expected).length === 0, timeoutMs, 200);
  } catch (err) {
    const off = unconverged(sims, expected);
    const sample = sims.find((s) => s.name === off[0]);
    const missing = sample ? [...expected.keys()].filter((n) => !sample.routes.has(n)).slice(0, 5) : [];
    const extra = sample ? [...sample.routes.keys()].filter((n) => !expected.has(n)).slice(0, 5) : [];
    throw new Error(
      `${(err as Error).message}: ${off.length} of ${sims.length} sims differ; ${off[0]} holds ${sample?.routes.size} routes (want ${expected.size}), missing ${missing.join(",")}, extra ${extra.join(",")}; last error ${sample?.stats.lastError}`,
    );
  }
}

/** Withdrawals seen by `sims` at or after `since`, as "sim: node" lines. */
const withdrawalsSince = (sims: readonly SimNode[], since: number) =>
  sims.flatMap((s) => s.withdrawals.filter((w) => w.at >= since).map((w) => `${s.name}: ${w.node}`));

describe("chaos at 200 simulated nodes", () => {
  it("half the nodes partitioned for over twice the TTL: no route withdrawn anywhere (disruption); healed, everything converges", {
    timeout: 240_000,
  }, async () => {
    const ttlS = 4;
    const root = namespace();
    const [r0, r1] = await replicas({ etcd: etcd.endpoint, root, count: 2, ttlS });
    const addresses = [r0!.address, r1!.address];
    const sims = await makeSims(0, nodeCount, {
      credentialOf: (n) => r0!.nodeCredential(n),
      addressesOf: (i) => (i % 2 ? [...addresses].reverse() : addresses),
      heartbeatIntervalMs: (ttlS * 1000) / 4,
    });
    await startAll(sims);
    const everyone = expectedRoutes(sims);
    await converged(sims, everyone, "every sim to hold all 200 routes");

    // What the sims report is what the control plane calls in sync (the digest is the daemon's), also for
    // sims that reported through both replicas (see the two-replica report cases below).
    const admin = createClient(AdminService, r0!.adminTransport());
    for (const s of sims.slice(0, 5)) {
      await waitFor(`${s.name}'s report in sync`, async () => (await admin.getRoutes({ nodeName: s.name })).inSync, 30_000, 250);
    }

    const t0 = performance.now();
    const cut = sims.filter((_, i) => i % 2 === 1); // both replicas lose half their nodes
    const kept = sims.filter((_, i) => i % 2 === 0);
    for (const s of cut) s.partition();
    await sleep(2.5 * ttlS * 1000);
    expect(withdrawalsSince(kept, t0), "routes withdrawn on the reachable half during the partition").toEqual([]);
    for (const s of kept) expect(s.routes.size, s.name).toBe(nodeCount);

    for (const s of cut) s.heal();
    await converged(sims, everyone, "every sim to hold all 200 routes after healing");
    await sleep((ttlS + 2) * 1000); // a full TTL after healing: nobody expires late either
    await converged(sims, everyone, "every sim still to hold all 200 routes a TTL after healing", 5_000);
    expect(withdrawalsSince(sims, t0), "routes withdrawn at any sim").toEqual([]);
    expect(countFlaps(sims)).toEqual([]);
  });

  it("etcd restored from a snapshot: every sim converges to the live nodes, those registered after the snapshot included, with their subnets", {
    timeout: 240_000,
  }, async () => {
    const ttlS = 4;
    const clientPort = await freePort();
    const peerPort = await freePort();
    let own = await startEtcd({ clientPort, peerPort });
    cleanups.push(() => own.stop());
    const dir = await mkdtemp(join(tmpdir(), "trellis-chaos-snap-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const root = namespace();
    const [r0, r1] = await replicas({ etcd: own.endpoint, root, count: 2, ttlS });
    const addresses = [r0!.address, r1!.address];
    const simOptions = {
      credentialOf: (n: string) => r0!.nodeCredential(n),
      addressesOf: (i: number) => (i % 2 ? [...addresses].reverse() : addresses),
      heartbeatIntervalMs: (ttlS * 1000) / 4,
    };
    // Every node has joined (its certificate is in the allow-list) before the snapshot; 150 registered before it.
    const before = await makeSims(0, 150, simOptions);
    const after = await makeSims(150, nodeCount, simOptions);
    await startAll(before);
    await converged(before, expectedRoutes(before), "150 routes everywhere before the snapshot");

    const snapshot = join(dir, "etcd.db");
    await snapshotEtcd(own.endpoint, snapshot);
    // After the snapshot: 50 nodes register, 10 leave (deregister); etcd then loses both.
    await startAll(after);
    const leaving = before.slice(0, 10);
    await Promise.all(leaving.map((s) => s.deregister()));
    const live = [...before.slice(10), ...after];
    await converged(live, expectedRoutes(live), "190 routes everywhere before the restore");
    const subnets = new Map(live.map((s) => [s.name, s.subnet]));

    await own.stop();
    own = await startRestoredEtcd(snapshot, { clientPort, peerPort });

    // The restored etcd has the 10 that left as live (they expire after the TTL), and not the 50 that
    // came later (they register again on their next heartbeat, asking for the subnet they hold).
    await converged(live, expectedRoutes(live), "every sim to hold the 190 live nodes' routes after the restore", 60_000);
    for (const s of live) expect(s.subnet, `${s.name} kept its subnet`).toBe(subnets.get(s.name));
  });

  it("a replica stopped (SIGSTOP) for twice the TTL, then continued: no node that kept heartbeating through the other loses its route", {
    timeout: 240_000,
  }, async () => {
    const ttlS = 6;
    const ttlMs = ttlS * 1000;
    const root = namespace();
    const [stopped, other] = await replicas({ etcd: etcd.endpoint, root, count: 2, ttlS });
    // A quarter of the nodes use the replica that will stop first: fewer than the disruption share, so
    // the other replica judges them by their heartbeats alone. A heartbeat unanswered for 2 s moves a node
    // to the other replica: with the interval, well within the TTL.
    const sims = await makeSims(0, nodeCount, {
      credentialOf: (n) => other!.nodeCredential(n),
      addressesOf: (i) => (i % 4 === 0 ? [stopped!.address, other!.address] : [other!.address, stopped!.address]),
      heartbeatIntervalMs: ttlMs / 4,
      callTimeoutMs: 2_000,
    });
    await startAll(sims);
    const everyone = expectedRoutes(sims);
    await converged(sims, everyone, "every sim to hold all 200 routes");

    const pid = stopped!.pid;
    expect(pid).toBeGreaterThan(0);
    const t0 = performance.now();
    for (const s of sims) s.stats.maxHeartbeatGapMs = 0; // judge gaps from here on
    process.kill(pid, "SIGSTOP");
    try {
      await sleep(2 * ttlMs);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    await sleep(ttlMs + 2_000); // its expiry rounds run again on its stale memory
    await converged(sims, everyone, "every sim to hold all 200 routes after SIGCONT");

    // A withdrawal is wrongful when the node never went a TTL without a successful heartbeat (measured
    // from one heartbeat's request to the next one's answer: never shorter than between their writes).
    const byName = new Map(sims.map((s) => [s.name, s]));
    const wrongful = sims.flatMap((s) =>
      s.withdrawals
        .filter((w) => w.at >= t0 && (byName.get(w.node)?.stats.maxHeartbeatGapMs ?? ttlMs) < ttlMs)
        .map((w) => `${s.name}: ${w.node} (its longest heartbeat gap ${byName.get(w.node)?.stats.maxHeartbeatGapMs.toFixed(0)} ms)`),
    );
    expect(wrongful, "routes withdrawn of nodes that kept heartbeating").toEqual([]);
  });

  it("a replica whose wall clock is 60 s ahead: no flaps over twice the TTL, and nodes joining through it are accepted by the other replica", {
    timeout: 240_000,
  }, async () => {
    const ttlS = 4;
    const ttlMs = ttlS * 1000;
    const skewMs = 60_000;
    const root = namespace();
    const joined: JoinedNodes = new Map();
    const skewedClock = () => Date.now() + skewMs;
    const policy = { ttlMs, graceMs: 600_000, disruptionShare: 0.33 };
    // The skewed replica in-process: every clock of it is off (leases, liveness, join tokens, the
    // certificates it signs and the allow-list), as on a machine whose clock is; it runs expiry rounds as main.ts does.
    const skewed = await startInProcessControlPlane({ etcd: etcd.endpoint, root, pki, joined, policy, clock: skewedClock });
    cleanups.push(() => skewed.stop());
    const expiry = new ExpiryLoop({ liveness: skewed.liveness, clock: skewedClock, log: pino({ level: "silent" }) });
    const sweeper = setInterval(() => void expiry.tick(), Math.max(500, Math.min(5_000, ttlMs / 4)));
    cleanups.push(async () => clearInterval(sweeper));
    const other = await spawnControlPlane({ etcd: [etcd.endpoint], root, pki, joined, args: ["--lease-ttl", String(ttlS)] });
    cleanups.push(() => other.destroy());

    // Every node's certificate is signed by the skewed replica; half the nodes call the other one first.
    const sims = await makeSims(0, nodeCount, {
      credentialOf: (n) => skewed.nodeCredential(n),
      addressesOf: (i) => (i % 2 ? [other.address, skewed.address] : [skewed.address, other.address]),
      heartbeatIntervalMs: ttlMs / 4,
    });
    await startAll(sims);
    await converged(sims, expectedRoutes(sims), "every sim to hold all 200 routes");

    const t0 = performance.now();
    await sleep(2.5 * ttlMs);
    expect(withdrawalsSince(sims, t0), "routes withdrawn").toEqual([]);
    expect(countFlaps(sims)).toEqual([]);

    // Joins through the skewed replica's JoinService (an admin's token from it), then calls to the other
    // replica alone: the certificate it signed must be accepted there.
    const admin = createClient(AdminService, skewed.adminTransport());
    const join = createJoinApi(skewed.joinAddress!, pki.caPem);
    const late: SimNode[] = [];
    for (let i = nodeCount; i < nodeCount + 5; i++) {
      const name = `sim-${i}`;
      const keys = await generateKeyPair();
      const csr = await createCertificateRequest(keys, { kind: "node", name });
      const { token } = await admin.createJoinToken({ nodeName: name });
      const cert = await join(token, name, csr, new AbortController().signal);
      late.push(
        new SimNode({
          name,
          nodeIp: nodeIp(i),
          addresses: [other.address],
          caPem: pki.caPem,
          credential: { cert, key: keys.privateKeyPem },
          heartbeatIntervalMs: ttlMs / 4,
        }),
      );
    }
    cleanups.push(() => Promise.all(late.map((s) => s.stop())).then(() => undefined));
    await Promise.all(late.map((s) => s.start()));
    const all = [...sims, ...late];
    await converged(all, expectedRoutes(all), "every sim to hold all 205 routes");
    expect(countFlaps(all)).toEqual([]);
  });

  /** Two replicas over one etcd root, node n1 registered through the first, and its client to each. */
  async function n1OnTwoReplicas() {
    const root = namespace();
    const joined: JoinedNodes = new Map();
    const [a, b] = await Promise.all([0, 1].map(() => startInProcessControlPlane({ etcd: etcd.endpoint, root, pki, joined })));
    cleanups.push(() => a!.stop());
    cleanups.push(() => b!.stop());
    const viaA = createClient(NodeService, a!.nodeTransport("n1"));
    const viaB = createClient(NodeService, b!.nodeTransport("n1"));
    await viaA.registerNode({ nodeName: "n1", nodeIp: nodeIp(1), mtu: 1500 });
    return { a: a!, b: b!, viaA, viaB };
  }

  // Found by the partition case: a sim that moved between replicas under load never showed in sync in
  // GetRoutes, because a report held back on one replica overwrote a newer one written through the other.
  it("a node reporting through two replicas: the report stored is the latest, after the held-back ones are written", {
    timeout: 60_000,
  }, async () => {
    const { b, viaA, viaB } = await n1OnTwoReplicas();
    const report = (count: number) => ({
      nodeName: "n1",
      revision: BigInt(count),
      routeCount: count,
      digest: new Uint8Array(32).fill(count),
      missing: [],
    });
    await viaB.reportRoutes(report(1)); // B writes it (its first report of n1)
    await sleep(5_500); // B's interval for n1 has passed
    await viaA.reportRoutes(report(2)); // A read report 1 just now: held back for its interval
    await viaB.reportRoutes(report(3)); // B writes it at once
    await sleep(7_000); // A's flusher writes report 2
    await viaB.reportRoutes(report(3)); // the node says again what it holds (the daemon's resync)
    expect((await b.stores.routeReports.findReportedRoutes("n1"))?.value.routeCount, "the stored report's route count").toBe(3);
  });

  // The fix above covers held-back reports; this one a node whose routes change and change back while it
  // moves between replicas: the same report at a later stream revision is written again.
  it("a node whose routes change back while it moves between replicas: the report stored is its latest", {
    timeout: 60_000,
  }, async () => {
    const { a, viaA, viaB } = await n1OnTwoReplicas();
    const report = (count: number, revision: number) => ({
      nodeName: "n1",
      revision: BigInt(revision),
      routeCount: count,
      digest: new Uint8Array(32).fill(count),
      missing: [],
    });
    await viaA.reportRoutes(report(1, 1)); // A writes it
    await viaB.reportRoutes(report(2, 2)); // B holds it back for its interval, then writes it
    await sleep(7_000);
    await viaA.reportRoutes(report(1, 3)); // the routes are back to what A wrote first
    expect((await a.stores.routeReports.findReportedRoutes("n1"))?.value.routeCount, "the stored report's route count").toBe(1);
  });

  // A replica whose clock was more than 60 s ahead signed node certificates every other replica refused
  // ("certificate is not yet valid"): certificates are backdated 5 minutes now (proto/rpc/x509.ts).
  it("a replica whose wall clock is 90 s ahead: the certificates it signs are accepted by the other replica", async () => {
    const root = namespace();
    const joined: JoinedNodes = new Map();
    const skewed = await startInProcessControlPlane({ etcd: etcd.endpoint, root, pki, joined, clock: () => Date.now() + 90_000 });
    cleanups.push(() => skewed.stop());
    const other = await spawnControlPlane({ etcd: [etcd.endpoint], root, pki, joined });
    cleanups.push(() => other.destroy());
    const node = createClient(NodeService, mtlsTransport(other.address, pki.caPem, await skewed.nodeCredential("n1")));
    await node.registerNode({ nodeName: "n1", nodeIp: nodeIp(1), mtu: 1500 }, { timeoutMs: 10_000 });
  });
});
