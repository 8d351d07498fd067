#!/usr/bin/env node
// The node daemon's entry: flags, the real implementations (STYLE.md §1: only main.ts builds them), signals.
import { existsSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { type Logger, pino } from "pino";
import { TrellisError } from "../proto/core/errors.js";
import { configOrReport, parseHostPort } from "../proto/core/flags.js";
import { readPemFile } from "../proto/rpc/pem-file.js";
import { writeConflist } from "./cni/conflist.js";
import { FilePendingDeletes } from "./cni/pending-deletes.js";
import { type DaemonConfig, daemonHelp, parseDaemonArgs } from "./config.js";
import { ControlClient } from "./control/control-client.js";
import { CredentialKeeper } from "./control/credential-keeper.js";
import type { NodeCredential } from "./control/node-credential.js";
import { NodeDaemon } from "./daemon.js";
import { FileAllocationJournal } from "./ipam/allocation-journal.js";
import { NetlinkPool } from "./net/netlink-pool.js";
import { RtNetlink } from "./net/rtnetlink.js";
import { createControlPlaneApi, createJoinApi } from "./rpc/control-plane-client.js";
import { startDaemonServer } from "./rpc/server.js";

// Asynchronous log writes: a synchronous write per line cost ~0.5 ms of the event loop per pod call.
// Flushed before every exit.
const destination = pino.destination({ dest: 1, sync: false });

const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);

async function main(): Promise<void> {
  const config = configOrReport("trellis-node-daemon", process.argv.slice(2), parseDaemonArgs, daemonHelp, process);
  if (!config) return;
  const log = pino({ name: "node-daemon", level: config.logLevel }, destination).child({ node: config.nodeName });
  const running = new AbortController();
  const caPem = config.tls && (await readPemFile(config.tls.caFile, "--ca-cert"));
  const keeper = config.tls && caPem ? credentialKeeper(config, config.tls, caPem, log) : undefined;
  const replicasWith = (credential?: NodeCredential) =>
    config.controlPlanes.map((address) =>
      createControlPlaneApi(
        address,
        caPem && credential ? { ca: caPem, cert: credential.certificatePem, key: credential.keyPem } : undefined,
      ),
    );
  const credential = await keeper?.obtain(running.signal);
  const control = new ControlClient({
    replicas: replicasWith(credential),
    log,
    nodeName: config.nodeName,
    nodeIp: config.nodeIp,
    mtu: config.mtu,
    sleep,
  });
  const daemon = new NodeDaemon({
    config,
    log,
    net: new RtNetlink(new NetlinkPool()),
    journal: new FileAllocationJournal(config.stateDir),
    pendingDeletes: new FilePendingDeletes(config.socketPath),
    control,
    // A stat of a netns path (tmpfs or procfs): cheaper in place than a thread-pool round trip.
    pathExists: async (p) => existsSync(p),
    sleep,
    serve: startDaemonServer,
    writeConflist,
  });
  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info(`shutting down on ${signal}`);
    running.abort();
    await daemon.stop();
    destination.flushSync();
    process.exit(0);
  };
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));
  await daemon.start();
  keeper
    ?.renewLoop(
      (csr) => control.renewCertificate(csr),
      (renewed) => control.useReplicas(replicasWith(renewed)),
      running.signal,
    )
    .catch((err: unknown) => log.error({ err }, "certificate renewal stopped"));
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
  });
}

main().catch((err) => {
  const message = err instanceof TrellisError ? err.message : String(err);
  destination.flushSync();
  process.stderr.write(`trellis-node-daemon: ${message}\n`);
  process.exit(1);
});
