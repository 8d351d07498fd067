#!/usr/bin/env node
import { randomUUID } from "node:crypto";
// The node daemon's entry: flags, the real implementations (STYLE.md §1: only main.ts builds them), signals.
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { type Logger, pino } from "pino";
import { TrellisError } from "../proto/core/errors.js";
import { configOrReport, parseHostPort } from "../proto/core/flags.js";
import { listenMetrics } from "../proto/rpc/metrics-http.js";
import { readPemFile } from "../proto/rpc/pem-file.js";
import { writeConflist } from "./cni/conflist.js";
import { FilePendingDeletes } from "./cni/pending-deletes.js";
import { type DaemonConfig, daemonCommand, daemonHelp, parseDaemonArgs } from "./config.js";
import { ControlClient } from "./control/control-client.js";
import { CredentialKeeper } from "./control/credential-keeper.js";
import { keyAndRequestInWorker } from "./control/csr-worker.js";
import type { NodeCredential } from "./control/node-credential.js";
import { leaveCluster, NodeDaemon } from "./daemon.js";
import { FileAllocationJournal } from "./ipam/allocation-journal.js";
import { NetlinkPool } from "./net/netlink-pool.js";
import { NftMasquerade } from "./net/nft-masquerade.js";
import { RtNetlink } from "./net/rtnetlink.js";
import { createControlPlaneApi, createJoinApi } from "./rpc/control-plane-client.js";
import { startDaemonServer } from "./rpc/server.js";

// Asynchronous log writes: a synchronous write per line cost ~0.5 ms of the event loop per pod call.
// Flushed before every exit.
const destination = pino.destination({ dest: 1, sync: false });

const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);

async function main(): Promise<void> {
  const { command, flags } = daemonCommand(process.argv.slice(2));
  const config = configOrReport("trellis-node-daemon", flags, parseDaemonArgs, daemonHelp, process);
  if (!config) return;
  const log = pino({ name: "node-daemon", level: config.logLevel }, destination).child({ node: config.nodeName });
  const running = new AbortController();
  const caPem = config.tls && (await readPemFile(config.tls.caFile, "--ca-cert"));
  const keeper = config.tls && caPem ? credentialKeeper(config, config.tls, caPem, log) : undefined;
  const net = new RtNetlink(new NetlinkPool());
  if (command === "leave") {
    await leave(config, caPem, log, net);
    destination.flushSync();
    process.exit(0);
  }
  // The pod MTU follows the uplink unless --mtu says otherwise; no uplink: a start-up error, before registering.
  const podMtu = config.mtu ?? (await net.findUplink(config.nodeIp)).mtu;
  log.info(`pod MTU ${podMtu} (${config.mtu === undefined ? "the uplink's" : "--mtu"})`);
  // A node without a usable nft says so now, before it joins or registers: it does not half-start.
  const masquerade = new NftMasquerade();
  if (config.masquerade) await masquerade.check();
  // Metrics too: a port in use stops the daemon here, before it joins, registers or serves the shim.
  // prom-client is loaded only when metrics are on (~3.5 MiB of RSS with the default process metrics).
  const metrics = config.metrics ? new (await import("./metrics.js")).DaemonMetrics() : undefined;
  const metricsListener =
    metrics && config.metrics ? await listenMetrics(metrics.registry, config.metrics, "--metrics-address") : undefined;
  if (metricsListener) log.info({ address: metricsListener.url }, "serving metrics");
  const credential = await keeper?.obtain(running.signal);
  const control = new ControlClient({
    replicas: replicasOf(config, caPem, credential),
    log,
    nodeName: config.nodeName,
    nodeIp: config.nodeIp,
    mtu: podMtu,
    instance: randomUUID(),
    sleep,
  });
  const daemon = new NodeDaemon({
    config,
    log,
    net,
    podMtu,
    masquerade,
    journal: new FileAllocationJournal(config.stateDir),
    pendingDeletes: new FilePendingDeletes(config.socketPath),
    control,
    // A stat of a netns path (tmpfs or procfs): cheaper in place than a thread-pool round trip.
    pathExists: async (p) => existsSync(p),
    sleep,
    serve: startDaemonServer,
    writeConflist,
    metrics,
  });
  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info(`stopping on ${signal}; the node's route stays (leaving is trellis-node-daemon leave, or AdminService.DrainNode)`);
    running.abort();
    await daemon.stop();
    await metricsListener?.close();
    destination.flushSync();
    process.exit(0);
  };
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));
  await daemon.start();
  keeper
    ?.renewLoop(
      (csr) => control.renewCertificate(csr),
      (renewed) => control.useReplicas(replicasOf(config, caPem, renewed)),
      running.signal,
    )
    .catch((err: unknown) => log.error({ err }, "certificate renewal stopped"));
}

/**
 * `trellis-node-daemon leave`: withdraws the node's route, removes its routes and nftables table, with the
 * node's own certificate (never a join: a node without one has nothing to leave, or an admin drains it).
 */
async function leave(config: DaemonConfig, caPem: string | undefined, log: Logger, net: RtNetlink): Promise<void> {
  let credential: NodeCredential | undefined;
  if (config.tls && caPem) {
    const keeper = credentialKeeper(config, { ...config.tls, joinTokenFile: undefined }, caPem, log);
    credential = await keeper.obtain(new AbortController().signal).catch((err: unknown) => {
      const why = err instanceof Error ? err.message : String(err);
      throw new TrellisError(
        "UNAUTHENTICATED",
        `cannot leave without this node's certificate (${why}); an admin can withdraw the node's route instead (AdminService.DrainNode)`,
      );
    });
  }
  const control = new ControlClient({
    replicas: replicasOf(config, caPem, credential),
    log,
    nodeName: config.nodeName,
    nodeIp: config.nodeIp,
    mtu: config.mtu ?? 1500,
    sleep,
  });
  const { routesRemoved } = await leaveCluster({ config, log, net, control, masquerade: new NftMasquerade(), serving: answers });
  log.info(`left the cluster; removed ${routesRemoved} routes to other nodes`);
}

/** A client of each control-plane replica, calling with the node's certificate when it has one. */
function replicasOf(config: DaemonConfig, caPem: string | undefined, credential: NodeCredential | undefined) {
  return config.controlPlanes.map((address) =>
    createControlPlaneApi(
      address,
      caPem && credential ? { ca: caPem, cert: credential.certificatePem, key: credential.keyPem } : undefined,
    ),
  );
}

/** Whether something accepts connections on the unix socket at `path` (a running daemon). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** The node's credential: from --credential, or by joining with --join-token-file (via each replica's join port). */
function credentialKeeper(config: DaemonConfig, tls: NonNullable<DaemonConfig["tls"]>, caPem: string, log: Logger): CredentialKeeper {
  const joinVia = config.controlPlanes.map((address) => {
    const join = createJoinApi(`${parseHostPort(address, "--control-plane").host}:${tls.joinPort}`, caPem);
    return (token: string, csrPem: string, signal: AbortSignal) => join(token, config.nodeName, csrPem, signal);
  });
  const tokenFile = tls.joinTokenFile;
  return new CredentialKeeper({
    nodeName: config.nodeName,
    path: tls.credentialFile,
    readJoinToken: tokenFile ? async () => (await readPemFile(tokenFile, "--join-token-file")).trim() : undefined,
    joinVia,
    log,
    clock: Date.now,
    rand: Math.random,
    sleep,
    keyAndRequest: keyAndRequestInWorker,
  });
}

main().catch((err) => {
  const message = err instanceof TrellisError ? err.message : String(err);
  destination.flushSync();
  process.stderr.write(`trellis-node-daemon: ${message}\n`);
  process.exit(1);
});
