import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { inNetns, type RunResult, run } from "./exec.js";
import type { LabNode } from "./lab.js";
import { waitFor } from "./wait.js";

/**
 * Debian packages the podman harness needs (.ci/setup installs them) that are not installed. By package,
 * not by file: Debian's dynamic `busybox` has the same /bin/busybox, which cannot run in a bare rootfs.
 */
export function missingPodmanPackages(): string[] {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: ${Status} is dpkg-query's own format syntax
  const format = "-f=${Status}";
  const installed = (pkg: string) => spawnSync("dpkg-query", ["-W", format, pkg], { encoding: "utf8" }).stdout === "install ok installed";
  return ["podman", "runc", "busybox-static"].filter((pkg) => !installed(pkg));
}

export interface PodmanContainer {
  readonly name: string;
  readonly id: string;
  /** The container's address on the network, without prefix. */
  readonly ip: string;
  readonly gateway: string;
  readonly prefixLength: number;
  /** The container's network namespace, made by podman: /run/netns/netns-<uuid>. */
  readonly sandbox: string;
}

const cniCache = "/var/lib/cni";
const cniResults = join(cniCache, "results");

/** Hard limit of one rlimit of this process ("Max open files", "Max processes"), capped at `cap`. */
async function hardLimit(name: string, cap: number): Promise<number> {
  const limits = await readFile("/proc/self/limits", "utf8");
  const hard = new RegExp(`^${name}\\s+\\S+\\s+(\\S+)`, "m").exec(limits)?.[1];
  return hard === undefined || hard === "unlimited" ? cap : Math.min(Number(hard), cap);
}

/** Mount points under `dir` (or equal to one of `paths`), deepest first. */
async function mountsUnder(dir: string, paths: ReadonlySet<string>): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  const points = info.split("\n").map((line) => line.split(" ")[4]?.replace(/\\040/g, " ") ?? "");
  return points.filter((p) => p.startsWith(`${dir}/`) || paths.has(p)).sort((a, b) => b.length - a.length);
}

/** Pids whose command line mentions `text` (conmon and podman's cleanup command name our private dir). */
async function pidsMentioning(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(join("/proc", entry, "cmdline"), "utf8").catch(() => "");
    if (cmdline.includes(text)) pids.push(Number(entry));
  }
  return pids;
}

function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/**
 * Debian's rootful podman 4.3 with its CNI backend, run unmodified inside one lab node's namespace as a
 * container runtime would run on that node, with everything it would keep system-wide moved into a
 * private temp dir: containers.conf, storage (vfs), runroot, locks (file), events, runc's state (a
 * wrapper passes --root), and the containers' cgroups under one per-run parent. Containers run from a
 * busybox-static rootfs (`--rootfs`, no image). Podman reads its networks from the node's CNI config
 * dir (the daemon's conflist) and its plugins from the lab's bin dir.
 *
 * Whatever needs CNI ADD or DEL (run, rm) runs under `nsenter --net` into the node's namespace, never
 * `ip netns exec`, whose fresh /sys leaves runc without a cgroup mount (DESIGN.md §7). Every podman
 * command runs that way, so conmon and its cleanup command stay in the node's namespace too.
 *
 * Outside the private dir podman leaves only: its containers' namespaces /run/netns/netns-<uuid>,
 * libcni's result cache /var/lib/cni/results (hard-wired in libcni), and the cgroups. `destroy()`
 * removes all of it, also after a failed run.
 */
export class Podman {
  readonly rootfs: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly globalArgs: string[];
  /** Container ids and namespaces this harness made, for cleanup. */
  private readonly ids = new Set<string>();
  private readonly sandboxes = new Set<string>();
  /** The CNI cache dirs podman will create, if they are not there yet; removed again when empty. */
  private readonly createdCniDirs = [cniCache, cniResults].filter((dir) => !existsSync(dir));
  private destroyed = false;

  private constructor(
    readonly dir: string,
    readonly node: LabNode,
    readonly network: string,
    /** Every container's --cgroup-parent: one per-run cgroup to find and remove them by. */
    readonly cgroupParent: string,
  ) {
    this.rootfs = join(dir, "rootfs");
    this.env = {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      HOME: dir,
      TMPDIR: join(dir, "tmp"),
      // exported, not flags: conmon's cleanup command (`podman container cleanup`) inherits them
      CONTAINERS_CONF: join(dir, "containers.conf"),
      CONTAINERS_STORAGE_CONF: join(dir, "storage.conf"),
      CONTAINERS_REGISTRIES_CONF: join(dir, "registries.conf"),
    };
    this.globalArgs = ["--root", join(dir, "storage"), "--runroot", join(dir, "run")];
  }

  /**
   * A podman for `node` using the CNI network `network` (the daemon's conflist) and plugins from
   * `binDir`. `name` (the lab's prefix) names the cgroup parent.
   */
  static async create(options: { node: LabNode; binDir: string; name: string; network?: string }): Promise<Podman> {
    const dir = await mkdtemp(join(tmpdir(), "trellis-podman-"));
    const podman = new Podman(dir, options.node, options.network ?? "trellis", `/${options.name}-podman`);
    try {
      await podman.configure(options.binDir);
    } catch (err) {
      await podman.destroy();
      throw err;
    }
    return podman;
  }

  private async configure(binDir: string): Promise<void> {
    const { dir } = this;
    const q = (s: string) => JSON.stringify(s); // a TOML basic string
    for (const sub of ["tmp", "bin", "runc", "storage", "run", "rootfs/bin"]) await mkdir(join(dir, sub), { recursive: true });
    // runc keeps its state in /run/runc unless given --root; conmon's cleanup command would not get a
    // --runtime-flag, so the runtime itself is a wrapper.
    const runc = join(dir, "bin", "runc");
    await writeFile(runc, `#!/bin/sh\nexec /usr/bin/runc --root ${q(join(dir, "runc"))} "$@"\n`);
    await chmod(runc, 0o755);
    // Podman's defaults (nofile 1048576) are above this machine's hard limits; raising a hard limit
    // needs CAP_SYS_RESOURCE, so ask for no more than we have. A --ulimit flag would replace the list.
    const nofile = await hardLimit("Max open files", 1_048_576);
    const nproc = await hardLimit("Max processes", 32_768);
    await writeFile(
      join(dir, "containers.conf"),
      [
        "[containers]",
        `default_ulimits = [${q(`nofile=${nofile}:${nofile}`)}, ${q(`nproc=${nproc}:${nproc}`)}]`,
        `log_driver = "k8s-file"`,
        "[network]",
        `network_backend = "cni"`,
        `cni_plugin_dirs = [${q(binDir)}]`,
        `network_config_dir = ${q(this.node.confDir)}`,
        "[engine]",
        `cgroup_manager = "cgroupfs"`,
        `events_logger = "file"`,
        `events_logfile_path = ${q(join(dir, "events.log"))}`,
        `lock_type = "file"`,
        `tmp_dir = ${q(join(dir, "tmp"))}`,
        `image_copy_tmp_dir = ${q(join(dir, "tmp"))}`,
        `runtime = "runc"`,
        "[engine.runtimes]",
        `runc = [${q(runc)}]`,
        "",
      ].join("\n"),
    );
    await writeFile(
      join(dir, "storage.conf"),
      [
        "[storage]",
        // vfs: no mounts at all (the containers run from --rootfs, nothing is layered)
        `driver = "vfs"`,
        `graphroot = ${q(join(dir, "storage"))}`,
        `runroot = ${q(join(dir, "run"))}`,
        "",
      ].join("\n"),
    );
    await writeFile(join(dir, "registries.conf"), "unqualified-search-registries = []\n");
    // The containers' root: a static busybox and the applets the tests use.
    await copyFile("/bin/busybox", join(this.rootfs, "bin", "busybox"));
    await chmod(join(this.rootfs, "bin", "busybox"), 0o755);
    for (const applet of ["sh", "ping", "ip", "sleep"]) await symlink("busybox", join(this.rootfs, "bin", applet));
  }

  /** Runs `podman <args>` with the private config, inside the node's network namespace. */
  podman(args: readonly string[], timeoutMs = 30_000): Promise<RunResult> {
    return inNetns(this.node.netns, "podman", [...this.globalArgs, ...args], { env: this.env, timeoutMs });
  }

  private async mustPodman(args: readonly string[]): Promise<string> {
    const res = await this.podman(args);
    if (res.code !== 0) throw new Error(`podman ${args.join(" ")} failed (${res.code}): ${res.stderr.trim() || res.stdout.trim()}`);
    return res.stdout;
  }

  /** `podman run -d --network <network>` of the busybox rootfs running `command`. */
  async run(name: string, command: readonly string[] = ["sleep", "600"]): Promise<PodmanContainer> {
    const res = await this.podman([
      "run",
      "-d",
      "--name",
      name,
      "--network",
      this.network,
      `--cgroup-parent=${this.cgroupParent}`,
      "--rootfs",
      this.rootfs,
      ...command,
    ]);
    const id = res.stdout.trim();
    if (/^[0-9a-f]{64}$/.test(id)) this.ids.add(id);
    if (res.code !== 0) throw new Error(`podman run ${name} failed (${res.code}): ${res.stderr.trim()}`);
    return this.inspect(name);
  }

  async inspect(name: string): Promise<PodmanContainer> {
    const [info] = JSON.parse(await this.mustPodman(["container", "inspect", name])) as Array<{
      Id: string;
      NetworkSettings: { SandboxKey: string; Networks?: Record<string, { IPAddress: string; Gateway: string; IPPrefixLen: number }> };
    }>;
    if (!info) throw new Error(`podman inspect ${name}: no such container`);
    this.ids.add(info.Id);
    if (info.NetworkSettings.SandboxKey) this.sandboxes.add(info.NetworkSettings.SandboxKey);
    const net = info.NetworkSettings.Networks?.[this.network];
    return {
      name,
      id: info.Id,
      ip: net?.IPAddress ?? "",
      gateway: net?.Gateway ?? "",
      prefixLength: net?.IPPrefixLen ?? 0,
      sandbox: info.NetworkSettings.SandboxKey,
    };
  }

  exec(name: string, command: readonly string[]): Promise<RunResult> {
    return this.podman(["exec", name, ...command]);
  }

  /** `podman rm -f` (no stop grace period: busybox sleep as pid 1 ignores SIGTERM). */
  rm(...names: string[]): Promise<RunResult> {
    return this.podman(["rm", "-f", "-t", "0", ...names]);
  }

  /** This harness's cgroup dirs in every mounted hierarchy (v1 controllers, or the v2 root). */
  private async cgroupDirs(): Promise<string[]> {
    const name = this.cgroupParent.slice(1);
    const roots = ["/sys/fs/cgroup", ...(await readdir("/sys/fs/cgroup")).map((h) => join("/sys/fs/cgroup", h))];
    return roots.map((r) => join(r, name)).filter((d) => existsSync(d));
  }

  /** Every pid in `dir` and its sub-cgroups; the sub-cgroups, deepest first. */
  private static async walkCgroup(dir: string): Promise<{ pids: number[]; dirs: string[] }> {
    const pids = (await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "")).split("\n").filter(Boolean).map(Number);
    const dirs: string[] = [];
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (!entry.isDirectory()) continue;
      const sub = await Podman.walkCgroup(join(dir, entry.name));
      pids.push(...sub.pids);
      dirs.push(...sub.dirs);
    }
    dirs.push(dir);
    return { pids, dirs };
  }

  /**
   * Removes everything this podman made, also after a failure: its containers (the runtime's way, so
   * CNI DEL runs in the node's namespace), then whatever is left of them by force: processes (by pid:
   * those in its cgroups and those naming its private dir), cgroups, mounts, network namespaces,
   * libcni cache entries, and the private dir. Throws if something could not be removed.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const problems: string[] = [];
    let removed = false;
    if (existsSync(join("/run/netns", this.node.netns)) && existsSync(this.env.CONTAINERS_CONF ?? "")) {
      const ps = await this.podman(["ps", "-a", "--format", "{{.Names}}"]);
      for (const name of ps.stdout.split("\n").filter(Boolean)) await this.inspect(name).catch(() => undefined);
      if (this.ids.size > 0) {
        const rm = await this.podman(["rm", "-f", "-t", "0", "-a"], 60_000);
        if (rm.code !== 0) problems.push(`podman rm -a: ${rm.stderr.trim()}`);
        removed = rm.code === 0;
      }
    }
    // After a good rm, conmon exits and runs `podman container cleanup`: let them finish, not kill them.
    if (removed)
      await waitFor("conmon and podman cleanup to exit", async () => (await pidsMentioning(this.dir)).length === 0, 5_000).catch(
        () => undefined,
      );
    // Whatever is left: kill by pid what runs in its cgroups or names its dir, remove the cgroups.
    let left = "";
    await waitFor(
      "podman's processes and cgroups to be gone",
      async () => {
        const cgroups = await Promise.all((await this.cgroupDirs()).map((d) => Podman.walkCgroup(d)));
        const pids = [...cgroups.flatMap((c) => c.pids), ...(await pidsMentioning(this.dir))];
        pids.forEach(kill);
        for (const dir of cgroups.flatMap((c) => c.dirs)) await rmdir(dir).catch(() => undefined);
        left = `pids ${pids.join(" ")}, cgroups ${(await this.cgroupDirs()).join(" ")}`;
        return pids.length === 0 && (await this.cgroupDirs()).length === 0;
      },
      5_000,
      100,
    ).catch(() => problems.push(`left: ${left}`));
    for (const sandbox of this.sandboxes) {
      if (!sandbox.startsWith("/run/netns/netns-") || !existsSync(sandbox)) continue;
      const del = await run("ip", ["netns", "del", basename(sandbox)]);
      if (del.code !== 0) problems.push(`ip netns del ${basename(sandbox)}: ${del.stderr.trim()}`);
    }
    for (const point of await mountsUnder(this.dir, this.sandboxes)) {
      if ((await run("umount", [point])).code !== 0) await run("umount", ["-l", point]);
    }
    const stillMounted = await mountsUnder(this.dir, this.sandboxes);
    if (stillMounted.length > 0) problems.push(`still mounted: ${stillMounted.join(" ")}`);
    for (const id of this.ids) await rm(join(cniResults, `${this.network}-${id}-eth0`), { force: true });
    for (const dir of [...this.createdCniDirs].reverse()) await rmdir(dir).catch(() => undefined);
    const cniLeft = this.createdCniDirs.filter((d) => existsSync(d));
    if (cniLeft.length > 0) problems.push(`${cniLeft.join(", ")} made by this run is not empty`);
    // never recurse into a mount that could not be removed
    if (stillMounted.length === 0) await rm(this.dir, { recursive: true, force: true });
    if (problems.length > 0) throw new Error(`podman cleanup: ${problems.join("; ")}`);
  }
}
