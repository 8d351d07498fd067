#!/usr/bin/env node
import { access } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { Cidr } from "../proto/common/cidr.js";
import { TrellisError } from "../proto/common/errors.js";
import { configOrExit } from "../proto/common/flags.js";
import { RouteSchema } from "../proto/gen/trellis/controlplane/v1/node_pb.js";
import { AttachmentService } from "./cni/attachment-service.js";
import { writeConflist } from "./cni/conflist.js";
import { FilePendingDeletes } from "./cni/pending-deletes.js";
import { conflistFor } from "./cni/plan.js";
import { daemonHelp, parseDaemonArgs } from "./config.js";
import { ControlClient } from "./control/control-client.js";
import { FileAllocationJournal } from "./ipam/allocation-journal.js";
import { NetlinkPool } from "./net/netlink-pool.js";
import { RtNetlink } from "./net/rtnetlink.js";
import { RouteSync } from "./routes/route-sync.js";
import { createControlPlaneApi } from "./rpc/control-plane-client.js";
import { type DaemonServer, startDaemonServer } from "./rpc/server.js";

const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);

async function main(): Promise<void> {
  const config = configOrExit("trellis-node-daemon", parseDaemonArgs, daemonHelp);
  if (!config) return;
  const log = pino({ name: "node-daemon", level: config.logLevel }).child({ node: config.nodeName });
  const stop = new AbortController();
  const net = new RtNetlink(new NetlinkPool());
  const control = new ControlClient({
    replicas: config.controlPlanes.map(createControlPlaneApi),
    log,
    nodeName: config.nodeName,
    nodeIp: config.nodeIp,
    mtu: config.mtu,
    router: config.router,
    sleep,
  });
  let shuttingDown = false;
  let server: DaemonServer | undefined;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info(`shutting down on ${signal}`);
    stop.abort();
    await server?.close();
    await control.deregister().catch((err: unknown) => log.warn({ err }, "could not withdraw the node's route"));
    process.exit(0);
  };
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));

  const registration = await control.register(stop.signal);
  let current = Cidr.parse(registration.subnet, "leased subnet"); // changes if the node re-registers after losing its lease
  const cni = new AttachmentService({
    net,
    journal: new FileAllocationJournal(config.stateDir),
    log,
    clock: Date.now,
    pathExists: (p) =>
      access(p).then(
        () => true,
        () => false,
      ),
    mirror: control,
    pendingDeletes: new FilePendingDeletes(config.socketPath),
  });
  await cni.start({ subnet: current, bridgeName: config.bridge, mtu: config.mtu });
  server = await startDaemonServer({
    cni,
    log,
    socketPath: config.socketPath,
    status: () => {
      const stranded = cni.strandedAllocations.length;
      if (stranded > 0) {
        return {
          subnet: current.toString(),
          routesCurrent: false,
          detail: `${stranded} pods still have addresses of this node's previous subnet; recreate them`,
        };
      }
      return { subnet: current.toString(), routesCurrent: control.routesCurrent.current, detail: control.routesCurrent.detail };
    },
  });
  if (config.cniConfDir) {
    // Only now: a runtime that finds the conflist can use it at once (DESIGN.md §4, installation).
    const path = await writeConflist(config.cniConfDir, config.cniConfName, conflistFor(config.socketPath));
    log.info({ key: path }, "CNI conflist written");
  }

  const routes = new RouteSync({ net, log, nodeName: config.nodeName, clusterCidr: registration.clusterCidr });
  const onRegistered = async (res: { subnet: string }) => {
    const next = Cidr.parse(res.subnet, "leased subnet");
    if (next.equals(current)) return;
    log.error(
      { subnet: next.toString() },
      `SUBNET CHANGED from ${current.toString()} to ${next.toString()}: this node lost its lease while cut off and it was handed on; new pods get ${next.toString()}, pods still on ${current.toString()} must be recreated (STATUS answers 51 until they are)`,
    );
    current = next;
    await cni.moveTo({ subnet: next, bridgeName: config.bridge, mtu: config.mtu });
  };
  const keepGoing = (what: string) => (err: unknown) => log.error({ err }, `${what} stopped`);
  control.heartbeatLoop(config.heartbeatIntervalMs, stop.signal, onRegistered).catch(keepGoing("heartbeat loop"));
  control
    .watchRoutes(async (set, revision) => {
      try {
        const held = await routes.setRoutes(set.values());
        const report = held.map((r) => create(RouteSchema, { nodeName: r.nodeName, subnet: r.dst, nodeIp: r.via }));
        control.reportRoutes(revision, report).catch((err: unknown) => log.debug({ err }, "could not report applied routes"));
      } catch (err) {
        log.error({ err, revision: String(revision) }, "route sync failed");
      }
    }, stop.signal)
    .catch(keepGoing("route stream"));
  (async () => {
    while (!stop.signal.aborted) {
      await sleep(config.routeResyncIntervalMs, stop.signal);
      if (stop.signal.aborted) break;
      await routes.reconcile().catch((err: unknown) => log.error({ err }, "route resync failed"));
      await cni.completePendingDeletes().catch((err: unknown) => log.error({ err }, "pending deletes failed"));
      await cni.syncMirror();
    }
  })().catch(keepGoing("route resync"));
}

main().catch((err) => {
  const message = err instanceof TrellisError ? err.message : String(err);
  process.stderr.write(`trellis-node-daemon: ${message}\n`);
  process.exit(1);
});
