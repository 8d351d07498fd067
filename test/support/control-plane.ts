import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createClient, type Transport } from "@connectrpc/connect";
import { type Logger, pino } from "pino";
import { AllocationMirror } from "../../control-plane/allocations/allocation-mirror.js";
import { CertificateRegistry } from "../../control-plane/identity/certificate-registry.js";
import { NodeIdentities } from "../../control-plane/identity/node-identities.js";
import type { ExpiryPolicy } from "../../control-plane/nodes/expiry-plan.js";
import { Liveness } from "../../control-plane/nodes/liveness.js";
import { Registrar } from "../../control-plane/nodes/registrar.js";
import { RouteFeed } from "../../control-plane/routes/route-feed.js";
import { type ControlPlaneServer, startControlPlaneServer } from "../../control-plane/rpc/server.js";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import type { Stores } from "../../control-plane/store/stores.js";
import { createSubnetPool, type SubnetPool } from "../../control-plane/subnets/subnet-pool.js";
import { createJoinApi } from "../../node-daemon/rpc/control-plane-client.js";
import { Cidr } from "../../proto/core/cidr.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import type { TlsMaterial } from "../../proto/rpc/listen.js";
import { type CertificateAuthority, createCertificateRequest, generateKeyPair } from "../../proto/rpc/x509.js";
import { freePort, type PemPair } from "./etcd.js";
import { dist } from "./lab.js";
import { type Credential, createTestPki, mtlsTransport, type TestPki } from "./pki.js";
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

/**
 * Node credentials by node name, for replicas sharing one etcd root (and CA): a node joined through one
 * replica uses the same credential with all of them, as a daemon does. Pass one map to each replica.
 */
export type JoinedNodes = Map<string, Promise<Credential>>;

/** How a test calls a control plane: over mutual TLS, as an admin, a viewer or one node. */
export interface ControlPlaneClients {
  readonly address: string;
  /** The join listener's address (JoinService, server-only TLS), when it serves one. */
  readonly joinAddress?: string;
  /** The cluster CA certificate that callers check the control plane against. */
  readonly caPem: string;
  /** The PKI it runs with; undefined for an in-process replica given explicit `tls` and no `pki`. */
  readonly pki?: TestPki;
  /** A transport presenting `who`'s certificate (none: no client certificate); one per credential. */
  transport(who?: Credential): Transport;
  adminTransport(): Transport;
  viewerTransport(): Transport;
  /**
   * `name`'s own credential, got as a daemon gets it: a join token (made by an admin), then a certificate
   * for a CSR of a new key. Joined on first use, then the same one (shared through `joined`).
   */
  nodeCredential(name: string): Promise<Credential>;
  /** A transport presenting `name`'s own credential; joins on its first call (see nodeCredential). */
  nodeTransport(name: string): Transport;
  /** buf curl's --cacert, --cert and --key (the admin's certificate unless `who`). */
  bufCurlFlags(who?: PemPair): string[];
}

/** A transport that resolves the real one on its first call (e.g. once the node has joined). */
function lazyTransport(resolve: () => Promise<Transport>): Transport {
  return {
    async unary(method, signal, timeoutMs, header, input, contextValues) {
      return (await resolve()).unary(method, signal, timeoutMs, header, input, contextValues);
    },
    async stream(method, signal, timeoutMs, header, input, contextValues) {
      return (await resolve()).stream(method, signal, timeoutMs, header, input, contextValues);
    },
  };
}

/** A node's new key and a certificate request for it, as a daemon makes them before joining. */
async function nodeKeyAndRequest(name: string): Promise<{ key: string; csr: string }> {
  const keys = await generateKeyPair();
  return { key: keys.privateKeyPem, csr: await createCertificateRequest(keys, { kind: "node", name }) };
}

/** A node joins straight through `identities` (what JoinService does, without its RPC): a new key, a token, its certificate. */
async function joinThrough(identities: NodeIdentities, name: string): Promise<Credential> {
  const { key, csr } = await nodeKeyAndRequest(name);
  const { token } = await identities.createJoinToken(name, 0n, "test");
  return { cert: await identities.join(token, name, csr), key };
}

export interface NodeJoiner {
  join(name: string): Promise<Credential>;
  close(): Promise<void>;
}

/**
 * Joins nodes through the control plane's own NodeIdentities over `etcd` with the cluster CA's key: the
 * token and the allow-list entry are written exactly as a replica's JoinService writes them, minus two
 * round trips per node (for tests that join hundreds of nodes to spawned replicas).
 */
export function createNodeJoiner(options: { etcd: readonly string[]; root: string; pki: TestPki }): NodeJoiner {
  const stores = openEtcdStores({ endpoints: [...options.etcd], root: options.root });
  const identities = new NodeIdentities({
    store: stores.identity,
    ca: options.pki.ca,
    log: pino({ level: "silent" }),
    clock: Date.now,
    randomBytes: (n) => randomBytes(n),
    certificateLifetimeS: 7 * 86_400,
  });
  return { join: (name) => joinThrough(identities, name), close: async () => stores.close() };
}

function makeClients(at: {
  address: string;
  joinAddress?: string;
  caPem: string;
  pki?: TestPki;
  joined: JoinedNodes;
  join: (name: string) => Promise<Credential>;
}): ControlPlaneClients {
  const transports = new Map<Credential | undefined, Transport>();
  const nodeTransports = new Map<string, Transport>();
  const needPki = (): TestPki => {
    if (!at.pki) throw new Error("this control plane was started with explicit tls and no pki: it has no admin or viewer credential");
    return at.pki;
  };
  const clients: ControlPlaneClients = {
    address: at.address,
    joinAddress: at.joinAddress,
    caPem: at.caPem,
    pki: at.pki,
    transport(who) {
      let t = transports.get(who);
      if (!t) {
        t = mtlsTransport(at.address, at.caPem, who);
        transports.set(who, t);
      }
      return t;
    },
    adminTransport: () => clients.transport(needPki().admin),
    viewerTransport: () => clients.transport(needPki().viewer),
    nodeCredential(name) {
      let joined = at.joined.get(name);
      if (!joined) {
        joined = at.join(name).catch((err: unknown) => {
          at.joined.delete(name); // not cached: the next call tries again (perhaps through another replica)
          throw new Error(`test setup: node ${name} could not join through ${at.address}: ${String(err)}`, { cause: err });
        });
        at.joined.set(name, joined);
      }
      return joined;
    },
    nodeTransport(name) {
      let t = nodeTransports.get(name);
      if (!t) {
        t = lazyTransport(async () => clients.transport(await clients.nodeCredential(name)));
        nodeTransports.set(name, t);
      }
      return t;
    },
    bufCurlFlags: (who) => needPki().bufCurlFlags(who),
  };
  return clients;
}

export interface InProcessControlPlane extends ControlPlaneClients {
  readonly stores: EtcdStores;
  readonly identities: NodeIdentities;
  readonly registrar: Registrar;
  readonly liveness: Liveness;
  stop(): Promise<void>;
}

const defaultPolicy: ExpiryPolicy = { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33 };

/**
 * One control-plane replica composed like main.ts, on 127.0.0.1 with a free (or given) port, serving
 * mutual TLS as production does: with `pki`'s CA (a new throwaway one, removed on stop, when not given),
 * signing node certificates (Join on a free port), or with explicit `tls` (and `ca` to sign).
 */
export async function startInProcessControlPlane(options: {
  etcd: string;
  root: string;
  clusterCidr?: string;
  subnetSize?: number;
  port?: number;
  log?: Logger;
  policy?: ExpiryPolicy;
  clock?: () => number;
  /**
   * The clock of join tokens, node certificates and their allow-list (default: `clock`). TLS checks
   * certificates against the real time, so a test that moves `clock` far from it gives Date.now here.
   */
  identityClock?: () => number;
  /** The cluster PKI; replicas of one cluster share it. Ignored for the serving side when `tls` is given. */
  pki?: TestPki;
  /** Node credentials shared with the other replicas of the same etcd root. */
  joined?: JoinedNodes;
  tls?: TlsMaterial;
  /** The CA with its key: the replica signs node certificates (Join on a free port, renewals). Default: `pki`'s, without `tls`. */
  ca?: CertificateAuthority;
  nodeCertificateLifetimeS?: number;
}): Promise<InProcessControlPlane> {
  const ownPki = !options.tls && !options.pki ? await createTestPki() : undefined;
  const pki = options.pki ?? ownPki;
  const tls = options.tls ?? pki?.serverTls;
  const ca = options.ca ?? (options.tls ? undefined : pki?.ca);
  const log = options.log ?? pino({ level: "silent" });
  const stores = openEtcdStores({ endpoints: [options.etcd], root: options.root });
  const clusterCidr = Cidr.parse(options.clusterCidr ?? "10.244.0.0/16");
  const pool = createSubnetPool(clusterCidr, options.subnetSize ?? 24);
  const stop = new AbortController();
  const clock = options.clock ?? Date.now;
  const identityClock = options.identityClock ?? clock;
  const feed = new RouteFeed({ nodes: stores.nodes, log });
  const { registrar, liveness } = replicaServices(stores, {
    pool,
    log,
    clock,
    policy: options.policy,
    holdsLive: (n) => feed.holdsLive(n),
  });
  const mirror = new AllocationMirror({ ...stores, log });
  const identities = new NodeIdentities({
    store: stores.identity,
    ca,
    log,
    clock: identityClock,
    randomBytes: (n) => randomBytes(n),
    certificateLifetimeS: options.nodeCertificateLifetimeS ?? 7 * 86_400,
  });
  const registry = new CertificateRegistry(stores.identity, identityClock);
  await registry.start(stop.signal);
  await feed.start(stop.signal);
  const server: ControlPlaneServer = await startControlPlaneServer({
    identities,
    registry,
    joinPort: ca ? 0 : undefined,
    registrar,
    liveness,
    feed,
    mirror,
    stores,
    pool,
    log,
    clusterCidr,
    clock,
    policy: options.policy ?? defaultPolicy,
    host: "127.0.0.1",
    port: options.port ?? 0,
    ready: () => true,
    tls,
  });
  const clients = makeClients({
    address: `127.0.0.1:${server.port}`,
    joinAddress: server.joinPort === undefined ? undefined : `127.0.0.1:${server.joinPort}`,
    caPem: tls?.ca ?? "",
    pki,
    joined: options.joined ?? new Map(),
    join: (name) => joinThrough(identities, name),
  });
  return {
    ...clients,
    stores,
    identities,
    registrar,
    liveness,
    async stop() {
      stop.abort();
      await server.close();
      stores.close();
      await ownPki?.destroy();
    },
  };
}

export interface SpawnedControlPlane extends ControlPlaneClients {
  readonly pki: TestPki;
  /** pid of the running process (0 when stopped). */
  readonly pid: number;
  readonly logFile: string;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same addresses. */
  start(): Promise<void>;
  /** Stops it for good and removes its log dir (and its PKI, when it made its own). */
  destroy(): Promise<void>;
}

/**
 * A control-plane replica as its own process (the built dist/), so a test can SIGKILL it. It serves
 * mutual TLS with `pki` (a new one when not given) and holds the CA key (--ca-key): it signs node
 * certificates and serves JoinService on its own free port.
 */
export async function spawnControlPlane(options: {
  etcd: readonly string[];
  root: string;
  port?: number;
  /** The cluster PKI; replicas of one cluster share it. */
  pki?: TestPki;
  /** Node credentials shared with the other replicas of the same etcd root. */
  joined?: JoinedNodes;
  /** How nodeCredential joins a node (default: an admin's join token, then this replica's join port). */
  join?: (name: string) => Promise<Credential>;
  args?: readonly string[];
  /** Options for node itself, before the script (V8 settings). */
  nodeOptions?: readonly string[];
}): Promise<SpawnedControlPlane> {
  const port = options.port ?? (await freePort());
  const joinPort = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "trellis-cp-"));
  const ownPki = options.pki ? undefined : await createTestPki();
  const pki = options.pki ?? (ownPki as TestPki);
  const logFile = join(dir, "control-plane.log");
  const joinAddress = `127.0.0.1:${joinPort}`;
  let child: ChildProcess | undefined;
  let joinApi: ReturnType<typeof createJoinApi> | undefined;
  const clients: ControlPlaneClients = makeClients({
    address: `127.0.0.1:${port}`,
    joinAddress,
    caPem: pki.caPem,
    pki,
    joined: options.joined ?? new Map(),
    // As a daemon joins: an admin makes a token (AdminService), the node sends it with its CSR to the join port.
    join:
      options.join ??
      (async (name) => {
        const { key, csr } = await nodeKeyAndRequest(name);
        const { token } = await createClient(AdminService, clients.adminTransport()).createJoinToken({ nodeName: name });
        joinApi ??= createJoinApi(joinAddress, pki.caPem);
        return { cert: await joinApi(token, name, csr, new AbortController().signal), key };
      }),
  });
  const replica: SpawnedControlPlane = {
    ...clients,
    pki,
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
      await ownPki?.destroy();
    },
    async start() {
      await writeFile(logFile, "");
      const fd = openSync(logFile, "a");
      child = spawn(
        process.execPath,
        [
          ...(options.nodeOptions ?? []),
          join(dist, "control-plane", "main.js"),
          ...["--etcd-endpoints", options.etcd.join(","), "--etcd-prefix", options.root, "--listen", `127.0.0.1:${port}`],
          ...["--tls-cert", pki.server.certFile, "--tls-key", pki.server.keyFile, "--client-ca", pki.caFile],
          ...["--ca-key", pki.caKeyFile, "--join-port", String(joinPort)],
          // Replicas share this host's loopback: each its own metrics port.
          ...["--metrics-address", "127.0.0.1:0"],
          ...(options.args ?? []),
        ],
        { stdio: ["ignore", fd, fd] },
      );
      closeSync(fd);
      await waitForLog(logFile, "route feed started", 20_000);
    },
  };
  try {
    await replica.start();
  } catch (err) {
    await replica.destroy();
    throw err;
  }
  return replica;
}

/** One replica's domain services over `stores`, composed as main.ts composes them; `clock` is wall and monotonic alike. */
export function replicaServices(
  stores: Stores,
  options: {
    pool?: SubnetPool;
    log?: Logger;
    clock?: () => number;
    rand?: () => number;
    policy?: ExpiryPolicy;
    subnetUseMaxAgeMs?: number;
    holdsLive?: (name: string) => boolean;
  } = {},
): { registrar: Registrar; liveness: Liveness } {
  const log = options.log ?? pino({ level: "silent" });
  const clock = options.clock ?? Date.now;
  const liveness = new Liveness({ ...stores, log, clock, policy: options.policy ?? defaultPolicy, holdsLive: options.holdsLive });
  const pool = options.pool ?? createSubnetPool(Cidr.parse("10.244.0.0/16"), 24);
  const rand = options.rand ?? Math.random;
  return {
    liveness,
    registrar: new Registrar({ ...stores, liveness, pool, log, clock, rand, subnetUseMaxAgeMs: options.subnetUseMaxAgeMs }),
  };
}
