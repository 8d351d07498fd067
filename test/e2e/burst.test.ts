import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allocationFiles, hostVeths, Lab, type LabNode, type LabPod } from "../support/lab.js";
import { waitFor } from "../support/wait.js";

// Bursts as a node sees them when it boots or a deployment scales (DESIGN.md §8): every ADD of a burst
// succeeds with its own address, the DELs after it leave nothing behind, and a burst larger than the
// subnet gets clean refusals for the rest.
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

async function burst(lab: Lab, node: LabNode, pods: readonly LabPod[], command: "ADD" | "DEL") {
  return Promise.all(pods.map((pod) => lab.shim(node, command, lab.podEnv(pod), undefined, 120_000)));
}

async function expectNothingLeft(lab: Lab, node: LabNode): Promise<void> {
  expect(await allocationFiles(node)).toEqual([]);
  expect(await hostVeths(node)).toEqual([]);
  await waitFor(
    "the control plane's copy to empty",
    async () => (await lab.etcdKeys(`/trellis/v1/allocations/${node.name}/`)).length === 0,
  );
}

describe.skipIf(!isRoot)("bursts of parallel ADDs and DELs on one node (needs root)", () => {
  let lab: Lab;
  let node: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1 });
    node = lab.nodes[0]!;
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it.each([100, 250])(
    "%i parallel ADDs all succeed with distinct addresses, within 60 s; the DELs leave nothing behind",
    async (count) => {
      const pods: LabPod[] = [];
      for (let i = 0; i < count; i++) pods.push(await lab.newPod(node, `b${count}-${i}`));
      const started = Date.now();
      const added = await burst(lab, node, pods, "ADD");
      const tookMs = Date.now() - started;
      const failures = added.flatMap((r, i) => (r.code === 0 ? [] : [`${pods[i]?.name}: ${r.stdout.trim()}`]));
      expect(failures).toEqual([]);
      expect(tookMs).toBeLessThan(60_000);
      const addresses = added.map((r) => (r.json?.ips as Array<{ address: string }> | undefined)?.[0]?.address);
      expect(new Set(addresses).size).toBe(count);
      expect((await allocationFiles(node)).length).toBe(count);

      const deleted = await burst(lab, node, pods, "DEL");
      expect(deleted.filter((r) => r.code !== 0).map((r) => r.stdout)).toEqual([]);
      await expectNothingLeft(lab, node);
      for (const pod of pods) await lab.removeNetns(pod.netns);
    },
    180_000,
  );

  it("an ADD whose CNI_NETNS is not a network namespace fails with its error and leaves nothing half-made", async () => {
    const notNetns = join(lab.workDir, "not-a-netns");
    await writeFile(notNetns, "");
    const res = await lab.shim(node, "ADD", { CNI_CONTAINERID: "not-netns", CNI_NETNS: notNetns, CNI_IFNAME: "eth0" });
    expect(res.code).not.toBe(0);
    expect(res.json?.code).toBe(999);
    expect(String(res.json?.msg)).toContain(notNetns);
    await expectNothingLeft(lab, node);
  });
});

describe.skipIf(!isRoot)("a burst larger than the node's subnet (needs root)", () => {
  let lab: Lab;
  let node: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clusterCidr: "10.244.0.0/24", subnetSize: 28 });
    node = lab.nodes[0]!;
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("gives every free address out once, refuses the rest with code 101, and leaves no half-made pod", async () => {
    const pods: LabPod[] = [];
    for (let i = 0; i < 20; i++) pods.push(await lab.newPod(node, `f${i}`));
    const added = await burst(lab, node, pods, "ADD");
    const ok = added.filter((r) => r.code === 0);
    expect(ok).toHaveLength(13); // a /28 has 16 addresses: network, gateway and broadcast are not for pods
    expect(added.filter((r) => r.code !== 0).map((r) => r.json?.code)).toEqual(Array(7).fill(101));
    expect((await hostVeths(node)).length).toBe(13);
    expect((await allocationFiles(node)).length).toBe(13);
    expect((await burst(lab, node, pods, "DEL")).every((r) => r.code === 0)).toBe(true);
    await expectNothingLeft(lab, node);
    for (const pod of pods) await lab.removeNetns(pod.netns);
  }, 120_000);
});
