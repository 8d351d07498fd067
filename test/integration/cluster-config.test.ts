// Issue 10, finding 11: replicas share their config through etcd. The first replica stores its cluster
// CIDR and subnet size; a replica started with others refuses to start, instead of handing out subnets
// that overlap the ones the others hand out.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, freePort, startEtcd } from "../support/etcd.js";
import { dist } from "../support/lab.js";

let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

/** Runs a plaintext replica until it logs that it serves or exits; returns its output and exit code (null: it served). */
async function replica(prefix: string, cidr: string, size: string): Promise<{ code: number | null; output: string }> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      join(dist, "control-plane", "main.js"),
      "--etcd-endpoints",
      etcd.endpoint,
      "--etcd-prefix",
      prefix,
      "--listen",
      `127.0.0.1:${port}`,
      "--insecure-plaintext",
      "--cluster-cidr",
      cidr,
      "--subnet-size",
      size,
      "--metrics-address",
      "127.0.0.1:0",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      if (output.includes("route feed started")) child.kill("SIGTERM");
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code: output.includes("route feed started") ? null : code, output });
    });
  });
}

describe("the cluster config lives in etcd", () => {
  it("a replica with another --cluster-cidr or --subnet-size refuses to start and says which flags to use", async () => {
    const prefix = namespace();
    expect((await replica(prefix, "10.244.0.0/16", "24")).code).toBeNull();
    expect((await replica(prefix, "10.244.0.0/16", "24")).code).toBeNull(); // the same flags: fine
    const other = await replica(prefix, "10.200.0.0/16", "24");
    expect(other.code).toBe(1);
    expect(other.output).toMatch(
      /set up with --cluster-cidr 10\.244\.0\.0\/16 --subnet-size 24: start every replica with the cluster's flags/,
    );
    expect((await replica(prefix, "10.244.0.0/16", "26")).code).toBe(1);
  }, 60_000);
});
