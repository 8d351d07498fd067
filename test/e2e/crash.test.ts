import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inNetns } from "../support/exec.js";
import { allocationFiles, hostVeths, Lab, type LabNode, type LabPod } from "../support/lab.js";
import { waitFor } from "../support/wait.js";

// DESIGN.md invariants 2 and 6: 100 concurrent ADDs through the shim binary, the daemon killed with
// SIGKILL in the middle, restarted, the runtime retrying what failed (DEL, then ADD, as kubelet does).
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

const podCount = 100;

async function addressIn(pod: LabPod): Promise<string | undefined> {
  const res = await inNetns(pod.netns, "ip", ["-json", "-4", "addr", "show", "dev", pod.ifName]);
  if (res.code !== 0) return undefined;
  const [link] = JSON.parse(res.stdout) as Array<{ addr_info: Array<{ local: string }> }>;
  return link?.addr_info[0]?.local;
}

describe.skipIf(!isRoot)("a daemon killed in the middle of 100 concurrent ADDs (needs root)", () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2 });
    [n1, n2] = lab.nodes as [LabNode, LabNode];
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("never loses or duplicates an address, and leaves the subnet entirely free after DEL of all", async () => {
    const peer = await lab.addPod(n2, "peer");
    const pods: LabPod[] = [];
    for (let i = 0; i < podCount; i++) pods.push(await lab.newPod(n1, `c${i}`));

    // Round 1: all at once; SIGKILL the daemon once a third have their result.
    const firstResult = new Map<LabPod, string>();
    let killed = false;
    const round1 = pods.map(async (pod) => {
      const res = await lab.shim(n1, "ADD", lab.podEnv(pod));
      const ips = res.json?.ips as Array<{ address: string }> | undefined;
      if (res.code === 0 && ips?.[0]) firstResult.set(pod, ips[0].address.split("/")[0] ?? "");
      else expect(res.json?.code, `${pod.name}: ${res.stdout}${res.stderr}`).toBe(11); // try again later
      if (!killed && firstResult.size >= podCount / 3) {
        killed = true;
        await n1.daemon!.stop("SIGKILL");
      }
    });
    await Promise.all(round1);
    expect(killed).toBe(true);
    expect(firstResult.size).toBeGreaterThanOrEqual(podCount / 3);
    expect(firstResult.size).toBeLessThan(podCount);

    // The runtime cleans up after each failed ADD (DEL succeeds even with the daemon down) ...
    const failed = pods.filter((p) => !firstResult.has(p));
    for (const pod of failed) expect((await lab.delPod(pod)).code).toBe(0);
    // ... the daemon comes back, completes those DELs, and the runtime retries the ADDs.
    await lab.startDaemon(n1);
    await Promise.all(
      failed.map(async (pod) => {
        const res = await lab.shim(n1, "ADD", lab.podEnv(pod));
        expect(res.code, `${pod.name}: ${res.stdout}`).toBe(0);
      }),
    );

    // Every pod that got a result in round 1 kept its address; no address is held twice.
    const held = new Map<string, LabPod>();
    for (const pod of pods) {
      const address = await addressIn(pod);
      expect(address, pod.name).toBeDefined();
      if (firstResult.has(pod)) expect(address, pod.name).toBe(firstResult.get(pod));
      expect(held.get(address!), `${address} held by ${held.get(address!)?.name} and ${pod.name}`).toBeUndefined();
      held.set(address!, pod);
      pod.address = address!;
    }
    expect((await allocationFiles(n1)).sort()).toEqual([...held.keys()].sort());
    // ... and connectivity: a pod on the other node reaches every one of them.
    const unreachable: string[] = [];
    for (const pod of pods) if (!(await lab.ping(peer, pod.address))) unreachable.push(`${pod.name} ${pod.address}`);
    expect(unreachable).toEqual([]);

    // DEL of all: the subnet is entirely free again, on the node and in the control plane's copy.
    await Promise.all(pods.map(async (pod) => expect((await lab.delPod(pod)).code).toBe(0)));
    expect(await allocationFiles(n1)).toEqual([]);
    expect(await hostVeths(n1)).toEqual([]);
    await waitFor("the control plane's copy to empty", async () => (await lab.etcdKeys("/trellis/v1/allocations/node-1/")).length === 0);
  });
});
