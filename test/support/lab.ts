import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { inNetns, must, mustInNetns, run, startInNetns, type Started } from "./exec.js";
import { startEtcd, type EtcdHandle } from "./etcd.js";
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
}

export interface LabNode {
  readonly name: string;
  readonly ip: string;
  readonly netns: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly confDir: string;
  readonly logFile: string;
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
const controlPlanePort = 6443;

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
  private readonly namespaces: string[] = [];
  private etcd?: EtcdHandle;
  controlPlane?: Started;
  private destroyed = false;

  private constructor(
    readonly workDir: string,
    private readonly options: LabOptions,
  ) {
    this.prefix = `tr-${randomBytes(3).toString("hex")}`;
    this.underlay = `${this.prefix}-ul`;
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
    this.say(`lab ${this.prefix}: underlay namespace ${this.underlay} with bridge ul0 (${controlPlaneIp}/24)`);
    await this.addNetns(this.underlay);
    await mustInNetns(this.underlay, "ip", ["-batch", "-"], {
      stdin: `link add ul0 type bridge\nlink set ul0 up\naddr add ${controlPlaneIp}/24 dev ul0\n`,
    });
    for (let i = 1; i <= count; i++) await this.addNode(i);

    this.say("etcd (Debian etcd-server) on 127.0.0.1:2379 inside the underlay namespace");
    this.etcd = await startEtcd({ netns: this.underlay, clientPort: 2379, peerPort: 2380 });
    this.say(`control plane on ${this.controlPlaneAddress}`);
    await this.startControlPlane();
    for (const node of this.nodes) await this.startDaemon(node);
  }

  async startControlPlane(): Promise<void> {
    const logFile = join(this.workDir, "control-plane.log");
    this.controlPlane = startInNetns("control-plane", this.underlay, process.execPath, [
      join(dist, "control-plane", "main.js"),
      "--etcd-endpoints", this.etcd?.endpoint ?? "http://127.0.0.1:2379",
      "--listen", this.controlPlaneAddress,
      "--cluster-cidr", this.options.clusterCidr ?? "10.244.0.0/16",
      "--subnet-size", String(this.options.subnetSize ?? 24),
    ], logFile);
    await waitForLog(logFile, "route feed started");
  }

  private async addNode(i: number): Promise<void> {
    const name = `node-${i}`;
    const netns = `${this.prefix}-n${i}`;
    const dir = join(this.workDir, name);
    const node: LabNode = {
      name, netns, ip: `192.168.1.${10 + i}`,
      socket: join(dir, "cni.sock"), stateDir: join(dir, "state"), confDir: join(dir, "net.d"),
      logFile: join(dir, "daemon.log"),
    };
    await mkdir(node.confDir, { recursive: true });
    this.say(`node ${name}: namespace ${netns}, eth0 ${node.ip}/24 on the underlay`);
    await this.addNetns(netns);
    await mustInNetns(this.underlay, "ip", ["-batch", "-"], {
      stdin: `link add ul-n${i} type veth peer name eth0 netns /run/netns/${netns}\nlink set ul-n${i} master ul0 up\n`,
    });
    await mustInNetns(netns, "ip", ["-batch", "-"], { stdin: `addr add ${node.ip}/24 dev eth0\nlink set eth0 up\n` });
    await writeFile(join(node.confDir, "10-trellis.conflist"), JSON.stringify(conflistFor(node), null, 2));
    this.nodes.push(node);
  }

  /** Starts (or restarts) a node's daemon and waits until it serves the shim. */
  async startDaemon(node: LabNode): Promise<void> {
    const logFile = node.logFile;
    await writeFile(logFile, "");
    node.daemon = startInNetns(`daemon ${node.name}`, node.netns, process.execPath, [
      join(dist, "node-daemon", "main.js"),
      "--node-name", node.name,
      "--node-ip", node.ip,
      "--control-plane", this.controlPlaneAddress,
      "--socket", node.socket,
      "--state-dir", node.stateDir,
      "--heartbeat-interval", String(this.options.heartbeatIntervalS ?? 5),
    ], logFile);
    const ready = await waitForLog(logFile, "serving the CNI shim");
    this.say(`daemon ${node.name} serving (pid ${node.daemon.child.pid})${ready ? "" : ""}`);
  }

  /** Execs the shim exactly as a runtime does: CNI env, the conflist's plugin config on stdin, in the node's namespace. */
  async shim(node: LabNode, command: string, env: Record<string, string>, conf: Record<string, unknown> | string = pluginConf(node)): Promise<ShimRun> {
    const res = await inNetns(node.netns, shimBinary, [], {
      stdin: typeof conf === "string" ? conf : JSON.stringify(conf),
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: command, CNI_PATH: dirname(shimBinary), ...env },
      timeoutMs: 30_000,
    });
    let json: Record<string, unknown> | undefined;
    try {
      json = res.stdout.trim() ? (JSON.parse(res.stdout) as Record<string, unknown>) : undefined;
    } catch {
      json = undefined;
    }
    return { ...res, json };
  }

  /** Makes a pod namespace like a runtime does (`ip netns add`) and ADDs it through the shim. */
  async addPod(node: LabNode, name: string, ifName = "eth0"): Promise<LabPod> {
    const netns = `${this.prefix}-${name}`;
    await this.addNetns(netns);
    const pod: LabPod = { name, node, netns, netnsPath: `/run/netns/${netns}`, containerId: `${this.prefix}-${name}`, ifName, address: "", result: {} };
    const res = await this.shim(node, "ADD", this.podEnv(pod));
    if (res.code !== 0 || !res.json) throw new Error(`ADD of ${name} on ${node.name} failed (${res.code}): ${res.stdout}${res.stderr}`);
    pod.result = res.json;
    const ips = res.json.ips as Array<{ address: string }>;
    pod.address = (ips[0]?.address ?? "").split("/")[0] ?? "";
    this.pods.push(pod);
    return pod;
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

  async routesOf(node: LabNode): Promise<Array<{ dst: string; gateway?: string; protocol?: string }>> {
    return JSON.parse(await mustInNetns(node.netns, "ip", ["-json", "route", "show"])) as Array<{ dst: string; gateway?: string; protocol?: string }>;
  }

  /** Removes a namespace this lab made (a pod "deleted by the runtime"). */
  async removeNetns(name: string): Promise<void> {
    await run("ip", ["netns", "del", name]);
    const i = this.namespaces.indexOf(name);
    if (i >= 0) this.namespaces.splice(i, 1);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const node of this.nodes) await node.daemon?.stop().catch(() => undefined);
    await this.controlPlane?.stop().catch(() => undefined);
    await this.etcd?.stop().catch(() => undefined);
    for (const ns of [...this.namespaces].reverse()) await run("ip", ["netns", "del", ns]);
    await rm(this.workDir, { recursive: true, force: true });
  }
}

export function pluginConf(node: LabNode): Record<string, unknown> {
  return { cniVersion: "1.0.0", name: "trellis", type: "trellis", daemonSocket: node.socket };
}

/** The conflist a node's runtime reads from its CNI config dir (like the seed's). */
export function conflistFor(node: LabNode): Record<string, unknown> {
  return { cniVersion: "1.0.0", name: "trellis", plugins: [{ type: "trellis", daemonSocket: node.socket }] };
}

export function resolveFromRoot(...parts: string[]): string {
  return resolve(root, ...parts);
}
