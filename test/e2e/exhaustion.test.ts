import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Lab, type LabNode, type LabPod } from "../support/lab.js";

const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

describe.skipIf(!isRoot)("a node whose /29 subnet fills up (needs root)", () => {
  let lab: Lab;
  let node: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clusterCidr: "10.244.0.0/24", subnetSize: 29 });
    node = lab.nodes[0]!;
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("hands out its 5 pod addresses, refuses the 6th with a clear error, and keeps serving", async () => {
    const pods: LabPod[] = [];
    for (let i = 1; i <= 5; i++) pods.push(await lab.addPod(node, `p${i}`));
    expect(new Set(pods.map((p) => p.address)).size).toBe(5);
    for (const p of pods) expect(p.address).toMatch(/^10\.244\.0\.(1[0-4])$/);

    const sixth = await lab.addPod(node, "p6").catch((err: Error) => err);
    expect(sixth).toBeInstanceOf(Error);
    expect(String(sixth)).toMatch(/"code":101/);
    expect(String(sixth)).toMatch(/subnet 10\.244\.0\.8\/29 is full: all 5 pod addresses are in use/);

    const del = await lab.delPod(pods[0]!);
    expect(del.code).toBe(0);
    const seventh = await lab.addPod(node, "p7");
    expect(seventh.address).toBe(pods[0]!.address);
    expect(await lab.ping(seventh, pods[1]!.address)).toBe(true);
  });
});
