import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDaemonClient } from "../../cni-shim/daemon-client.js";
import { maxStdinBytes, runShim, type ShimIo } from "../../cni-shim/skel.js";
import { supportedCniVersions } from "../../proto/core/protocol.js";
import { allocationFiles, hostVeths, Lab, type LabNode, pluginConf } from "../support/lab.js";
import { nodeDial } from "../support/node-dial.js";
import { seeded } from "../support/prng.js";
import { waitFor } from "../support/wait.js";

// Issue 9, point 7 (DESIGN.md §6: every input from outside is bounded and validated): seeded random and
// mutated CNI calls (env and stdin) against a live node daemon. Each call ends within a bound, never
// dies by a signal or an uncaught exception, and prints exactly one JSON object: a CNI result on
// success, a CNI error object with a non-zero exit otherwise. Afterwards, DEL of everything that was
// added (as a runtime would) leaves no veth and no allocation behind, and the daemon still serves.
//
// Every input runs through the shim's dispatcher (cni-shim/skel.ts `runShim`, with the same daemon
// client and gRPC transport as the binary, over node:net) against the live daemon; the real ADDs and
// DELs and a seeded sample of the rest are exec'd as the compiled binary, exactly as a runtime does. An
// exec of the binary costs ~40 ms of CPU, more with nsenter and the fork, so all 10,000 as execs take
// several minutes on 2 cores: TRELLIS_FUZZ_EXECS=10000 does that. TRELLIS_FUZZ_SEED replays a run;
// TRELLIS_FUZZ_INPUTS and TRELLIS_FUZZ_REAL_OPS size it; TRELLIS_FUZZ_VERBOSE=1 reports in detail.
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${raw} is not a non-negative integer`);
  return n;
}

const seed = envInt("TRELLIS_FUZZ_SEED", randomInt(2 ** 31));
const totalInputs = envInt("TRELLIS_FUZZ_INPUTS", 10_000);
const execBudget = envInt("TRELLIS_FUZZ_EXECS", 600);
/** Calls in the chains of real ADD, CHECK and DEL against the pod namespaces (all exec'd as the binary). */
const realOps = envInt("TRELLIS_FUZZ_REAL_OPS", 300);
/** Report outcomes by kind, command and message (not only by code), and where the time went. */
const verbose = process.env.TRELLIS_FUZZ_VERBOSE === "1";
const parallel = 8;
const execTimeoutMs = 30_000;
/** The whole run: an exec of the binary takes ~35-75 ms of wall time at 8 at once on 2 cores. */
const timeoutMs = 180_000 + execBudget * 100;
const chainNetnsCount = 12;
const sharedNetnsCount = 4;
/** Interface names the chains give pods: all valid, some unusual. */
const podIfNames = ["eth0", "eth1", "net1", "é", "x_y.z-0", "a".repeat(15)] as const;

/** mulberry32: a small seeded PRNG, so a failing run replays from its seed. */

class Rand {
  constructor(readonly next: () => number) {}
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n + 3);
    for (let i = 0; i < n; i += 4) out.writeUInt32LE((this.next() * 2 ** 32) >>> 0, i);
    return out.subarray(0, n);
  }
  /** A length from a spread that is mostly small and sometimes far past every limit. */
  size(): number {
    return this.pick([0, 1, 2, 15, 16, 64, 255, 256, 1_000, 4_096, 16_384, 65_536, 70_000, 100_000]);
  }
  weighted<T>(table: readonly (readonly [number, T])[]): T {
    let r = this.next() * table.reduce((n, [w]) => n + w, 0);
    for (const [w, v] of table) {
      r -= w;
      if (r < 0) return v;
    }
    return (table[table.length - 1] as readonly [number, T])[1];
  }
}

const commands = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"] as const;
type Command = (typeof commands)[number];

/** One CNI invocation: what the runtime sets and writes. */
interface Call {
  /** CNI_COMMAND as the generator meant it (undefined: unset). */
  readonly command: string | undefined;
  readonly env: Record<string, string>;
  readonly stdin: Buffer;
  /** The CNI error code when exactly one known fault was injected (0: must succeed). */
  readonly expectCode?: number;
}

interface FuzzCase {
  readonly n: number;
  /** Which generator made it (for the report and for replaying one kind). */
  readonly kind: string;
  /** Exec'd as the compiled binary (else run through runShim in process). */
  exec: boolean;
  /** Makes the call; big inputs are made only when their turn comes (from the case's own seed). */
  build(): Call;
}

interface Outcome {
  readonly code: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly crashed?: string;
}

/** Everything the generators need to know about the lab. */
interface Ground {
  readonly prefix: string;
  readonly socket: string;
  readonly binDir: string;
  readonly workDir: string;
  /** Pod namespaces for the chains of real calls, one chain each. */
  readonly chainNetns: readonly string[];
  /** Pod namespaces where fuzzed calls that pass validation land (at most one pod fits each). */
  readonly sharedNetns: readonly string[];
  /** An existing regular file that is not a network namespace. */
  readonly notNetns: string;
  /** A file that is not a socket, for daemonSocket. */
  readonly notSocket: string;
}

const cniErrorCodes = new Set([1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 103, 999]);

const weirdStrings = (r: Rand): string[] => [
  "",
  " ",
  "\u0000",
  "\ud800",
  "\u202eevil",
  "💥".repeat(1 + r.int(40)),
  "ĳ̈́́͂", // combining marks
  "a".repeat(r.size()),
  "../../../../etc/passwd",
  "%s%s%n",
  "$" + "{jndi:ldap://x}",
  "1.0.0",
  "null",
  "\r\n\t",
  "é".repeat(8),
];

function weirdValue(r: Rand, depth = 0): unknown {
  const pick = r.int(12);
  switch (pick) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return r.pick([0, -1, 1, 1.5, 1e308, -1e308, 2 ** 53, 4294967296]);
    case 3:
      return [];
    case 4:
      return {};
    case 5:
      return depth < 3 ? [weirdValue(r, depth + 1), weirdValue(r, depth + 1)] : [1];
    case 6:
      return depth < 3 ? { [r.pick(weirdStrings(r))]: weirdValue(r, depth + 1) } : { a: 1 };
    default:
      return r.pick(weirdStrings(r));
  }
}

const badVersions = ["0.1.0", "0.2.0", "0.4", "1.0", "1.0.0 ", " 1.0.0", "1.0.0-rc1", "2.0.0", "99.99.99", "１.０.０", "v1.0.0", "1.1.0\n"];

function validEnv(g: Ground, command: string, id: string, netns: string, ifName: string): Record<string, string> {
  return {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    CNI_COMMAND: command,
    CNI_CONTAINERID: id,
    CNI_NETNS: netns,
    CNI_IFNAME: ifName,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=${id.slice(0, 40)};K8S_POD_UID=${id.length}`,
    CNI_PATH: g.binDir,
  };
}

/** A valid network config for the command: the plugin's conflist entry as a runtime passes it. */
function validConf(
  g: Ground,
  r: Rand,
  command: string,
  attachments: readonly { id: string; ifName: string }[] = [],
): Record<string, unknown> {
  const version =
    command === "STATUS" || command === "GC"
      ? "1.1.0"
      : command === "CHECK"
        ? r.pick(["0.4.0", "1.0.0", "1.1.0"])
        : r.pick(supportedCniVersions);
  const conf: Record<string, unknown> = { ...pluginConf({ socket: g.socket } as LabNode, version) };
  if (command === "GC") {
    conf.name = "fuzz-gc"; // a network of its own: a fuzzed GC must not release the pods under test
    conf[r.chance(0.8) ? "cni.dev/valid-attachments" : "cni.dev/attachments"] = attachments.map((a) => ({
      containerID: a.id,
      ifname: a.ifName,
    }));
  }
  if ((command === "CHECK" || command === "DEL") && r.chance(0.5)) {
    conf.prevResult = {
      cniVersion: version,
      interfaces: [{ name: "trellis0" }, { name: "tr0123456789a" }, { name: "eth0", sandbox: g.sharedNetns[0] }],
      ips: [{ address: "10.244.1.7/24", gateway: "10.244.1.1", interface: 2 }],
    };
  }
  if (r.chance(0.2)) conf.runtimeConfig = { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] };
  if (r.chance(0.1)) conf.args = { cni: { labels: [{ key: "a", value: "b" }] } };
  return conf;
}

/** Key paths into a JSON tree (objects and arrays), the root included as []. */
function paths(value: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) paths(v, [...at, i], out);
  } else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) paths(v, [...at, k], out);
  return out;
}

function parentOf(root: unknown, path: readonly (string | number)[]): Record<string | number, unknown> | undefined {
  let cur = root as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<string | number, unknown>;
  return cur && typeof cur === "object" ? cur : undefined;
}

/** One structural mutation of a config (in place); returns the new root (which it may replace). */
function mutateTree(r: Rand, g: Ground, root: Record<string, unknown>): unknown {
  const all = paths(root);
  const op = r.int(7);
  if (op === 0) return weirdValue(r); // not an object at all
  const path = r.pick(all.filter((p) => p.length > 0));
  const parent = path ? parentOf(root, path) : undefined;
  const key = path?.[path.length - 1];
  if (!parent || key === undefined) return root;
  switch (op) {
    case 1:
      if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key];
      return root;
    case 2:
      parent[key] = weirdValue(r);
      return root;
    case 3:
      root[r.pick(["cniVersion", "name", "type", "daemonSocket"])] = weirdValue(r);
      return root;
    case 4:
      root.cniVersion = r.pick(badVersions);
      return root;
    case 5:
      // An own property, also for "__proto__" (as JSON.parse makes it), never the prototype.
      Object.defineProperty(
        r.chance(0.5) ? root : parent,
        r.pick([...weirdStrings(r), "__proto__", "constructor", "prevResult", "cni.dev/attachments"]),
        {
          value: weirdValue(r),
          enumerable: true,
          writable: true,
          configurable: true,
        },
      );
      return root;
    default:
      // Sockets nobody serves stay inside the lab: a DEL that cannot reach its daemon leaves a pending
      // delete next to the socket path it was given.
      root.daemonSocket = r.pick([
        "relative.sock",
        "",
        g.notSocket,
        `${g.workDir}/gone/cni.sock`,
        `${g.workDir}/${"d".repeat(300)}/x.sock`,
      ]);
      return root;
  }
}

/** One byte-level mutation of a serialized config. */
function mutateText(r: Rand, text: Buffer): Buffer {
  const at = r.int(text.length + 1);
  switch (r.int(8)) {
    case 0:
      return text.subarray(0, at);
    case 1:
      return Buffer.concat([text.subarray(0, at), r.bytes(1 + r.int(8)), text.subarray(at)]);
    case 2: {
      const out = Buffer.from(text);
      const i = r.int(out.length);
      if (out.length > 0) out[i] = (out[i] ?? 0) ^ (1 << r.int(8));
      return out;
    }
    case 3:
      return Buffer.concat([Buffer.from("\ufeff"), text]);
    case 4:
      return Buffer.concat([text, Buffer.from(r.pick(["}", "]", "garbage", "\u0000", "{}", "\n{}\n"]))]);
    case 5:
      return Buffer.concat([Buffer.from(`{"cniVersion":"0.0.1","name":7,`), text.subarray(1)]); // duplicate keys: the last wins
    case 6:
      return Buffer.concat([text.subarray(0, at), Buffer.from(" ".repeat(70_000)), text.subarray(at)]);
    default:
      return Buffer.concat([
        text.subarray(0, at),
        Buffer.from(r.pick(["\\", '"', "\\u12", "\\ud800", "1e99999", "-", "tru"])),
        text.subarray(at),
      ]);
  }
}

/** Deeply nested JSON, written as text (JSON.stringify of it would overflow our own stack). */
function deepJson(r: Rand, conf: Record<string, unknown>): Buffer {
  const depth = r.weighted([
    [3, 64],
    [3, 1_000],
    [3, 10_000],
    [1, 100_000],
  ]);
  const [open, close] = r.pick([
    ["[", "]"],
    ['{"a":', "}"],
  ] as const);
  const nest = open.repeat(depth) + (r.chance(0.8) ? `1${close.repeat(depth)}` : ""); // sometimes never closed
  const where = r.int(3);
  if (where === 0) return Buffer.from(nest);
  const text = JSON.stringify(conf);
  if (where === 1) return Buffer.from(`${text.slice(0, -1)},"deep":${nest}}`);
  return Buffer.from(text.replace(/"cniVersion":"[^"]*"/, `"cniVersion":${nest}`));
}

/** One fault in the env; `code` is what the shim must answer when `command` is one of `onlyFor`. */
type EnvFault = { readonly apply: (env: Record<string, string>) => void; readonly code?: number; readonly onlyFor?: readonly Command[] };

const podCommands: readonly Command[] = ["ADD", "CHECK", "DEL"];
const netnsCommands: readonly Command[] = ["ADD", "CHECK"];

function envFaults(r: Rand, g: Ground): EnvFault[] {
  const set = (k: string, v: string, code?: number, onlyFor = podCommands): EnvFault => ({
    apply: (e) => {
      e[k] = v;
    },
    code,
    onlyFor,
  });
  const unset = (k: string, code?: number, onlyFor = podCommands): EnvFault => ({ apply: (e) => void delete e[k], code, onlyFor });
  const long = (n: number, c = "a") => c.repeat(n);
  const bigId = r.pick([256, 4_096, 70_000, 100_000]);
  const bigPodName = r.pick([100, 10_000, 70_000, 120_000]);
  return [
    unset("CNI_COMMAND", 4, commands),
    set("CNI_COMMAND", r.pick(["add", "Add", "ADD ", " ADD", "", "FOO", "DELETE", "ADD\n", "ÄDD", long(100_000, "A")]), 4, commands),
    unset("CNI_CONTAINERID", 4),
    set("CNI_CONTAINERID", r.pick(["-starts-with-dash", ".dot", "has space", "a/b", "a:b", "ünïcode", "a\tb", "_x"]), 4),
    // Valid, but past the 64 KiB the shim sends: refused as invalid (7), never an internal error.
    set("CNI_CONTAINERID", long(bigId, r.pick(["a", "0"])), bigId > 65_536 ? 7 : undefined),
    unset("CNI_IFNAME", 4),
    set("CNI_IFNAME", r.pick([".", "..", "a/b", "eth:0", "eth 0", "eth0\n", "sixteen-bytes-xx", "ééééééééé", long(4_096)]), 4),
    unset("CNI_NETNS", 4, netnsCommands),
    set(
      "CNI_NETNS",
      r.pick([
        "relative/netns",
        "netns",
        "relfile", // exists in the shim's working directory, but relative
        ".",
        "..",
        "/",
        "/run/netns",
        `/run/netns/${g.prefix}-nope`,
        "/dev/null",
        g.workDir,
        `${g.workDir}/${long(300)}`, // ENAMETOOLONG
        `/${long(70_000)}`,
      ]),
      4,
      netnsCommands,
    ),
    set("CNI_NETNS", g.notNetns), // a file, not a namespace: the daemon's kernel call fails (999)
    unset("CNI_PATH", 4),
    set("CNI_PATH", "", 4),
    set("CNI_PATH", r.pick(["relative", "/nonexistent", `${g.binDir}:/x:`])),
    set("CNI_ARGS", r.pick(["K8S_POD_NAME", "=x", "A=B", "K8S_POD_NAME=x;FOO=bar", "IgnoreUnknown=0;X=1", "IgnoreUnknown=1;=1"]), 4),
    set("CNI_ARGS", ";;;;"),
    set("CNI_ARGS", `IgnoreUnknown=1;K8S_POD_NAME=${long(bigPodName)}`, bigPodName > 65_536 ? 7 : undefined),
    set("CNI_ARGS", `IgnoreUnknown=1;K8S_POD_NAMESPACE=${r.pick(weirdStrings(r)).replaceAll("\u0000", "").replaceAll(";", "")}`),
    {
      apply: (e) => {
        for (const k of Object.keys(e)) delete e[k];
      },
      code: 4,
      onlyFor: commands,
    },
  ];
}

/**
 * The real attachments: one chain of calls per pod namespace, run in order (a runtime never races
 * itself on one pod), side by side with everything else. A fresh ADD must succeed; CHECK right after
 * it passes; a second ADD of it, or of its interface name by another container, is refused (100); a
 * DEL always succeeds, also twice and without a netns; CHECK after DEL finds nothing (3).
 */
function realChain(g: Ground, rand: Rand, netns: string, length: number, next: (kind: string, call: Call) => FuzzCase): FuzzCase[] {
  const chain: FuzzCase[] = [];
  let live: { id: string; ifName: string } | undefined;
  let k = 0;
  const call = (
    kind: string,
    command: Command,
    a: { id: string; ifName: string },
    expectCode?: number,
    env?: Partial<Record<string, string>>,
  ) => {
    const e = { ...validEnv(g, command, a.id, netns, a.ifName), ...env };
    for (const [key, v] of Object.entries(e)) if (v === undefined) delete e[key];
    chain.push(
      next(kind, {
        command,
        env: e as Record<string, string>,
        stdin: Buffer.from(JSON.stringify(validConf(g, rand, command))),
        expectCode,
      }),
    );
  };
  while (chain.length < length) {
    const fresh = { id: `${netns.slice(netns.lastIndexOf("/") + 1)}-c${k++}`, ifName: rand.pick(podIfNames) };
    if (!live) {
      call("real-add", "ADD", fresh, 0);
      live = fresh;
      continue;
    }
    const step = rand.weighted([
      [3, "check"],
      [1, "again"],
      [1, "taken"],
      [1, "second"],
      [0.5, "lo"],
      [3, "del"],
    ] as const);
    if (step === "check") call("real-check", "CHECK", live, 0);
    else if (step === "again") call("real-add-again", "ADD", live, 100);
    else if (step === "taken") call("real-add-taken", "ADD", { ...fresh, ifName: live.ifName }, 100);
    else if (step === "lo") call("real-add-lo", "ADD", { ...fresh, ifName: "lo" }, 100);
    else if (step === "second") call("real-add-second", "ADD", { ...fresh, ifName: fresh.ifName === live.ifName ? "net9" : fresh.ifName });
    else {
      call("real-del", "DEL", live, 0, rand.chance(0.3) ? { CNI_NETNS: undefined } : {});
      if (rand.chance(0.3)) call("real-del-again", "DEL", live, 0);
      if (rand.chance(0.3)) call("real-check-gone", "CHECK", live, 3);
      live = undefined;
    }
  }
  return chain; // the last pod of each chain stays: the runtime's DEL at the end removes it
}

const toBuffer = (stdin: unknown): Buffer =>
  Buffer.isBuffer(stdin) ? stdin : Buffer.from(typeof stdin === "string" ? stdin : JSON.stringify(stdin));

type Kind = "valid" | "tree-mutation" | "text-mutation" | "random-bytes" | "deep-nesting" | "oversized" | "env-fault" | "unicode";

/**
 * CNI_NETNS for a fuzzed call: mostly one that does not exist (the shim refuses it, code 4); sometimes a
 * file that is not a namespace (the daemon allocates, its kernel call fails, it undoes: 999); sometimes a
 * real pod namespace (a mutated config the shim accepts adds a real pod).
 */
function fuzzNetns(rand: Rand, g: Ground): string {
  return rand.weighted([
    [7, `/run/netns/${g.prefix}-nope`],
    [2, g.notNetns],
    [1, rand.pick(g.sharedNetns)],
  ]);
}

/** Bytes JSON is made of, for random text that almost parses. */
const jsonish = Buffer.from('{}[]":,1a\\ ');

/** One fuzzed call of `kind`, made from the case's own PRNG. */
function makeCall(g: Ground, rand: Rand, kind: Kind, command: Command, n: number, made: readonly { id: string; ifName: string }[]): Call {
  const randomId = () => `${g.prefix}-f${n}`;
  const someAttachments = () =>
    Array.from({ length: rand.int(4) }, () =>
      made.length > 0 && rand.chance(0.5) ? rand.pick(made) : { id: `${randomId()}-${rand.int(100)}`, ifName: "eth0" },
    );
  switch (kind) {
    case "valid": {
      // Well-formed calls that never touch a pod namespace: VERSION, STATUS, GC of another network,
      // DEL and CHECK of containers that do not exist, ADD into a netns that does not exist.
      const env = validEnv(g, command, randomId(), command === "ADD" ? `/run/netns/${g.prefix}-nope` : g.notNetns, "eth0");
      const expectCode = { VERSION: 0, STATUS: 0, GC: 0, DEL: 0, CHECK: 3, ADD: 4 }[command];
      return { command, env, stdin: toBuffer(validConf(g, rand, command, someAttachments())), expectCode };
    }
    case "tree-mutation": {
      const netns = fuzzNetns(rand, g);
      let conf: unknown = validConf(g, rand, command, someAttachments());
      for (let i = 1 + rand.int(3); i > 0; i--)
        conf = conf && typeof conf === "object" && !Array.isArray(conf) ? mutateTree(rand, g, conf as Record<string, unknown>) : conf;
      return { command, env: validEnv(g, command, randomId(), netns, rand.pick(podIfNames)), stdin: toBuffer(conf) };
    }
    case "text-mutation": {
      let text: Buffer = toBuffer(validConf(g, rand, command, someAttachments()));
      for (let i = 1 + rand.int(3); i > 0; i--) text = mutateText(rand, text);
      return { command, env: validEnv(g, command, randomId(), g.notNetns, "eth0"), stdin: text };
    }
    case "random-bytes": {
      const size = rand.chance(0.9) ? rand.int(4_096) : 65_536 + rand.int(rand.chance(0.2) ? 1 << 20 : 65_536);
      const stdin = rand.chance(0.5) ? rand.bytes(size) : Buffer.from(rand.bytes(size).map((byte) => jsonish[byte % jsonish.length] ?? 32));
      return { command, env: validEnv(g, command, randomId(), g.notNetns, "eth0"), stdin };
    }
    case "deep-nesting":
      return { command, env: validEnv(g, command, randomId(), g.notNetns, "eth0"), stdin: deepJson(rand, validConf(g, rand, command)) };
    case "oversized": {
      // Past the 64 KiB the shim sends the daemon at most, in each place a runtime could make it big.
      const conf = validConf(g, rand, command, someAttachments());
      const where = n % 4;
      if (where === 0) conf.padding = "x".repeat(65_536 + rand.int(rand.chance(0.2) ? 1 << 20 : 65_536));
      else if (where === 1) conf.name = "n".repeat(65_536 + rand.int(65_536));
      else if (where === 2)
        conf.prevResult = {
          cniVersion: conf.cniVersion,
          interfaces: Array.from({ length: 5_000 }, (_, i) => ({ name: `if${i}` })),
          ips: [],
        };
      else
        conf["cni.dev/valid-attachments"] = Array.from({ length: 3_000 + rand.int(5_000) }, (_, i) => ({
          containerID: `c-${i}`,
          ifname: "eth0",
        }));
      return { command, env: validEnv(g, command, randomId(), g.notNetns, "eth0"), stdin: toBuffer(conf) };
    }
    case "env-fault": {
      const fault = rand.pick(envFaults(rand, g));
      const env = validEnv(g, command, randomId(), command === "DEL" ? `/run/netns/${g.prefix}-nope` : g.notNetns, "eth0");
      fault.apply(env);
      // One known fault in an otherwise valid call: the shim names it (code 4), or refuses its size (7).
      const certain = fault.code !== undefined && (fault.onlyFor ?? podCommands).includes(command);
      return { command: env.CNI_COMMAND, env, stdin: toBuffer(validConf(g, rand, command)), expectCode: certain ? fault.code : undefined };
    }
    case "unicode": {
      // Unicode where names go: in the config and in the env, sometimes in a real pod namespace.
      const conf = validConf(g, rand, command);
      const u = rand.pick(["網絡", "💥", "\u202e", "ĳ̈́", "\ud800", "é", "Ω≈ç√", "\u0085", "\u2028"]);
      if (rand.chance(0.5)) conf.name = `${u}${rand.int(1000)}`;
      const env = validEnv(
        g,
        command,
        rand.chance(0.5) ? `${u}${n}` : randomId(),
        fuzzNetns(rand, g),
        rand.chance(0.5) ? `e${u}`.slice(0, 6) : "eth0",
      );
      env.CNI_ARGS = `IgnoreUnknown=1;K8S_POD_NAME=${u};K8S_POD_NAMESPACE=${u}${u}`;
      return { command, env, stdin: toBuffer(conf) };
    }
  }
}

/** Makes the seeded inputs: single calls, and the chains of real calls (each one task, run in order). */
function generate(g: Ground, rand: Rand): { cases: FuzzCase[]; tasks: FuzzCase[][] } {
  const cases: FuzzCase[] = [];
  const chains = g.chainNetns.map((netns) =>
    realChain(g, rand, netns, Math.ceil(realOps / g.chainNetns.length), (kind, call) => {
      const c: FuzzCase = { n: cases.length, kind, exec: true, build: () => call };
      cases.push(c);
      return c;
    }),
  );
  const made = chains.flat().map((c) => {
    const { env } = c.build();
    return { id: env.CNI_CONTAINERID ?? "", ifName: env.CNI_IFNAME ?? "" };
  });
  while (cases.length < totalInputs) {
    const n = cases.length;
    const kind = rand.weighted<Kind>([
      [10, "valid"],
      [24, "tree-mutation"],
      [16, "text-mutation"],
      [8, "random-bytes"],
      [5, "deep-nesting"],
      [5, "oversized"],
      [22, "env-fault"],
      [10, "unicode"],
    ]);
    const command = rand.weighted<Command>([
      [35, "ADD"],
      [20, "DEL"],
      [15, "CHECK"],
      [10, "STATUS"],
      [10, "GC"],
      [10, "VERSION"],
    ]);
    const caseSeed = rand.int(2 ** 32);
    cases.push({ n, kind, exec: false, build: () => makeCall(g, new Rand(seeded(caseSeed)), kind, command, n, made) });
  }
  // The chains start spread over the run, so real pods come and go while the daemon takes everything else.
  const inChain = new Set(chains.flat());
  const tasks = cases.filter((c) => !inChain.has(c)).map((c) => [c]);
  const spread = Math.floor((tasks.length * 0.8) / Math.max(1, chains.length));
  chains.forEach((chain, i) => {
    tasks.splice(i * (spread + 1), 0, chain);
  });
  return { cases, tasks };
}

/**
 * A DEL the shim cannot deliver leaves a pending delete next to the socket path its config names (the
 * default one, /run/trellis/cni.sock, when it names none). Only DELs whose socket lies inside the lab run
 * as the binary; the others run in process, where that write is not made: no fuzzed path is ever
 * written outside the lab.
 */
function staysInLab(c: Call, g: Ground): boolean {
  if (c.env.CNI_COMMAND !== "DEL") return true;
  let conf: unknown;
  try {
    conf = JSON.parse(new TextDecoder().decode(c.stdin));
  } catch {
    return true;
  }
  if (typeof conf !== "object" || conf === null || Array.isArray(conf)) return true;
  const socket = (conf as { daemonSocket?: unknown }).daemonSocket;
  if (socket === undefined) return false;
  return typeof socket !== "string" || !socket.startsWith("/") || resolve(socket).startsWith(`${g.workDir}/`);
}

/** Chooses which cases run as the compiled binary: every real one, then a seeded sample of the rest. */
function chooseExecs(cases: FuzzCase[], rand: Rand): void {
  const real = cases.filter((c) => c.exec);
  const rest = cases.filter((c) => !c.exec);
  let left = Math.max(0, execBudget - real.length);
  for (let i = 0; i < rest.length && left > 0; i++) {
    // Reservoir-free: each remaining case is picked with probability left / remaining.
    if (rand.next() < left / (rest.length - i)) {
      (rest[i] as FuzzCase).exec = true;
      left--;
    }
  }
}

const maxStdout = 1 << 20;

function execShim(binary: string, netns: string, cwd: string, c: Call): Promise<Outcome> {
  return new Promise((done) => {
    const child = spawn("/usr/bin/nsenter", [`--net=/run/netns/${netns}`, binary], { env: c.env, cwd, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let timedOut = false;
    child.stdout.on("data", (b: Buffer) => {
      outBytes += b.length;
      if (outBytes <= maxStdout) out.push(b);
    });
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.stdin.on("error", () => undefined); // the shim may exit without reading stdin (no CNI_COMMAND)
    child.stdin.end(c.stdin);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, execTimeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      done({ code: null, signal: null, stdout: "", stderr: "", timedOut: false, crashed: `spawn failed: ${e.message}` });
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), timedOut });
    });
  });
}

async function inProcessShim(cwd: string, c: Call): Promise<Outcome> {
  let stdout = "";
  let stderr = "";
  const io: ShimIo = {
    env: c.env,
    // As the binary's reader: at most maxStdinBytes.
    readStdin: async () => {
      if (c.stdin.length > maxStdinBytes) throw new Error(`it is over ${maxStdinBytes} bytes`);
      return new TextDecoder().decode(c.stdin);
    },
    writeStdout: (text) => {
      stdout += `${text}\n`;
    },
    logError: (fields, msg) => {
      stderr += `${JSON.stringify({ level: 50, ...fields, msg })}\n`;
    },
    // As Bun.file(path).exists() in the binary: true for files (a netns is one), false for directories.
    pathExists: async (path) => (await stat(resolve(cwd, path)).catch(() => undefined))?.isFile() ?? false,
    leavePendingDelete: async () => undefined,
  };
  try {
    const code = await Promise.race([
      runShim(io, (socketPath) => createDaemonClient(socketPath, nodeDial)),
      new Promise<"hung">((ok) => setTimeout(() => ok("hung"), execTimeoutMs).unref()),
    ]);
    if (code === "hung") return { code: null, signal: null, stdout, stderr, timedOut: true };
    return { code, signal: null, stdout, stderr, timedOut: false };
  } catch (err) {
    return { code: null, signal: null, stdout, stderr, timedOut: false, crashed: `runShim threw: ${(err as Error).stack}` };
  }
}

/** What is wrong with one call's outcome; undefined when it behaved. */
function judge(c: Call, o: Outcome): string | undefined {
  // More stdin than the shim reads is refused whatever it holds (code 5), once the command is known.
  const expectCode = c.stdin.length > maxStdinBytes && commands.includes(c.env.CNI_COMMAND as Command) ? 5 : c.expectCode;
  if (o.crashed) return o.crashed;
  if (o.timedOut) return `no exit within ${execTimeoutMs} ms (killed)`;
  if (o.signal) return `died by ${o.signal}`;
  for (const line of o.stderr.split("\n").filter(Boolean)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      return `stderr has a line that is not a JSON log line (a crash?): ${line.slice(0, 300)}`;
    }
    if (typeof parsed !== "object" || parsed === null) return `stderr line is not a JSON object: ${line.slice(0, 200)}`;
  }
  const text = o.stdout.trim();
  if (o.code === 0) {
    if (expectCode !== undefined && expectCode !== 0) return `succeeded; expected CNI code ${expectCode}`;
    if (c.command === "ADD" || c.command === "VERSION") {
      let res: Record<string, unknown>;
      try {
        res = JSON.parse(text) as Record<string, unknown>;
      } catch {
        return `exit 0 but stdout is not one JSON object: ${text.slice(0, 200)}`;
      }
      if (typeof res !== "object" || res === null || Array.isArray(res)) return `exit 0 but stdout is not an object: ${text.slice(0, 200)}`;
      if (typeof res.cniVersion !== "string") return "result has no cniVersion";
      if (c.command === "VERSION") {
        if (!Array.isArray(res.supportedVersions)) return "VERSION result has no supportedVersions";
        return undefined;
      }
      const ips = res.ips as Array<{ address?: unknown }> | undefined;
      if (!Array.isArray(res.interfaces) || res.interfaces.length === 0) return "ADD result has no interfaces";
      if (
        !Array.isArray(ips) ||
        ips.length === 0 ||
        !ips.every((ip) => typeof ip.address === "string" && /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(ip.address))
      )
        return `ADD result has no valid ips: ${JSON.stringify(ips)}`;
      return undefined;
    }
    return text === "" ? undefined : `${c.command} succeeded but printed ${text.slice(0, 200)}`;
  }
  if (o.code !== 1) return `exit code ${o.code} (the shim exits 0 or 1)`;
  if (text.includes("\n")) return `error output is more than one line: ${text.slice(0, 300)}`;
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return `failed without a JSON error object on stdout: ${JSON.stringify(text.slice(0, 300))}`;
  }
  if (typeof e !== "object" || e === null || Array.isArray(e)) return `error output is not an object: ${text.slice(0, 200)}`;
  const extra = Object.keys(e).filter((k) => !["cniVersion", "code", "msg", "details"].includes(k));
  if (extra.length > 0) return `error object has unknown keys ${extra.join(", ")}`;
  if (typeof e.cniVersion !== "string" || !(supportedCniVersions as readonly string[]).includes(e.cniVersion))
    return `error cniVersion ${String(e.cniVersion)}`;
  if (typeof e.code !== "number" || !cniErrorCodes.has(e.code)) return `error code ${JSON.stringify(e.code)} is not a CNI or Trellis code`;
  if (typeof e.msg !== "string" || e.msg === "") return "error has no msg";
  if (e.details !== undefined && typeof e.details !== "string") return "error details is not a string";
  // An exception the shim did not expect, or a daemon failure with no reason: a bug either way.
  if (e.msg.startsWith("internal error")) return `an unexpected exception: ${e.msg}`;
  if (e.details === "reason INTERNAL") return `an INTERNAL failure: ${e.msg.slice(0, 300)}`;
  if (expectCode !== undefined && e.code !== expectCode) return `CNI code ${e.code} (${e.msg.slice(0, 200)}); expected ${expectCode}`;
  return undefined;
}

/** "ok", or the CNI error code (with its message when `withMessage`), or "?" for output that is not one. */
function outcomeOf(o: Outcome, withMessage: boolean): string {
  if (o.code === 0) return "ok";
  try {
    const e = JSON.parse(o.stdout) as { code: unknown; msg: unknown };
    const msg = String(e.msg).replace(/tr-[0-9a-f]{6}-\w+|\/tmp\/[^ ]+/g, "X");
    return withMessage ? `${String(e.code)} ${msg.slice(0, 110)}` : `code ${String(e.code)}`;
  } catch {
    return "?";
  }
}

function describeCase(c: FuzzCase, call: Call, exec: boolean): string {
  const env = Object.fromEntries(
    Object.entries(call.env).map(([k, v]) => [k, v.length > 80 ? `${v.slice(0, 60)}...(${v.length} chars)` : v]),
  );
  const stdin =
    call.stdin.length > 200 ? `${call.stdin.subarray(0, 160).toString()}...(${call.stdin.length} bytes)` : call.stdin.toString();
  return `#${c.n} ${c.kind} (${exec ? "binary" : "in process"}) env=${JSON.stringify(env)} stdin=${JSON.stringify(stdin)}`;
}

/** Set when the suite is torn down (a timeout): no call starts after it. */
let stopping = false;

async function eachParallel<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length && !stopping) await fn(items[next++] as T);
    }),
  );
}

describe.skipIf(!isRoot)("fuzzed CNI calls against a live node daemon (needs root)", () => {
  let lab: Lab;
  let node: LabNode;
  let ground: Ground;
  let cwd: string;
  const started = Date.now();

  beforeAll(async () => {
    console.log(`shim fuzz: seed ${seed} (replay with TRELLIS_FUZZ_SEED=${seed}), ${totalInputs} inputs, up to ${execBudget} execs`);
    lab = await Lab.create({ nodes: 1 });
    node = lab.nodes[0]!;
    const pods = [];
    for (let i = 0; i < chainNetnsCount + sharedNetnsCount; i++) pods.push(await lab.newPod(node, `fz${i}`));
    cwd = join(lab.workDir, "fuzz-cwd");
    await mkdir(cwd);
    await writeFile(join(cwd, "relfile"), "");
    await writeFile(join(lab.workDir, "not-a-netns"), "");
    await writeFile(join(lab.workDir, "not-a-socket"), "");
    ground = {
      prefix: lab.prefix,
      socket: node.socket,
      binDir: lab.binDir,
      workDir: lab.workDir,
      chainNetns: pods.slice(0, chainNetnsCount).map((p) => p.netnsPath),
      sharedNetns: pods.slice(chainNetnsCount).map((p) => p.netnsPath),
      notNetns: join(lab.workDir, "not-a-netns"),
      notSocket: join(lab.workDir, "not-a-socket"),
    };
  });
  afterAll(async () => {
    stopping = true;
    await lab?.destroy();
  });

  it(
    `${totalInputs} random and mutated inputs: bounded, one JSON object each, no crash; nothing left after DEL`,
    async () => {
      const rand = new Rand(seeded(seed));
      const { cases, tasks } = generate(ground, rand);
      chooseExecs(cases, rand);
      const shim = join(lab.binDir, "trellis");
      const failures: string[] = [];
      const added: { c: FuzzCase; call: Call }[] = [];
      let execs = 0;
      const tally = new Map<string, number>();
      const count = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);
      const fuzzStarted = Date.now();

      const spent = new Map<string, { n: number; ms: number; max: number }>();
      const runOne = async (c: FuzzCase) => {
        const call = c.build();
        const exec = c.exec && staysInLab(call, ground);
        const t0 = performance.now();
        const o = exec ? await execShim(shim, node.netns, cwd, call) : await inProcessShim(cwd, call);
        const ms = performance.now() - t0;
        const key = `${c.kind} ${exec ? "binary" : "in process"}`;
        const sp = spent.get(key) ?? { n: 0, ms: 0, max: 0 };
        spent.set(key, { n: sp.n + 1, ms: sp.ms + ms, max: Math.max(sp.max, ms) });
        if (exec) execs++;
        if (call.command === "ADD" && o.code === 0) added.push({ c, call });
        count(verbose ? `${c.kind} ${call.command?.slice(0, 8) ?? "-"} -> ${outcomeOf(o, true)}` : outcomeOf(o, false));
        const wrong = judge(call, o);
        if (wrong) failures.push(`${wrong}\n    ${describeCase(c, call, exec)}\n    stderr: ${o.stderr.slice(0, 400)}`);
      };
      await eachParallel(tasks, parallel, async (task) => {
        for (const c of task) if (!stopping) await runOne(c);
      });
      const fuzzMs = Date.now() - fuzzStarted;

      // The runtime's side: every container that was added is deleted with the config it was added with.
      await eachParallel(added, parallel, async ({ c, call }) => {
        const del: Call = { ...call, command: "DEL", env: { ...call.env, CNI_COMMAND: "DEL" }, expectCode: 0 };
        const wrong = judge(del, await execShim(shim, node.netns, cwd, del));
        if (wrong) failures.push(`cleanup DEL: ${wrong}\n    ${describeCase(c, del, true)}`);
      });

      console.log(
        [
          `shim fuzz: seed ${seed}: ${cases.length} inputs (${execs} exec'd as the binary, ${cases.length - execs} through runShim in process) in ${(fuzzMs / 1000).toFixed(1)} s; ${added.length} ADDs succeeded and were deleted; ${failures.length} failures`,
          ...[...tally.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `  ${String(v).padStart(5)}  ${k}`),
          ...(verbose
            ? [...spent.entries()]
                .sort(([, a], [, b]) => b.ms - a.ms)
                .map(([k, v]) => `  ${k}: ${v.n} calls, ${(v.ms / 1000).toFixed(1)} s, max ${v.max.toFixed(0)} ms`)
            : []),
        ].join("\n"),
      );
      if (verbose) {
        const lines = (await readFile(node.logFile, "utf8"))
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        const by = new Map<string, number[]>();
        for (const l of lines)
          if (typeof l.durationMs === "number")
            by.set(`${l.rpc} ${l.msg} ${l.reason ?? ""}`, [...(by.get(`${l.rpc} ${l.msg} ${l.reason ?? ""}`) ?? []), l.durationMs]);
        for (const [k, v] of by)
          console.log(
            `daemon ${k}: ${v.length} calls, max ${Math.max(...v)} ms, mean ${(v.reduce((a, b) => a + b, 0) / v.length).toFixed(0)} ms`,
          );
      }
      expect(failures.slice(0, 20), `${failures.length} of ${cases.length} inputs misbehaved (seed ${seed})`).toEqual([]);

      expect(await hostVeths(node)).toEqual([]);
      expect(await allocationFiles(node)).toEqual([]);
      await waitFor(
        "the control plane's copy to empty",
        async () => (await lab.etcdKeys(`/trellis/v1/allocations/${node.name}/`)).length === 0,
      );
      expect(node.daemon?.child.exitCode).toBeNull();
      const status = await lab.shim(node, "STATUS", {}, pluginConf(node, "1.1.0"));
      expect(status.code, status.stdout).toBe(0);
      // The daemon logged every refusal with its reason; none was an unexpected (INTERNAL) failure.
      const internal = (await readFile(node.logFile, "utf8"))
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.reason === "INTERNAL" || (typeof l.level === "number" && l.level >= 60));
      expect(internal.slice(0, 5)).toEqual([]);
      console.log(`shim fuzz: wall time ${((Date.now() - started) / 1000).toFixed(1)} s (lab included)`);
    },
    timeoutMs,
  );
});
