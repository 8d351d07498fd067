import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Identity } from "../../proto/core/identity.js";
import { createCertificateAuthority, generateKeyPair, issueCertificate } from "../../proto/rpc/x509.js";
import { execConflist, type RuntimeAttachment, readConflist } from "./cni-runtime.js";
import { type EtcdHandle, startEtcd } from "./etcd.js";
import { inNetns, must, mustInNetns, run, type Started, startInNetns } from "./exec.js";
import { waitForLog } from "./wait.js";

/** Repository root, found from this file whether it runs from source (vitest) or from dist/. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!dir.endsWith("/test") && dir !== "/") dir = dirname(dir);
  const root = dirname(dir);
  return root.endsWith("/dist") ? dirname(root) : root;
}

export const root = repoRoot();
export const dist = join(root, "dist");
export const shimBinary = join(dist, "bin", "trellis");

export interface LabOptions {
  /** Number of nodes (node-1 .. node-N at 192.168.1.11 ..). */
  readonly nodes?: number;
  readonly clusterCidr?: string;
  readonly subnetSize?: number;
  /** Print progress lines (the demo does; tests stay quiet). */
  readonly progress?: (line: string) => void;
  readonly heartbeatIntervalS?: number;
  /** Extra node-daemon flags. */
  readonly daemonArgs?: readonly string[];
  /** Extra flags for one node's daemon, by node name (e.g. { "node-1": ["--router"] }). */
  readonly nodeArgs?: Readonly<Record<string, readonly string[]>>;
  /** Extra control-plane flags (e.g. a short --lease-ttl). */
  readonly controlPlaneArgs?: readonly string[];
}

export interface LabNode {
  readonly name: string;
  readonly ip: string;
  readonly netns: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly confDir: string;
  readonly logFile: string;
  /** This node's credential file (key and certificate), written by its daemon when it joins. */
  readonly credential: string;
  /** The join token the lab created for it through the admin API. */
  readonly joinTokenFile: string;
  daemon?: Started;
}

export interface LabPod {
  readonly name: string;
  readonly node: LabNode;
  readonly netns: string;
  readonly netnsPath: string;
  readonly containerId: string;
  readonly ifName: string;
  /** Pod address without prefix, from the CNI result. */
  address: string;
  result: Record<string, unknown>;
}

export interface ShimRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly json?: Record<string, unknown>;
}

const controlPlaneIp = "192.168.1.1";
/** The lab's "outside" host (a registry, the internet): on the underlay, outside the cluster CIDR, no route to it. */
const outsideIp = "192.168.1.250";
const echoPort = 8080;
/** A TCP server that answers every connection with the address it came from (`node -e SCRIPT IP PORT`). */
const echoServerScript = `const log = (msg, address) => console.log(JSON.stringify({ msg, address }));
const s = require("node:net").createServer((c) => { log("peer", c.remoteAddress); c.end(c.remoteAddress + "\\n"); });
s.listen(Number(process.argv[2]), process.argv[1], () => log("listening"));`;
/** Connects to an echo server and prints what it answered (`node -e SCRIPT IP PORT`). */
const echoClientScript = `const c = require("node:net").connect(Number(process.argv[2]), process.argv[1]);
let d = ""; c.on("data", (x) => { d += x; }); c.on("end", () => { process.stdout.write(d); process.exit(0); });
c.on("error", (e) => { console.error(e.message); process.exit(1); });
setTimeout(() => { console.error("no answer within 3 s"); process.exit(1); }, 3000);`;
/** GETs a URL and prints the body; exits 1 with the status unless it is 200 (`node -e SCRIPT URL`). */
const scrapeScript = `fetch(process.argv[1], { signal: AbortSignal.timeout(5000) }).then(async (r) => {
  const body = await r.text();
  if (r.status !== 200) { console.error(r.status + " " + body); process.exit(1); }
  process.stdout.write(body);
}, (e) => { console.error(e.message); process.exit(1); });`;
/**
 * Node flags the daemon runs with, as its systemd unit (node-daemon/deploy) starts it: a 1 MiB young
 * generation (16 MiB semi-spaces grow the RSS by ~15 MiB under bursts), and V8 tuned for size: with 110
 * pods, after the bench's bursts and with metrics on, 110-115 MiB without it, 96-97 with it, pod-path
 * ratios unchanged (npm run bench, two runs each).
 */
export const daemonNodeFlags = ["--max-semi-space-size=1", "--optimize-for-size"];
/** Debian's containernetworking-plugins. */
export const referencePluginDir = "/usr/lib/cni";
const controlPlanePort = 6443;
/** Metrics listeners: each daemon's on loopback inside its node's namespace, the control plane's inside the underlay's. */
export const daemonMetricsAddress = "127.0.0.1:9464";
export const controlPlaneMetricsAddress = "127.0.0.1:9465";

/**
 * A Trellis cluster made of network namespaces (DESIGN.md §7): an underlay namespace with a bridge
 * (the L2 switch) holding etcd and the control plane at 192.168.1.1, one namespace per node on it at
 * 192.168.1.11.., a node daemon in each, pods as runtimes make them. Every name starts with `prefix`;
 * `destroy()` removes all of it and stops only the processes this lab started.
 */
export class Lab {
  readonly prefix: string;
  readonly underlay: string;
  readonly nodes: LabNode[] = [];
  readonly pods: LabPod[] = [];
  readonly controlPlaneAddress = `${controlPlaneIp}:${controlPlanePort}`;
  /** The CNI bin dir runtimes exec plugins from: the trellis shim, and the reference plugins when installed. */
  readonly binDir: string;
  private readonly namespaces: string[] = [];
  private etcd?: EtcdHandle;
  controlPlane?: Started;
  /** The "outside" host: its namespace, its address, and an echo server there that tells who connected. */
  readonly outside: { readonly netns: string; readonly ip: string; readonly port: number };
  /** Echo servers this lab started (stopped by destroy). */
  private readonly echoServers: Started[] = [];
  /** Per-node daemon flags set after the lab was made (setNodeArgs), in place of options.nodeArgs. */
  private readonly laterNodeArgs = new Map<string, readonly string[]>();
  private destroyed = false;
  private ca?: Awaited<ReturnType<typeof createCertificateAuthority>>;
  /** The lab's cluster CA and an admin credential (files under workDir/pki), as trellis-ca makes them. */
  readonly pki: {
    readonly dir: string;
    readonly ca: string;
    readonly caKey: string;
    readonly adminCert: string;
    readonly adminKey: string;
  };

  private constructor(
    readonly workDir: string,
    private readonly options: LabOptions,
  ) {
    this.prefix = `tr-${randomBytes(3).toString("hex")}`;
    this.underlay = `${this.prefix}-ul`;
    this.outside = { netns: `${this.prefix}-out`, ip: outsideIp, port: echoPort };
    this.binDir = join(workDir, "cni-bin");
    const pki = join(workDir, "pki");
    this.pki = {
      dir: pki,
      ca: join(pki, "ca.crt"),
      caKey: join(pki, "ca.key"),
      adminCert: join(pki, "admin-lab.crt"),
      adminKey: join(pki, "admin-lab.key"),
    };
  }

  static async create(options: LabOptions = {}): Promise<Lab> {
    const lab = new Lab(await mkdtemp(join(tmpdir(), "trellis-lab-")), options);
    try {
      await lab.build();
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  private say(line: string): void {
    this.options.progress?.(line);
  }

  private async addNetns(name: string): Promise<void> {
    await must("ip", ["netns", "add", name]);
    this.namespaces.push(name);
    await mustInNetns(name, "ip", ["link", "set", "lo", "up"]);
  }

  private async build(): Promise<void> {
    const count = this.options.nodes ?? 3;
    // The documented install: the shim is one self-contained file.
    await mkdir(this.binDir, { recursive: true });
    await must("install", ["-m", "0755", shimBinary, join(this.binDir, "trellis")]);
    for (const ref of ["portmap", "bridge", "host-local", "loopback"]) {
      if (existsSync(join(referencePluginDir, ref))) await symlink(join(referencePluginDir, ref), join(this.binDir, ref));
    }
    this.say("cluster CA and credentials (mutual TLS between daemons, operators and the control plane)");
    await mkdir(this.pki.dir, { recursive: true, mode: 0o700 });
    this.ca = await createCertificateAuthority("trellis-lab-ca", 1);
    await writeFile(this.pki.ca, this.ca.certificatePem);
    await writeFile(this.pki.caKey, this.ca.privateKeyPem, { mode: 0o600 });
    await this.issue({ kind: "admin", name: "lab" }, this.pki.adminCert, this.pki.adminKey);
    await this.issue(
      { kind: "control-plane", name: "cp-1" },
      join(this.pki.dir, "control-plane.crt"),
      join(this.pki.dir, "control-plane.key"),
      { dnsNames: [], ips: [controlPlaneIp] },
    );
    this.say(`lab ${this.prefix}: underlay namespace ${this.underlay} with bridge ul0 (${controlPlaneIp}/24)`);
    await this.addNetns(this.underlay);
    await mustInNetns(this.underlay, "ip", ["-batch", "-"], {
      stdin: `link add ul0 type bridge\nlink set ul0 up\naddr add ${controlPlaneIp}/24 dev ul0\n`,
    });
    for (let i = 1; i <= count; i++) await this.addNode(i);
    this.say(`outside host: namespace ${this.outside.netns}, eth0 ${outsideIp}/24 on the underlay, no route to the pods`);
    await this.addNetns(this.outside.netns);
    await mustInNetns(this.underlay, "ip", ["-batch", "-"], {
      stdin: `link add ul-out type veth peer name eth0 netns /run/netns/${this.outside.netns}\nlink set ul-out master ul0 up\n`,
    });
    await mustInNetns(this.outside.netns, "ip", ["-batch", "-"], { stdin: `addr add ${outsideIp}/24 dev eth0\nlink set eth0 up\n` });
    await this.startEcho(this.outside.netns, outsideIp, echoPort);

    this.say("etcd (Debian etcd-server) on 127.0.0.1:2379 inside the underlay namespace");
    this.etcd = await startEtcd({ netns: this.underlay, clientPort: 2379, peerPort: 2380 });
    this.say(`control plane on ${this.controlPlaneAddress}`);
    await this.startControlPlane();
    for (const node of this.nodes) await this.startDaemon(node);
  }

  /** Writes a key (0600) and a certificate for `identity`, signed by the lab's CA. */
  private async issue(
    identity: Identity,
    certFile: string,
    keyFile: string,
    server?: { dnsNames: string[]; ips: string[] },
  ): Promise<void> {
    if (!this.ca) throw new Error("the lab's CA is not made yet");
    const keys = await generateKeyPair();
    await writeFile(keyFile, keys.privateKeyPem, { mode: 0o600 });
    await writeFile(certFile, await issueCertificate(this.ca, { identity, publicKey: keys.publicKey, lifetimeS: 86_400, server }));
  }

  async startControlPlane(): Promise<void> {
    const logFile = join(this.workDir, "control-plane.log");
    this.controlPlane = startInNetns(
      "control-plane",
      this.underlay,
      process.execPath,
      [
        join(dist, "control-plane", "main.js"),
        "--etcd-endpoints",
        this.etcd?.endpoint ?? "http://127.0.0.1:2379",
        "--listen",
        this.controlPlaneAddress,
        "--cluster-cidr",
        this.options.clusterCidr ?? "10.244.0.0/16",
        "--subnet-size",
        String(this.options.subnetSize ?? 24),
        "--tls-cert",
        join(this.pki.dir, "control-plane.crt"),
        "--tls-key",
        join(this.pki.dir, "control-plane.key"),
        "--client-ca",
        this.pki.ca,
        "--ca-key",
        this.pki.caKey,
        "--metrics-address",
        controlPlaneMetricsAddress,
        ...(this.options.controlPlaneArgs ?? []),
      ],
      logFile,
    );
    await waitForLog(logFile, "route feed started");
  }

  /** A node that joins a running cluster: namespace, underlay link, and its daemon started. */
  async joinNode(): Promise<LabNode> {
    const node = await this.addNode(this.nodes.length + 1);
    await this.startDaemon(node);
    return node;
  }

  private async addNode(i: number): Promise<LabNode> {
    const name = `node-${i}`;
    const netns = `${this.prefix}-n${i}`;
    const dir = join(this.workDir, name);
    const node: LabNode = {
      name,
      netns,
      ip: `192.168.1.${10 + i}`,
      socket: join(dir, "cni.sock"),
      stateDir: join(dir, "state"),
      confDir: join(dir, "net.d"),
      logFile: join(dir, "daemon.log"),
      credential: join(dir, "node.pem"),
      joinTokenFile: join(dir, "join-token"),
    };
    await mkdir(node.confDir, { recursive: true });
    this.say(`node ${name}: namespace ${netns}, eth0 ${node.ip}/24 on the underlay`);
    await this.addNetns(netns);
    await mustInNetns(this.underlay, "ip", ["-batch", "-"], {
      stdin: `link add ul-n${i} type veth peer name eth0 netns /run/netns/${netns}\nlink set ul-n${i} master ul0 up\n`,
    });
    await mustInNetns(netns, "ip", ["-batch", "-"], { stdin: `addr add ${node.ip}/24 dev eth0\nlink set eth0 up\n` });
    this.nodes.push(node);
    return node;
  }

  /**
   * Calls the admin API as the lab's admin, the way an operator does: buf curl through reflection, with
   * the admin certificate, from inside the underlay namespace. Returns the parsed JSON answer.
   */
  async admin(method: string, request: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const out = await mustInNetns(this.underlay, join(root, "node_modules", ".bin", "buf"), [
      "curl",
      "--protocol",
      "grpc",
      "--cacert",
      this.pki.ca,
      "--cert",
      this.pki.adminCert,
      "--key",
      this.pki.adminKey,
      "-d",
      JSON.stringify(request),
      `https://${this.controlPlaneAddress}/trellis.admin.v1.AdminService/${method}`,
    ]);
    return JSON.parse(out || "{}") as Record<string, unknown>;
  }

  /** The extra flags of a node's daemon from its next start on (replacing options.nodeArgs for it). */
  setNodeArgs(node: LabNode, args: readonly string[]): void {
    this.laterNodeArgs.set(node.name, args);
  }

  /** Starts (or restarts) a node's daemon and waits until it serves the shim; a node without a credential joins. */
  async startDaemon(node: LabNode): Promise<void> {
    const logFile = node.logFile;
    if (!existsSync(node.credential)) {
      const { token } = await this.admin("CreateJoinToken", { nodeName: node.name, ttlSeconds: 600 });
      await writeFile(node.joinTokenFile, `${String(token)}\n`, { mode: 0o600 });
    }
    await writeFile(logFile, "");
    node.daemon = startInNetns(
      `daemon ${node.name}`,
      node.netns,
      process.execPath,
      [
        ...daemonNodeFlags,
        join(dist, "node-daemon", "main.js"),
        "--node-name",
        node.name,
        "--node-ip",
        node.ip,
        "--control-plane",
        this.controlPlaneAddress,
        "--socket",
        node.socket,
        "--state-dir",
        node.stateDir,
        "--heartbeat-interval",
        String(this.options.heartbeatIntervalS ?? 5),
        "--cni-conf-dir",
        node.confDir,
        "--ca-cert",
        this.pki.ca,
        "--credential",
        node.credential,
        "--join-token-file",
        node.joinTokenFile,
        "--metrics-address",
        daemonMetricsAddress,
        ...(this.options.daemonArgs ?? []),
        ...(this.laterNodeArgs.get(node.name) ?? this.options.nodeArgs?.[node.name] ?? []),
      ],
      logFile,
    );
    const ready = await waitForLog(logFile, "serving the CNI shim");
    this.say(`daemon ${node.name} serving (pid ${node.daemon.child.pid})${ready ? "" : ""}`);
  }

  /** Execs the shim exactly as a runtime does: CNI env, the conflist's plugin config on stdin, in the node's namespace. */
  async shim(
    node: LabNode,
    command: string,
    env: Record<string, string>,
    conf: Record<string, unknown> | string = pluginConf(node),
    timeoutMs = 30_000,
  ): Promise<ShimRun> {
    const res = await inNetns(node.netns, join(this.binDir, "trellis"), [], {
      stdin: typeof conf === "string" ? conf : JSON.stringify(conf),
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: command, CNI_PATH: this.binDir, ...env },
      timeoutMs,
    });
    let json: Record<string, unknown> | undefined;
    try {
      json = res.stdout.trim() ? (JSON.parse(res.stdout) as Record<string, unknown>) : undefined;
    } catch {
      json = undefined;
    }
    return { ...res, json };
  }

  /** The conflist the node's daemon wrote into its CNI config dir. */
  conflist(node: LabNode, conflistFile = "10-trellis.conflist") {
    return readConflist(join(node.confDir, conflistFile));
  }

  /**
   * Makes a pod namespace like a runtime does (`ip netns add`) and ADDs it by executing the node's
   * conflist (libcni's order and prevResult), which the daemon wrote once it was ready.
   */
  async addPod(
    node: LabNode,
    name: string,
    options: { ifName?: string; conflist?: Awaited<ReturnType<Lab["conflist"]>>; runtimeConfig?: Record<string, unknown> } = {},
  ): Promise<LabPod> {
    const pod = await this.newPod(node, name, options.ifName);
    const conflist = options.conflist ?? (await this.conflist(node));
    const res = await execConflist({
      nodeNetns: node.netns,
      binDir: this.binDir,
      conflist,
      command: "ADD",
      attachment: this.attachmentOf(pod),
      runtimeConfig: options.runtimeConfig,
    });
    if (res.code !== 0 || !res.result) {
      const last = res.runs[res.runs.length - 1];
      throw new Error(`ADD of ${name} on ${node.name} failed (${res.code}): ${last?.stdout ?? ""}${last?.stderr ?? ""}`);
    }
    pod.result = res.result;
    const ips = res.result.ips as Array<{ address: string }>;
    pod.address = (ips[0]?.address ?? "").split("/")[0] ?? "";
    this.pods.push(pod);
    return pod;
  }

  /** A pod namespace made as a runtime makes one (`ip netns add`), not yet ADDed. */
  async newPod(node: LabNode, name: string, ifName = "eth0"): Promise<LabPod> {
    const netns = `${this.prefix}-${name}`;
    await this.addNetns(netns);
    return { name, node, netns, netnsPath: `/run/netns/${netns}`, containerId: `${this.prefix}-${name}`, ifName, address: "", result: {} };
  }

  attachmentOf(pod: Pick<LabPod, "containerId" | "netnsPath" | "ifName" | "name">): RuntimeAttachment {
    return {
      containerId: pod.containerId,
      netnsPath: pod.netnsPath,
      ifName: pod.ifName,
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod.name}`,
    };
  }

  podEnv(pod: Pick<LabPod, "containerId" | "netnsPath" | "ifName" | "name">): Record<string, string> {
    return {
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: pod.netnsPath,
      CNI_IFNAME: pod.ifName,
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod.name}`,
    };
  }

  async delPod(pod: LabPod): Promise<ShimRun> {
    return this.shim(pod.node, "DEL", this.podEnv(pod));
  }

  async ping(from: LabPod, to: string): Promise<boolean> {
    return (await inNetns(from.netns, "ping", ["-c", "1", "-W", "1", to])).code === 0;
  }

  /** Keys under `prefix` in the lab's etcd (etcdctl inside the underlay namespace). */
  async etcdKeys(prefix: string): Promise<string[]> {
    const out = await inNetns(
      this.underlay,
      "etcdctl",
      ["--endpoints", this.etcd?.endpoint ?? "", "get", "--prefix", "--keys-only", prefix],
      {
        env: { ...process.env, ETCDCTL_API: "3" },
      },
    );
    if (out.code !== 0) throw new Error(`etcdctl failed: ${out.stderr}`);
    return out.stdout.split("\n").filter(Boolean);
  }

  async routesOf(node: LabNode): Promise<Array<{ dst: string; gateway?: string; protocol?: string }>> {
    return JSON.parse(await mustInNetns(node.netns, "ip", ["-json", "route", "show"])) as Array<{
      dst: string;
      gateway?: string;
      protocol?: string;
    }>;
  }

  /**
   * The metrics URL of a node's daemon, or of the control plane, and the namespace to fetch it from (each
   * listens on loopback inside its own namespace).
   */
  metricsOf(target: LabNode | "control-plane"): { netns: string; url: string } {
    return target === "control-plane"
      ? { netns: this.underlay, url: `http://${controlPlaneMetricsAddress}/metrics` }
      : { netns: target.netns, url: `http://${daemonMetricsAddress}/metrics` };
  }

  /** GET /metrics of a node's daemon or of the control plane, from inside its namespace; throws unless 200. */
  async scrape(target: LabNode | "control-plane"): Promise<string> {
    const { netns, url } = this.metricsOf(target);
    return mustInNetns(netns, process.execPath, ["-e", scrapeScript, url]);
  }

  /** Removes a namespace this lab made (a pod "deleted by the runtime"). */
  async removeNetns(name: string): Promise<void> {
    await run("ip", ["netns", "del", name]);
    const i = this.namespaces.indexOf(name);
    if (i >= 0) this.namespaces.splice(i, 1);
  }

  /** Starts a TCP server in `netns` that answers each connection with its source address; stopped by destroy. */
  async startEcho(netns: string, ip: string, port = echoPort): Promise<Started> {
    const logFile = join(this.workDir, `echo-${netns}-${port}.log`);
    await writeFile(logFile, "");
    const server = startInNetns(`echo ${netns}`, netns, process.execPath, ["-e", echoServerScript, ip, String(port)], logFile);
    this.echoServers.push(server);
    await waitForLog(logFile, "listening");
    return server;
  }

  /** Connects from `netns` to an echo server: the source address the server saw (throws when it cannot connect). */
  async sourceSeenBy(netns: string, ip: string, port = echoPort): Promise<string> {
    const res = await inNetns(netns, process.execPath, ["-e", echoClientScript, ip, String(port)], { timeoutMs: 10_000 });
    if (res.code !== 0) throw new Error(`no connection from ${netns} to ${ip}:${port}: ${res.stderr.trim()}`);
    return res.stdout.trim();
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const server of this.echoServers) await server.stop().catch(() => undefined);
    for (const node of this.nodes) await node.daemon?.stop().catch(() => undefined);
    await this.controlPlane?.stop().catch(() => undefined);
    await this.etcd?.stop().catch(() => undefined);
    for (const ns of [...this.namespaces].reverse()) await run("ip", ["netns", "del", ns]);
    await rm(this.workDir, { recursive: true, force: true });
  }
}

/** Host ends of Trellis veths (`tr` + 11 hex) in a node's namespace. */
export async function hostVeths(node: LabNode): Promise<string[]> {
  const out = await inNetns(node.netns, "ip", ["-json", "link", "show", "type", "veth"]);
  return (JSON.parse(out.stdout || "[]") as Array<{ ifname: string }>).map((l) => l.ifname).filter((n) => /^tr[0-9a-f]{11}$/.test(n));
}

/** The pod addresses a node's daemon has recorded on disk (one file per address in its state dir). */
export async function allocationFiles(node: LabNode): Promise<string[]> {
  return (await readdir(join(node.stateDir, "allocations")).catch(() => [])).filter((f) => !f.endsWith(".tmp"));
}

/** The trellis plugin's entry as a runtime passes it on stdin (single-plugin calls). */
export function pluginConf(node: LabNode, cniVersion = "1.0.0"): Record<string, unknown> {
  return { cniVersion, name: "trellis", type: "trellis", daemonSocket: node.socket };
}
