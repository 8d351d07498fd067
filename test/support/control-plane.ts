import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { type Logger, pino } from "pino";
import { CertificateRegistry } from "../../control-plane/identity/certificate-registry.js";
import { NodeIdentities } from "../../control-plane/identity/node-identities.js";
import { AllocationMirror } from "../../control-plane/ipam/allocation-mirror.js";
import type { ExpiryPolicy } from "../../control-plane/ipam/lease-expiry.js";
import { LeaseManager } from "../../control-plane/ipam/lease-manager.js";
import { createSubnetPool } from "../../control-plane/ipam/subnet-pool.js";
import { RouteFeed } from "../../control-plane/routes/route-feed.js";
import { type ControlPlaneServer, startControlPlaneServer } from "../../control-plane/rpc/server.js";
import { EtcdIdentityStore } from "../../control-plane/store/etcd-identity-store.js";
import { EtcdClusterStore } from "../../control-plane/store/etcd-store.js";
import { Cidr } from "../../proto/core/cidr.js";
import type { TlsMaterial } from "../../proto/rpc/listen.js";
import type { CertificateAuthority } from "../../proto/rpc/x509.js";
import { freePort } from "./etcd.js";
import { dist } from "./lab.js";
import { waitForLog } from "./wait.js";

/** Log lines captured in memory, for asserting on events. */
export function captureLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

/** A fresh key root per test, so tests sharing one etcd never see each other's keys. */
export function namespace(): string {
  return `/test-${randomBytes(4).toString("hex")}/trellis/v1`;
}

export interface InProcessControlPlane {
  readonly address: string;
  /** The join listener's address, when it serves one (given `ca` and `tls`). */
  readonly joinAddress?: string;
  readonly store: EtcdClusterStore;
  readonly identityStore: EtcdIdentityStore;
  readonly identities: NodeIdentities;
  readonly leases: LeaseManager;
  stop(): Promise<void>;
}

const defaultPolicy: ExpiryPolicy = { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33 };

/** One control-plane replica composed like main.ts, on 127.0.0.1 with a free (or given) port. */
export async function startInProcessControlPlane(options: {
  etcd: string;
  root: string;
  clusterCidr?: string;
  subnetSize?: number;
  port?: number;
  log?: Logger;
  policy?: ExpiryPolicy;
  clock?: () => number;
  tls?: TlsMaterial;
  /** The CA with its key: the replica signs node certificates (Join on a free port, renewals). */
  ca?: CertificateAuthority;
  nodeCertificateLifetimeS?: number;
}): Promise<InProcessControlPlane> {
  const log = options.log ?? pino({ level: "silent" });
  const store = new EtcdClusterStore({ endpoints: [options.etcd], root: options.root });
  const clusterCidr = Cidr.parse(options.clusterCidr ?? "10.244.0.0/16");
  const pool = createSubnetPool(clusterCidr, options.subnetSize ?? 24);
  const stop = new AbortController();
  const clock = options.clock ?? Date.now;
  const leases = new LeaseManager({ store, pool, log, clock, rand: Math.random, policy: options.policy ?? defaultPolicy });
  const feed = new RouteFeed({ store, log });
  const mirror = new AllocationMirror({ store, log });
  const identityStore = new EtcdIdentityStore({ endpoints: [options.etcd], root: options.root });
  const identities = new NodeIdentities({
    store: identityStore,
    ca: options.ca,
    log,
    clock,
    randomBytes: (n) => randomBytes(n),
    certificateLifetimeS: options.nodeCertificateLifetimeS ?? 7 * 86_400,
  });
  const registry = new CertificateRegistry(identityStore, clock);
  await registry.start(stop.signal);
  await feed.start(stop.signal);
  const server: ControlPlaneServer = await startControlPlaneServer({
    identities,
    registry,
    joinPort: options.ca ? 0 : undefined,
    leases,
    feed,
    mirror,
    store,
    pool,
    log,
    clusterCidr,
    clock,
    policy: options.policy ?? defaultPolicy,
    host: "127.0.0.1",
    port: options.port ?? 0,
    ready: () => true,
    tls: options.tls,
  });
  return {
    address: `127.0.0.1:${server.port}`,
    joinAddress: server.joinPort === undefined ? undefined : `127.0.0.1:${server.joinPort}`,
    store,
    identityStore,
    identities,
    leases,
    async stop() {
      stop.abort();
      await server.close();
      await store.close();
      await identityStore.close();
    },
  };
}

export interface SpawnedControlPlane {
  readonly address: string;
  /** pid of the running process (0 when stopped). */
  readonly pid: number;
  readonly logFile: string;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same address. */
  start(): Promise<void>;
  /** Stops it for good and removes its log dir. */
  destroy(): Promise<void>;
}

/** A control-plane replica as its own process (the built dist/), so a test can SIGKILL it. */
export async function spawnControlPlane(options: {
  etcd: readonly string[];
  root: string;
  port?: number;
  args?: readonly string[];
}): Promise<SpawnedControlPlane> {
  const port = options.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), "trellis-cp-"));
  const logFile = join(dir, "control-plane.log");
  let child: ChildProcess | undefined;
  const replica: SpawnedControlPlane = {
    address: `127.0.0.1:${port}`,
    logFile,
    get pid() {
      return child?.exitCode === null ? (child.pid ?? 0) : 0;
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((resolve) => c.once("exit", resolve));
      c.kill(signal);
      await exited;
    },
    async destroy() {
      await replica.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    },
    async start() {
      await writeFile(logFile, "");
      const fd = openSync(logFile, "a");
      child = spawn(
        process.execPath,
        [
          join(dist, "control-plane", "main.js"),
          "--etcd-endpoints",
          options.etcd.join(","),
          "--etcd-prefix",
          options.root,
          "--listen",
          `127.0.0.1:${port}`,
          "--insecure-plaintext",
          ...(options.args ?? []),
        ],
        { stdio: ["ignore", fd, fd] },
      );
      closeSync(fd);
      await waitForLog(logFile, "route feed started", 20_000);
    },
  };
  await replica.start();
  return replica;
}
