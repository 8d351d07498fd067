import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Identity } from "../../proto/core/identity.js";
import { type CertificateAuthority, createCertificateAuthority, generateKeyPair, issueCertificate } from "../../proto/rpc/x509.js";
import { run } from "./exec.js";
import { waitFor } from "./wait.js";

/** A certificate and its key, as PEM texts and as files (the key 0600). */
export interface PemPair {
  readonly cert: string;
  readonly key: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** What a client of an etcd started with `tls: true` needs: its CA and a client certificate it signed. */
export interface EtcdTls {
  readonly ca: string;
  readonly caFile: string;
  readonly client: PemPair;
  /** The material as the stores take it (EtcdConnection.tls). */
  readonly connection: { readonly ca: string; readonly cert: string; readonly key: string };
}

export interface EtcdHandle {
  /** http://127.0.0.1:PORT, or https:// with `tls`. */
  readonly endpoint: string;
  /** Set when started with `tls: true`. */
  readonly tls?: EtcdTls;
  /** etcd's own pid (nsenter execs it), for tests that pause it. */
  readonly pid: number;
  stop(): Promise<void>;
}

/** Issues a certificate for `identity` from `ca` and writes it and its key (0600) into `dir` as `<base>.crt/.key`. */
export async function writeIssued(
  ca: CertificateAuthority,
  dir: string,
  base: string,
  identity: Identity,
  server?: { dnsNames: string[]; ips: string[] },
): Promise<PemPair> {
  const keys = await generateKeyPair();
  const cert = await issueCertificate(ca, { identity, publicKey: keys.publicKey, lifetimeS: 86_400, server });
  const certFile = join(dir, `${base}.crt`);
  const keyFile = join(dir, `${base}.key`);
  await writeFile(certFile, cert);
  await writeFile(keyFile, keys.privateKeyPem, { mode: 0o600 });
  return { cert, key: keys.privateKeyPem, certFile, keyFile };
}

/** Resolves when `child` exits (made at spawn, so an early exit is not missed). */
function exitOf(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => child.once("exit", () => resolve()));
}

/** SIGTERM, then SIGKILL if `child` is still running after 5 s; resolves once it exited. */
async function terminate(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(t);
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
 * inside that namespace instead, where the fixed ports are free. `tls`: a throwaway CA signs etcd's serving
 * certificate (127.0.0.1, localhost) and a client certificate (`tls.client`); etcd serves https only and
 * asks every client for a certificate signed by that CA (--client-cert-auth).
 */
export async function startEtcd(
  options: { netns?: string; clientPort?: number; peerPort?: number; tls?: boolean } = {},
): Promise<EtcdHandle> {
  const dataDir = await mkdtemp(join(tmpdir(), "trellis-etcd-"));
  const clientPort = options.clientPort ?? (await freePort());
  const peerPort = options.peerPort ?? (await freePort());
  const client = `${options.tls ? "https" : "http"}://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const tlsDir = options.tls ? await mkdtemp(join(tmpdir(), "trellis-etcd-tls-")) : undefined;
  const tls = tlsDir ? await makeEtcdTls(tlsDir) : undefined;
  const tlsArgs = tls
    ? ["--client-cert-auth", "--trusted-ca-file", tls.caFile, "--cert-file", tls.server.certFile, "--key-file", tls.server.keyFile]
    : [];
  const ctlTlsArgs = tls ? ["--cacert", tls.caFile, "--cert", tls.client.certFile, "--key", tls.client.keyFile] : [];
  const args = [
    ...tlsArgs,
    "--name",
    "lab",
    "--data-dir",
    dataDir,
    "--listen-client-urls",
    client,
    "--advertise-client-urls",
    client,
    "--listen-peer-urls",
    peer,
    "--initial-advertise-peer-urls",
    peer,
    "--initial-cluster",
    `lab=${peer}`,
    "--log-level",
    "error",
    "--logger",
    "zap",
  ];
  const child = options.netns
    ? spawn("nsenter", [`--net=/run/netns/${options.netns}`, "etcd", ...args], { stdio: "ignore" })
    : spawn("etcd", args, { stdio: "ignore" });
  const exited = exitOf(child);
  const stop = async () => {
    await terminate(child, exited);
    await rm(dataDir, { recursive: true, force: true });
    if (tlsDir) await rm(tlsDir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      "etcd to serve",
      async () => {
        if (child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode}`);
        const probe = options.netns
          ? await run(
              "nsenter",
              [`--net=/run/netns/${options.netns}`, "etcdctl", ...ctlTlsArgs, "--endpoints", client, "endpoint", "health"],
              {
                env: { ...process.env, ETCDCTL_API: "3" },
              },
            )
          : await run("etcdctl", [...ctlTlsArgs, "--endpoints", client, "endpoint", "health"], {
              env: { ...process.env, ETCDCTL_API: "3" },
            });
        return probe.code === 0;
      },
      20_000,
      100,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  const pid = child.pid ?? 0;
  if (!tls) return { endpoint: client, pid, stop };
  const { server: _, ...clientSide } = tls;
  return { endpoint: client, tls: clientSide, pid, stop };
}

/** The CA, etcd's serving certificate and a client certificate (trellis-control-plane), written into `dir` (keys 0600). */
async function makeEtcdTls(dir: string): Promise<EtcdTls & { readonly server: PemPair }> {
  const ca = await createCertificateAuthority("trellis-test-etcd-ca", 1);
  const caFile = join(dir, "etcd-ca.crt");
  await writeFile(caFile, ca.certificatePem);
  const serverNames = { dnsNames: ["localhost"], ips: ["127.0.0.1"] };
  const server = await writeIssued(ca, dir, "etcd-server", { kind: "control-plane", name: "etcd" }, serverNames);
  const client = await writeIssued(ca, dir, "etcd-client", { kind: "control-plane", name: "trellis-control-plane" });
  return { ca: ca.certificatePem, caFile, server, client, connection: { ca: ca.certificatePem, cert: client.cert, key: client.key } };
}

export interface EtcdMember {
  readonly name: string;
  readonly endpoint: string;
  /** The running member's pid (0 when it is not running). */
  readonly pid: number;
  /** SIGKILL, keeping its data dir. */
  kill(): Promise<void>;
  /** Starts it again on the same ports and data dir. */
  start(): Promise<void>;
}

export interface EtcdCluster {
  readonly endpoints: string[];
  readonly members: EtcdMember[];
  stop(): Promise<void>;
}

/** A multi-member etcd cluster of Debian's etcd on loopback, each member with its own temp data dir. */
export async function startEtcdCluster(size = 3): Promise<EtcdCluster> {
  const base = await mkdtemp(join(tmpdir(), "trellis-etcd-cluster-"));
  const ports = await Promise.all(Array.from({ length: size * 2 }, () => freePort()));
  const specs = Array.from({ length: size }, (_, i) => ({
    name: `m${i}`,
    client: `http://127.0.0.1:${ports[2 * i]}`,
    peer: `http://127.0.0.1:${ports[2 * i + 1]}`,
    dataDir: join(base, `m${i}`),
  }));
  const initialCluster = specs.map((s) => `${s.name}=${s.peer}`).join(",");
  const children = new Map<string, ReturnType<typeof spawn>>();
  const launch = (s: (typeof specs)[number]) => {
    const child = spawn(
      "etcd",
      [
        "--name",
        s.name,
        "--data-dir",
        s.dataDir,
        "--listen-client-urls",
        s.client,
        "--advertise-client-urls",
        s.client,
        "--listen-peer-urls",
        s.peer,
        "--initial-advertise-peer-urls",
        s.peer,
        "--initial-cluster",
        initialCluster,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        base,
        "--log-level",
        "error",
        "--logger",
        "zap",
      ],
      { stdio: "ignore" },
    );
    children.set(s.name, child);
  };
  const healthy = (s: (typeof specs)[number]) =>
    waitFor(
      `etcd member ${s.name}`,
      async () =>
        (await run("etcdctl", ["--endpoints", s.client, "endpoint", "health"], { env: { ...process.env, ETCDCTL_API: "3" } })).code === 0,
      30_000,
      100,
    );
  const kill = async (name: string) => {
    const child = children.get(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  };
  specs.forEach(launch);
  const cluster: EtcdCluster = {
    endpoints: specs.map((s) => s.client),
    members: specs.map((s) => ({
      name: s.name,
      endpoint: s.client,
      get pid() {
        const child = children.get(s.name);
        return child && child.exitCode === null && child.signalCode === null ? (child.pid ?? 0) : 0;
      },
      kill: () => kill(s.name),
      start: async () => {
        launch(s);
        await healthy(s);
      },
    })),
    stop: async () => {
      for (const s of specs) await kill(s.name);
      await rm(base, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(specs.map(healthy));
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** `etcdctl snapshot save`: a snapshot of the (cleartext) etcd at `endpoint`, written to `file`. */
export async function snapshotEtcd(endpoint: string, file: string): Promise<void> {
  const res = await run("etcdctl", ["--endpoints", endpoint, "snapshot", "save", file], { env: { ...process.env, ETCDCTL_API: "3" } });
  if (res.code !== 0) throw new Error(`etcdctl snapshot save failed (${res.code}): ${res.stderr.trim() || res.stdout.trim()}`);
}

/**
 * An etcd restored from `snapshotFile` (`etcdctl snapshot restore` into a new temp data dir), serving
 * cleartext on 127.0.0.1 at the given ports: with the ports of the etcd the snapshot was taken from
 * (stopped first), clients see that etcd come back with the snapshot's keys and revision.
 */
export async function startRestoredEtcd(snapshotFile: string, options: { clientPort: number; peerPort: number }): Promise<EtcdHandle> {
  const base = await mkdtemp(join(tmpdir(), "trellis-etcd-restored-"));
  const dataDir = join(base, "data");
  const client = `http://127.0.0.1:${options.clientPort}`;
  const peer = `http://127.0.0.1:${options.peerPort}`;
  const cluster = ["--name", "lab", "--initial-cluster", `lab=${peer}`, "--initial-advertise-peer-urls", peer];
  const restored = await run("etcdctl", ["snapshot", "restore", snapshotFile, "--data-dir", dataDir, ...cluster], {
    env: { ...process.env, ETCDCTL_API: "3" },
  });
  if (restored.code !== 0) {
    await rm(base, { recursive: true, force: true });
    throw new Error(`etcdctl snapshot restore failed (${restored.code}): ${restored.stderr.trim() || restored.stdout.trim()}`);
  }
  const child = spawn(
    "etcd",
    [
      ...cluster,
      ...["--data-dir", dataDir, "--listen-client-urls", client, "--advertise-client-urls", client, "--listen-peer-urls", peer],
      ...["--log-level", "error", "--logger", "zap"],
    ],
    { stdio: "ignore" },
  );
  const exited = exitOf(child);
  const stop = async () => {
    await terminate(child, exited);
    await rm(base, { recursive: true, force: true });
  };
  try {
    await waitFor(
      "the restored etcd to serve",
      async () => {
        if (child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode}`);
        return (
          (await run("etcdctl", ["--endpoints", client, "endpoint", "health"], { env: { ...process.env, ETCDCTL_API: "3" } })).code === 0
        );
      },
      20_000,
      100,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoint: client, pid: child.pid ?? 0, stop };
}
