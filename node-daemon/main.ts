#!/usr/bin/env node
// The node daemon's entry: flags, the real implementations (STYLE.md §1: only main.ts builds them), signals.
import { existsSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { pino } from "pino";
import { TrellisError } from "../proto/core/errors.js";
import { configOrReport } from "../proto/core/flags.js";
import { readPemFile } from "../proto/rpc/pem-file.js";
import { writeConflist } from "./cni/conflist.js";
import { FilePendingDeletes } from "./cni/pending-deletes.js";
import { daemonHelp, parseDaemonArgs } from "./config.js";
import { ControlClient } from "./control/control-client.js";
import { NodeDaemon } from "./daemon.js";
import { FileAllocationJournal } from "./ipam/allocation-journal.js";
import { NetlinkPool } from "./net/netlink-pool.js";
import { RtNetlink } from "./net/rtnetlink.js";
import { createControlPlaneApi } from "./rpc/control-plane-client.js";
import { startDaemonServer } from "./rpc/server.js";

// Asynchronous log writes: a synchronous write per line cost ~0.5 ms of the event loop per pod call.
// Flushed before every exit.
const destination = pino.destination({ dest: 1, sync: false });

const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);

async function main(): Promise<void> {
  const config = configOrReport("trellis-node-daemon", process.argv.slice(2), parseDaemonArgs, daemonHelp, process);
  if (!config) return;
  const log = pino({ name: "node-daemon", level: config.logLevel }, destination).child({ node: config.nodeName });
  const tls = config.tls && {
    ca: await readPemFile(config.tls.caFile, "--ca-cert"),
    cert: await readPemFile(config.tls.certFile, "--cert"),
    key: await readPemFile(config.tls.keyFile, "--key"),
  };
  const daemon = new NodeDaemon({
    config,
    log,
    net: new RtNetlink(new NetlinkPool()),
    journal: new FileAllocationJournal(config.stateDir),
    pendingDeletes: new FilePendingDeletes(config.socketPath),
    control: new ControlClient({
      replicas: config.controlPlanes.map((address) => createControlPlaneApi(address, tls)),
      log,
      nodeName: config.nodeName,
      nodeIp: config.nodeIp,
      mtu: config.mtu,
      router: config.router,
      sleep,
    }),
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
    await daemon.stop();
    destination.flushSync();
    process.exit(0);
  };
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));
  await daemon.start();
}

main().catch((err) => {
  const message = err instanceof TrellisError ? err.message : String(err);
  destination.flushSync();
  process.stderr.write(`trellis-node-daemon: ${message}\n`);
  process.exit(1);
});
