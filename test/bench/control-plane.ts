// Control-plane figures on this machine, against one Debian etcd on loopback and the built control
// plane as its own process, serving mutual TLS as in production: joins per second, registrations per
// second, time from a node's registration (and its death) to its route reaching every simulated daemon,
// and the control plane's memory with many streams open. Each simulated daemon joins once (a join token,
// then a certificate for its own key) and calls over its own connection with its own certificate, as a
// node does. It measures and reports; it never fails on speed.
import { setMaxListeners } from "node:events";
import { readFile } from "node:fs/promises";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { NodeService, RouteEventType } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { namespace, type SpawnedControlPlane, spawnControlPlane } from "../support/control-plane.js";
import { startEtcd } from "../support/etcd.js";
import { underlayIp } from "../support/sim-node.js";

const usage = `Usage: node dist/test/bench/control-plane.js [STREAMS [REGISTRATIONS]]

  STREAMS         simulated daemons streaming routes (default 1000)
  REGISTRATIONS   fresh nodes registering, 32 at a time (default 1000)
`;
if (process.argv.includes("--help") || process.argv.includes("-h")) {
  process.stdout.write(usage);
  process.exit(0);
}
function countArg(i: number, fallback: number): number {
  const text = process.argv[i];
  const n = Number(text ?? fallback);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`not a positive count: ${text}\n${usage}`);
    process.exit(2);
  }
  return n;
}
const watcherCount = countArg(2, 1000);
const registrations = countArg(3, 1000);
const ttlS = 2;

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;
const fmt = (ms: number) => `${ms.toFixed(0)} ms`;

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** Runs `fn(i)` for i in [0, count), `width` at a time. */
async function pool(count: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < count; i = next++) await fn(i);
    }),
  );
}

/** A simulated daemon's own connection, with its own certificate; `close()` ends the connection. */
async function daemonConnection(cp: SpawnedControlPlane, name: string) {
  const credential = await cp.nodeCredential(name);
  const baseUrl = `https://${cp.address}`;
  const session = new Http2SessionManager(baseUrl, undefined, { ca: cp.caPem, cert: credential.cert, key: credential.key });
  return {
    client: createClient(NodeService, createGrpcTransport({ baseUrl, sessionManager: session })),
    close: () => session.abort(),
  };
}

async function main(): Promise<void> {
  const etcd = await startEtcd();
  const root = namespace();
  const cp = await spawnControlPlane({ etcd: [etcd.endpoint], root, args: ["--lease-ttl", String(ttlS), "--cluster-cidr", "10.0.0.0/8"] });
  const stop = new AbortController();
  setMaxListeners(0, stop.signal); // one listener per simulated daemon stream
  const connections: Array<{ close(): void }> = [];
  const connect = async (name: string) => {
    const c = await daemonConnection(cp, name);
    connections.push(c);
    return c.client;
  };
  try {
    // 0. Node certificates per second: every simulated daemon (d-*, they register and then stream) and probe joins
    // once, as a node does: an admin's join token, then JoinService with a CSR for its own new key.
    const daemons = Math.max(watcherCount, registrations);
    const names = [...Array.from({ length: daemons }, (_, i) => `d-${i}`), ...Array.from({ length: 20 }, (_, i) => `probe-${i}`)];
    const tj = performance.now();
    await pool(names.length, 32, async (i) => {
      await cp.nodeCredential(names[i]!);
    });
    const joinSeconds = (performance.now() - tj) / 1000;
    process.stdout.write(
      `node certificates by join token: ${names.length} in ${joinSeconds.toFixed(2)} s = ${(names.length / joinSeconds).toFixed(0)}/s (32 concurrent, one etcd; CreateJoinToken, then Join)\n`,
    );

    // 1. Registrations per second (32 at a time, each a fresh node on its own new mutual-TLS connection:
    // the handshake, then one etcd transaction).
    const registering: Array<Awaited<ReturnType<typeof daemonConnection>>> = [];
    for (let i = 0; i < registrations; i++) registering.push(await daemonConnection(cp, `d-${i}`));
    const t0 = performance.now();
    await pool(registrations, 32, async (i) => {
      await registering[i]!.client.registerNode({ nodeName: `d-${i}`, nodeIp: underlayIp(i), mtu: 1500 });
    });
    const regSeconds = (performance.now() - t0) / 1000;
    process.stdout.write(
      `registrations: ${registrations} in ${regSeconds.toFixed(2)} s = ${(registrations / regSeconds).toFixed(0)}/s (32 concurrent, one etcd, each node on its own mutual-TLS connection)\n`,
    );
    // Those nodes leave (graceful shutdown) and hang up, so that only the probes below are live.
    await pool(registrations, 32, async (i) => {
      await registering[i]!.client.deregisterNode({ nodeName: `d-${i}` });
      registering[i]!.close();
    });
    // Probes heartbeat every 500 ms while they are in `alive`, each over its own connection.
    const probes = new Map<string, Client<typeof NodeService>>();
    for (let i = 0; i < 20; i++) probes.set(`probe-${i}`, await connect(`probe-${i}`));
    const probe = (name: string) => probes.get(name)!;
    const alive = new Set<string>();
    const lastBeat = new Map<string, number>();
    const beats = setInterval(() => {
      for (const name of alive) {
        void probe(name)
          .heartbeat({ nodeName: name })
          .then(
            () => lastBeat.set(name, performance.now()),
            () => undefined,
          );
      }
    }, 500);

    // 2. Many daemons streaming routes, each over its own connection with its own certificate.
    const seen = new Map<string, number[]>(); // node -> arrival times, one per watcher
    const gone = new Map<string, number[]>();
    let ready = 0;
    const watchers: Array<Client<typeof NodeService>> = [];
    for (let w = 0; w < watcherCount; w++) watchers.push(await connect(`d-${w}`));
    for (let w = 0; w < watcherCount; w++) {
      void (async () => {
        let first = true;
        for await (const msg of watchers[w]!.watchRoutes({ nodeName: `d-${w}`, fromRevision: 0n }, { signal: stop.signal })) {
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
    process.stdout.write(
      `route streams open: ${watcherCount} (one connection each); control-plane RSS ${(await rssMiB(cp.pid)).toFixed(0)} MiB\n`,
    );

    // 3. Join: registration -> route on every watcher.
    const joins: number[] = [];
    for (let i = 0; i < 20; i++) {
      const name = `probe-${i}`;
      const start = performance.now();
      await probe(name).registerNode({ nodeName: name, nodeIp: underlayIp(900_000 + i), mtu: 1500 });
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
    for (const c of connections) c.close();
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
