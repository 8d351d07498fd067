import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { waitFor } from "./wait.js";
import { run } from "./exec.js";

export interface EtcdHandle {
  readonly endpoint: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Debian's etcd-server on 127.0.0.1 with free ports and a temp data dir (STYLE.md §8). `netns`: run it
 * inside that namespace instead, where the fixed ports are free.
 */
export async function startEtcd(options: { netns?: string; clientPort?: number; peerPort?: number } = {}): Promise<EtcdHandle> {
  const dataDir = await mkdtemp(join(tmpdir(), "trellis-etcd-"));
  const clientPort = options.clientPort ?? (await freePort());
  const peerPort = options.peerPort ?? (await freePort());
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    "--name", "lab", "--data-dir", dataDir,
    "--listen-client-urls", client, "--advertise-client-urls", client,
    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
    "--initial-cluster", `lab=${peer}`, "--log-level", "error", "--logger", "zap",
  ];
  const child = options.netns
    ? spawn("nsenter", [`--net=/run/netns/${options.netns}`, "etcd", ...args], { stdio: "ignore" })
    : spawn("etcd", args, { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(t);
    }
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await waitFor("etcd to serve", async () => {
      if (child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode}`);
      const probe = options.netns
        ? await run("nsenter", [`--net=/run/netns/${options.netns}`, "etcdctl", "--endpoints", client, "endpoint", "health"], { env: { ...process.env, ETCDCTL_API: "3" } })
        : await run("etcdctl", ["--endpoints", client, "endpoint", "health"], { env: { ...process.env, ETCDCTL_API: "3" } });
      return probe.code === 0;
    }, 20_000, 100);
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoint: client, stop };
}
