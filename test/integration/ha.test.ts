import { type Client, createClient } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { ControlClient, type RouteSet } from "../../node-daemon/control/control-client.js";
import { createControlPlaneApi } from "../../node-daemon/rpc/control-plane-client.js";
import { Cidr } from "../../proto/core/cidr.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { createNodeJoiner, type JoinedNodes, namespace, type SpawnedControlPlane, spawnControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd, startEtcdCluster } from "../support/etcd.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { waitFor } from "../support/wait.js";

// DESIGN.md invariant 7: any number of control-plane replicas, all authority in etcd. Replicas run as
// their own processes (the built dist/) so that one can be killed with SIGKILL. They serve mutual TLS
// with one cluster CA; every node joins once and calls each replica with its own certificate. Hundreds
// of nodes join through the control plane's own NodeIdentities in the test process (a token, a CSR, the
// allow-list in etcd, as JoinService does), not one by one through a join port: JoinService itself is
// tested in identity.test.ts and by every e2e daemon.
type NodeClient = Client<typeof NodeService>;
/** Node `name`'s client at `replica`, with its own certificate. */
const clientFor = (replica: SpawnedControlPlane, name: string): NodeClient => createClient(NodeService, replica.nodeTransport(name));

/** Calls `fn` as node `name` on a random replica, moving to another on failure, as a daemon with several addresses does. */
async function anyReplica<T>(replicas: SpawnedControlPlane[], name: string, fn: (c: NodeClient) => Promise<T>, attempts = 20): Promise<T> {
  let last: unknown;
  const start = Math.floor(Math.random() * replicas.length);
  for (let i = 0; i < attempts; i++) {
    try {
      return await fn(clientFor(replicas[(start + i) % replicas.length]!, name));
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw last;
}

async function inBatches<T>(items: T[], size: number, fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

let pki: TestPki;
beforeAll(async () => {
  pki = await createTestPki();
});
afterAll(async () => {
  await pki?.destroy();
});

describe("control-plane replicas over one etcd", () => {
  let etcd: EtcdHandle;
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd?.stop();
  });

  // 200 joins and a few hundred mutual-TLS handshakes (one connection per node and replica) on top of
  // the calls: nearly twice the time it took in cleartext, so more room than the project's 60 s.
  it("200 nodes registering and heartbeating through 3 replicas, one killed and restarted: no overlap, every node keeps its subnet, streams resume", {
    timeout: 120_000,
  }, async () => {
    const root = namespace();
    const joined: JoinedNodes = new Map();
    const joiner = createNodeJoiner({ etcd: [etcd.endpoint], root, pki });
    const replicas = await Promise.all(
      [0, 1, 2].map(() => spawnControlPlane({ etcd: [etcd.endpoint], root, pki, joined, join: joiner.join })),
    );
    const stop = new AbortController();
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root });
    try {
      const names = Array.from({ length: 200 }, (_, i) => `node-${i}`);
      const subnetOf = new Map<string, string>();
      // Every node joins first, as daemons do before registering.
      await inBatches(names, 25, async (n) => {
        await replicas[0]!.nodeCredential(n);
      });
      // a daemon-like watcher whose first replica is the one that will die
      let routes: RouteSet = new Map();
      const watcherCredential = { ca: pki.caPem, ...(await replicas[0]!.nodeCredential("watcher")) };
      const watcher = new ControlClient({
        replicas: replicas.map((r) => createControlPlaneApi(r.address, watcherCredential)),
        log: pino({ level: "silent" }),
        nodeName: "watcher",
        nodeIp: "192.168.0.254",
        mtu: 1500,
        sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 200))),
      });
      void watcher.watchRoutes(async (set) => {
        routes = set;
      }, stop.signal);

      const register = async (name: string, i: number) => {
        const res = await anyReplica(replicas, name, (c) =>
          c.registerNode({ nodeName: name, nodeIp: `10.1.${i >> 8}.${i & 255}`, mtu: 1500 }, { timeoutMs: 5_000 }),
        );
        const before = subnetOf.get(name);
        if (before) expect(res.subnet, `${name} got another subnet`).toBe(before);
        subnetOf.set(name, res.subnet);
      };
      await inBatches(names.slice(0, 100), 25, (n) => register(n, names.indexOf(n)));

      // replica 0 dies (SIGKILL) mid-way: the next 50 register and everyone heartbeats through the others ...
      await replicas[0]!.kill("SIGKILL");
      await inBatches(names.slice(100, 150), 25, (n) => register(n, names.indexOf(n)));
      await inBatches(names.slice(0, 150), 25, (n) =>
        anyReplica(replicas, n, (c) => c.heartbeat({ nodeName: n }, { timeoutMs: 5_000 })).then(() => undefined),
      );
      // ... then it comes back and takes its share again
      await replicas[0]!.start();
      await inBatches(names.slice(150), 25, (n) => register(n, names.indexOf(n)));
      await inBatches(names, 25, (n) =>
        anyReplica(replicas, n, (c) => c.heartbeat({ nodeName: n }, { timeoutMs: 5_000 })).then(() => undefined),
      );
      expect(await clientFor(replicas[0]!, "node-0").heartbeat({ nodeName: "node-0" })).toBeDefined();

      // every node registering again (through any replica) keeps its subnet
      await inBatches(names, 25, (n) => register(n, names.indexOf(n)));
      const leases = await store.subnets.listLeases();
      expect(leases).toHaveLength(200);
      const cidrs = leases.map((l) => Cidr.parse(l.subnet));
      expect(new Set(cidrs.map(String)).size).toBe(200);
      for (const l of leases) expect(l.subnet).toBe(subnetOf.get(l.nodeName));

      // the watcher's stream (first on the killed replica) resumed elsewhere and converged
      await waitFor("the watcher's 200 routes", async () => routes.size === 200, 15_000);
      await anyReplica(replicas, "late", (c) => c.registerNode({ nodeName: "late", nodeIp: "10.2.0.1", mtu: 1500 }));
      await waitFor("the late node's route", async () => routes.has("late"), 15_000);
    } finally {
      stop.abort();
      await store.close();
      await joiner.close();
      for (const r of replicas) await r.destroy();
    }
  });
});

describe("a 3-member etcd cluster", () => {
  it("a member killed and restarted during registrations loses nothing acknowledged", async () => {
    const cluster = await startEtcdCluster(3);
    const root = namespace();
    const joiner = createNodeJoiner({ etcd: cluster.endpoints, root, pki });
    const replica = await spawnControlPlane({ etcd: cluster.endpoints, root, pki, join: joiner.join });
    const store = openEtcdStores({ endpoints: cluster.endpoints, root });
    try {
      // The nodes join before the member dies: this test is about registrations.
      await Promise.all(Array.from({ length: 60 }, (_, i) => replica.nodeCredential(`n${i}`)));
      const acknowledged = new Map<string, string>();
      const registerRange = async (from: number, to: number) => {
        for (let i = from; i < to; i++) {
          const name = `n${i}`;
          try {
            const res = await clientFor(replica, name).registerNode(
              { nodeName: name, nodeIp: `10.3.0.${i + 1}`, mtu: 1500 },
              { timeoutMs: 10_000 },
            );
            acknowledged.set(name, res.subnet);
          } catch {
            // not acknowledged: the node would retry; nothing to check for it
          }
        }
      };
      await registerRange(0, 20);
      await cluster.members[0]!.kill(); // SIGKILL, in the middle of the registrations
      await registerRange(20, 40);
      await cluster.members[0]!.start();
      await registerRange(40, 60);
      expect(acknowledged.size).toBeGreaterThan(40);
      const leases = new Map((await store.subnets.listLeases()).map((l) => [l.nodeName, l.subnet]));
      for (const [name, subnet] of acknowledged) expect(leases.get(name), name).toBe(subnet);
      // and through the restarted member alone, too
      const only = openEtcdStores({ endpoints: [cluster.members[0]!.endpoint], root });
      try {
        await waitFor("the restarted member caught up", async () => (await only.subnets.listLeases()).length >= acknowledged.size, 15_000);
      } finally {
        await only.close();
      }
    } finally {
      await store.close();
      await joiner.close();
      await replica.destroy();
      await cluster.stop();
    }
  });
});
