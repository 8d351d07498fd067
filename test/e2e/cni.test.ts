import { readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execConflist } from "../support/cni-runtime.js";
import { inNetns, mustInNetns } from "../support/exec.js";
import { allocationFiles, Lab, type LabNode, type LabPod, pluginConf } from "../support/lab.js";
import { waitFor } from "../support/wait.js";

// CNI 1.1 end to end: every command through the real shim binary, result shapes per version,
// chaining with Debian's portmap, and what happens while the daemon is down.
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

describe.skipIf(!isRoot)("CNI commands through the shim (needs root)", () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2 });
    [n1, n2] = lab.nodes as [LabNode, LabNode];
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  const check = async (pod: LabPod, cniVersion = "1.0.0") =>
    execConflist({
      nodeNetns: pod.node.netns,
      binDir: lab.binDir,
      command: "CHECK",
      attachment: lab.attachmentOf(pod),
      prevResult: pod.result,
      conflist: { ...(await lab.conflist(pod.node)), cniVersion },
    });

  it("the daemon wrote the conflist into the CNI config dir once it was serving", async () => {
    expect(await lab.conflist(n1)).toEqual({
      cniVersion: "1.0.0",
      name: "trellis",
      plugins: [{ type: "trellis", daemonSocket: n1.socket }],
    });
  });

  it("VERSION lists every supported version", async () => {
    const res = await lab.shim(n1, "VERSION", {}, { cniVersion: "1.1.0" });
    expect(res.json).toEqual({ cniVersion: "1.1.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
  });

  it.each([
    ["0.3.1", { version: "4" }, false],
    ["0.4.0", { version: "4" }, false],
    ["1.0.0", {}, false],
    ["1.1.0", {}, true],
  ])("ADD answers a %s request in that version's result shape", async (cniVersion, ipExtra, withMtu) => {
    const pod = await lab.addPod(n1, `v${cniVersion.replaceAll(".", "")}`, { conflist: { ...(await lab.conflist(n1)), cniVersion } });
    expect(pod.result.cniVersion).toBe(cniVersion);
    const ips = pod.result.ips as Array<Record<string, unknown>>;
    expect(ips[0]).toEqual({ ...ipExtra, interface: 2, address: `${pod.address}/24`, gateway: "10.244.1.1" });
    const ifs = pod.result.interfaces as Array<Record<string, unknown>>;
    expect(ifs[2]?.sandbox).toBe(pod.netnsPath);
    expect("mtu" in (ifs[2] ?? {})).toBe(withMtu);
  });

  it("a version it does not support gets code 1", async () => {
    const res = await lab.shim(
      n1,
      "ADD",
      lab.podEnv({ containerId: "old", netnsPath: lab.pods[0]!.netnsPath, ifName: "eth5", name: "old" }),
      pluginConf(n1, "0.2.0"),
    );
    expect(res.json).toMatchObject({ code: 1, msg: expect.stringContaining("0.2.0") });
  });

  it("CHECK passes on a healthy pod, names what is wrong on a broken one, and is code 1 before 0.4.0", async () => {
    const pod = await lab.addPod(n1, "checked");
    const ok = await check(pod);
    expect(ok.code, ok.runs[0]?.stdout).toBe(0);
    expect(ok.runs[0]?.stdout).toBe("");
    await mustInNetns(pod.netns, "ip", ["route", "del", "default"]);
    const broken = await check(pod);
    expect(broken.code).not.toBe(0);
    expect(broken.runs[0]?.json?.msg).toMatch(/no default route via 10\.244\.1\.1 on eth0/);
    const old = await check(pod, "0.3.1");
    expect(old.runs[0]?.json).toMatchObject({ code: 1, msg: expect.stringContaining("CHECK needs cniVersion 0.4.0") });
  });

  it("CNI_ARGS pod identity is recorded with the allocation; unknown keys need IgnoreUnknown", async () => {
    const pod = await lab.addPod(n1, "identity");
    const record = JSON.parse(await readFile(join(n1.stateDir, "allocations", pod.address), "utf8")) as {
      attachment: Record<string, string>;
    };
    expect(record.attachment).toMatchObject({ podNamespace: "default", podName: "identity", containerId: pod.containerId, ifName: "eth0" });
    const env = { ...lab.podEnv({ ...pod, containerId: "strict-args", ifName: "eth7" }), CNI_ARGS: "K8S_POD_NAME=x;FOO=bar" };
    const res = await lab.shim(n1, "ADD", env);
    expect(res.json).toMatchObject({ code: 4, msg: expect.stringContaining("FOO") });
  });

  it("GC releases every attachment of the network that is not listed, and prints nothing", async () => {
    const keep = await lab.addPod(n2, "gc-keep");
    const drop1 = await lab.addPod(n2, "gc-drop1");
    const drop2 = await lab.addPod(n2, "gc-drop2");
    const res = await lab.shim(
      n2,
      "GC",
      {},
      {
        ...pluginConf(n2, "1.1.0"),
        "cni.dev/valid-attachments": [{ containerID: keep.containerId, ifname: "eth0" }],
      },
    );
    expect(res.code, res.stdout).toBe(0);
    expect(res.stdout).toBe("");
    const files = await allocationFiles(n2);
    expect(files).toContain(keep.address);
    expect(files).not.toContain(drop1.address);
    expect(files).not.toContain(drop2.address);
    expect((await inNetns(drop1.netns, "ip", ["link", "show", "eth0"])).code).not.toBe(0);
    expect(await lab.ping(keep, "10.244.2.1")).toBe(true);
  });

  it("chains with Debian's portmap: ADD and DEL of the list succeed, our CHECK passes, the result is ours", async () => {
    const base = await lab.conflist(n1);
    const conflist = { ...base, plugins: [...base.plugins, { type: "portmap", capabilities: { portMappings: true }, snat: true }] };
    const runtimeConfig = { portMappings: [{ hostPort: 18080, containerPort: 80, protocol: "tcp" }] };
    const pod = await lab.addPod(n1, "chained", { conflist, runtimeConfig });
    expect((pod.result.interfaces as Array<{ name: string }>).map((i) => i.name)).toEqual([
      "trellis0",
      expect.stringMatching(/^tr/),
      "eth0",
    ]);
    expect(pod.address).toMatch(/^10\.244\.1\./);
    const nat = await mustInNetns(n1.netns, "iptables", ["-t", "nat", "-S"]);
    expect(nat).toContain("18080");
    const checked = await execConflist({
      nodeNetns: n1.netns,
      binDir: lab.binDir,
      conflist,
      command: "CHECK",
      attachment: lab.attachmentOf(pod),
      prevResult: pod.result,
      runtimeConfig,
    });
    expect(checked.runs[0], JSON.stringify(checked.runs)).toMatchObject({ plugin: "trellis", code: 0, stdout: "" });
    // Debian's portmap 1.1.1 fails CHECK of an IPv4-only pod looking for IPv6 rules it never made
    // (containernetworking/plugins#819, fixed upstream later); anything else from it is a failure.
    const portmap = checked.runs[1];
    if (portmap?.code !== 0) expect(portmap?.json?.msg).toMatch(/^could not check ipv6 dnat: chain CNI-DN-\w+ not found/);
    const deleted = await execConflist({
      nodeNetns: n1.netns,
      binDir: lab.binDir,
      conflist,
      command: "DEL",
      attachment: lab.attachmentOf(pod),
      prevResult: pod.result,
      runtimeConfig,
    });
    expect(deleted.code, JSON.stringify(deleted.runs)).toBe(0);
    expect(await allocationFiles(n1)).not.toContain(pod.address);
    expect(await mustInNetns(n1.netns, "iptables", ["-t", "nat", "-S"])).not.toContain("18080");
  });

  it("ADD after DEL of the same container works", async () => {
    const pod = await lab.addPod(n2, "again");
    expect((await lab.delPod(pod)).code).toBe(0);
    const res = await lab.shim(n2, "ADD", lab.podEnv(pod));
    expect(res.code, res.stdout).toBe(0);
    expect(res.json?.ips).toBeDefined();
  });

  it("STATUS is 0 when ready, 51 while the route stream is broken, 50 with the daemon down", async () => {
    const status = () => lab.shim(n2, "STATUS", {}, pluginConf(n2, "1.1.0"));
    await waitFor("STATUS 0", async () => (await status()).code === 0);
    expect((await status()).stdout).toBe("");
    await lab.controlPlane!.stop();
    const stale = await waitFor("STATUS 51", async () => {
      const res = await status();
      return res.json?.code === 51 ? res : undefined;
    });
    expect(stale.json?.msg).toMatch(/route stream/);
    await lab.startControlPlane();
    await waitFor("STATUS 0 again", async () => (await status()).code === 0, 20_000);
    await n2.daemon!.stop("SIGKILL");
    const down = await status();
    expect(down.json).toMatchObject({ code: 50 });
    await lab.startDaemon(n2);
  });

  it("with the daemon down: ADD and CHECK answer 11 quickly; DEL succeeds and the daemon completes it on start", async () => {
    const pod = await lab.addPod(n2, "daemon-down");
    const other = await lab.addPod(n2, "daemon-down-peer");
    await n2.daemon!.stop("SIGKILL");
    const t0 = Date.now();
    const add = await lab.shim(n2, "ADD", lab.podEnv({ ...pod, containerId: "while-down", ifName: "eth3" }));
    expect(add.json).toMatchObject({ code: 11 });
    const chk = await check(pod);
    expect(chk.runs[0]?.json).toMatchObject({ code: 11 });
    expect(Date.now() - t0).toBeLessThan(10_000);
    const del = await lab.delPod(pod);
    expect(del.code, del.stdout).toBe(0);
    expect(del.stdout).toBe("");
    expect(await readdir(join(n2.socket, "..", "pending-deletes"))).toHaveLength(1);
    expect(await allocationFiles(n2)).toContain(pod.address); // nothing could be released yet
    await lab.startDaemon(n2);
    expect(await allocationFiles(n2)).not.toContain(pod.address);
    expect(await allocationFiles(n2)).toContain(other.address);
    expect(await readdir(join(n2.socket, "..", "pending-deletes"))).toHaveLength(0);
  });

  it("the conflist appears only once the daemon holds its lease and serves", async () => {
    await lab.controlPlane!.stop();
    await n1.daemon!.stop("SIGTERM");
    await rm(join(n1.confDir, "10-trellis.conflist"));
    void lab.startDaemon(n1).catch(() => undefined); // it cannot finish until the control plane is back
    await waitFor("registration retries", async () => (await readFile(n1.logFile, "utf8")).includes("retrying registration"));
    expect(await exists(join(n1.confDir, "10-trellis.conflist"))).toBe(false);
    await lab.startControlPlane();
    await waitFor("the conflist", () => exists(join(n1.confDir, "10-trellis.conflist")), 30_000);
  });

  it("a node whose state dir was wiped recovers its live allocations from the control plane and the kernel", async () => {
    await waitFor("node-1 serving", async () => (await readFile(n1.logFile, "utf8")).includes("serving the CNI shim"));
    const before = await allocationFiles(n1);
    expect(before.length).toBeGreaterThan(0);
    // the control plane's copy (etcd) catches up with the node's record
    await waitFor("the mirror in etcd", async () => (await lab.etcdKeys("/trellis/v1/allocations/node-1/")).length === before.length);
    await n1.daemon!.stop("SIGKILL");
    await rm(n1.stateDir, { recursive: true, force: true });
    await lab.startDaemon(n1);
    expect((await allocationFiles(n1)).sort()).toEqual([...before].sort());
    const fresh = await lab.addPod(n1, "after-wipe");
    expect(before).not.toContain(fresh.address);
  });
});
