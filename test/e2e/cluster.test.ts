import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inNetns, mustInNetns } from "../support/exec.js";
import { allocationFiles, Lab, type LabNode } from "../support/lab.js";
import { waitFor } from "../support/wait.js";

// Needs root (network namespaces). Locally without root the suite is skipped and says why; in CI
// (CI=true) a missing need is a failure (STYLE.md §8).
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

const ownedRoutes = async (lab: Lab, node: LabNode) => (await lab.routesOf(node)).filter((r) => r.protocol === "201");

describe.skipIf(!isRoot)("three-node cluster in network namespaces (needs root)", () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 3 });
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    for (const node of lab.nodes) {
      await waitFor(`${node.name}'s routes`, async () => (await ownedRoutes(lab, node)).length === 2);
    }
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("ADD through the shim gives each pod an address of its node's subnet; pods ping on one node and across nodes", async () => {
    const a = await lab.addPod(n1, "a");
    const b = await lab.addPod(n1, "b");
    const c = await lab.addPod(n2, "c");
    expect(a.result).toMatchObject({
      cniVersion: "1.0.0",
      interfaces: [{ name: "trellis0" }, { name: expect.stringMatching(/^tr[0-9a-f]{11}$/) }, { name: "eth0", sandbox: a.netnsPath }],
      ips: [{ address: expect.stringMatching(/^10\.244\.1\.\d+\/24$/), gateway: "10.244.1.1", interface: 2 }],
      routes: [{ dst: "0.0.0.0/0", gw: "10.244.1.1" }],
    });
    expect(c.address).toMatch(/^10\.244\.2\./);
    expect(a.address).not.toBe(b.address);
    expect(await lab.ping(a, b.address)).toBe(true);
    expect(await lab.ping(a, c.address)).toBe(true);
    expect(await lab.ping(c, b.address)).toBe(true);
    // no NAT: the pod on node-2 sees node-1's pod address as the source
    const routes = await lab.routesOf(n1);
    expect(routes).toContainEqual(expect.objectContaining({ dst: "10.244.2.0/24", gateway: "192.168.1.12", protocol: "201" }));
  });

  it("every node reports a digest of its routes, and the admin API sees it in sync with what it should hold", async () => {
    for (const node of lab.nodes) {
      const routes = await waitFor(
        `${node.name}'s report`,
        async () => {
          const r = await lab.admin("GetRoutes", { nodeName: node.name });
          return r.inSync === true && r;
        },
        15_000,
        250,
      );
      expect(routes.reportedCount).toBe(lab.nodes.length - 1);
      expect(routes.missing ?? []).toEqual([]);
    }
  });

  it("DEL removes the veth and frees the address; DEL twice succeeds with no output", async () => {
    const pod = await lab.addPod(n2, "del-twice");
    const before = await allocationFiles(n2);
    expect(before).toContain(pod.address);
    const hostVeth = (pod.result.interfaces as Array<{ name: string }>)[1]!.name;
    const first = await lab.delPod(pod);
    expect(first.code, first.stdout).toBe(0);
    expect(first.stdout).toBe("");
    expect(await allocationFiles(n2)).not.toContain(pod.address);
    const show = await inNetns(n2.netns, "ip", ["link", "show", hostVeth]);
    expect(show.code).not.toBe(0);
    const second = await lab.delPod(pod);
    expect(second.code).toBe(0);
    expect(second.stdout).toBe("");
  });

  it("DEL after the pod's netns is gone succeeds and frees the address", async () => {
    const pod = await lab.addPod(n2, "gone");
    await lab.removeNetns(pod.netns);
    const res = await lab.delPod(pod);
    expect(res.code, res.stdout).toBe(0);
    expect(await allocationFiles(n2)).not.toContain(pod.address);
    // DEL with an empty CNI_NETNS, as runtimes send once the netns is gone, also succeeds
    const empty = await lab.shim(n2, "DEL", { ...lab.podEnv(pod), CNI_NETNS: "" });
    expect(empty.code).toBe(0);
  });

  it("an ADD of an attachment that exists fails with code 100 and leaves the pod working", async () => {
    const pod = await lab.addPod(n3, "twice");
    const peer = await lab.addPod(n3, "twice-peer");
    const again = await lab.shim(n3, "ADD", lab.podEnv(pod));
    expect(again.code).not.toBe(0);
    expect(again.json).toMatchObject({ code: 100, msg: expect.stringContaining("already has interface eth0") });
    expect(await lab.ping(peer, pod.address)).toBe(true);
    expect(await allocationFiles(n3)).toContain(pod.address);
  });

  it("an ADD whose interface name is taken inside the netns fails with code 100 and leaks nothing", async () => {
    const pod = await lab.addPod(n3, "ifname-taken");
    const other = { ...pod, containerId: `${pod.containerId}-other` };
    const before = (await allocationFiles(n3)).length;
    const res = await lab.shim(n3, "ADD", lab.podEnv(other));
    expect(res.json).toMatchObject({ code: 100, msg: expect.stringContaining(`interface eth0 already exists in ${pod.netnsPath}`) });
    expect((await allocationFiles(n3)).length).toBe(before);
  });

  it.each([
    ["an ifname over 15 bytes", { CNI_IFNAME: "a-very-long-ifname" }, 4, /CNI_IFNAME/],
    ["a netns path that does not exist", { CNI_NETNS: "/run/netns/does-not-exist" }, 4, /CNI_NETNS .* does not exist/],
    ["a container id breaking the pattern", { CNI_CONTAINERID: "-bad id" }, 4, /CNI_CONTAINERID/],
    ["a missing CNI_IFNAME", { CNI_IFNAME: "" }, 4, /CNI_IFNAME is not set/],
  ])("bad input (%s %o) gets code %i and changes nothing", async (_what, env, code, msg) => {
    const before = (await allocationFiles(n1)).length;
    const res = await lab.shim(n1, "ADD", {
      ...lab.podEnv({ containerId: "bad-input", netnsPath: lab.pods[0]!.netnsPath, ifName: "eth9", name: "bad" }),
      ...env,
    });
    expect(res.code).not.toBe(0);
    expect(res.stdout.trim().split("\n")).toHaveLength(1);
    expect(res.json).toMatchObject({ code, msg: expect.stringMatching(msg) });
    expect((await allocationFiles(n1)).length).toBe(before);
  });

  it("malformed stdin gets code 6; a config without a name gets 7", async () => {
    const env = lab.podEnv({ containerId: "bad-stdin", netnsPath: lab.pods[0]!.netnsPath, ifName: "eth9", name: "bad" });
    const undecodable = await lab.shim(n1, "ADD", env, "not json");
    expect(undecodable.json).toMatchObject({ code: 6 });
    const nameless = await lab.shim(n1, "ADD", env, { cniVersion: "1.0.0", type: "trellis", daemonSocket: n1.socket });
    expect(nameless.json).toMatchObject({ code: 7, msg: expect.stringContaining('"name"') });
  });

  it("a daemon restarted with pods running (SIGTERM, then SIGKILL) keeps their addresses and gives a new pod a fresh one", async () => {
    const p1 = await lab.addPod(n1, "restart-1");
    const p2 = await lab.addPod(n1, "restart-2");
    const remote = lab.pods.find((p) => p.node === n2)!;
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      await n1.daemon!.stop(signal);
      await lab.startDaemon(n1);
      const fresh = await lab.addPod(n1, `after-${signal.toLowerCase()}`);
      const held = lab.pods.filter((p) => p.node === n1 && p !== fresh).map((p) => p.address);
      expect(held).not.toContain(fresh.address);
      expect(await allocationFiles(n1)).toEqual(expect.arrayContaining([p1.address, p2.address, fresh.address]));
      await waitFor("routes back on node-1", async () => (await ownedRoutes(lab, n1)).length === 2);
      await waitFor("node-1's route back on node-2", async () => (await ownedRoutes(lab, n2)).some((r) => r.dst === "10.244.1.0/24"));
      expect(await lab.ping(p1, p2.address)).toBe(true);
      expect(await lab.ping(remote, fresh.address)).toBe(true);
    }
  });

  it("a node that leaves (stopped, then drained) disappears from the others' routes, and gets its subnet back when it returns", async () => {
    await n3.daemon!.stop("SIGTERM"); // stopping is not leaving (test/e2e/stop-and-leave.test.ts): the route stays
    await lab.admin("DrainNode", { name: n3.name });
    for (const node of [n1, n2]) {
      await waitFor(
        `node-3's route gone from ${node.name}`,
        async () => !(await ownedRoutes(lab, node)).some((r) => r.gateway === n3.ip),
        10_000,
      );
    }
    await lab.startDaemon(n3);
    for (const node of [n1, n2]) {
      await waitFor(
        `node-3's route back on ${node.name}`,
        async () => (await ownedRoutes(lab, node)).some((r) => r.dst === "10.244.3.0/24" && r.gateway === n3.ip),
        10_000,
      );
    }
    const onN3 = lab.pods.find((p) => p.node === n3 && p.name === "twice")!;
    const onN1 = lab.pods.find((p) => p.node === n1 && p.name === "a")!;
    expect(await lab.ping(onN1, onN3.address)).toBe(true);
  });

  it("a route added by hand (not Trellis's) survives, and a stale Trellis route is removed", async () => {
    await mustInNetns(n1.netns, "ip", ["route", "add", "10.99.0.0/24", "via", "192.168.1.12"]);
    await mustInNetns(n1.netns, "ip", ["route", "add", "10.244.200.0/24", "via", "192.168.1.13", "proto", "201"]);
    // a restart triggers a snapshot and a full reconcile
    await n1.daemon!.stop("SIGKILL");
    await lab.startDaemon(n1);
    await waitFor("stale route removed", async () => !(await lab.routesOf(n1)).some((r) => r.dst === "10.244.200.0/24"));
    expect(await lab.routesOf(n1)).toContainEqual(expect.objectContaining({ dst: "10.99.0.0/24", gateway: "192.168.1.12" }));
  });
});
