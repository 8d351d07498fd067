// Control-plane figures on this machine, against one Debian etcd on loopback and the built control
// plane as its own process: registrations per second, time from a node's registration (and its death)
// to its route reaching every simulated daemon, and the control plane's memory with many streams open.
// It measures and reports; it never fails on speed.
import { setMaxListeners } from "node:events";
import { readFile } from "node:fs/promises";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NodeService, RouteEventType } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { namespace, spawnControlPlane } from "../support/control-plane.js";
import { startEtcd } from "../support/etcd.js";

const watcherCount = Number(process.argv[2] ?? 1000);
const registrations = Number(process.argv[3] ?? 1000);
const ttlS = 2;

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;
const fmt = (ms: number) => `${ms.toFixed(0)} ms`;

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

async function main(): Promise<void> {
  const etcd = await startEtcd();
  const root = namespace();
  const cp = await spawnControlPlane({ etcd: [etcd.endpoint], root, args: ["--lease-ttl", String(ttlS), "--cluster-cidr", "10.0.0.0/8"] });
  const stop = new AbortController();
  setMaxListeners(0, stop.signal); // one listener per simulated daemon stream
  try {
    // Several HTTP/2 connections, as many daemons would open.
    const clients: Array<Client<typeof NodeService>> = Array.from({ length: 16 }, () =>
      createClient(NodeService, createGrpcTransport({ baseUrl: `http://${cp.address}` })),
    );
    const client = clients[0]!;

    // 1. Registrations per second (32 at a time, each a fresh node: one etcd transaction each).
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 32 }, async (_, w) => {
        for (let i = next++; i < registrations; i = next++) {
          await clients[w % clients.length]!.registerNode({ nodeName: `r-${i}`, nodeIp: `10.200.${i >> 8}.${i & 255}`, mtu: 1500 });
        }
      }),
    );
    const regSeconds = (performance.now() - t0) / 1000;
    process.stdout.write(
      `registrations: ${registrations} in ${regSeconds.toFixed(2)} s = ${(registrations / regSeconds).toFixed(0)}/s (32 concurrent, one etcd)\n`,
    );
    // Those nodes leave (graceful shutdown), so that only the probes below are live.
    next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async (_, w) => {
        for (let i = next++; i < registrations; i = next++) await clients[w % clients.length]!.deregisterNode({ nodeName: `r-${i}` });
      }),
    );
    // Probes heartbeat every 500 ms while they are in `alive`.
    const alive = new Set<string>();
    const lastBeat = new Map<string, number>();
    const beats = setInterval(() => {
      for (const name of alive) {
        void client.heartbeat({ nodeName: name }).then(
          () => lastBeat.set(name, performance.now()),
          () => undefined,
        );
      }
    }, 500);

    // 2. Many daemons streaming routes.
    const seen = new Map<string, number[]>(); // node -> arrival times, one per watcher
    const gone = new Map<string, number[]>();
    let ready = 0;
    for (let w = 0; w < watcherCount; w++) {
      void (async () => {
        let first = true;
        for await (const msg of clients[w % clients.length]!.watchRoutes(
          { nodeName: `w-${w}`, fromRevision: 0n },
          { signal: stop.signal },
        )) {
          if (first) {
            first = false;
            ready++;
          }
          const now = performance.now();
          for (const e of msg.events) {
            const name = e.route?.nodeName ?? "";
            const into = e.type === RouteEventType.UPSERT ? seen : gone;
            if (name.startsWith("probe-")) into.set(name, [...(into.get(name) ?? []), now]);
          }
        }
      })().catch(() => undefined);
    }
    while (ready < watcherCount) await new Promise((r) => setTimeout(r, 50));
    process.stdout.write(`route streams open: ${watcherCount}; control-plane RSS ${(await rssMiB(cp.pid)).toFixed(0)} MiB\n`);

    // 3. Join: registration -> route on every watcher.
    const joins: number[] = [];
    for (let i = 0; i < 20; i++) {
      const name = `probe-${i}`;
      const start = performance.now();
      await client.registerNode({ nodeName: name, nodeIp: `10.201.0.${i + 1}`, mtu: 1500 });
      alive.add(name);
      lastBeat.set(name, performance.now());
      while ((seen.get(name)?.length ?? 0) < watcherCount) await new Promise((r) => setTimeout(r, 2));
      joins.push(Math.max(...seen.get(name)!) - start);
    }
    process.stdout.write(
      `join -> route on all ${watcherCount} streams: p50 ${fmt(pct(joins, 0.5))}, p99 ${fmt(pct(joins, 0.99))}, max ${fmt(Math.max(...joins))} (20 joins)\n`,
    );

    // 4. Death: last heartbeat -> route withdrawn on every watcher (TTL ${ttlS} s; expiry rounds every 500 ms).
    const deaths: number[] = [];
    for (let i = 0; i < 3; i++) {
      const name = `probe-${i}`;
      alive.delete(name); // it stops heartbeating
      while ((gone.get(name)?.length ?? 0) < watcherCount) await new Promise((r) => setTimeout(r, 5));
      deaths.push(Math.max(...gone.get(name)!) - (lastBeat.get(name) ?? 0));
    }
    clearInterval(beats);
    process.stdout.write(
      `death (last heartbeat) -> route gone on all streams: ${deaths.map((d) => fmt(d)).join(", ")} with TTL ${ttlS} s\n`,
    );
    process.stdout.write(`control-plane RSS after: ${(await rssMiB(cp.pid)).toFixed(0)} MiB\n`);
  } finally {
    stop.abort();
    await cp.destroy();
    await etcd.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
