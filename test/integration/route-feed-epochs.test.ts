// Issue 10, findings 5, 6 and 12 against a real etcd: the route feed's revisions and epochs survive etcd
// replaced under it (a restore from an older snapshot), a catch-up that arrives in several responses,
// and a stream that never reads.
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { RouteFeed } from "../../control-plane/routes/route-feed.js";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import type { NodeWatchBatch } from "../../control-plane/store/node-store.js";
import type { WatchRoutesResponse } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { NodeRecordSchema, SubnetLeaseRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, freePort, startEtcd } from "../support/etcd.js";
import { waitFor } from "../support/wait.js";

const log = pino({ level: "silent" });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function addNode(store: EtcdStores, i: number): Promise<void> {
  const subnet = `10.${i >> 8}.${i & 255}.0/24`;
  const node = create(NodeRecordSchema, { name: `n${i}`, nodeIp: `192.168.${i >> 8}.${i & 255}`, subnet, mtu: 1500, live: true });
  const ip = { entry: { ip: node.nodeIp, modRevision: 0n } };
  if (!(await store.nodes.claimSubnet(create(SubnetLeaseRecordSchema, { subnet, nodeName: `n${i}` }), node, 0n, ip)))
    throw new Error(`claim n${i}`);
}

function follow(feed: RouteFeed, fromRevision = 0n, epoch = 0n) {
  const seen: WatchRoutesResponse[] = [];
  const stop = new AbortController();
  void (async () => {
    for await (const m of feed.subscribe(stop.signal, fromRevision, epoch)) seen.push(m);
  })().catch(() => undefined);
  cleanups.push(async () => stop.abort());
  return seen;
}

const names = (m: WatchRoutesResponse) => (m.snapshot ? m.routes.map((r) => r.nodeName) : m.events.map((e) => e.route?.nodeName));

describe("the route feed over a real etcd", () => {
  it("etcd replaced by one with an older history (a restore): the feed reloads under a new epoch and delivers later changes", async () => {
    const clientPort = await freePort();
    const peerPort = await freePort();
    let etcd: EtcdHandle = await startEtcd({ clientPort, peerPort });
    cleanups.push(() => etcd.stop());
    const root = namespace();
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root, callTimeoutMs: 2_000 });
    cleanups.push(async () => store.close());
    for (let i = 1; i <= 30; i++) await addNode(store, i); // the old etcd's revision is well past the new one's
    const stop = new AbortController();
    cleanups.push(async () => stop.abort());
    const feed = new RouteFeed({ nodes: store.nodes, log, reloadDelayMs: 200 });
    await feed.start(stop.signal);
    const before = feed.epoch;
    const seen = follow(feed);
    await waitFor("the first snapshot", async () => seen.length > 0);

    await etcd.stop(); // the "restore": a new etcd on the same address, with none of that history
    etcd = await startEtcd({ clientPort, peerPort });
    await waitFor("the feed to reload", async () => feed.epoch !== before, 20_000, 100);
    await addNode(store, 99);
    await waitFor("n99 on the stream", async () => seen.some((m) => names(m).includes("n99")), 10_000);
    const last = seen.at(-1);
    expect(last?.epoch).toBe(feed.epoch);
    // A daemon resuming with a revision of the old epoch gets a snapshot, never a silent gap.
    const resumed = follow(feed, seen[0]?.revision ?? 1n, before);
    await waitFor("a first message", async () => resumed.length > 0);
    expect(resumed[0]?.snapshot).toBe(true);
  }, 60_000);

  it("a catch-up that arrives in several responses: each batch is stamped with the highest mod revision it holds", async () => {
    const etcd = await startEtcd();
    cleanups.push(() => etcd.stop());
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root: namespace() });
    cleanups.push(async () => store.close());
    const from = (await store.nodes.listNodes()).revision + 1n;
    for (let i = 1; i <= 1500; i++) await addNode(store, i); // as in the issue: 1500 revisions to catch up
    const batches: NodeWatchBatch[] = [];
    const stop = new AbortController();
    cleanups.push(async () => stop.abort());
    await store.nodes.watchNodes(from, (b) => batches.push(b), stop.signal);
    await waitFor("every change", async () => batches.reduce((n, b) => n + b.changes.length, 0) >= 1500, 15_000);
    expect(batches.length).toBeGreaterThan(1);
    for (let i = 1; i < batches.length; i++) expect(batches[i]?.revision).toBeGreaterThan(batches[i - 1]?.revision ?? 0n);
  }, 60_000);

  it("a stream that does not read is not queued for without bound: it is sent one fresh snapshot instead", async () => {
    const etcd = await startEtcd();
    cleanups.push(() => etcd.stop());
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root: namespace() });
    cleanups.push(async () => store.close());
    const stop = new AbortController();
    cleanups.push(async () => stop.abort());
    const feed = new RouteFeed({ nodes: store.nodes, log, maxQueued: 8, coalesceMs: 0 }); // each change its own message
    await feed.start(stop.signal);
    const iterator = feed.subscribe(stop.signal)[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.snapshot).toBe(true);
    for (let i = 1; i <= 40; i++) await addNode(store, i);
    await waitFor("the feed to see them", async () => (await store.nodes.listNodes()).nodes.length === 40);
    await new Promise((r) => setTimeout(r, 300));
    const next = (await iterator.next()).value;
    expect(next?.snapshot).toBe(true);
    expect(next?.routes).toHaveLength(40);
  }, 60_000);
});
