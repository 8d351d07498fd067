import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../support/exec.js";
import { dist, Lab, type LabNode } from "../support/lab.js";

// The conflist version is a choice (issue 11): --cni-version 1.1.0 for runtimes whose libcni has STATUS and GC.
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

describe.skipIf(!isRoot)("a daemon started with --cni-version 1.1.0 (needs root)", () => {
  let lab: Lab;
  let n1: LabNode;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, daemonArgs: ["--cni-version", "1.1.0"] });
    [n1] = lab.nodes as [LabNode];
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("writes a 1.1.0 conflist, which a runtime executes: ADD gets a 1.1.0 result, STATUS answers 0", async () => {
    const conflist = await lab.conflist(n1);
    expect(conflist).toEqual({ cniVersion: "1.1.0", name: "trellis", plugins: [{ type: "trellis", daemonSocket: n1.socket }] });
    const pod = await lab.addPod(n1, "v110");
    expect(pod.result.cniVersion).toBe("1.1.0");
    const status = await lab.shim(n1, "STATUS", {}, { cniVersion: conflist.cniVersion, ...conflist.plugins[0], name: conflist.name });
    expect(status.code, status.stdout).toBe(0);
  });
});

describe("--cni-version of another value", () => {
  it("the daemon refuses to start, exit 2, saying which versions it writes", async () => {
    const res = await run(process.execPath, [
      join(dist, "node-daemon", "main.js"),
      "--node-name",
      "node-1",
      "--node-ip",
      "192.168.1.11",
      "--cni-version",
      "0.4.0",
    ]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^trellis-node-daemon: --cni-version "0.4.0" is not a conflist version the daemon writes: give 1.0.0/);
  });
});
