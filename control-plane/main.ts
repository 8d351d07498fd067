#!/usr/bin/env node
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { TrellisError } from "../proto/core/errors.js";
import { configOrReport } from "../proto/core/flags.js";
import { ClusterConfigRecordSchema } from "../proto/gen/trellis/store/v1/store_pb.js";
import { listenMetrics } from "../proto/rpc/metrics-http.js";
import { readPemFile } from "../proto/rpc/pem-file.js";
import { importPrivateKey } from "../proto/rpc/x509.js";
import { AllocationMirror } from "./allocations/allocation-mirror.js";
import { controlPlaneHelp, parseControlPlaneArgs } from "./config.js";
import { CertificateRegistry } from "./identity/certificate-registry.js";
import { NodeIdentities } from "./identity/node-identities.js";
import { ControlPlaneMetrics } from "./metrics.js";
import { ExpiryLoop, Liveness } from "./nodes/liveness.js";
import { Registrar } from "./nodes/registrar.js";
import { RouteFeed } from "./routes/route-feed.js";
import { startControlPlaneServer } from "./rpc/server.js";
import { openEtcdStores } from "./store/etcd-stores.js";
import { checkSameClusterConfig, createSubnetPool, freeSubnetCount } from "./subnets/subnet-pool.js";

async function main(): Promise<void> {
  const config = configOrReport("trellis-control-plane", process.argv.slice(2), parseControlPlaneArgs, controlPlaneHelp, process);
  if (!config) return;
  const log = pino({ name: "control-plane", level: config.logLevel });
  const metrics = config.metrics ? new ControlPlaneMetrics() : undefined;
  const etcdTls = config.etcdTls && {
    ca: await readPemFile(config.etcdTls.caFile, "--etcd-ca"),
    cert: await readPemFile(config.etcdTls.certFile, "--etcd-cert"),
    key: await readPemFile(config.etcdTls.keyFile, "--etcd-key"),
  };
  // One etcd client for every store port.
  const stores = openEtcdStores({ endpoints: config.etcdEndpoints, root: config.etcdPrefix, tls: etcdTls, metrics });
  const pool = createSubnetPool(config.clusterCidr, config.subnetPrefixLength);
  const stop = new AbortController();
  // Liveness is judged by this replica's own monotonic clock, never by times other machines wrote (DESIGN.md §2).
  const monotonic = () => performance.now();
  const feed = new RouteFeed({ nodes: stores.nodes, log });
  const holdsLive = (name: string) => feed.holdsLive(name);
  const liveness = new Liveness({
    ...stores,
    log,
    clock: Date.now,
    monotonicClock: monotonic,
    policy: config.policy,
    metrics,
    holdsLive,
    heartbeatLingerMs: 100,
  });
  const registrar = new Registrar({ ...stores, liveness, pool, log, clock: Date.now, rand: Math.random, metrics });
  metrics?.readGaugesFrom({
    nodes: () => liveness.view?.nodesByState,
    subnetsFree: () => {
      const view = liveness.view;
      return view && freeSubnetCount(pool, view.nodeRecords);
    },
    routeStreams: () => feed.streams,
    disruption: () => liveness.view?.disruption,
  });
  const mirror = new AllocationMirror({ ...stores, log });
  let ready = false;
  const tls = config.tls && {
    cert: await readPemFile(config.tls.certFile, "--tls-cert"),
    key: await readPemFile(config.tls.keyFile, "--tls-key"),
    ca: await readPemFile(config.tls.clientCaFile, "--client-ca"),
  };
  const ca = config.caKeyFile &&
    tls && { certificatePem: tls.ca, privateKey: await importPrivateKey(await readPemFile(config.caKeyFile, "--ca-key")) };
  const identities = new NodeIdentities({
    store: stores.identity,
    ca: ca || undefined,
    log,
    clock: Date.now,
    randomBytes: (n) => randomBytes(n),
    certificateLifetimeS: config.nodeCertificateLifetimeS,
  });
  const registry = new CertificateRegistry(stores.identity, Date.now);
  // Metrics before serving: a port in use stops the replica here, before it serves or changes anything.
  const metricsListener =
    metrics && config.metrics ? await listenMetrics(metrics.registry, config.metrics, "--metrics-address") : undefined;
  if (metricsListener) log.info({ address: metricsListener.url }, "serving metrics");
  const server = await startControlPlaneServer({
    identities,
    registry,
    joinPort: ca ? config.joinPort : undefined,
    registrar,
    liveness,
    feed,
    mirror,
    stores,
    pool,
    log,
    clusterCidr: config.clusterCidr,
    policy: config.policy,
    clock: Date.now,
    host: config.listenHost,
    port: config.listenPort,
    ready: () => ready,
    tls,
  });
  log.info(
    { address: `${config.listenHost}:${server.port}`, subnet: config.clusterCidr.toString() },
    tls ? "listening with mutual TLS" : "listening on loopback without TLS (--insecure-plaintext): it identifies nobody",
  );
  if (server.joinPort !== undefined) log.info({ address: `${config.listenHost}:${server.joinPort}` }, "serving JoinService (join tokens)");
  else log.info("not serving JoinService: nodes cannot join through this replica (it has no --ca-key)");
  let registryStarted = false;
  for (let attempt = 1, delay = 200; !stop.signal.aborted; attempt++, delay = Math.min(delay * 2, 5_000)) {
    try {
      checkSameClusterConfig(
        await stores.clusterConfig.ensureClusterConfig(
          create(ClusterConfigRecordSchema, { clusterCidr: pool.cluster.toString(), subnetPrefixLength: pool.prefixLength }),
        ),
        pool,
      );
      if (!registryStarted) await registry.start(stop.signal);
      registryStarted = true;
      await feed.start(stop.signal);
      ready = true;
      break;
    } catch (err) {
      if (err instanceof TrellisError && err.reason === "CONFLICT") throw err; // another cluster config: fatal
      log.warn({ err, attempt }, "etcd not reachable yet, retrying");
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  const expiry = new ExpiryLoop({ liveness, clock: monotonic, log });
  const sweepEveryMs = Math.max(500, Math.min(5_000, config.policy.ttlMs / 4));
  const sweeper = setInterval(() => void expiry.tick(), sweepEveryMs);
  const compaction =
    config.etcdHistory > 0
      ? setInterval(() => {
          stores.compactor
            .compact(config.etcdHistory)
            .then((to) => to !== undefined && log.info({ revision: String(to) }, "etcd history compacted"))
            .catch((err: unknown) => log.warn({ err }, "could not compact etcd's history"));
        }, 300_000)
      : undefined;
  const tokenSweeper = setInterval(() => {
    identities.sweepJoinTokens().catch((err: unknown) => log.warn({ err }, "could not delete expired join tokens"));
  }, 60_000);
  const shutdown = async (signal: string) => {
    clearInterval(sweeper);
    clearInterval(tokenSweeper);
    clearInterval(compaction);
    log.info(`shutting down on ${signal}`);
    stop.abort();
    await server.close();
    await metricsListener?.close();
    stores.close();
    process.exit(0);
  };
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));
}

main().catch((err) => {
  const message = err instanceof TrellisError ? err.message : String(err);
  process.stderr.write(`trellis-control-plane: ${message}\n`);
  process.exit(1);
});
