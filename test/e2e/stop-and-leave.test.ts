import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inNetns } from "../support/exec.js";
import { daemonNodeFlags, dist, Lab, type LabNode, type LabPod } from "../support/lab.js";
import { waitFor } from "../support/wait.js";

// Stopping is not leaving (DESIGN.md §2): SIGTERM keeps the node's route, so a daemon restarted within the
// TTL cuts nothing; leaving is explicit (AdminService.DrainNode, or `trellis-node-daemon leave`).
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

const owned = async (lab: Lab, node: LabNode) => (await lab.routesOf(node)).filter((r) => r.protocol === "201");
const hasRouteTo = async (lab: Lab, on: LabNode, to: LabNode) => (await owned(lab, on)).some((r) => r.gateway === to.ip);

/** `ping -i 0.2` from a pod for `seconds`; resolves with what ping's summary says was sent and received. */
function pingFor(from: LabPod, to: string, seconds: number): Promise<{ sent: number; received: number; output: string }> {
  return new Promise((resolve, reject) => {
    const count = Math.round(seconds / 0.2);
    const child = spawn("nsenter", [`--net=${from.netnsPath}`, "ping", "-n", "-i", "0.2", "-W", "1", "-c", String(count), to]);
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    child.once("error", reject);
    child.once("exit", () => {
      const m = /(\d+) packets transmitted, (\d+) received/.exec(output);
      if (!m) reject(new Error(`no summary from ping: ${output}`));
      else resolve({ sent: Number(m[1]), received: Number(m[2]), output });
    });
  });
}

/** `trellis-node-daemon leave` with the node's own flags, in its namespace. */
function leave(lab: Lab, node: LabNode) {
  return inNetns(node.netns, process.execPath, [
    ...daemonNodeFlags,
    join(dist, "node-daemon", "main.js"),
    "leave",
    "--node-name",
    node.name,
    "--node-ip",
    node.ip,
    "--control-plane",
    lab.controlPlaneAddress,
    "--socket",
    node.socket,
    "--state-dir",
    node.stateDir,
    "--cni-conf-dir",
    node.confDir,
    "--ca-cert",
    lab.pki.ca,
    "--credential",
    node.credential,
  ]);
}

describe.skipIf(!isRoot)("stopping is not leaving (needs root)", () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  beforeAll(async () => {
    // A TTL long enough for a restart, short enough that a withdrawal by expiry would show within the test.
    lab = await Lab.create({ nodes: 3, heartbeatIntervalS: 1, controlPlaneArgs: ["--lease-ttl", "15"] });
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    for (const node of lab.nodes) await waitFor(`${node.name}'s routes`, async () => (await owned(lab, node)).length === 2);
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("a daemon SIGTERMed and started again loses at most one ping of a stream across nodes", async () => {
    const a = await lab.addPod(n1, "pinger");
    const b = await lab.addPod(n2, "target");
    expect(await lab.ping(a, b.address)).toBe(true);
    const pinging = pingFor(a, b.address, 10);
    await sleep(1500);
    await n2.daemon!.stop("SIGTERM");
    expect(n2.daemon!.child.exitCode).toBe(0);
    await sleep(2000); // down for a while, as an upgrade would be
    expect(await hasRouteTo(lab, n1, n2), "node-2's route on node-1 while its daemon is stopped").toBe(true);
    await lab.startDaemon(n2);
    const { sent, received, output } = await pinging;
    const lost = sent - received;
    console.log(`ping across node-2's daemon restart: ${sent} sent, ${received} received, ${lost} lost`);
    expect(lost, output).toBeLessThanOrEqual(1);
    expect(await hasRouteTo(lab, n1, n2)).toBe(true);
  });

  it("DrainNode of a running node sticks while its daemon runs (registering again is refused), and a restart brings it back", async () => {
    await lab.admin("DrainNode", { name: n3.name });
    for (const node of [n1, n2])
      await waitFor(`node-3's route gone from ${node.name}`, async () => !(await hasRouteTo(lab, node, n3)), 5_000);
    await sleep(4_000); // four heartbeat intervals: each failed, and each registration again was refused
    for (const node of [n1, n2]) expect(await hasRouteTo(lab, node, n3)).toBe(false);
    expect(await readFile(n3.logFile, "utf8")).toMatch(/drained by an admin .*restart the daemon/);
    await n3.daemon!.stop("SIGTERM");
    await lab.startDaemon(n3);
    for (const node of [n1, n2]) await waitFor(`node-3's route back on ${node.name}`, async () => hasRouteTo(lab, node, n3), 10_000);
  });

  it("DrainNode withdraws a stopped node's route at once and keeps its certificate: its daemon comes back without a join token", async () => {
    await n3.daemon!.stop("SIGTERM");
    await sleep(2500); // more than two heartbeat intervals: nothing is withdrawn by stopping
    expect(await hasRouteTo(lab, n1, n3)).toBe(true);
    const t0 = Date.now();
    await lab.admin("DrainNode", { name: n3.name });
    for (const node of [n1, n2])
      await waitFor(`node-3's route gone from ${node.name}`, async () => !(await hasRouteTo(lab, node, n3)), 5_000);
    expect(Date.now() - t0).toBeLessThan(5_000); // at once, not after the 15 s TTL
    const { node } = (await lab.admin("GetNode", { name: n3.name })) as { node: Record<string, unknown> };
    expect([node.live ?? false, node.releasedReason]).toEqual([false, "drained"]); // JSON leaves false out
    // Unlike EvictNode, the certificate stays valid: the daemon registers again with it, same subnet.
    await lab.startDaemon(n3);
    for (const other of [n1, n2]) {
      await waitFor(`node-3's route back on ${other.name}`, async () => hasRouteTo(lab, other, n3), 10_000);
    }
    expect(((await lab.admin("GetNode", { name: n3.name })) as { node: Record<string, unknown> }).node).toMatchObject({
      live: true,
      subnet: "10.244.3.0/24",
    });
  });

  it("`leave` refuses while the daemon runs, and once it is stopped withdraws the route, removes its own routes and exits 0", async () => {
    const refused = await leave(lab, n3);
    expect(refused.code, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stderr).toMatch(/daemon is running.*stop it first/);
    expect(await hasRouteTo(lab, n1, n3)).toBe(true);

    await n3.daemon!.stop("SIGTERM");
    expect((await owned(lab, n3)).length).toBe(2); // stopping kept node-3's own routes too
    const t0 = Date.now();
    const res = await leave(lab, n3);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toBe("");
    for (const node of [n1, n2])
      await waitFor(`node-3's route gone from ${node.name}`, async () => !(await hasRouteTo(lab, node, n3)), 5_000);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await owned(lab, n3)).toEqual([]);
    const { node } = (await lab.admin("GetNode", { name: n3.name })) as { node: Record<string, unknown> };
    expect([node.live ?? false, node.releasedReason]).toEqual([false, "withdrawn"]);
  });
});
