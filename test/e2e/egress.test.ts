import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inNetns, mustInNetns } from "../support/exec.js";
import { daemonNodeFlags, dist, Lab, type LabNode, type LabPod, pluginConf } from "../support/lab.js";
import { waitFor, waitForLog } from "../support/wait.js";

// Needs root (network namespaces) and nft (nftables). Locally without them the suite is skipped and says
// why; in CI (CI=true) a missing need is a failure (STYLE.md §8).
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

const nft = (node: LabNode, args: string[]) => inNetns(node.netns, "nft", args);
/** Someone else's rules on the node: a table of their own, and a chain of theirs in the iptables-nft style nat table. */
const foreignRules = `table ip foreign {
  chain keep {
    ip daddr 198.51.100.1 drop
  }
}
table ip nat {
  chain POSTROUTING {
    type nat hook postrouting priority 100; policy accept;
    ip saddr 172.16.0.0/12 oifname "nowhere0" masquerade
  }
}
`;
const foreignState = async (node: LabNode) =>
  `${await mustInNetns(node.netns, "nft", ["list", "table", "ip", "foreign"])}${await mustInNetns(node.netns, "nft", ["list", "table", "ip", "nat"])}`;

describe.skipIf(!isRoot)("egress and MTU (needs root and nftables)", () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  const pods: LabPod[] = [];
  beforeAll(async () => {
    // node-3 runs a pod MTU that differs from the cluster's (its uplink's 1500 is everyone else's).
    lab = await Lab.create({ nodes: 3, nodeArgs: { "node-3": ["--mtu", "1400"] } });
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    for (const node of lab.nodes) pods.push(await lab.addPod(node, `eg-${node.name}`));
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("every pod reaches the outside host, which sees the pod's node IP as the source", async () => {
    const seen: string[] = [];
    for (const pod of pods) {
      const source = await lab.sourceSeenBy(pod.netns, lab.outside.ip, lab.outside.port);
      seen.push(`${pod.name} (${pod.address} on ${pod.node.name}) -> outside ${lab.outside.ip}: seen as ${source}`);
      expect(source).toBe(pod.node.ip);
    }
    console.log(`egress check:\n  ${seen.join("\n  ")}`);
    // The outside host has no route back to the pod network: without masquerade nothing would come back.
    expect((await inNetns(lab.outside.netns, "ip", ["route", "get", pods[0]?.address ?? ""])).code).not.toBe(0);
  });

  it("pod-to-pod traffic keeps the pod's own address, on one node and across nodes", async () => {
    const [a, b] = pods as [LabPod, LabPod];
    await lab.startEcho(b.netns, b.address);
    expect(await lab.sourceSeenBy(a.netns, b.address)).toBe(a.address);
    const local = await lab.addPod(n1, "eg-local");
    expect(await lab.sourceSeenBy(local.netns, b.address)).toBe(local.address);
  });

  it("the rules are in Trellis's own table: replaced as a whole on a restart, and nobody else's table or chain changes", async () => {
    const ours = await mustInNetns(n1.netns, "nft", ["list", "table", "ip", "trellis"]);
    expect(ours).toMatch(/ip saddr 10\.244\.0\.0\/16 ip daddr != 10\.244\.0\.0\/16 masquerade/);
    await mustInNetns(n1.netns, "nft", ["-f", "/dev/stdin"], { stdin: foreignRules });
    const before = await foreignState(n1);
    await n1.daemon?.stop();
    await lab.startDaemon(n1);
    expect(await foreignState(n1)).toBe(before);
    expect(await mustInNetns(n1.netns, "nft", ["list", "table", "ip", "trellis"])).toBe(ours); // one rule, not two
    expect(await lab.sourceSeenBy(pods[0]?.netns ?? "", lab.outside.ip)).toBe(n1.ip);
  });

  it("--no-masquerade removes Trellis's table and nothing else; pods then leave with their own address", async () => {
    const before = await foreignState(n1);
    await n1.daemon?.stop();
    lab.setNodeArgs(n1, ["--no-masquerade"]);
    await lab.startDaemon(n1);
    expect((await nft(n1, ["list", "table", "ip", "trellis"])).code).not.toBe(0);
    expect(await foreignState(n1)).toBe(before);
    // The outside host sees the pod's address, and cannot answer it (no route to the pod network).
    await expect(lab.sourceSeenBy(pods[0]?.netns ?? "", lab.outside.ip)).rejects.toThrow(/no connection/);
    await n1.daemon?.stop();
    lab.setNodeArgs(n1, []);
    await lab.startDaemon(n1);
    expect((await nft(n1, ["list", "table", "ip", "trellis"])).code).toBe(0);
  });

  it("pods get their node's uplink MTU; a node whose MTU differs shows in the admin API and answers STATUS 51", async () => {
    const mtuOf = async (pod: LabPod) =>
      (JSON.parse(await mustInNetns(pod.netns, "ip", ["-json", "link", "show", pod.ifName])) as Array<{ mtu: number }>)[0]?.mtu;
    expect(await mtuOf(pods[0] as LabPod)).toBe(1500);
    expect(await mtuOf(pods[2] as LabPod)).toBe(1400);
    const listed = (await lab.admin("ListNodes")) as {
      clusterMtu: number;
      nodes: Array<{ name: string; mtu: number; mtuDiffers?: boolean }>;
    };
    expect(listed.clusterMtu).toBe(1500);
    expect(listed.nodes.map((n) => [n.name, n.mtu, n.mtuDiffers ?? false])).toEqual([
      ["node-1", 1500, false],
      ["node-2", 1500, false],
      ["node-3", 1400, true],
    ]);
    const status = (node: LabNode) => lab.shim(node, "STATUS", {}, pluginConf(node, "1.1.0"));
    const stale = await waitFor("STATUS 51 on node-3", async () => {
      const res = await status(n3);
      return res.json?.code === 51 ? res : undefined;
    });
    expect(stale.json?.msg).toMatch(/pod MTU is 1400 but the cluster's is 1500/);
    await waitFor("STATUS 0 on node-2", async () => (await status(n2)).code === 0);
  });

  it("bad input at start-up: no nft, or no uplink: a clear message, exit 1, and nothing started", async () => {
    const start = (extra: string[], path = process.env.PATH ?? "") =>
      inNetns(
        n2.netns,
        "env",
        [
          `PATH=${path}`,
          process.execPath,
          ...daemonNodeFlags,
          join(dist, "node-daemon", "main.js"),
          "--node-name",
          "node-9",
          "--control-plane",
          lab.controlPlaneAddress,
          "--socket",
          join(lab.workDir, "bad", "cni.sock"),
          "--state-dir",
          join(lab.workDir, "bad", "state"),
          "--cni-conf-dir",
          "",
          ...extra,
        ],
        { timeoutMs: 20_000 },
      );
    const noNft = await start(["--node-ip", n2.ip], "/nonexistent");
    expect(noNft.code).toBe(1);
    expect(noNft.stderr).toMatch(/nft \(nftables\) was not found: .*install it .*--no-masquerade/);
    const noUplink = await start(["--node-ip", "192.168.1.99"]);
    expect(noUplink.code).toBe(1);
    expect(noUplink.stderr).toMatch(/no interface of this node holds --node-ip 192\.168\.1\.99.*set --mtu/);
    const nodes = (await lab.admin("ListNodes")) as { nodes: Array<{ name: string }> };
    expect(nodes.nodes.map((n) => n.name)).not.toContain("node-9");
    // the running daemon on that node was not disturbed
    await waitForLog(n2.logFile, "serving the CNI shim");
  });

  it("the pod MTU follows an uplink that is not 1500: node-2's eth0 at 1450, its daemon restarted", async () => {
    await n2.daemon!.stop("SIGTERM");
    await mustInNetns(n2.netns, "ip", ["link", "set", "eth0", "mtu", "1450"]);
    await lab.startDaemon(n2);
    const pod = await lab.addPod(n2, "eg-node-2-mtu");
    const mtu = (JSON.parse(await mustInNetns(pod.netns, "ip", ["-json", "link", "show", pod.ifName])) as Array<{ mtu: number }>)[0]?.mtu;
    expect(mtu).toBe(1450);
    expect(await readFile(n2.logFile, "utf8")).toMatch(/pod MTU 1450 \(the uplink's\)/);
    await waitFor("node-2 registered at MTU 1450", async () => {
      const listed = (await lab.admin("ListNodes")) as { nodes: Array<{ name: string; mtu: number }> };
      return listed.nodes.find((n) => n.name === "node-2")?.mtu === 1450;
    });
  });
});
