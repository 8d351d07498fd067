import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execConflist } from "../support/cni-runtime.js";
import { inNetns } from "../support/exec.js";
import { controlPlaneMetricsAddress, daemonMetricsAddress, daemonNodeFlags, dist, Lab, type LabNode } from "../support/lab.js";
import { parseMetrics, type Samples, sampleOf } from "../support/prometheus.js";
import { waitFor } from "../support/wait.js";

// Metrics (issue 11, part 4): each daemon's and the control plane's GET /metrics, scraped from inside their
// namespaces, hold the numbers of what this test did through the shim; a metrics port in use stops a
// program at start-up, before it joins or serves.
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

const requests = (s: Samples, command: string, code: number) => sampleOf(s, "trellis_cni_requests_total", { command, code: String(code) });
const phaseCount = (s: Samples, phase: string) => sampleOf(s, "trellis_cni_phase_duration_seconds_count", { phase });

describe.skipIf(!isRoot)("metrics (needs root)", () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  const scrape = async (target: LabNode | "control-plane") => parseMetrics(await lab.scrape(target));

  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2 });
    [n1, n2] = lab.nodes as [LabNode, LabNode];
    // Both route streams are open before the third node joins: its route reaches them as a change.
    await waitFor("two route streams", async () => sampleOf(await scrape("control-plane"), "trellis_route_streams") === 2);
    n3 = await lab.joinNode();
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("a daemon counts the ADDs, CHECKs and DELs done through the shim by code, and times them and their phases", async () => {
    const gone = await lab.addPod(n1, "m-gone");
    const kept = await lab.addPod(n1, "m-kept");
    await lab.addPod(n2, "m-other");
    const again = await lab.shim(n1, "ADD", lab.podEnv(kept)); // the same container and interface again
    expect(again.json).toMatchObject({ code: 100 });
    const checked = await execConflist({
      nodeNetns: n1.netns,
      binDir: lab.binDir,
      command: "CHECK",
      attachment: lab.attachmentOf(kept),
      prevResult: kept.result,
      conflist: await lab.conflist(n1),
    });
    expect(checked.code).toBe(0);
    expect((await lab.delPod(gone)).code).toBe(0);

    const s1 = await scrape(n1);
    expect(requests(s1, "ADD", 0)).toBe(2);
    expect(requests(s1, "ADD", 100)).toBe(1);
    expect(requests(s1, "CHECK", 0)).toBe(1);
    expect(requests(s1, "DEL", 0)).toBe(1);
    expect(sampleOf(s1, "trellis_cni_request_duration_seconds_count", { command: "ADD" })).toBe(3);
    expect(sampleOf(s1, "trellis_cni_request_duration_seconds_sum", { command: "ADD" })).toBeGreaterThan(0);
    // Two addresses chosen; recorded twice and released once; two veths made, one inspected, one deleted.
    expect(phaseCount(s1, "allocation")).toBe(2);
    expect(phaseCount(s1, "fsync")).toBe(3);
    expect(phaseCount(s1, "kernel")).toBe(4);
    expect(sampleOf(s1, "trellis_pod_addresses_in_use")).toBe(1);
    expect(sampleOf(s1, "trellis_pending_deletes")).toBe(0);
    expect(sampleOf(s1, "process_cpu_seconds_total")).toBeGreaterThan(0);

    const s2 = await scrape(n2);
    expect(requests(s2, "ADD", 0)).toBe(1);
    expect(requests(s2, "DEL", 0)).toBeUndefined();
    expect(sampleOf(s2, "trellis_pod_addresses_in_use")).toBe(1);
    const s3 = await scrape(n3);
    expect(sampleOf(s3, "trellis_pod_addresses_in_use")).toBe(0);
    expect(requests(s3, "ADD", 0)).toBeUndefined();
  });

  it("each daemon holds a route to every other node, and measured the lag of the route the third node's joining brought", async () => {
    for (const node of [n1, n2, n3]) {
      const s = await waitFor(`${node.name}'s routes installed`, async () => {
        const s = await scrape(node);
        return sampleOf(s, "trellis_routes", { state: "installed" }) === 2 ? s : undefined;
      });
      expect(sampleOf(s, "trellis_routes", { state: "desired" })).toBe(2);
      expect(sampleOf(s, "trellis_routes", { state: "failed" })).toBe(0);
    }
    for (const node of [n1, n2]) {
      const s = await scrape(node);
      const count = sampleOf(s, "trellis_route_apply_lag_seconds_count") ?? 0;
      expect(count, `${node.name} applied the change node-3's registration made`).toBeGreaterThanOrEqual(1);
      // One machine, one clock: milliseconds, not seconds.
      expect((sampleOf(s, "trellis_route_apply_lag_seconds_sum") ?? Number.NaN) / count).toBeLessThan(2);
    }
    // node-3 started from a snapshot: nothing was decided after it joined.
    expect(sampleOf(await scrape(n3), "trellis_route_apply_lag_seconds_count")).toBe(0);
  });

  it("the control plane counts the nodes, their streams and registrations, the free subnets, and its etcd calls", async () => {
    // Node states come from its expiry rounds (every 5 s with the lab's 40 s TTL).
    const s = await waitFor("3 live nodes", async () => {
      const s = await scrape("control-plane");
      return sampleOf(s, "trellis_nodes", { state: "live" }) === 3 ? s : undefined;
    });
    expect(sampleOf(s, "trellis_nodes", { state: "expired" })).toBe(0);
    expect(sampleOf(s, "trellis_route_streams")).toBe(3);
    expect(sampleOf(s, "trellis_registrations_total", { result: "new" })).toBe(3);
    expect([...s].filter(([k]) => k.startsWith("trellis_registrations_total{")).reduce((n, [, v]) => n + v, 0)).toBe(3);
    expect(sampleOf(s, "trellis_subnets_free")).toBe(255 - 3); // 10.244.0.0/16 in /24s, the first unused
    expect(sampleOf(s, "trellis_disruption")).toBe(0);
    expect(sampleOf(s, "trellis_node_expiries_total")).toBe(0);
    expect(sampleOf(s, "trellis_etcd_request_duration_seconds_count", { op: "txn" })).toBeGreaterThanOrEqual(3);
    expect(sampleOf(s, "trellis_etcd_request_duration_seconds_count", { op: "range" })).toBeGreaterThan(0);
    expect(sampleOf(s, "trellis_etcd_txn_conflicts_total", { txn: "claim_subnet" })).toBeGreaterThanOrEqual(0);
    expect(sampleOf(s, "process_cpu_seconds_total")).toBeGreaterThan(0);
  });

  it("a daemon whose metrics port is in use says so at start-up and exits before it joins or serves", async () => {
    const dir = join(lab.workDir, "busy-metrics");
    const res = await inNetns(n1.netns, process.execPath, [
      ...daemonNodeFlags,
      join(dist, "node-daemon", "main.js"),
      ...["--node-name", "node-9", "--node-ip", n1.ip, "--control-plane", lab.controlPlaneAddress],
      ...["--socket", join(dir, "cni.sock"), "--state-dir", join(dir, "state"), "--cni-conf-dir", ""],
      ...["--metrics-address", daemonMetricsAddress],
    ]);
    expect(res.code).toBe(1);
    expect(res.stderr).toBe(
      `trellis-node-daemon: --metrics-address ${daemonMetricsAddress}: the port is in use (another program listens there): free it, or choose another with --metrics-address HOST:PORT, or --metrics-address off for no metrics\n`,
    );
    expect(await lab.etcdKeys("/trellis/v1/nodes/node-9")).toEqual([]);
    expect((await inNetns(n1.netns, "test", ["-e", join(dir, "cni.sock")])).code).not.toBe(0);
  });

  it("a control plane whose metrics port is in use says so and exits before it serves", async () => {
    const res = await inNetns(lab.underlay, process.execPath, [
      join(dist, "control-plane", "main.js"),
      ...["--insecure-plaintext", "--listen", "127.0.0.1:7443", "--etcd-endpoints", "http://127.0.0.1:2379"],
      ...["--metrics-address", controlPlaneMetricsAddress],
    ]);
    expect(res.code).toBe(1);
    expect(res.stderr).toBe(
      `trellis-control-plane: --metrics-address ${controlPlaneMetricsAddress}: the port is in use (another program listens there): free it, or choose another with --metrics-address HOST:PORT, or --metrics-address off for no metrics\n`,
    );
    expect(res.stdout).not.toContain("listening on loopback");
  });

  it("anything but GET /metrics is refused", async () => {
    const { netns, url } = lab.metricsOf(n1);
    const status = async (method: string, at: string) =>
      (
        await inNetns(netns, process.execPath, [
          "-e",
          "fetch(process.argv[1], { method: process.argv[2] }).then((r) => console.log(r.status))",
          at,
          method,
        ])
      ).stdout.trim();
    expect(await status("GET", url.replace(/\/metrics$/, "/"))).toBe("404");
    expect(await status("POST", url)).toBe("405");
  });
});
