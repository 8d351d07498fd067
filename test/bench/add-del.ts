// The pod-path benchmark (DESIGN.md §8): the trellis shim against Debian's reference plugins (bridge +
// host-local), both exec'd as a runtime execs them, in the same run and the same lab: trellis on node-1,
// the reference in node-2's namespace. Every pod is its own namespace made with `ip netns add`.
//   1. ADD, CHECK and DEL, one pod at a time: p50 and p99.
//   2. Pods per second with 8 and 32 ADDs (then DELs) in flight.
//   3. 100 parallel ADDs then 100 parallel DELs through the shim: successes, distinct addresses, leftovers.
//   4. CPU (user + sys) and peak RSS of one ADD exec, shim against `bridge`, from GNU time.
//   5. The daemon's RSS with 110 pods on its node, and its restart-to-serving time with them.
// It prints a table, then as its last line `bench: key=value ...`. It measures and reports, never fails on
// speed; it exits non-zero only when it could not run. Usage: node dist/test/bench/add-del.js [rounds]
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { inNetns, mustInNetns, processCpuSeconds, type RunResult, run } from "../support/exec.js";
import { allocationFiles, Lab, type LabNode, pluginConf, referencePluginDir, shimBinary } from "../support/lab.js";

const rounds = Number(process.argv[2] ?? 50);
const burstPods = 64;
const burstConcurrency = [8, 32] as const;
const parallelPods = 100;
/** GNU time prints CPU seconds with two decimals: time batches of execs, take the median batch. */
const cpuBatches = 5;
const cpuBatchExecs = 10;
const podsPerNode = 110;
const restarts = 3;
const gnuTime = "/usr/bin/time";
const servingLine = '"msg":"serving the CNI shim"';

type Json = Record<string, unknown>;
type Command = "ADD" | "CHECK" | "DEL";

/** A pod as a runtime knows it: its namespace, its CNI env, and the cached ADD result. */
interface Pod {
  readonly name: string;
  readonly env: Record<string, string>;
  result?: Json;
}

/** One CNI plugin as the benchmark drives it, on one node of the lab. */
interface Plugin {
  readonly name: string;
  readonly node: LabNode;
  /** The plugin config on stdin; CHECK gets the cached ADD result as prevResult (CNI spec). */
  conf(prevResult?: Json): Json;
  exec(command: Command, pod: Pod): Promise<RunResult>;
}

interface Timed {
  readonly ms: number;
  readonly res: RunResult;
}

const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);

// ---------- small helpers ----------

function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
}

const median = (xs: readonly number[]) => quantile(xs, 0.5);

function parseJson(text: string): Json | undefined {
  try {
    return text.trim() ? (JSON.parse(text) as Json) : undefined;
  } catch {
    return undefined;
  }
}

/** The first address of a CNI result, without its prefix length. */
function addressOf(result: Json | undefined): string | undefined {
  const ips = result?.ips as Array<{ address?: string }> | undefined;
  return ips?.[0]?.address?.split("/")[0];
}

async function timed(fn: () => Promise<RunResult>): Promise<Timed> {
  const t0 = performance.now();
  const res = await fn();
  return { ms: performance.now() - t0, res };
}

/**
 * Runs `fn` over `items` with at most `limit` calls in flight; results in input order. After a failure no
 * new call starts, and it throws only once the calls in flight have finished (nothing runs on behind it).
 */
async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const rejected = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (rejected) throw rejected.reason;
  return out;
}

/** Counts failed calls per phase, and shows the first few of them as they happen. */
const failures = new Map<string, number>();
function noteFailure(phase: string, pod: Pod, res: RunResult): void {
  const n = (failures.get(phase) ?? 0) + 1;
  failures.set(phase, n);
  if (n <= 3)
    progress(
      `  ${phase} failed for ${pod.name} (exit ${res.code}): ${(res.stdout + res.stderr).trim().replaceAll("\n", " | ").slice(0, 400)}`,
    );
}

// ---------- pod namespaces (made here, so removed here, also on failure) ----------

const namespaces = new Set<string>();
/** The running lab, for the teardown. */
let activeLab: Lab | undefined;
let tearingDown: Promise<void> | undefined;

async function makePods(lab: Lab, tag: string, count: number): Promise<Pod[]> {
  const pods = Array.from({ length: count }, (_, i): Pod => {
    const name = `${lab.prefix}-pod-${tag}-${i}`; // never `-n<i>` or `-ul`: the lab's own namespaces
    return {
      name,
      env: {
        CNI_CONTAINERID: name,
        CNI_NETNS: `/run/netns/${name}`,
        CNI_IFNAME: "eth0",
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${name}`,
      },
    };
  });
  await pool(pods, 4, async (pod) => {
    if (tearingDown) throw new Error("tearing down");
    const res = await run("ip", ["netns", "add", pod.name]);
    if (res.code !== 0) throw new Error(`ip netns add ${pod.name} failed: ${res.stderr.trim()}`);
    namespaces.add(pod.name);
    if (tearingDown) await removePods([pod]); // made while the teardown ran: it may have missed this one
  });
  return pods;
}

async function removePods(pods: readonly Pod[]): Promise<void> {
  await pool(pods, 4, async (pod) => {
    await run("ip", ["netns", "del", pod.name]);
    namespaces.delete(pod.name);
  });
}

// ---------- the two plugins ----------

function trellisPlugin(lab: Lab, node: LabNode): Plugin {
  const conf = (prevResult?: Json): Json => ({ ...pluginConf(node), ...(prevResult ? { prevResult } : {}) });
  return {
    name: "trellis",
    node,
    conf,
    exec: (command, pod) => lab.shim(node, command, pod.env, conf(command === "CHECK" ? pod.result : undefined)),
  };
}

function referencePlugin(lab: Lab, node: LabNode): Plugin {
  const conf = (prevResult?: Json): Json => ({
    cniVersion: "1.0.0",
    name: "reference",
    type: "bridge",
    bridge: "cni0",
    isGateway: true,
    ipam: { type: "host-local", subnet: "10.88.0.0/16", dataDir: join(lab.workDir, "host-local") },
    ...(prevResult ? { prevResult } : {}),
  });
  return {
    name: "reference",
    node,
    conf,
    exec: (command, pod) =>
      inNetns(node.netns, join(referencePluginDir, "bridge"), [], {
        stdin: JSON.stringify(conf(command === "CHECK" ? pod.result : undefined)),
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: command, CNI_PATH: referencePluginDir, ...pod.env },
        timeoutMs: 30_000,
      }),
  };
}

function binaryOf(lab: Lab, plugin: Plugin): string {
  return plugin.name === "trellis" ? join(lab.binDir, "trellis") : join(referencePluginDir, "bridge");
}

/** ADD that keeps the result for CHECK; failures are counted, never thrown. */
async function add(plugin: Plugin, pod: Pod, phase: string): Promise<Timed> {
  const t = await timed(() => plugin.exec("ADD", pod));
  pod.result = t.res.code === 0 ? parseJson(t.res.stdout) : undefined;
  if (!pod.result) noteFailure(`${plugin.name} ${phase} ADD`, pod, t.res);
  return t;
}

async function del(plugin: Plugin, pod: Pod, phase: string): Promise<Timed> {
  const t = await timed(() => plugin.exec("DEL", pod));
  if (t.res.code !== 0) noteFailure(`${plugin.name} ${phase} DEL`, pod, t.res);
  return t;
}

// ---------- 1. one pod at a time ----------

interface Sequential {
  readonly add: number[];
  readonly check: number[];
  readonly del: number[];
}

/** One round of ADD, CHECK, DEL of one new pod through `plugin`, times added to `out`. */
async function sequentialRound(lab: Lab, plugin: Plugin, round: number, out: Sequential): Promise<void> {
  const [pod] = (await makePods(lab, `${plugin.name[0]}s${round}`, 1)) as [Pod];
  try {
    const a = await add(plugin, pod, "sequential");
    if (pod.result) {
      out.add.push(a.ms);
      const c = await timed(() => plugin.exec("CHECK", pod));
      if (c.res.code === 0) out.check.push(c.ms);
      else noteFailure(`${plugin.name} sequential CHECK`, pod, c.res);
    }
    const d = await del(plugin, pod, "sequential");
    if (d.res.code === 0) out.del.push(d.ms);
  } finally {
    await removePods([pod]);
  }
}

/**
 * Both plugins one pod at a time, their rounds interleaved (and which goes first alternating), so a
 * noisy spell on the machine slows both alike and the ratio survives it, as farm-bench --vs pairs runs.
 */
async function sequential(lab: Lab, plugins: readonly [Plugin, Plugin]): Promise<[Sequential, Sequential]> {
  progress(`${plugins[0].name} and ${plugins[1].name}, interleaved: ADD, CHECK, DEL one pod at a time, ${rounds} rounds each`);
  const out: [Sequential, Sequential] = [
    { add: [], check: [], del: [] },
    { add: [], check: [], del: [] },
  ];
  for (let i = 0; i < rounds; i++) {
    const first = i % 2;
    await sequentialRound(lab, plugins[first]!, i, out[first]!);
    await sequentialRound(lab, plugins[1 - first]!, i, out[1 - first]!);
  }
  return out;
}

// ---------- 2. bursts with bounded concurrency ----------

interface Burst {
  readonly concurrency: number;
  readonly addOk: number;
  readonly addPerS: number;
  readonly delOk: number;
  readonly delPerS: number;
}

async function burst(lab: Lab, plugin: Plugin, concurrency: number): Promise<Burst> {
  progress(`${plugin.name}: ${burstPods} ADDs, ${concurrency} in flight, then ${burstPods} DELs`);
  const pods = await makePods(lab, `${plugin.name[0]}b${concurrency}`, burstPods);
  try {
    const phase = `burst${concurrency}`;
    let t0 = performance.now();
    const adds = await pool(pods, concurrency, (pod) => add(plugin, pod, phase));
    const addS = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const dels = await pool(pods, concurrency, (pod) => del(plugin, pod, phase));
    const delS = (performance.now() - t0) / 1000;
    const addOk = adds.filter((_, i) => pods[i]!.result).length;
    const delOk = dels.filter((t) => t.res.code === 0).length;
    return { concurrency, addOk, addPerS: addOk / addS, delOk, delPerS: delOk / delS };
  } finally {
    await removePods(pods);
  }
}

/** Each concurrency for both plugins back to back, so the pair shares the machine's state. */
async function bursts(lab: Lab, plugins: readonly [Plugin, Plugin]): Promise<[Burst[], Burst[]]> {
  const out: [Burst[], Burst[]] = [[], []];
  for (const concurrency of burstConcurrency) {
    out[0].push(await burst(lab, plugins[0], concurrency));
    out[1].push(await burst(lab, plugins[1], concurrency));
  }
  return out;
}

// ---------- 3. 100 parallel ADDs, then 100 parallel DELs (trellis) ----------

interface Parallel {
  readonly addOk: number;
  readonly addS: number;
  readonly distinct: number;
  readonly delOk: number;
  readonly delS: number;
  readonly leftVeths: string[];
  readonly leftRecords: number;
  /** Pods whose ADD gave an address no other pod got and whose DEL succeeded. */
  readonly ok: number;
}

/** Host-side pod veths (tr + 11 hex) in a node's namespace. */
async function podVeths(node: LabNode): Promise<string[]> {
  const out = await mustInNetns(node.netns, "ip", ["-o", "link", "show"]);
  return out
    .split("\n")
    .map((line) => line.split(": ")[1]?.split("@")[0] ?? "")
    .filter((name) => /^tr[0-9a-f]{11}$/.test(name));
}

async function parallel(lab: Lab, plugin: Plugin): Promise<Parallel> {
  progress(`${plugin.name}: ${parallelPods} parallel ADDs, then ${parallelPods} parallel DELs`);
  const pods = await makePods(lab, "par", parallelPods);
  try {
    let t0 = performance.now();
    await Promise.all(pods.map((pod) => add(plugin, pod, "parallel100")));
    const addS = (performance.now() - t0) / 1000;
    const addresses = pods.map((pod) => addressOf(pod.result));
    const count = new Map<string, number>();
    for (const a of addresses) if (a) count.set(a, (count.get(a) ?? 0) + 1);
    t0 = performance.now();
    const dels = await Promise.all(pods.map((pod) => del(plugin, pod, "parallel100")));
    const delS = (performance.now() - t0) / 1000;
    // Looked at before the pod namespaces go: removing a namespace would take a leaked veth with it.
    const leftVeths = await podVeths(plugin.node);
    const leftRecords = (await allocationFiles(plugin.node)).length;
    const ok = pods.filter((_, i) => {
      const a = addresses[i];
      return a !== undefined && count.get(a) === 1 && dels[i]!.res.code === 0;
    }).length;
    return {
      addOk: addresses.filter(Boolean).length,
      addS,
      distinct: count.size,
      delOk: dels.filter((t) => t.res.code === 0).length,
      delS,
      leftVeths,
      leftRecords,
      ok,
    };
  } finally {
    await removePods(pods);
  }
}

// ---------- 4. CPU and peak RSS of one ADD exec, from GNU time ----------

interface Cost {
  /** user + sys per exec, ms (median over batches). */
  readonly cpuMs: number;
  /** Peak RSS of the largest exec in a batch, MiB (median over batches). */
  readonly rssMiB: number;
  /** For trellis: the daemon's CPU while those ADDs ran, per ADD (USER_HZ ticks; includes its background work). */
  readonly daemonCpuMs?: number;
}

/** utime + stime of a process in ms. */
const processCpuMs = async (pid: number) => (await processCpuSeconds(pid)) * 1000;

/**
 * One sh loop inside the node's namespace execs the plugin once per pod (CNI env, config from a file),
 * all under one GNU time: %U + %S over the batch / execs gives the per-exec CPU at a resolution a single
 * exec's two-decimal seconds cannot; %M is the largest process of the batch (the plugin, not sh).
 */
const batchScript = `plugin=$1; conf=$2; shift 2
for id do
  if CNI_CONTAINERID=$id CNI_NETNS=/run/netns/$id CNI_IFNAME=eth0 CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$id" \\
    "$plugin" <"$conf" >/dev/null; then echo "ok $id"; else echo "failed $id"; fi
done`;

async function execCost(lab: Lab, plugin: Plugin): Promise<Cost> {
  progress(`${plugin.name}: CPU and peak RSS of ADD execs under GNU time, ${cpuBatches} batches of ${cpuBatchExecs}`);
  const confFile = join(lab.workDir, `${plugin.name}-add.json`);
  await writeFile(confFile, JSON.stringify(plugin.conf()));
  const cpu: number[] = [];
  const rss: number[] = [];
  const daemonPid = plugin.name === "trellis" ? plugin.node.daemon?.child.pid : undefined;
  let daemonMs = 0;
  for (let b = 0; b < cpuBatches; b++) {
    const pods = await makePods(lab, `${plugin.name[0]}c${b}`, cpuBatchExecs);
    try {
      const daemonBefore = daemonPid ? await processCpuMs(daemonPid) : 0;
      const res = await inNetns(
        plugin.node.netns,
        gnuTime,
        ["-f", "gnu-time %U %S %M", "sh", "-c", batchScript, "sh", binaryOf(lab, plugin), confFile, ...pods.map((p) => p.name)],
        { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: "ADD", CNI_PATH: referencePluginDir }, timeoutMs: 120_000 },
      );
      if (daemonPid) daemonMs += (await processCpuMs(daemonPid)) - daemonBefore;
      const line = res.stderr.split("\n").find((l) => l.startsWith("gnu-time "));
      const [user, sys, maxKiB] = (line ?? "").split(" ").slice(1).map(Number);
      const bad = res.stdout.split("\n").filter((l) => l.startsWith("failed ")).length;
      if (bad > 0) failures.set(`${plugin.name} cpu ADD`, (failures.get(`${plugin.name} cpu ADD`) ?? 0) + bad);
      if (line && bad === 0) {
        cpu.push((((user ?? 0) + (sys ?? 0)) * 1000) / pods.length);
        rss.push((maxKiB ?? 0) / 1024);
      } else {
        progress(`  ${plugin.name} batch ${b} under GNU time: ${bad} failed (exit ${res.code}) ${res.stderr.trim().slice(0, 300)}`);
      }
      for (const pod of pods) await del(plugin, pod, "cpu");
    } finally {
      await removePods(pods);
    }
  }
  const daemonCpuMs = daemonPid ? daemonMs / (cpuBatches * cpuBatchExecs) : undefined;
  return { cpuMs: median(cpu), rssMiB: median(rss), daemonCpuMs };
}

// ---------- 5. the daemon with 110 pods: RSS and restart ----------

interface NodeLoad {
  readonly pods: number;
  readonly rssMiB: number;
  readonly hwmMiB: number;
  /** Restart to the "serving the CNI shim" log line, ms, per restart. */
  readonly servingMs: number[];
  /** Restart to the first successful shim STATUS call, ms, per restart. */
  readonly statusMs: number[];
  readonly stopMs: number[];
}

async function memoryMiB(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? Number.NaN);
  return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 };
}

/** STATUS through the shim (a 1.1.0 config); true when the daemon can serve ADD. */
async function statusOk(lab: Lab, node: LabNode): Promise<boolean> {
  return (await lab.shim(node, "STATUS", {}, pluginConf(node, "1.1.0"))).code === 0;
}

/** Stops the daemon (SIGTERM) and starts it again; times the way back to serving. */
async function restart(lab: Lab, node: LabNode): Promise<{ stopMs: number; servingMs: number; statusMs: number }> {
  let t0 = performance.now();
  await node.daemon?.stop();
  const stopMs = performance.now() - t0;
  await writeFile(node.logFile, ""); // so that the last run's "serving" line cannot be read as this one's
  t0 = performance.now();
  const started = lab.startDaemon(node);
  let servingMs = Number.NaN;
  while (performance.now() - t0 < 30_000) {
    if ((await readFile(node.logFile, "utf8").catch(() => "")).includes(servingLine)) {
      servingMs = performance.now() - t0;
      break;
    }
    await sleep(2);
  }
  await started;
  let statusMs = Number.NaN;
  while (performance.now() - t0 < 30_000) {
    if (await statusOk(lab, node)) {
      statusMs = performance.now() - t0;
      break;
    }
    await sleep(20);
  }
  return { stopMs, servingMs, statusMs };
}

async function nodeLoad(lab: Lab, plugin: Plugin): Promise<NodeLoad> {
  progress(`${plugin.name}: ${podsPerNode} pods on ${plugin.node.name}, daemon RSS, ${restarts} restarts`);
  const pods = await makePods(lab, "node", podsPerNode);
  try {
    await pool(pods, 8, (pod) => add(plugin, pod, "node110"));
    const added = pods.filter((p) => p.result).length;
    await sleep(1000); // let the daemon settle (allocation mirroring, GC) before reading its memory
    const pid = plugin.node.daemon?.child.pid;
    if (!pid) throw new Error(`no daemon pid for ${plugin.node.name}`);
    const mem = await memoryMiB(pid);
    const servingMs: number[] = [];
    const statusMs: number[] = [];
    const stopMs: number[] = [];
    for (let i = 0; i < restarts; i++) {
      const r = await restart(lab, plugin.node);
      progress(
        `  restart ${i + 1}: stop ${r.stopMs.toFixed(0)} ms, serving after ${r.servingMs.toFixed(0)} ms, STATUS ok after ${r.statusMs.toFixed(0)} ms`,
      );
      servingMs.push(r.servingMs);
      statusMs.push(r.statusMs);
      stopMs.push(r.stopMs);
    }
    await pool(pods, 8, (pod) => del(plugin, pod, "node110"));
    return { pods: added, rssMiB: mem.rss, hwmMiB: mem.hwm, servingMs, statusMs, stopMs };
  } finally {
    await removePods(pods);
  }
}

// ---------- report ----------

/** Columns padded to their widest cell; numbers (all columns but the first) right-aligned when `numeric`. */
function table(rows: string[][], numeric = true): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
  const cell = (text: string, c: number) => (numeric && c > 0 ? text.padStart(widths[c] ?? 0) : text.padEnd(widths[c] ?? 0));
  return rows.map((r) => r.map(cell).join("  ").trimEnd()).join("\n");
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "n/a");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
const ratio = (t: number, r: number) => f2(t / r);

interface Results {
  readonly seq: [Sequential, Sequential];
  readonly bursts: [Burst[], Burst[]];
  readonly cost: [Cost, Cost];
  readonly par: Parallel;
  readonly load: NodeLoad;
}

function report(r: Results): string {
  const [ts, rs] = r.seq;
  const lat = (name: string, key: keyof Sequential) => {
    const t = ts[key];
    const ref = rs[key];
    return [
      `${name} p50 / p99 ms`,
      `${f1(median(t))} / ${f1(quantile(t, 0.99))}`,
      `${f1(median(ref))} / ${f1(quantile(ref, 0.99))}`,
      `${ratio(median(t), median(ref))}x`,
    ];
  };
  const rows: string[][] = [["", "trellis", "reference", "trellis/ref"], lat("ADD", "add"), lat("CHECK", "check"), lat("DEL", "del")];
  r.bursts[0].forEach((tb, i) => {
    const rb = r.bursts[1][i]!;
    const ok = (n: number) => (n === burstPods ? "" : ` (${n}/${burstPods} ok)`);
    rows.push([
      `ADD pods/s, ${tb.concurrency} in flight`,
      f1(tb.addPerS) + ok(tb.addOk),
      f1(rb.addPerS) + ok(rb.addOk),
      `${ratio(tb.addPerS, rb.addPerS)}x`,
    ]);
    rows.push([
      `DEL pods/s, ${tb.concurrency} in flight`,
      f1(tb.delPerS) + ok(tb.delOk),
      f1(rb.delPerS) + ok(rb.delOk),
      `${ratio(tb.delPerS, rb.delPerS)}x`,
    ]);
  });
  const [tc, rc] = r.cost;
  rows.push(["CPU per ADD exec, ms (user+sys)", f1(tc.cpuMs), f1(rc.cpuMs), `${ratio(tc.cpuMs, rc.cpuMs)}x`]);
  rows.push(["peak RSS per ADD exec, MiB", f1(tc.rssMiB), f1(rc.rssMiB), `${ratio(tc.rssMiB, rc.rssMiB)}x`]);
  if (tc.daemonCpuMs !== undefined) {
    rows.push(["  + daemon CPU per ADD, ms", f1(tc.daemonCpuMs), "-", ""]);
    rows.push([
      "  = pod-path CPU per ADD, ms",
      f1(tc.cpuMs + tc.daemonCpuMs),
      f1(rc.cpuMs),
      `${ratio(tc.cpuMs + tc.daemonCpuMs, rc.cpuMs)}x`,
    ]);
  }

  const p = r.par;
  const l = r.load;
  const trellisRows: string[][] = [
    ["trellis only", ""],
    [`${parallelPods} parallel ADDs`, `${p.addOk}/${parallelPods} ok in ${p.addS.toFixed(1)} s, ${p.distinct} distinct addresses`],
    [`${parallelPods} parallel DELs`, `${p.delOk}/${parallelPods} ok in ${p.delS.toFixed(1)} s`],
    [
      "left behind after the DELs",
      `${p.leftVeths.length} host veths${p.leftVeths.length ? ` (${p.leftVeths.slice(0, 3).join(" ")})` : ""}, ${p.leftRecords} address records`,
    ],
    [`daemon with ${l.pods} pods`, `VmRSS ${f1(l.rssMiB)} MiB, VmHWM ${f1(l.hwmMiB)} MiB`],
    [
      `restart with ${l.pods} pods, ms`,
      `serving (log line) ${l.servingMs.map((x) => x.toFixed(0)).join(", ")}; STATUS ok ${l.statusMs.map((x) => x.toFixed(0)).join(", ")}; SIGTERM stop ${l.stopMs.map((x) => x.toFixed(0)).join(", ")}`,
    ],
  ];
  const failed = [...failures].map(([phase, n]) => `${phase}: ${n}`).join(", ");

  const last = [
    `add_p50_ratio=${ratio(median(ts.add), median(rs.add))}`,
    `del_p50_ratio=${ratio(median(ts.del), median(rs.del))}`,
    `check_p50_ratio=${ratio(median(ts.check), median(rs.check))}`,
    `burst32_ratio=${ratio(r.bursts[0][1]!.addPerS, r.bursts[1][1]!.addPerS)}`,
    `parallel100_ok=${p.ok}/${parallelPods}`,
    `shim_cpu_ratio=${ratio(tc.cpuMs, rc.cpuMs)}`,
    `shim_rss_mib=${f1(tc.rssMiB)}`,
    `daemon_rss_mib_110=${f1(l.rssMiB)}`,
    `restart_ms_110=${median(l.servingMs).toFixed(0)}`,
  ];
  return [
    `Pod path: trellis shim on node-1 vs reference bridge + host-local on node-2 (same lab), ${rounds} rounds one pod at a time,`,
    `${burstPods} pods per burst, CPU/RSS from GNU time over ${cpuBatches} batches of ${cpuBatchExecs} ADD execs (medians)`,
    table(rows),
    "",
    table(trellisRows, false),
    "",
    `failed calls: ${failed || "none"}`,
    `bench: ${last.join(" ")}`,
  ].join("\n");
}

// ---------- main ----------

function preflight(): void {
  const missing = [
    process.getuid?.() === 0 ? undefined : "root (it creates network namespaces)",
    existsSync(shimBinary) ? undefined : `${shimBinary} (npm run build)`,
    existsSync(join(referencePluginDir, "bridge"))
      ? undefined
      : `${referencePluginDir}/bridge (apt-get install containernetworking-plugins)`,
    existsSync(gnuTime) ? undefined : `${gnuTime} (apt-get install time)`,
  ].filter(Boolean);
  if (missing.length > 0) throw new Error(`cannot run without: ${missing.join("; ")}`);
}

/** Removes every pod namespace this script made, then the lab (which stops only its own processes). */
function teardown(): Promise<void> {
  tearingDown ??= (async () => {
    progress(`tearing down (${namespaces.size} pod namespaces, then the lab)`);
    await removePods([...namespaces].map((name) => ({ name, env: {} })));
    await activeLab?.destroy();
  })();
  return tearingDown;
}

async function main(): Promise<string> {
  preflight();
  const started = performance.now();
  const lab = await Lab.create({ nodes: 2, progress });
  activeLab = lab;
  try {
    const [n1, n2] = lab.nodes as [LabNode, LabNode];
    const trellis = trellisPlugin(lab, n1);
    const reference = referencePlugin(lab, n2);
    const results: Results = {
      seq: await sequential(lab, [trellis, reference]),
      bursts: await bursts(lab, [trellis, reference]),
      par: await parallel(lab, trellis),
      cost: [await execCost(lab, trellis), await execCost(lab, reference)],
      load: await nodeLoad(lab, trellis),
    };
    progress(`measured in ${((performance.now() - started) / 1000).toFixed(0)} s`);
    return report(results);
  } finally {
    await teardown();
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    progress(`${signal}: stopping`);
    void teardown().finally(() => process.exit(130));
  });
}

main().then(
  (text) => process.stdout.write(`${text}\n`),
  (err: unknown) => {
    process.stderr.write(`bench could not run: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
