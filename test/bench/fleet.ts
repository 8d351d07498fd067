// The control plane at fleet scale (DESIGN.md §8): N simulated daemons (test/support/sim-node.ts), each
// joined by token and calling over its own mutual-TLS connection with its own certificate, against R
// control-plane replicas (spawned processes of the built dist/, one PKI, one etcd root) on an M-member
// etcd cluster. It measures registrations per second, join -> route on every node, death (decided) ->
// route gone on every node, the replicas' RSS and etcd's database size; mid-run it SIGKILLs one replica
// and counts route flaps (withdrawals of routes of nodes it did not kill). The simulated daemons run in
// forked worker processes (this file with --worker), which report to this one over IPC; times cross
// processes as performance.timeOrigin + performance.now(). It measures and reports; it never fails on speed.
import { type ChildProcess, fork } from "node:child_process";
import { readFile } from "node:fs/promises";
import { setPriority } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Etcd3, type Watcher } from "etcd3";
import { quietMsFor } from "../../node-daemon/routes/route-reporter.js";
import { Health } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { type JoinedNodes, namespace, type SpawnedControlPlane, spawnControlPlane } from "../support/control-plane.js";
import { type EtcdCluster, startEtcdCluster } from "../support/etcd.js";
import { processCpuSeconds } from "../support/exec.js";
import type { Credential } from "../support/pki.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { addSimTotals, FlapCounter, noSimTotals, SimNode, type SimTotals, underlayIp } from "../support/sim-node.js";

const JOIN_PROBES = 20;
const DEATH_PROBES = 10;
const REGISTER_CONCURRENCY = 64;
const JOIN_CONCURRENCY = 32;
const CLUSTER_CIDR = "10.0.0.0/8";
/** A phase that waits on the fleet (registrations, convergence) gives up after this long without progress. */
const STALL_MS = 120_000;
/** How long a probe's route may take to reach (or leave) every node before it counts as this long. */
const PROBE_WAIT_MS = 60_000;

const usage = `Usage: npm run bench:fleet -- [flags]
       node dist/test/bench/fleet.js [flags]          (after npx tsc -p .)

Simulated node daemons against control-plane replicas on an etcd cluster, all on loopback. Every
simulated node joins by token (its own key and certificate), registers, heartbeats, follows the route
stream and reports route digests over its own HTTP/2 connections (one per replica it has called, kept
as the daemon keeps them), its replica addresses rotated so that the nodes spread over the replicas. Measured: registrations/s (${REGISTER_CONCURRENCY} at a time); join -> route on
every node (${JOIN_PROBES} probe nodes registering one at a time once the fleet is up); death -> route gone on every
node (${DEATH_PROBES} probe nodes stop heartbeating; timed from when etcd shows the node not live); control-plane
RSS per replica; etcd's database size; route flaps. With 2 or more replicas it SIGKILLs one mid-run
and reports the flaps and how long until every node streams again. It never fails on speed.

Flags:
  --nodes N                simulated nodes (default 1000)
  --replicas R             control-plane replicas (default 2)
  --etcd-members M         etcd cluster members (default 3)
  --ttl S                  the control plane's --lease-ttl, whole seconds (default 40, as in production)
  --heartbeat-interval S   seconds between a node's heartbeats, may be fractional (default TTL/4)
  --workers W              worker processes driving the nodes (default: one per 500 nodes, at most 16)
  --reports MODE           when a node reports its route digest after its routes changed: "debounce"
                           (default) 1 s after the first change, as the daemon does; "each" after every
                           route-stream message; "heartbeat" on its next heartbeat. One in flight at a time
  --call-timeout S         deadline of a node's calls, whole seconds (default 5, as the daemon's); a call
                           that misses it moves the node's calls to the next replica; its route stream
                           stays where it is until it breaks, as the daemon's does
  --sim-nice N             CPU niceness of the worker processes, 0-19 (default 10): the simulated nodes
                           share this machine with the replicas and etcd they measure, and at equal
                           priority 10 or more busy workers take most of the cores from 2 replicas
                           (5000 nodes on 2 cores: replicas starved, heartbeats timing out, retries
                           feeding the storm). In a cluster the daemons run on machines of their own
  --replica-node-options="OPTS"
                           options for node running each replica, space-separated, given with "="
                           (for example --replica-node-options="--max-semi-space-size=32" to try a V8
                           setting; default none)
  -h, --help               print this help and exit

The last line is machine-readable:
  fleet: nodes=N replicas=R etcd_members=M registrations_per_s=X join_p99_ms=X death_p99_ms=X cp_rss_mib=X etcd_db_mib=X flaps=N
(cp_rss_mib: the highest peak RSS of any replica; etcd_db_mib: the largest member's database)
`;

interface Options {
  nodes: number;
  replicas: number;
  etcdMembers: number;
  ttlS: number;
  heartbeatIntervalMs: number;
  workers: number;
  reportMode: ReportMode;
  callTimeoutMs: number;
  replicaNodeOptions: string[];
  simNice: number;
}

function badArg(message: string): never {
  process.stderr.write(`fleet: ${message}\nTry --help.\n`);
  process.exit(2);
}

function intFlag(value: string | undefined, flag: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) badArg(`${flag} ${JSON.stringify(value)} is not a whole number`);
  const n = Number(value);
  if (n < min || n > max) badArg(`${flag} ${n} is out of range: give ${min} to ${max}`);
  return n;
}

function parseOptions(argv: string[]): Options | "help" | "worker" {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        nodes: { type: "string" },
        replicas: { type: "string" },
        "etcd-members": { type: "string" },
        ttl: { type: "string" },
        "heartbeat-interval": { type: "string" },
        workers: { type: "string" },
        reports: { type: "string" },
        "call-timeout": { type: "string" },
        "replica-node-options": { type: "string" },
        "sim-nice": { type: "string" },
        worker: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    badArg((err as Error).message);
  }
  if (values.help) return "help";
  if (values.worker) return "worker";
  const str = (k: string) => values[k] as string | undefined;
  // 10.0.0.0/8 holds 65536 /24 node subnets; the probes take a few.
  const nodes = intFlag(str("nodes"), "--nodes", 1000, 1, 60_000);
  const replicas = intFlag(str("replicas"), "--replicas", 2, 1, 9);
  const etcdMembers = intFlag(str("etcd-members"), "--etcd-members", 3, 1, 7);
  const ttlS = intFlag(str("ttl"), "--ttl", 40, 1, 86_400);
  let heartbeatIntervalMs = (ttlS * 1000) / 4;
  const hb = str("heartbeat-interval");
  if (hb !== undefined) {
    if (!/^\d*\.?\d+$/.test(hb)) badArg(`--heartbeat-interval ${JSON.stringify(hb)} is not a number of seconds`);
    heartbeatIntervalMs = Number(hb) * 1000;
    if (heartbeatIntervalMs < 100) badArg(`--heartbeat-interval ${hb} is below 0.1 s`);
    if (heartbeatIntervalMs >= ttlS * 1000) badArg(`--heartbeat-interval ${hb} is not below --ttl ${ttlS}: every node would expire`);
  }
  const workers = intFlag(str("workers"), "--workers", Math.min(16, Math.ceil(nodes / 500)), 1, 64);
  if (workers > nodes) badArg(`--workers ${workers} is more than --nodes ${nodes}`);
  const reportMode = str("reports") ?? "debounce";
  if (reportMode !== "debounce" && reportMode !== "each" && reportMode !== "heartbeat") {
    badArg(`--reports ${JSON.stringify(reportMode)} is not debounce, each or heartbeat`);
  }
  const callTimeoutMs = intFlag(str("call-timeout"), "--call-timeout", 5, 1, 600) * 1000;
  const replicaNodeOptions = (str("replica-node-options") ?? "").split(" ").filter(Boolean);
  const notOption = replicaNodeOptions.find((o) => !o.startsWith("--"));
  if (notOption) badArg(`--replica-node-options: ${JSON.stringify(notOption)} is not a node option (--name or --name=value)`);
  const simNice = intFlag(str("sim-nice"), "--sim-nice", 10, 0, 19);
  return { nodes, replicas, etcdMembers, ttlS, heartbeatIntervalMs, workers, reportMode, callTimeoutMs, replicaNodeOptions, simNice };
}

// ---------------------------------------------------------------------------------------------------
// Shared between the parent and its workers.

/** Milliseconds on a clock every process of this bench shares (epoch-based, sub-millisecond). */
const now = () => performance.timeOrigin + performance.now();

const fleetName = (i: number) => `node-${i}`;
const isDeathProbe = (name: string) => name.startsWith("death-probe-");
const isProbe = (name: string) => name.includes("-probe");

interface SimSpec {
  name: string;
  nodeIp: string;
  addresses: string[];
  credential: Credential;
}

interface ProbeTally {
  /** Sims holding the probe's route (its first arrival at each), and the latest first arrival. */
  up: number;
  upMax: number;
  /** Sims that lost it (the first loss at each), and the latest. */
  down: number;
  downMax: number;
}

type ReportMode = "debounce" | "each" | "heartbeat";

type ToWorker =
  | {
      t: "init";
      index: number;
      caPem: string;
      heartbeatIntervalMs: number;
      callTimeoutMs: number;
      reportMode: ReportMode;
      fleetSize: number;
      sims: SimSpec[];
    }
  | { t: "register"; concurrency: number }
  /** How many fleet routes a converged sim holds (the nodes that registered); the sims still registering stop. */
  | { t: "expect"; routes: number }
  /** The bench stops `node` at `at`: its withdrawals after that are no flaps. */
  | { t: "excuse"; node: string; at: number }
  /** The replica at `address` was SIGKILLed at `at`: follow the sims that streamed from it. */
  | { t: "replica-killed"; address: string; at: number }
  /** Answer with fresh stats carrying `seq`; with `phase`, then start the event-loop delay of a new phase. */
  | { t: "flush"; seq: number; phase?: boolean }
  | { t: "stop" };

interface WorkerStats {
  t: "stats";
  index: number;
  /** The flush this answers, or 0. */
  seq: number;
  /** Sims whose registration answered. */
  registered: number;
  registerErrors: number;
  firstRegisteredAt: number;
  lastRegisteredAt: number;
  /** Sims holding a route of every other fleet node. */
  converged: number;
  probes: Record<string, ProbeTally>;
  /** Wrongful withdrawals (FlapCounter), and a few of them. */
  flaps: number;
  flapExamples: string[];
  /** After a replica was killed: how many sims streamed from it, how many have no snapshot from another yet, when the last got one. */
  failover?: { moved: number; pending: number; lastAt: number };
  sim: SimTotals;
  /** The sims' last errors, by kind, most frequent first. */
  lastErrors: Array<[string, number]>;
  /** Failed calls by kind ("heartbeat DEADLINE_EXCEEDED"), summed over the sims. */
  failures: Record<string, number>;
  /** Sims whose registration has not answered yet, and their last errors by kind. */
  registering: number;
  registeringErrors: Array<[string, number]>;
  rssMiB: number;
  heapMiB: number;
  /** The worker's event-loop delay since it started (ms): p99 and max. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  /** The same since the last phase flush: how late the sims heard what a phase measures. */
  phaseLoopDelayP99Ms: number;
  phaseLoopDelayMaxMs: number;
  errors: string[];
}

type FromWorker = { t: "ready"; index: number } | WorkerStats | { t: "stopped"; index: number };

// ---------------------------------------------------------------------------------------------------
// Worker: drives its share of simulated daemons.

async function workerMain(): Promise<void> {
  let init: Extract<ToWorker, { t: "init" }> | undefined;
  const sims: SimNode[] = [];
  const flapCounter = new FlapCounter();
  const probeSeen = new Map<string, { up: Set<number>; upMax: number; down: Set<number>; downMax: number }>();
  const errors: string[] = [];
  let registered = 0;
  let registerErrors = 0;
  let firstRegisteredAt = 0;
  let lastRegisteredAt = 0;
  /** After a replica died: the sims that streamed from it, with their snapshot count then. */
  let failover: { address: string; at: number; pending: Map<number, number>; lastAt: number; moved: number } | undefined;
  let dirty = true;
  // The parent may be gone (interrupted): then there is nobody to tell, and no reason to crash.
  const send = (m: FromWorker) => process.connected && process.send?.(m, undefined, undefined, () => undefined);
  const note = (err: string) => {
    if (errors.length < 20) errors.push(err);
    dirty = true;
  };

  /** Per sim, the probes whose route it holds. */
  const probesHeld: Array<Set<string>> = [];
  const onRoute = (sim: number, node: string, kind: "up" | "down", at: number) => {
    if (kind === "down") dirty = true;
    if (!isProbe(node)) return;
    if (kind === "up") probesHeld[sim]!.add(node);
    else probesHeld[sim]!.delete(node);
    let p = probeSeen.get(node);
    if (!p) {
      p = { up: new Set(), upMax: 0, down: new Set(), downMax: 0 };
      probeSeen.set(node, p);
    }
    const set = kind === "up" ? p.up : p.down;
    if (set.has(sim)) return;
    set.add(sim);
    if (kind === "up") p.upMax = Math.max(p.upMax, at);
    else p.downMax = Math.max(p.downMax, at);
    dirty = true;
  };

  /** What is costly to count over thousands of sims: refreshed every second and on a flush. */
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const phaseLoop = monitorEventLoopDelay({ resolution: 10 });
  phaseLoop.enable();
  /** Fleet routes a converged sim holds (all nodes, until the parent says how many registered). */
  let expectedRoutes: number | undefined;
  /** The bench went on without the sims still registering: they were stopped, and start no more. */
  let abandoned = false;
  /** Sims that registered (and were not stopped since). */
  const started = new Set<number>();
  /** Per sim: its start() was called and has not returned yet. */
  const inStart = new Set<number>();
  let slow: Pick<
    WorkerStats,
    | "converged"
    | "sim"
    | "lastErrors"
    | "failures"
    | "registering"
    | "registeringErrors"
    | "rssMiB"
    | "heapMiB"
    | "loopDelayP99Ms"
    | "loopDelayMaxMs"
    | "phaseLoopDelayP99Ms"
    | "phaseLoopDelayMaxMs"
  > = {
    converged: 0,
    sim: noSimTotals(),
    lastErrors: [],
    failures: {},
    registering: 0,
    registeringErrors: [],
    rssMiB: 0,
    heapMiB: 0,
    loopDelayP99Ms: 0,
    loopDelayMaxMs: 0,
    phaseLoopDelayP99Ms: 0,
    phaseLoopDelayMaxMs: 0,
  };
  const refreshSlow = () => {
    const fleetSize = expectedRoutes ?? init?.fleetSize ?? 0;
    let converged = 0;
    const sim = noSimTotals();
    const lastErrors = new Map<string, number>();
    const failures: Record<string, number> = {};
    const errorKind = (s: SimNode) => (s.stats.lastError ?? "none yet").replace(s.name, "NODE").replace(/127\.0\.0\.1:\d+/g, "REPLICA");
    const registeringErrors = new Map<string, number>();
    for (const i of inStart) {
      const kind = errorKind(sims[i]!);
      registeringErrors.set(kind, (registeringErrors.get(kind) ?? 0) + 1);
    }
    for (const [i, s] of sims.entries()) {
      for (const [k, n] of Object.entries((s.stats as { failures?: Record<string, number> }).failures ?? {}))
        failures[k] = (failures[k] ?? 0) + n;
      // A sim's table holds every node's route, its own included, and the probes' it holds.
      if (s.routes.size - probesHeld[i]!.size >= fleetSize) converged++;
      addSimTotals(sim, { ...s.stats, maxHeartbeatGapMs: s.heartbeatGapMs() });
      if (s.stats.lastError) {
        // The message without the node's own name and the port: one entry per kind of error.
        const kind = errorKind(s);
        lastErrors.set(kind, (lastErrors.get(kind) ?? 0) + 1);
      }
    }
    const mem = process.memoryUsage();
    slow = {
      converged,
      sim,
      lastErrors: [...lastErrors].sort((x, y) => y[1] - x[1]).slice(0, 5),
      failures,
      registering: inStart.size,
      registeringErrors: [...registeringErrors].sort((x, y) => y[1] - x[1]).slice(0, 3),
      rssMiB: mem.rss / 1048576,
      heapMiB: mem.heapUsed / 1048576,
      loopDelayP99Ms: loop.percentile(99) / 1e6,
      loopDelayMaxMs: loop.max / 1e6,
      phaseLoopDelayP99Ms: phaseLoop.percentile(99) / 1e6,
      phaseLoopDelayMaxMs: phaseLoop.max / 1e6,
    };
    dirty = true;
  };

  const stats = (): WorkerStats => {
    const probes: Record<string, ProbeTally> = {};
    for (const [name, p] of probeSeen) probes[name] = { up: p.up.size, upMax: p.upMax, down: p.down.size, downMax: p.downMax };
    return {
      t: "stats",
      index: init?.index ?? -1,
      seq: 0,
      registered,
      registerErrors,
      firstRegisteredAt,
      lastRegisteredAt,
      probes,
      flaps: flapCounter.flaps.length,
      flapExamples: flapCounter.flaps.slice(0, 10).map((f) => `${f.sim} lost ${f.node} at ${new Date(f.at).toISOString()}`),
      failover: failover && { moved: failover.moved, pending: failover.pending.size, lastAt: failover.lastAt },
      ...slow,
      errors,
    };
  };

  const reporter = setInterval(() => {
    // Sims that streamed from the dead replica and have had a snapshot from another one since.
    if (failover && failover.pending.size > 0) {
      for (const [i, snapshots] of failover.pending) {
        const s = sims[i]!;
        if (s.address !== failover.address && s.stats.snapshots > snapshots) {
          failover.pending.delete(i);
          failover.lastAt = now();
          dirty = true;
        }
      }
    }
    if (!dirty || !init) return;
    dirty = false;
    send(stats());
  }, 20);
  // Route tables and counters change without onRoute saying so (convergence, stats): report every second.
  const tick = setInterval(refreshSlow, 1000);

  const stopAll = async () => {
    clearInterval(reporter);
    clearInterval(tick);
    await Promise.all(sims.map((s) => s.stop())).catch(() => undefined);
  };
  process.on("disconnect", () => {
    void stopAll().finally(() => process.exit(0));
  });

  process.on("message", (raw: ToWorker) => {
    void (async () => {
      if (raw.t === "init") {
        init = raw;
        for (const [i, spec] of raw.sims.entries()) {
          const sim = new SimNode({
            name: spec.name,
            nodeIp: spec.nodeIp,
            addresses: spec.addresses,
            caPem: raw.caPem,
            credential: spec.credential,
            heartbeatIntervalMs: raw.heartbeatIntervalMs,
            callTimeoutMs: raw.callTimeoutMs,
            reportMode: raw.reportMode,
            now,
          });
          sim.onRoute = flapCounter.listener(spec.name, (node, kind, at) => onRoute(i, node, kind, at));
          sims.push(sim);
          probesHeld.push(new Set());
        }
        send({ t: "ready", index: raw.index });
      } else if (raw.t === "register") {
        let next = 0;
        await Promise.all(
          Array.from({ length: raw.concurrency }, async () => {
            for (let i = next++; i < sims.length && !abandoned; i = next++) {
              inStart.add(i);
              try {
                await sims[i]!.start();
                started.add(i);
                const at = now();
                firstRegisteredAt = firstRegisteredAt || at;
                lastRegisteredAt = Math.max(lastRegisteredAt, at);
                registered++;
              } catch (err) {
                if (abandoned) {
                  inStart.delete(i);
                  continue;
                }
                registerErrors++;
                note(`${sims[i]!.name}: registration failed: ${String(err)}`);
              }
              inStart.delete(i);
              dirty = true;
            }
          }),
        );
        refreshSlow();
        send(stats());
      } else if (raw.t === "expect") {
        expectedRoutes = raw.routes;
        abandoned = true;
        await Promise.all([...inStart].map((i) => sims[i]!.stop()));
        refreshSlow();
      } else if (raw.t === "excuse") {
        flapCounter.excuse(raw.node, raw.at);
      } else if (raw.t === "replica-killed") {
        const pending = new Map<number, number>();
        for (const [i, s] of sims.entries()) if (started.has(i) && s.address === raw.address) pending.set(i, s.stats.snapshots);
        failover = { address: raw.address, at: raw.at, pending, lastAt: raw.at, moved: pending.size };
        dirty = true;
      } else if (raw.t === "flush") {
        refreshSlow();
        send({ ...stats(), seq: raw.seq });
        if (raw.phase) phaseLoop.reset();
      } else if (raw.t === "stop") {
        await stopAll();
        send({ t: "stopped", index: init?.index ?? -1 });
        process.exit(0);
      }
    })().catch((err: unknown) => note(`worker: ${err instanceof Error ? err.stack : String(err)}`));
  });
}

// ---------------------------------------------------------------------------------------------------
// Parent: etcd, replicas, joins, workers, probes, measurements.

const pct = (xs: readonly number[], q: number) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
};
const ms = (x: number) => (Number.isFinite(x) ? `${x.toFixed(0)} ms` : "n/a");
const num = (x: number, digits = 0) => (Number.isFinite(x) ? x.toFixed(digits) : "NaN");
const say = (line: string) => process.stdout.write(`${line}\n`);

async function rssMiB(pid: number): Promise<number> {
  if (!pid) return Number.NaN;
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** CPU time (user + system) process `pid` has used, in seconds; 0 when it is gone. */
const cpuSeconds = (pid: number): Promise<number> => (pid ? processCpuSeconds(pid).catch(() => 0) : Promise.resolve(0));

/**
 * What etcd was asked, summed over `endpoints`: KV calls by method (as the members' grpc_server_handled_total
 * counts them) and raft proposals committed (the highest member's etcd_server_proposals_committed_total).
 */
async function etcdCounters(endpoints: readonly string[]): Promise<{ calls: Map<string, number>; proposals: number }> {
  const calls = new Map<string, number>();
  let proposals = 0;
  for (const endpoint of endpoints) {
    const text = await fetch(`${endpoint}/metrics`)
      .then((r) => r.text())
      .catch(() => "");
    for (const m of text.matchAll(/^grpc_server_handled_total\{[^}]*grpc_method="(\w+)",grpc_service="etcdserverpb\.KV"[^}]*\} (\S+)$/gm))
      calls.set(m[1]!, (calls.get(m[1]!) ?? 0) + Number(m[2]));
    proposals = Math.max(proposals, Number(/^etcd_server_proposals_committed_total (\S+)$/m.exec(text)?.[1] ?? 0));
  }
  return { calls, proposals };
}

/** etcd's KV calls and proposals per second between two etcdCounters readings `seconds` apart; per heartbeat too, given their rate. */
function etcdRates(
  before: Awaited<ReturnType<typeof etcdCounters>>,
  after: Awaited<ReturnType<typeof etcdCounters>>,
  seconds: number,
  heartbeatsPerS?: number,
): string {
  const calls = [...after.calls]
    .map(([method, n]) => [method, (n - (before.calls.get(method) ?? 0)) / seconds] as const)
    .filter(([, r]) => r > 0);
  const proposals = (after.proposals - before.proposals) / seconds;
  const perBeat = (x: number) => (heartbeatsPerS ? `${(x / heartbeatsPerS).toFixed(2)}` : "");
  return (
    `KV calls/s ${calls.map(([m, r]) => `${m} ${r.toFixed(0)}`).join(", ") || "none"}; raft proposals/s ${proposals.toFixed(0)}` +
    (heartbeatsPerS ? ` (per heartbeat: ${perBeat(calls.reduce((a, [, r]) => a + r, 0))} calls, ${perBeat(proposals)} proposals)` : "")
  );
}

/** Runs `fn(i)` for i in [0, count), `width` at a time. */
async function pool(count: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, count) }, async () => {
      for (let i = next++; i < count; i = next++) await fn(i);
    }),
  );
}

/** Waits until `check()` is true; false after `timeoutMs`. */
async function until(check: () => boolean, timeoutMs: number, everyMs = 5): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) return false;
    await sleep(everyMs);
  }
  return true;
}

/** A probe node the parent drives itself: it registers when told, heartbeats, fails over between replicas. */
class Probe {
  private readonly sessions: Http2SessionManager[] = [];
  private readonly clients: Array<Client<typeof NodeService>>;
  private current = 0;
  private beats?: ReturnType<typeof setInterval>;
  lastBeatAt = 0;

  constructor(
    readonly name: string,
    readonly nodeIp: string,
    addresses: readonly string[],
    caPem: string,
    credential: Credential,
  ) {
    this.clients = addresses.map((a) => {
      const baseUrl = `https://${a}`;
      const session = new Http2SessionManager(baseUrl, undefined, { ca: caPem, cert: credential.cert, key: credential.key });
      this.sessions.push(session);
      return createClient(NodeService, createGrpcTransport({ baseUrl, sessionManager: session }));
    });
  }

  private async call<T>(fn: (c: Client<typeof NodeService>) => Promise<T>): Promise<T> {
    let last: unknown;
    for (let attempt = 0; attempt < this.clients.length * 3; attempt++) {
      try {
        return await fn(this.clients[this.current % this.clients.length]!);
      } catch (err) {
        last = err;
        this.current++;
        await sleep(50);
      }
    }
    throw last;
  }

  /** Registers; resolves at the moment the reply arrived. */
  async register(): Promise<number> {
    await this.call((c) => c.registerNode({ nodeName: this.name, nodeIp: this.nodeIp, mtu: 1500 }, { timeoutMs: 10_000 }));
    const at = now();
    this.lastBeatAt = at;
    return at;
  }

  startHeartbeats(intervalMs: number): void {
    this.beats = setInterval(() => {
      void this.call((c) => c.heartbeat({ nodeName: this.name }, { timeoutMs: 5_000 })).then(
        () => {
          this.lastBeatAt = now();
        },
        () => undefined,
      );
    }, intervalMs);
  }

  stopHeartbeats(): void {
    clearInterval(this.beats);
    this.beats = undefined;
  }

  close(): void {
    this.stopHeartbeats();
    for (const s of this.sessions) s.abort();
  }
}

/**
 * Sends `m` to worker `w` unless it is gone. A send to a worker that has stopped (the run was interrupted)
 * would otherwise throw in the parent and crash it before its cleanup stopped etcd (seen: 3 etcd members left running).
 */
function tell(w: ChildProcess, m: ToWorker): void {
  if (w.connected) w.send(m, () => undefined);
}

/** Everything the parent started, undone in reverse order, once. */
class Cleanup {
  private readonly steps: Array<{ what: string; fn: () => Promise<unknown> | unknown }> = [];
  private running?: Promise<void>;

  push(what: string, fn: () => Promise<unknown> | unknown): void {
    this.steps.push({ what, fn });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of this.steps.reverse()) {
        try {
          await Promise.race([step.fn(), sleep(30_000).then(() => Promise.reject(new Error("timed out after 30 s")))]);
        } catch (err) {
          process.stderr.write(`fleet: cleanup of ${step.what} failed: ${String(err)}\n`);
        }
      }
    })();
    return this.running;
  }
}

/** Log lines of a replica at warn (40) or above, counted by message, plus the last few in full. */
async function logSummary(file: string): Promise<{ counts: Map<string, number>; last: string[] }> {
  const text = await readFile(file, "utf8").catch(() => "");
  const counts = new Map<string, number>();
  const last: string[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) {
      if (line.trim()) {
        counts.set(`(not JSON) ${line.slice(0, 120)}`, (counts.get(`(not JSON) ${line.slice(0, 120)}`) ?? 0) + 1);
        last.push(line.slice(0, 400));
      }
      continue;
    }
    let obj: { level?: number; msg?: string; rpc?: string; reason?: string; err?: { message?: string } };
    try {
      obj = JSON.parse(line) as typeof obj;
    } catch {
      continue;
    }
    if ((obj.level ?? 0) < 40) continue;
    // One entry per kind: numbers and node names out, the call and its error in.
    const what = [obj.msg, obj.rpc, obj.reason, obj.err?.message?.slice(0, 100)]
      .filter(Boolean)
      .join(" / ")
      .replace(/node-\d+/g, "node-N")
      .replace(/\d+(\.\d+)?/g, "N");
    counts.set(what, (counts.get(what) ?? 0) + 1);
    last.push(line.slice(0, 600));
    if (last.length > 5) last.shift();
  }
  return { counts, last };
}

async function parentMain(opts: Options): Promise<void> {
  const started = performance.now();
  const cleanup = new Cleanup();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`fleet: ${signal}: cleaning up\n`);
    void reportLogs("interrupted")
      .catch(() => undefined)
      .then(() => cleanup.run())
      .finally(() => process.exit(130));
  };
  const replicas: SpawnedControlPlane[] = [];
  const workerStats: Array<WorkerStats | undefined> = [];
  let cleaningUp = false;
  const reportLogs = async (why: string) => {
    for (const [r, replica] of replicas.entries()) {
      const { counts, last } = await logSummary(replica.logFile);
      if (counts.size === 0) {
        say(`replica ${r} log (${why}): no warnings or errors`);
        continue;
      }
      say(
        `replica ${r} log (${why}): ${[...counts]
          .sort((x, y) => y[1] - x[1])
          .map(([m, n]) => `${n}x "${m}"`)
          .join(", ")}`,
      );
      for (const l of last) say(`  replica ${r}: ${l}`);
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    say(
      `fleet: ${opts.nodes} nodes, ${opts.replicas} replicas, ${opts.etcdMembers} etcd members, TTL ${opts.ttlS} s, heartbeat every ${opts.heartbeatIntervalMs / 1000} s, node calls time out after ${opts.callTimeoutMs / 1000} s, reports ${opts.reportMode}, ${opts.workers} worker process(es) at nice ${opts.simNice}${opts.replicaNodeOptions.length ? `, replicas run with ${opts.replicaNodeOptions.join(" ")}` : ""}`,
    );
    // 1. etcd, the PKI, the replicas.
    const cluster: EtcdCluster = await startEtcdCluster(opts.etcdMembers);
    cleanup.push("etcd cluster", () => cluster.stop());
    const pki: TestPki = await createTestPki();
    cleanup.push("PKI", () => pki.destroy());
    const root = namespace();
    const joined: JoinedNodes = new Map();
    const args = ["--lease-ttl", String(opts.ttlS), "--cluster-cidr", CLUSTER_CIDR];
    for (let r = 0; r < opts.replicas; r++) {
      const replica = await spawnControlPlane({ etcd: cluster.endpoints, root, pki, joined, args, nodeOptions: opts.replicaNodeOptions });
      replicas.push(replica);
      cleanup.push(`replica ${r}`, () => replica.destroy());
    }
    const addresses = replicas.map((r) => r.address);
    /** The replica addresses, rotated by `k`: spreads nodes over replicas, the next one as failover. */
    const rotated = (k: number, from: readonly string[] = addresses) => from.map((_, j) => from[(k + j) % from.length]!);
    say(`etcd: ${cluster.endpoints.join(", ")}; replicas: ${replicas.map((r) => `${r.address} (pid ${r.pid})`).join(", ")}`);

    // RSS of every replica, sampled every 500 ms; the peak of each.
    const peakRss = replicas.map(() => 0);
    /** Replicas this bench SIGKILLed (SpawnedControlPlane.pid stays set for a child killed by a signal). */
    const killed = new Set<number>();
    const pids = replicas.map((r) => r.pid);
    const sampleRss = async () => {
      for (const [r, replica] of replicas.entries()) {
        if (killed.has(r)) continue;
        const v = await rssMiB(replica.pid);
        if (Number.isFinite(v)) peakRss[r] = Math.max(peakRss[r]!, v);
      }
    };
    const rssTimer = setInterval(() => void sampleRss(), 500);
    cleanup.push("RSS sampling", () => clearInterval(rssTimer));

    // How quickly each replica answers a health check (over mutual TLS, one connection each), every second,
    // by phase of the run: a replica whose event loop is busy answers late.
    let phase = "setup";
    const answers = new Map<string, number[]>();
    const healthClients = replicas.map((r) => createClient(Health, r.viewerTransport()));
    // Connections the kernel holds for each replica that it has not accepted yet (its listening socket's
    // queue, from /proc/net/tcp): a replica too busy to accept makes every new connection wait.
    const ports = replicas.map((r) => Number(r.address.split(":")[1]).toString(16).toUpperCase().padStart(4, "0"));
    const acceptQueue = new Map<string, number>();
    const sampleAcceptQueues = async () => {
      const text = await readFile("/proc/net/tcp", "utf8").catch(() => "");
      for (const line of text.split("\n").slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[3] !== "0A") continue; // LISTEN
        const port = f[1]?.split(":")[1];
        if (!port || !ports.includes(port)) continue;
        const queued = Number.parseInt(f[4]?.split(":")[1] ?? "0", 16);
        acceptQueue.set(phase, Math.max(acceptQueue.get(phase) ?? 0, queued));
      }
    };
    const healthTimer = setInterval(() => {
      void sampleAcceptQueues();
      for (const [r, client] of healthClients.entries()) {
        if (killed.has(r)) continue;
        const at = performance.now();
        const during = phase;
        const record = (v: number) => answers.set(during, [...(answers.get(during) ?? []), v]);
        client.check({ service: "" }, { timeoutMs: 30_000 }).then(
          () => record(performance.now() - at),
          () => record(Number.POSITIVE_INFINITY),
        );
      }
    }, 1000);
    cleanup.push("health checks", () => clearInterval(healthTimer));
    // CPU used by the replicas, the etcd members and the worker processes (simulated nodes), in seconds.
    const workers: ChildProcess[] = [];
    // Per kind, per process; a process gone since (a killed replica) counts for nothing in between.
    const cpu = () =>
      Promise.all(
        [replicas.map((r) => r.pid), cluster.members.map((m) => m.pid), workers.map((w) => w.pid ?? 0)].map((pids) =>
          Promise.all(pids.map(cpuSeconds)),
        ),
      );
    const coresBetween = (before: number[][], after: number[][], seconds: number) =>
      after.map((kind, k) => kind.reduce((sum, c, i) => sum + Math.max(0, c - (before[k]?.[i] ?? 0)), 0) / seconds);
    let flushes = 0;
    const flushed = new Set<number>();
    /** Fresh stats from every worker; with `phase`, each then starts the event-loop delay of a new phase. */
    const flush = async (phase = false) => {
      const seq = ++flushes;
      flushed.clear();
      for (const w of workers) tell(w, { t: "flush", seq, phase });
      await until(() => flushed.size === workers.length, 60_000, 10);
    };
    /** The worst of the workers' `k`, as text. */
    const worstWorker = (k: "loopDelayP99Ms" | "loopDelayMaxMs" | "phaseLoopDelayP99Ms" | "phaseLoopDelayMaxMs") =>
      ms(Math.max(...workerStats.map((st) => st?.[k] ?? 0)));
    let phaseStart = { at: performance.now(), etcd: await etcdCounters(cluster.endpoints), cpu: await cpu() };
    /** Ends a phase: says how the replicas answered during it, what etcd was asked, and the cores each kind of process used. */
    const endPhase = async (next: string) => {
      const xs = answers.get(phase) ?? [];
      const late = xs.filter((x) => !Number.isFinite(x)).length;
      if (xs.length > 0)
        say(
          `  replicas during ${phase}: health checks answered in p50 ${ms(pct(xs, 0.5))}, p99 ${ms(pct(xs, 0.99))}, max ${ms(Math.max(...xs.filter(Number.isFinite)))} (${xs.length} checks${late ? `, ${late} unanswered within 30 s` : ""}); up to ${acceptQueue.get(phase) ?? 0} connections waiting to be accepted`,
        );
      const now_ = { at: performance.now(), etcd: await etcdCounters(cluster.endpoints), cpu: await cpu() };
      const seconds = (now_.at - phaseStart.at) / 1000;
      say(`  etcd during ${phase}: ${etcdRates(phaseStart.etcd, now_.etcd, seconds)}`);
      const cores = coresBetween(phaseStart.cpu, now_.cpu, seconds);
      say(
        `  cores used during ${phase}: replicas ${cores[0]!.toFixed(2)}, etcd ${cores[1]!.toFixed(2)}, simulated nodes ${cores[2]!.toFixed(2)}`,
      );
      if (workers.length > 0) {
        // A sim hears a route change only when its worker's event loop gets to it: the delay is part of
        // every latency the bench measures through the sims, and says how loaded the sims were.
        await flush(true);
        say(
          `  simulated nodes' event-loop delay during ${phase}: p99 ${worstWorker("phaseLoopDelayP99Ms")}, max ${worstWorker("phaseLoopDelayMaxMs")} (worst worker)`,
        );
      }
      phaseStart = now_;
      phase = next;
    };

    // etcd: the nodes' liveness as the control plane decides it, and each member's database size.
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    cleanup.push("etcd client", () => etcd.close());
    const liveness = new Map<string, boolean>();
    const decidedAt = new Map<string, number>();
    const wrongfulExpiries: string[] = [];
    const watcher: Watcher = await etcd.watch().prefix(`${root}/nodes/`).create();
    cleanup.push("etcd watch", () => watcher.cancel());
    watcher.on("put", (kv) => {
      const at = now();
      let rec: { name?: string; live?: boolean; releasedReason?: string };
      try {
        rec = JSON.parse(kv.value.toString()) as typeof rec;
      } catch {
        return;
      }
      const name = rec.name ?? kv.key.toString().slice(`${root}/nodes/`.length);
      const live = rec.live === true;
      const was = liveness.get(name);
      liveness.set(name, live);
      if (was === true && !live) {
        if (isDeathProbe(name)) decidedAt.set(name, at);
        else wrongfulExpiries.push(`${name} (${rec.releasedReason ?? "?"})`);
      }
    });
    const dbSizes = async (): Promise<number[]> =>
      Promise.all(
        cluster.endpoints.map(async (endpoint) => {
          const member = new Etcd3({ hosts: endpoint });
          try {
            return Number((await member.maintenance.status()).dbSize) / 1048576;
          } catch {
            return Number.NaN;
          } finally {
            member.close();
          }
        }),
      );
    const resources = async (when: string) => {
      await sampleRss();
      const now_ = await Promise.all(replicas.map((r, i) => (killed.has(i) ? Number.NaN : rssMiB(r.pid))));
      const db = await dbSizes();
      const bench = workerStats.reduce((a, s) => a + (s?.rssMiB ?? 0), process.memoryUsage().rss / 1048576);
      say(
        `resources ${when}: control-plane RSS ${now_.map((v, r) => `r${r} ${Number.isFinite(v) ? `${v.toFixed(0)} MiB` : "dead"}`).join(", ")}` +
          ` (peaks ${peakRss.map((v) => v.toFixed(0)).join("/")} MiB); etcd db ${db.map((v) => v.toFixed(1)).join("/")} MiB; bench processes ${bench.toFixed(0)} MiB`,
      );
      return db;
    };

    // 2. Every node joins by token (an admin's token, then JoinService with a CSR for its own key),
    // spread over the replicas.
    const probeNames = [
      ...Array.from({ length: JOIN_PROBES }, (_, i) => `join-probe-${i}`),
      "failover-probe",
      ...Array.from({ length: DEATH_PROBES }, (_, i) => `death-probe-${i}`),
    ];
    const names = [...Array.from({ length: opts.nodes }, (_, i) => fleetName(i)), ...probeNames];
    const credentials = new Map<string, Credential>();
    const tj = performance.now();
    await pool(names.length, JOIN_CONCURRENCY, async (i) => {
      const name = names[i]!;
      let last: unknown;
      for (let attempt = 0; attempt < 3 * replicas.length; attempt++) {
        try {
          credentials.set(name, await replicas[(i + attempt) % replicas.length]!.nodeCredential(name));
          return;
        } catch (err) {
          last = err;
          await sleep(200);
        }
      }
      throw last;
    });
    const joinS = (performance.now() - tj) / 1000;
    say(
      `node certificates by join token: ${names.length} in ${joinS.toFixed(1)} s = ${(names.length / joinS).toFixed(0)}/s (${JOIN_CONCURRENCY} at a time over ${replicas.length} replicas)`,
    );

    // 3. The workers, each with its share of the fleet.
    const ready = new Set<number>();
    const stopped = new Set<number>();
    const heapMiB = Math.max(2048, Math.ceil((opts.nodes / opts.workers) * opts.nodes * 0.002)); // ~2 KiB a route held
    for (let w = 0; w < opts.workers; w++) {
      const child = fork(process.argv[1]!, ["--worker"], {
        execArgv: [`--max-old-space-size=${heapMiB}`, ...(process.env.FLEET_DEBUG_ARGS?.split(" ") ?? [])],
        serialization: "advanced",
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      });
      if (child.pid !== undefined) setPriority(child.pid, opts.simNice);
      workers.push(child);
      child.on("message", (m: FromWorker) => {
        if (m.t === "ready") ready.add(m.index);
        else if (m.t === "stopped") stopped.add(m.index);
        else {
          workerStats[m.index] = m;
          if (m.seq !== 0 && m.seq === flushes) flushed.add(m.index);
        }
      });
      child.on("exit", (code, signal) => {
        if (!stopped.has(w) && !cleaningUp) process.stderr.write(`fleet: worker ${w} exited (code ${code}, signal ${signal})\n`);
      });
      cleanup.push(`worker ${w}`, async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolve) => child.once("exit", resolve));
        tell(child, { t: "stop" });
        if (!(await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]))) child.kill("SIGKILL");
        await exited;
      });
    }
    cleanup.push("marking cleanup", () => {
      cleaningUp = true;
    });
    for (let w = 0; w < opts.workers; w++) {
      const sims: SimSpec[] = [];
      for (let i = w; i < opts.nodes; i += opts.workers) {
        const name = fleetName(i);
        sims.push({ name, nodeIp: underlayIp(i), addresses: rotated(i), credential: credentials.get(name)! });
      }
      tell(workers[w]!, {
        t: "init",
        index: w,
        caPem: pki.caPem,
        heartbeatIntervalMs: opts.heartbeatIntervalMs,
        callTimeoutMs: opts.callTimeoutMs,
        reportMode: opts.reportMode,
        fleetSize: opts.nodes,
        sims,
      });
    }
    if (!(await until(() => ready.size === opts.workers, 120_000, 50))) throw new Error("the workers did not get ready within 120 s");
    const total = () => {
      const t = { registered: 0, registerErrors: 0, converged: 0, flaps: 0, lastRegisteredAt: 0 };
      for (const s of workerStats) {
        if (!s) continue;
        t.registered += s.registered;
        t.registerErrors += s.registerErrors;
        t.converged += s.converged;
        t.flaps += s.flaps;
        t.lastRegisteredAt = Math.max(t.lastRegisteredAt, s.lastRegisteredAt);
      }
      return t;
    };
    /** How many sims hold (`up`) or lost (`down`) `probe`'s route, and when the last of them did. */
    const probeAt = (probe: string, kind: "up" | "down") => {
      let count = 0;
      let max = 0;
      for (const s of workerStats) {
        const p = s?.probes[probe];
        if (!p) continue;
        count += kind === "up" ? p.up : p.down;
        max = Math.max(max, kind === "up" ? p.upMax : p.downMax);
      }
      return { count, max };
    };
    /** What the sims did, summed over the workers, and their most frequent last errors. */
    const simSummary = (when: string) => {
      const sum = noSimTotals();
      const errs = new Map<string, number>();
      for (const st of workerStats) {
        if (!st) continue;
        addSimTotals(sum, st.sim);
        for (const [e, n] of st.lastErrors) errs.set(e, (errs.get(e) ?? 0) + n);
      }
      say(
        `simulated nodes ${when}: ${sum.heartbeats} heartbeats (${sum.heartbeatFailures} failed, longest gap ${ms(sum.maxHeartbeatGapMs)}), ` +
          `${sum.connections} connections, ${sum.streamMessages} stream messages (${sum.snapshots} snapshots, ${sum.streamFailures} broken streams), ` +
          `${sum.reports} route reports (${sum.reportFailures} failed); bench processes ${workerStats.reduce((a, st) => a + (st?.rssMiB ?? 0), process.memoryUsage().rss / 1048576).toFixed(0)} MiB` +
          `, worker event-loop delay since start p99 ${worstWorker("loopDelayP99Ms")} max ${worstWorker("loopDelayMaxMs")}`,
      );
      const failures = new Map<string, number>();
      for (const st of workerStats) for (const [k, n] of Object.entries(st?.failures ?? {})) failures.set(k, (failures.get(k) ?? 0) + n);
      if (failures.size > 0) say(`  failed calls: ${[...failures].map(([k, n]) => `${k} ${n}`).join(", ")}`);
      for (const [e, n] of [...errs].sort((x, y) => y[1] - x[1]).slice(0, 5)) say(`  last error of ${n} nodes: ${e}`);
    };

    // 4. Every node registers (REGISTER_CONCURRENCY at a time over all workers), then heartbeats, streams
    // routes and reports digests.
    await endPhase("registration");
    const tr = now();
    const perWorker = Math.max(1, Math.floor(REGISTER_CONCURRENCY / opts.workers));
    for (const w of workers) tell(w, { t: "register", concurrency: perWorker });
    let lastProgress = performance.now();
    // Waits while registrations progress: after STALL_MS without one more, it goes on with the nodes that did.
    let progressAt = performance.now();
    let progressCount = 0;
    const registeredAll = await until(
      () => {
        const t = total();
        if (t.registered + t.registerErrors > progressCount) {
          progressCount = t.registered + t.registerErrors;
          progressAt = performance.now();
        }
        if (performance.now() - progressAt > STALL_MS) return true;
        if (performance.now() - lastProgress > 10_000) {
          lastProgress = performance.now();
          const waiting = workerStats.flatMap((st) => st?.registeringErrors ?? []).map(([e, n]) => `${n}x ${e}`);
          say(
            `  ... ${t.registered}/${opts.nodes} registered, ${t.registerErrors} failed, ${t.converged} with every route` +
              (waiting.length ? `; registering now, by last error: ${waiting.join("; ")}` : ""),
          );
        }
        return t.registered + t.registerErrors >= opts.nodes;
      },
      60 * 60_000,
      20,
    );
    const reg = total();
    /** The nodes that registered: those every route should reach. */
    const fleet = reg.registered;
    for (const w of workers) tell(w, { t: "expect", routes: fleet });
    const regS = (reg.lastRegisteredAt - tr) / 1000;
    const registrationsPerS = reg.registered / regS;
    say(
      `registrations: ${reg.registered} in ${regS.toFixed(1)} s = ${num(registrationsPerS)}/s (${perWorker * opts.workers} at a time, each node on its own mutual-TLS connection, streaming as soon as registered)` +
        (reg.registerErrors ? `; ${reg.registerErrors} FAILED` : "") +
        (registeredAll && fleet + reg.registerErrors >= opts.nodes
          ? ""
          : `; ${opts.nodes - fleet - reg.registerErrors} NOT REGISTERED: none more registered for ${STALL_MS / 1000} s, going on with ${fleet} (the rest stopped)`),
    );
    for (const s of workerStats) for (const e of s?.errors ?? []) say(`  worker ${s?.index}: ${e}`);

    // 5. The fleet converges: every registered node holds every registered node's route.
    await flush();
    progressAt = performance.now();
    progressCount = 0;
    const convergedAll = await until(
      () => {
        const t = total();
        if (t.converged > progressCount) {
          progressCount = t.converged;
          progressAt = performance.now();
        }
        if (performance.now() - progressAt > STALL_MS) return false;
        if (performance.now() - lastProgress > 10_000) {
          lastProgress = performance.now();
          say(`  ... ${t.converged}/${fleet} nodes hold every route`);
        }
        return t.converged >= fleet;
      },
      60 * 60_000,
      20,
    );
    say(
      convergedAll
        ? `fleet converged: every node holds all ${fleet} fleet routes ${((now() - tr) / 1000).toFixed(1)} s after the first registration (${((now() - reg.lastRegisteredAt) / 1000).toFixed(1)} s after the last)`
        : `fleet NOT converged: ${total().converged}/${fleet} nodes hold every route, none more for ${STALL_MS / 1000} s`,
    );
    await endPhase("join probes");
    await flush();
    simSummary("so far");
    await resources("with the fleet up");

    // The fleet up and quiet: what keeping it up costs, in cores. First the route reports the convergence
    // set off have gone (each node's last waits quietMsFor after the one before): then only heartbeats remain.
    await sleep(quietMsFor(fleet) + 2_000);
    const quietMs = Math.max(20_000, 2 * opts.heartbeatIntervalMs);
    const heartbeats = () => workerStats.reduce((a, st) => a + (st?.sim.heartbeats ?? 0), 0);
    const [cpuBefore, beatsBefore, etcdBefore] = [await cpu(), heartbeats(), await etcdCounters(cluster.endpoints)];
    await sleep(quietMs);
    await flush();
    const [cpuAfter, beatsAfter, etcdAfter] = [await cpu(), heartbeats(), await etcdCounters(cluster.endpoints)];
    const perS = (n: number) => n / (quietMs / 1000);
    const cores = coresBetween(cpuBefore, cpuAfter, quietMs / 1000);
    const beatsPerS = perS(beatsAfter - beatsBefore);
    const perBeat = (x: number, digits: number) => (beatsPerS > 0 ? (x / beatsPerS).toFixed(digits) : "n/a");
    say(
      `quiet fleet for ${quietMs / 1000} s: ${beatsPerS.toFixed(0)} heartbeats/s; cores used: replicas ${cores[0]!.toFixed(2)}, etcd ${cores[1]!.toFixed(2)}, simulated nodes ${cores[2]!.toFixed(2)}` +
        ` (per heartbeat: replicas ${perBeat(cores[0]! * 1000, 2)} ms, etcd ${perBeat(cores[1]! * 1000, 2)} ms)`,
    );
    say(`  etcd: ${etcdRates(etcdBefore, etcdAfter, quietMs / 1000, beatsPerS)}`);

    // 6. Join -> route at every node: probes register one at a time, each through the replicas in turn.
    const probes: Probe[] = [];
    cleanup.push("probes", () => {
      for (const p of probes) p.close();
    });
    const newProbe = (name: string, k: number, from: readonly string[]) => {
      const p = new Probe(
        name,
        `192.168.${100 + Math.floor(k / 250)}.${(k % 250) + 1}`,
        rotated(k, from),
        pki.caPem,
        credentials.get(name)!,
      );
      probes.push(p);
      return p;
    };
    const waitProbe = async (name: string, kind: "up" | "down", timeoutMs: number) => {
      const ok = await until(() => probeAt(name, kind).count >= fleet, timeoutMs, 2);
      return { ok, ...probeAt(name, kind) };
    };
    // A probe whose route does not reach every node within PROBE_WAIT_MS counts as PROBE_WAIT_MS; after
    // three in a row the rest are skipped.
    const joins: number[] = [];
    let joinMisses = 0;
    for (let i = 0; i < JOIN_PROBES && joinMisses < 3; i++) {
      const p = newProbe(`join-probe-${i}`, i, addresses);
      let at: number;
      try {
        at = await p.register();
      } catch (err) {
        say(`  join-probe-${i}: RegisterNode failed: ${String(err)}`);
        joins.push(PROBE_WAIT_MS);
        joinMisses++;
        continue;
      }
      p.startHeartbeats(opts.heartbeatIntervalMs);
      const r = await waitProbe(p.name, "up", PROBE_WAIT_MS);
      if (r.ok) {
        joins.push(r.max - at);
        joinMisses = 0;
      } else {
        joins.push(PROBE_WAIT_MS);
        joinMisses++;
        say(`  join-probe-${i}: its route reached only ${r.count}/${fleet} nodes within ${PROBE_WAIT_MS / 1000} s`);
      }
      await sleep(100);
    }
    const joinP99 = pct(joins, 0.99);
    const joinMissed = joins.filter((j) => j === PROBE_WAIT_MS).length;
    say(
      `join -> route at all ${fleet} nodes: p50 ${ms(pct(joins, 0.5))}, p99 ${ms(joinP99)}, max ${ms(Math.max(...joins))} (${joins.length} probes one at a time, from the RegisterNode reply` +
        (joinMissed ? `; ${joinMissed} did not reach every node, counted as ${PROBE_WAIT_MS / 1000} s)` : ")"),
    );

    // 7. One replica dies (SIGKILL): the nodes that streamed from it move to the others. A node streams
    // again once it has a snapshot from another replica; also timed: a node registered through a survivor
    // right after the kill, until it is in every node's table.
    await endPhase("failover");
    let survivors = addresses;
    if (opts.replicas >= 2) {
      const victim = replicas[0]!;
      for (const w of workers) tell(w, { t: "replica-killed", address: victim.address, at: now() });
      await until(() => workerStats.every((s) => s?.failover !== undefined), 10_000, 10);
      await flush();
      const flapsBefore = total().flaps;
      const moved = workerStats.reduce((a, s) => a + (s?.failover?.moved ?? 0), 0);
      const tk = now();
      killed.add(0);
      await victim.kill("SIGKILL");
      say(`killed replica 0 (pid ${pids[0]}) with SIGKILL; ${moved} nodes streamed from it`);
      survivors = addresses.slice(1);
      const marker = newProbe("failover-probe", JOIN_PROBES, survivors);
      const markerAt = await marker.register().catch((err: unknown) => {
        say(`  failover-probe: RegisterNode failed: ${String(err)}`);
        return Number.NaN;
      });
      marker.startHeartbeats(opts.heartbeatIntervalMs);
      const pending = () => workerStats.reduce((a, s) => a + (s?.failover?.pending ?? 0), 0);
      const allMoved = await until(() => pending() === 0, 120_000, 10);
      const movedAt = Math.max(...workerStats.map((s) => s?.failover?.lastAt ?? 0));
      const r = await waitProbe(marker.name, "up", 120_000);
      // Give the moved nodes time to heartbeat and report through the survivors before counting flaps.
      await sleep(Math.min(opts.heartbeatIntervalMs * 2, 30_000));
      await flush();
      const t = total();
      say(
        `replica killed: ${allMoved ? `all ${moved} of its nodes stream from another replica ${ms(movedAt - tk)} after the kill` : `${pending()} of its ${moved} nodes still stream from no other replica after 120 s`}` +
          `; a node registered through a survivor ${ms(markerAt - tk)} after the kill reached ${r.count}/${fleet} nodes ${ms(r.max - tk)} after the kill` +
          `; flaps since the kill ${t.flaps - flapsBefore} (expected 0)`,
      );
      await resources("after the kill");
    } else say("one replica: no replica is killed");

    // 8. Death (decided) -> route gone at every node: probes registered through the survivors stop
    // heartbeating, a second apart; decided = when etcd shows their node record not live.
    await endPhase("deaths");
    const dead: Array<{ probe: Probe; holders: number }> = [];
    for (let i = 0; i < DEATH_PROBES; i++) {
      const p = newProbe(`death-probe-${i}`, JOIN_PROBES + 1 + i, survivors);
      try {
        await p.register();
      } catch (err) {
        say(`  ${p.name}: RegisterNode failed: ${String(err)}`);
        continue;
      }
      p.startHeartbeats(opts.heartbeatIntervalMs);
      await waitProbe(p.name, "up", PROBE_WAIT_MS);
      dead.push({ probe: p, holders: 0 });
    }
    for (const d of dead) {
      for (const w of workers) tell(w, { t: "excuse", node: d.probe.name, at: now() });
      d.probe.stopHeartbeats();
      d.holders = probeAt(d.probe.name, "up").count;
      await sleep(1000);
    }
    // Decided: by the TTL, an expiry round (every min(5 s, TTL/4)) and a heartbeat in flight, with room.
    const decideWithinMs =
      opts.ttlS * 1000 + 2 * Math.min(5_000, Math.max(500, (opts.ttlS * 1000) / 4)) + opts.heartbeatIntervalMs + 60_000;
    const deaths: number[] = [];
    const decidedAfter: number[] = [];
    let undecided = 0;
    for (const { probe: p, holders } of dead) {
      // Gone from every node that held it, within PROBE_WAIT_MS of the decision (counted as that if not).
      const decidedInTime = await until(() => decidedAt.has(p.name), Math.max(0, p.lastBeatAt + decideWithinMs - now()), 10);
      const decided = decidedAt.get(p.name);
      if (!decidedInTime || decided === undefined) {
        undecided++;
        say(`  ${p.name}: not decided dead in etcd within ${(decideWithinMs / 1000).toFixed(0)} s of its last heartbeat`);
        continue;
      }
      decidedAfter.push(decided - p.lastBeatAt);
      const gone = await until(() => probeAt(p.name, "down").count >= holders, Math.max(0, decided + PROBE_WAIT_MS - now()), 2);
      const r = probeAt(p.name, "down");
      if (gone) deaths.push(r.max - decided);
      else {
        deaths.push(PROBE_WAIT_MS);
        say(`  ${p.name}: its route left ${r.count}/${holders} nodes within ${PROBE_WAIT_MS / 1000} s of the decision`);
      }
    }
    const deathP99 = pct(deaths, 0.99);
    const deathMissed = deaths.filter((d) => d === PROBE_WAIT_MS).length;
    say(
      `death (decided in etcd) -> route gone at all ${fleet} nodes: p50 ${ms(pct(deaths, 0.5))}, p99 ${ms(deathP99)}, max ${ms(Math.max(...deaths))} (${deaths.length} probes` +
        (deathMissed ? `, ${deathMissed} not gone everywhere, counted as ${PROBE_WAIT_MS / 1000} s` : "") +
        (undecided ? `, ${undecided} never decided` : "") +
        `; decided ${ms(pct(decidedAfter, 0.5))} p50 after the last heartbeat, TTL ${opts.ttlS} s)`,
    );

    // 9. The end: resources, flaps, the replicas' complaints.
    await endPhase("the end");
    await flush();
    const db = await resources("at the end");
    const t = total();
    say(`route flaps (withdrawals of nodes not killed, over all nodes): ${t.flaps}`);
    for (const s of workerStats) for (const e of s?.flapExamples ?? []) say(`  ${e}`);
    if (wrongfulExpiries.length) say(`nodes etcd shows not live that were not killed: ${wrongfulExpiries.slice(0, 10).join(", ")}`);
    for (const s of workerStats) for (const e of s?.errors ?? []) say(`  worker ${s?.index}: ${e}`);
    simSummary("over the run");
    await reportLogs("warnings and errors");
    const cpRss = Math.max(...peakRss);
    say(`wall time ${((performance.now() - started) / 1000).toFixed(0)} s`);
    say(
      `fleet: nodes=${opts.nodes} replicas=${opts.replicas} etcd_members=${opts.etcdMembers} registrations_per_s=${num(registrationsPerS)} join_p99_ms=${num(joinP99)} death_p99_ms=${num(deathP99)} cp_rss_mib=${num(cpRss)} etcd_db_mib=${num(Math.max(...db.filter(Number.isFinite)), 1)} flaps=${t.flaps}`,
    );
  } catch (err) {
    await reportLogs("on failure").catch(() => undefined);
    throw err;
  } finally {
    await cleanup.run();
  }
}

const parsed = parseOptions(process.argv.slice(2));
if (parsed === "help") {
  process.stdout.write(usage);
  process.exit(0);
} else if (parsed === "worker") {
  workerMain().catch((err: unknown) => {
    process.stderr.write(`fleet worker failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
} else {
  parentMain(parsed).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`fleet failed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
