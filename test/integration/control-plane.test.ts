import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlClient } from "../../node-daemon/control/control-client.js";
import { createControlPlaneApi } from "../../node-daemon/rpc/control-plane-client.js";
import { Cidr } from "../../proto/core/cidr.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService, RouteEventType, type WatchRoutesResponse } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import {
  captureLog,
  type InProcessControlPlane,
  type JoinedNodes,
  namespace,
  startInProcessControlPlane,
} from "../support/control-plane.js";
import { type EtcdHandle, freePort, startEtcd } from "../support/etcd.js";
import { run } from "../support/exec.js";
import { root } from "../support/lab.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { waitFor } from "../support/wait.js";

// Control-plane replicas over one etcd, serving mutual TLS as in production: each node calls with its own
// certificate (joined through either replica, valid with both), operators with an admin certificate.
let etcd: EtcdHandle;
let pki: TestPki;
beforeAll(async () => {
  [etcd, pki] = await Promise.all([startEtcd(), createTestPki()]);
});
afterAll(async () => {
  await etcd?.stop();
  await pki?.destroy();
});

/** Node `name`'s client at replica `at`, with its own certificate. */
const nodeClient = (at: InProcessControlPlane, name: string) => createClient(NodeService, at.nodeTransport(name));

async function twoReplicas(
  options: { clusterCidr?: string; subnetSize?: number } = {},
): Promise<[InProcessControlPlane, InProcessControlPlane]> {
  const prefix = namespace();
  const joined: JoinedNodes = new Map();
  return Promise.all([
    startInProcessControlPlane({ etcd: etcd.endpoint, root: prefix, pki, joined, ...options }),
    startInProcessControlPlane({ etcd: etcd.endpoint, root: prefix, pki, joined, ...options }),
  ]);
}

describe("control plane against a real etcd", () => {
  it("two replicas racing 50 registrations hand out 50 distinct, non-overlapping subnets", async () => {
    const replicas = await twoReplicas();
    try {
      // Every node joins first (as a daemon does before it registers), so that the registrations race.
      await Promise.all(Array.from({ length: 50 }, (_, i) => replicas[i % 2]!.nodeCredential(`node-${i}`)));
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          nodeClient(replicas[i % 2]!, `node-${i}`).registerNode({ nodeName: `node-${i}`, nodeIp: `192.168.10.${i + 1}`, mtu: 1500 }),
        ),
      );
      const subnets = results.map((r) => Cidr.parse(r.subnet));
      expect(new Set(subnets.map(String)).size).toBe(50);
      const cluster = Cidr.parse("10.244.0.0/16");
      for (const [i, a] of subnets.entries()) {
        expect(cluster.covers(a)).toBe(true);
        for (const b of subnets.slice(i + 1)) expect(a.overlaps(b)).toBe(false);
      }
      const stored = await replicas[0].stores.subnets.listLeases();
      expect(stored).toHaveLength(50);
      expect(new Set(stored.map((l) => l.nodeName)).size).toBe(50);
    } finally {
      await Promise.all(replicas.map((r) => r.stop()));
    }
  });

  it("a node that registers again, through any replica, gets its own subnet back", async () => {
    const [a, b] = await twoReplicas();
    try {
      const first = await nodeClient(a, "n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      await nodeClient(b, "n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.12", mtu: 1500 });
      await nodeClient(a, "n1").deregisterNode({ nodeName: "n1" });
      const again = await nodeClient(b, "n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      expect(again.subnet).toBe(first.subnet);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("rejects bad registrations with INVALID_ARGUMENT naming the field, and changes nothing", async () => {
    const [a, b] = await twoReplicas();
    try {
      const client = nodeClient(a, "n1");
      // Request validation runs before the node check: a malformed name is refused as such, even from n1.
      await expect(client.registerNode({ nodeName: "Bad_Name", nodeIp: "192.168.1.11", mtu: 1500 })).rejects.toMatchObject({
        code: 3,
        message: expect.stringMatching(/node_name/),
      });
      await expect(client.registerNode({ nodeName: "n1", nodeIp: "300.1.1.1", mtu: 1500 })).rejects.toThrow(/node_ip/);
      expect(await a.stores.subnets.listLeases()).toHaveLength(0);
      await client.registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      await expect(nodeClient(a, "n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.11", mtu: 1500 })).rejects.toThrow(
        /already registered by live node n1/,
      );
      expect(await a.stores.subnets.listLeases()).toHaveLength(1);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("a live node cannot be moved to another address; once it left, it moves and frees the old one", async () => {
    const [a, b] = await twoReplicas();
    try {
      const client = (name: string) => nodeClient(a, name);
      await client("n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      await expect(client("n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.66", mtu: 1500 })).rejects.toThrow(
        /node n1 is live at 192\.168\.1\.11; a registration cannot move it to 192\.168\.1\.66/,
      );
      await client("n1").deregisterNode({ nodeName: "n1" });
      await client("n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.21", mtu: 1500 });
      await expect(client("n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.21", mtu: 1500 })).rejects.toThrow(
        /already registered by live node n1/,
      );
      expect((await client("n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.11", mtu: 1500 })).subnet).toBe("10.244.2.0/24");
      // a node that left (withdrawn) no longer blocks its address
      await client("n2").deregisterNode({ nodeName: "n2" });
      expect((await client("n3").registerNode({ nodeName: "n3", nodeIp: "192.168.1.11", mtu: 1500 })).subnet).toBe("10.244.3.0/24");
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("answers EXHAUSTED when the cluster CIDR has no subnet left", async () => {
    const [a, b] = await twoReplicas({ clusterCidr: "10.250.0.0/23", subnetSize: 24 });
    try {
      await nodeClient(a, "n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      await nodeClient(a, "n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.12", mtu: 1500 });
      await expect(nodeClient(a, "n3").registerNode({ nodeName: "n3", nodeIp: "192.168.1.13", mtu: 1500 })).rejects.toThrow(
        /no free \/24 subnet left/,
      );
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("streams a snapshot, then a node's route to daemons watching another replica, then its removal", async () => {
    const [a, b] = await twoReplicas();
    const stop = new AbortController();
    try {
      await nodeClient(a, "n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      const seen: WatchRoutesResponse[] = [];
      void (async () => {
        for await (const msg of nodeClient(a, "n1").watchRoutes({ nodeName: "n1", fromRevision: 0n }, { signal: stop.signal }))
          seen.push(msg);
      })().catch(() => undefined);
      await waitFor("snapshot", async () => seen.length > 0);
      expect(seen[0]?.snapshot).toBe(true);
      // The replica's feed follows etcd a moment behind the registration it just wrote: n1 is in the
      // snapshot, or arrives right after it.
      await waitFor("n1 in the stream", async () =>
        seen.some((m) => m.routes.some((r) => r.nodeName === "n1") || m.events.some((e) => e.route?.nodeName === "n1")),
      );

      const n2 = await nodeClient(b, "n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.12", mtu: 1500 });
      const upsert = await waitFor("n2's route", async () =>
        seen.flatMap((m) => m.events).find((e) => e.type === RouteEventType.UPSERT && e.route?.nodeName === "n2"),
      );
      expect(upsert.route?.subnet).toBe(n2.subnet);
      expect(upsert.route?.nodeIp).toBe("192.168.1.12");

      await nodeClient(b, "n2").deregisterNode({ nodeName: "n2" });
      await waitFor("n2's route removal", async () =>
        seen.flatMap((m) => m.events).some((e) => e.type === RouteEventType.DELETE && e.route?.nodeName === "n2"),
      );
      const revisions = seen.map((m) => m.revision);
      expect([...revisions].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))).toEqual(revisions);
    } finally {
      stop.abort();
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("serves the admin API, health and reflection to a reflection client (buf curl)", async () => {
    const [a, b] = await twoReplicas();
    try {
      await nodeClient(a, "n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      await nodeClient(a, "n1").heartbeat({ nodeName: "n1" });
      const admin = createClient(AdminService, b.adminTransport());
      const { nodes } = await admin.listNodes({});
      expect(nodes.map((n) => [n.name, n.nodeIp, n.live])).toEqual([["n1", "192.168.1.11", true]]);
      expect(nodes[0]?.lastSeen).toBeDefined();

      const buf = join(root, "node_modules", ".bin", "buf");
      const base = ["curl", "--protocol", "grpc", ...b.bufCurlFlags()];
      const list = await run(buf, [...base, "--list-methods", `https://${b.address}`]);
      expect(list.stderr).toBe("");
      expect(list.stdout).toContain("trellis.admin.v1.AdminService/ListNodes");
      expect(list.stdout).toContain("trellis.controlplane.v1.NodeService/WatchRoutes");
      const call = await run(buf, [...base, `https://${b.address}/trellis.admin.v1.AdminService/ListNodes`]);
      expect(call.code, call.stderr).toBe(0);
      expect(JSON.parse(call.stdout)).toMatchObject({
        nodes: [{ name: "n1", nodeIp: "192.168.1.11", subnet: "10.244.1.0/24", live: true }],
      });
      const health = await run(buf, [...base, "-d", "{}", `https://${b.address}/grpc.health.v1.Health/Check`]);
      expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("a daemon started before the control plane retries with backoff, says so, and registers once it is up", async () => {
    const prefix = namespace();
    const port = await freePort();
    // The daemon joined earlier (its credential is on disk); the control plane is down when it starts.
    const joined: JoinedNodes = new Map();
    const earlier = await startInProcessControlPlane({ etcd: etcd.endpoint, root: prefix, pki, joined });
    const [late, ghost] = await Promise.all([earlier.nodeCredential("late"), earlier.nodeCredential("ghost")]);
    await earlier.stop();
    const { log, lines } = captureLog();
    const stop = new AbortController();
    const client = new ControlClient({
      replicas: [createControlPlaneApi(`127.0.0.1:${port}`, { ca: pki.caPem, ...late })],
      log,
      nodeName: "late",
      nodeIp: "192.168.1.20",
      mtu: 1500,
      sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 200))),
    });
    const registering = client.register(stop.signal);
    await waitFor("a retry logged", async () => lines.some((l) => l.msg === "control plane not reachable, retrying registration"));
    const cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root: prefix, port, pki, joined });
    try {
      const res = await registering;
      expect(res.subnet).toBe("10.244.1.0/24");
      // the daemon's client hands back reasons, not transport errors: a node that joined but never registered ...
      const api = createControlPlaneApi(`127.0.0.1:${port}`, { ca: pki.caPem, ...ghost });
      await expect(api.heartbeat({ nodeName: "ghost" })).rejects.toMatchObject({ name: "TrellisError", reason: "NOT_FOUND" });
      // ... and a control plane that is not there
      const nobody = createControlPlaneApi(`127.0.0.1:${await freePort()}`, { ca: pki.caPem, ...late });
      await expect(nobody.heartbeat({ nodeName: "late" })).rejects.toMatchObject({ name: "TrellisError", reason: "UNAVAILABLE" });
    } finally {
      stop.abort();
      await cp.stop();
    }
  });
});
