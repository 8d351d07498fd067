import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostVethName } from "../../node-daemon/net/names.js";
import { Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { inNetns, mustInNetns } from "../support/exec.js";
import { allocationFiles, Lab, type LabNode, type LabPod } from "../support/lab.js";
import { missingPodmanPackages, Podman, type PodmanContainer } from "../support/podman.js";

// A real, unmodified container runtime on a Trellis node: Debian's rootful podman 4.3 with its CNI
// backend runs in node-1's namespace, reads the conflist the daemon wrote and execs the trellis shim.
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");
const missing = missingPodmanPackages();
if (missing.length > 0 && process.env.CI === "true")
  throw new Error(`the podman e2e test needs ${missing.join(", ")} (.ci/setup installs them)`);

const linkExists = async (node: LabNode, name: string) => (await inNetns(node.netns, "ip", ["link", "show", "dev", name])).code === 0;

describe.skipIf(!isRoot || missing.length > 0)(
  `podman --network trellis (needs root${missing.length > 0 ? `; missing ${missing.join(", ")}` : ""})`,
  () => {
    let lab: Lab;
    let n1: LabNode, n2: LabNode;
    let podman: Podman;
    let remote: LabPod;
    let c1: PodmanContainer, c2: PodmanContainer;
    beforeAll(async () => {
      lab = await Lab.create({ nodes: 2 });
      [n1, n2] = lab.nodes as [LabNode, LabNode];
      podman = await Podman.create({ node: n1, binDir: lab.binDir, name: lab.prefix });
      remote = await lab.addPod(n2, "remote");
    });
    afterAll(async () => {
      try {
        await podman?.destroy();
      } finally {
        await lab?.destroy();
      }
    });

    it("podman run gives each container an address in node-1's subnet, allocated by the daemon for that container", async () => {
      c1 = await podman.run("c1");
      c2 = await podman.run("c2");
      const [bridge] = JSON.parse(await mustInNetns(n1.netns, "ip", ["-json", "-4", "addr", "show", "dev", "trellis0"])) as Array<{
        addr_info: Array<{ local: string; prefixlen: number }>;
      }>;
      const gateway = bridge?.addr_info[0];
      const subnet = Cidr.of(parseIpv4(gateway?.local ?? ""), gateway?.prefixlen ?? 32);
      expect(subnet.toString()).toBe("10.244.1.0/24"); // node-1's lease in a fresh lab
      for (const c of [c1, c2]) {
        expect(subnet.contains(parseIpv4(c.ip)), `${c.name} ${c.ip}`).toBe(true);
        expect({ gateway: c.gateway, prefixLength: c.prefixLength }).toEqual({ gateway: gateway?.local, prefixLength: gateway?.prefixlen });
        expect(c.sandbox).toMatch(/^\/run\/netns\/netns-/);
        const record = JSON.parse(await readFile(join(n1.stateDir, "allocations", c.ip), "utf8")) as { attachment: Record<string, string> };
        expect(record.attachment).toMatchObject({ containerId: c.id, ifName: "eth0", podName: c.name });
        expect(await linkExists(n1, hostVethName(c.id, "eth0"))).toBe(true);
      }
      expect(c1.ip).not.toBe(c2.ip);
    });

    it("the containers ping each other", async () => {
      for (const [from, to] of [
        [c1, c2],
        [c2, c1],
      ] as const) {
        const res = await podman.exec(from.name, ["ping", "-c1", "-W1", to.ip]);
        expect(res.code, `${from.name} -> ${to.name} ${to.ip}: ${res.stdout}${res.stderr}`).toBe(0);
      }
    });

    it("the containers ping a pod on node-2", async () => {
      expect(remote.address).toMatch(/^10\.244\.2\./);
      for (const from of [c1, c2]) {
        const res = await podman.exec(from.name, ["ping", "-c1", "-W1", remote.address]);
        expect(res.code, `${from.name} -> remote ${remote.address}: ${res.stdout}${res.stderr}`).toBe(0);
      }
      expect(await lab.ping(remote, c1.ip)).toBe(true);
    });

    it("podman rm -f releases the addresses (CNI DEL) and removes the veths and namespaces", async () => {
      const res = await podman.rm(c1.name, c2.name);
      expect(res.code, res.stderr).toBe(0);
      const files = await allocationFiles(n1);
      for (const c of [c1, c2]) {
        expect(files).not.toContain(c.ip);
        expect(await linkExists(n1, hostVethName(c.id, "eth0"))).toBe(false);
        expect(existsSync(c.sandbox)).toBe(false);
      }
      expect(await allocationFiles(n2)).toContain(remote.address);
    });
  },
);
