import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Lab, type LabNode } from "../support/lab.js";
import { waitFor } from "../support/wait.js";

// Nodes that die, come back and join, with a short lease TTL; and the central-router mode.
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

const ttlS = 4;
const owned = async (lab: Lab, node: LabNode) => (await lab.routesOf(node)).filter((r) => r.protocol === "201");
const routeText = async (lab: Lab, node: LabNode) => (await owned(lab, node)).map((r) => `${r.dst} via ${r.gateway}`).sort();

describe.skipIf(!isRoot)("node lifecycle in a namespaced cluster (needs root)", () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 3, heartbeatIntervalS: 1, controlPlaneArgs: ["--lease-ttl", String(ttlS)] });
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    for (const node of lab.nodes) await waitFor(`${node.name}'s routes`, async () => (await owned(lab, node)).length === 2);
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("a node killed without warning leaves every other node's table within the TTL and a few seconds", async () => {
    const t0 = Date.now();
    await n3.daemon!.stop("SIGKILL");
    for (const node of [n1, n2]) {
      await waitFor(
        `node-3's route gone from ${node.name}`,
        async () => !(await owned(lab, node)).some((r) => r.gateway === n3.ip),
        (ttlS + 10) * 1000,
        100,
      );
    }
    const tookMs = Date.now() - t0;
    expect(tookMs).toBeLessThan((ttlS + 6) * 1000);
    expect(tookMs).toBeGreaterThanOrEqual(ttlS * 1000 - 1500); // not withdrawn before the TTL ran out
    // back within the grace period: the same subnet, routes everywhere again
    await lab.startDaemon(n3);
    for (const node of [n1, n2]) {
      await waitFor(
        `node-3's route back on ${node.name}`,
        async () => (await routeText(lab, node)).includes(`10.244.3.0/24 via ${n3.ip}`),
        10_000,
      );
    }
  });

  it("a node added later becomes reachable from every pod", async () => {
    const pods = [await lab.addPod(n1, "early-1"), await lab.addPod(n2, "early-2"), await lab.addPod(n3, "early-3")];
    const n4 = await lab.joinNode();
    const late = await lab.addPod(n4, "late");
    expect(late.address).toMatch(/^10\.244\.4\./);
    for (const node of [n1, n2, n3]) {
      await waitFor(
        `node-4's route on ${node.name}`,
        async () => (await routeText(lab, node)).includes(`10.244.4.0/24 via ${n4.ip}`),
        10_000,
      );
    }
    await waitFor("node-4's routes to the others", async () => (await owned(lab, n4)).length === 3, 10_000);
    for (const pod of pods)
      expect(await lab.ping(pod, late.address), `${pod.name} -> late; node-4 routes ${await routeText(lab, n4)}`).toBe(true);
    expect(await lab.ping(late, pods[0]!.address)).toBe(true);
  });
});

describe.skipIf(!isRoot)("central-router mode (needs root)", () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 3 });
    // Router mode is cluster config an admin sets (DESIGN.md §6), never a node's flag.
    await lab.admin("SetRouter", { nodeName: "node-1", router: true });
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("the router holds every node's route, the others send the cluster CIDR to it, and pods still reach each other", async () => {
    const [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    await waitFor("the router's routes", async () => (await routeText(lab, n1)).length === 2);
    expect(await routeText(lab, n1)).toEqual([`10.244.2.0/24 via ${n2.ip}`, `10.244.3.0/24 via ${n3.ip}`]);
    for (const node of [n2, n3]) {
      await waitFor(`${node.name}'s cluster route`, async () => (await routeText(lab, node)).join() === `10.244.0.0/16 via ${n1.ip}`);
    }
    const a = await lab.addPod(n2, "via-router-a");
    const b = await lab.addPod(n3, "via-router-b");
    const c = await lab.addPod(n1, "on-router");
    expect(await lab.ping(a, b.address)).toBe(true);
    expect(await lab.ping(b, c.address)).toBe(true);
    expect(await lab.ping(c, a.address)).toBe(true);
  });
});
