import { createClient, type Transport } from "@connectrpc/connect";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RouteFeed } from "../../control-plane/routes/route-feed.js";
import { openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import type { NodeStore } from "../../control-plane/store/node-store.js";
import { NodeService, RouteEventType, type WatchRoutesResponse } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { captureLog, type JoinedNodes, namespace, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";
import { run } from "../support/exec.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { waitFor } from "../support/wait.js";

// The route stream's revisions: resume where a daemon left off, a snapshot when that is not possible,
// and a fresh snapshot for everyone when the feed's own etcd watch is compacted away. Over mutual TLS:
// every node, the watching daemon included, calls with its own joined certificate.
let etcd: EtcdHandle;
let pki: TestPki;
beforeAll(async () => {
  [etcd, pki] = await Promise.all([startEtcd(), createTestPki()]);
});
afterAll(async () => {
  await etcd?.stop();
  await pki?.destroy();
});

/** The route stream of node "watcher" (a transport with its certificate), from `fromRevision` of `epoch`. */
function collect(watcher: Transport, fromRevision: bigint, epoch = 0n) {
  const seen: WatchRoutesResponse[] = [];
  const stop = new AbortController();
  void (async () => {
    const req = { nodeName: "watcher", fromRevision, epoch };
    for await (const m of createClient(NodeService, watcher).watchRoutes(req, { signal: stop.signal })) seen.push(m);
  })().catch(() => undefined);
  return { seen, stop: () => stop.abort() };
}

describe("route stream revisions", () => {
  it("a daemon that reconnects with its last revision gets only what it missed; one too old gets a snapshot", async () => {
    const cpRoot = namespace();
    const joined: JoinedNodes = new Map(); // the watcher uses one credential with both replicas
    const cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root: cpRoot, pki, joined });
    try {
      const node = (name: string) => createClient(NodeService, cp.nodeTransport(name));
      await node("n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      const first = collect(cp.nodeTransport("watcher"), 0n);
      await waitFor("snapshot", async () => first.seen.length > 0);
      await node("n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.12", mtu: 1500 });
      await waitFor("n2", async () => first.seen.length > 1);
      const { revision: applied, epoch } = first.seen[first.seen.length - 1]!;
      first.stop(); // the daemon loses its stream ...
      await node("n3").registerNode({ nodeName: "n3", nodeIp: "192.168.1.13", mtu: 1500 });
      await node("n1").deregisterNode({ nodeName: "n1" });

      const resumed = collect(cp.nodeTransport("watcher"), applied, epoch); // ... and comes back with the revision it applied
      await waitFor("the missed changes", async () => resumed.seen.flatMap((m) => m.events).length >= 2);
      expect(resumed.seen.every((m) => !m.snapshot)).toBe(true);
      expect(resumed.seen.flatMap((m) => m.events).map((e) => `${RouteEventType[e.type]} ${e.route?.nodeName}`)).toEqual([
        "UPSERT n3",
        "DELETE n1",
      ]);
      resumed.stop();

      // A replica that started after that revision holds no changes that old: it answers with a snapshot.
      const other = await startInProcessControlPlane({ etcd: etcd.endpoint, root: cpRoot, pki, joined });
      try {
        const failover = collect(other.nodeTransport("watcher"), applied, epoch);
        await waitFor("a snapshot", async () => failover.seen.length > 0);
        expect(failover.seen[0]).toMatchObject({ snapshot: true });
        expect(failover.seen[0]!.routes.map((r) => r.nodeName).sort()).toEqual(["n2", "n3"]);
        failover.stop();
      } finally {
        await other.stop();
      }
    } finally {
      await cp.stop();
    }
  });

  it("etcd reports a node watch whose revision was compacted away as lost", async () => {
    const root = namespace();
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root });
    const cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root, pki });
    const raw = new Etcd3({ hosts: [etcd.endpoint] });
    const stop = new AbortController();
    try {
      const node = createClient(NodeService, cp.nodeTransport("n1"));
      const start = (await raw.get("x").exec()).header.revision;
      await node.registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      const compactTo = (await raw.put(`${root}/compaction-marker`).value("x").exec()).header.revision;
      const compacted = await run("etcdctl", ["--endpoints", etcd.endpoint, "compact", compactTo, "--physical"], {
        env: { ...process.env, ETCDCTL_API: "3" },
      });
      expect(compacted.code, compacted.stderr).toBe(0);
      const lost: Error[] = [];
      await store.nodes.watchNodes(
        BigInt(start),
        () => undefined,
        stop.signal,
        (err) => lost.push(err),
      );
      await waitFor("the lost watch reported", async () => lost.length > 0);
      expect(String(lost[0])).toMatch(/Watcher canceled/); // etcd 3.4 sets compact_revision and no reason text
    } finally {
      stop.abort();
      raw.close();
      await store.close();
      await cp.stop();
    }
  });

  it("when its etcd watch is lost, the feed reloads and sends every open stream what it missed, in the same epoch, without a snapshot", async () => {
    const root = namespace();
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root });
    let loseWatch: ((err: Error) => void) | undefined;
    const watched: NodeStore = Object.assign(Object.create(store.nodes) as NodeStore, {
      watchNodes: (from: bigint, onBatch: Parameters<NodeStore["watchNodes"]>[1], signal: AbortSignal, onLost?: (err: Error) => void) => {
        loseWatch = onLost;
        return store.nodes.watchNodes(from, onBatch, signal, onLost);
      },
    });
    const { log, lines } = captureLog();
    const feed = new RouteFeed({ nodes: watched, log, reloadDelayMs: 10 });
    const cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root, pki });
    const stop = new AbortController();
    try {
      const node = (name: string) => createClient(NodeService, cp.nodeTransport(name));
      await node("n1").registerNode({ nodeName: "n1", nodeIp: "192.168.1.11", mtu: 1500 });
      await feed.start(stop.signal);
      const stream = feed.subscribe(stop.signal, 0n);
      expect((await stream.next()).value).toMatchObject({ snapshot: true });
      const epoch = feed.epoch;
      await node("n2").registerNode({ nodeName: "n2", nodeIp: "192.168.1.12", mtu: 1500 });
      loseWatch?.(new Error("14 UNAVAILABLE: Connection dropped"));
      await node("n3").registerNode({ nodeName: "n3", nodeIp: "192.168.1.13", mtu: 1500 });
      const seen = new Set<string>();
      while (!seen.has("n2") || !seen.has("n3")) {
        const msg = (await stream.next()).value as WatchRoutesResponse;
        expect(msg.snapshot).toBe(false);
        expect(msg.epoch).toBe(epoch);
        for (const e of msg.events) if (e.route) seen.add(e.route.nodeName);
      }
      await waitFor("the reload", async () => lines.some((l) => l.msg === "route feed reloaded; streams sent what they missed"));
      expect(feed.epoch).toBe(epoch);
    } finally {
      stop.abort();
      await store.close();
      await cp.stop();
    }
  });
});
