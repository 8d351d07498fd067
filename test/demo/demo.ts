// The main job: a three-node Trellis cluster in network namespaces, two pods per node made through the
// CNI shim, a ping matrix and an egress check. Exits 0 only when every pod reached every other pod, and the
// outside host saw every pod's traffic come from its node's IP. `--keep` leaves it up.
import { Lab, type LabPod } from "../support/lab.js";

const keep = process.argv.includes("--keep");
if (process.argv.includes("--help") || process.argv.includes("-h")) {
  process.stdout.write(`Usage: npm run demo [-- --keep]

Builds a three-node Trellis cluster from network namespaces (underlay 192.168.1.0/24, nodes .11-.13,
etcd and the control plane at 192.168.1.1), adds two pods per node through the trellis CNI shim, prints
nodes, subnets, pods, each node's routes, a ping matrix between all pods, and the source address an
"outside" host (192.168.1.250, no route to the pods) sees from each pod, then tears it all down.
Needs root. --keep leaves the cluster running and prints how to reach it and how to remove it.
`);
  process.exit(0);
}
if (process.getuid?.() !== 0) {
  process.stderr.write("demo: needs root (it creates network namespaces); run it with sudo\n");
  process.exit(2);
}

const log = (line: string) => process.stdout.write(`${line}\n`);
let lab: Lab | undefined;
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    log(`\n${signal}: tearing the cluster down`);
    void (lab?.destroy() ?? Promise.resolve()).finally(() => process.exit(130));
  });
}

process.on("uncaughtException", (err) => {
  process.stderr.write(`demo failed: ${err.stack ?? String(err)}\n`);
  void (lab?.destroy() ?? Promise.resolve()).finally(() => process.exit(1));
});

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

async function main(): Promise<number> {
  const started = Date.now();
  lab = await Lab.create({ nodes: 3, progress: (l) => log(`  ${l}`) });
  log("");
  const addTimes: number[] = [];
  for (const node of lab.nodes) {
    for (const n of [1, 2]) {
      const t0 = performance.now();
      await lab.addPod(node, `${node.name}-pod${n}`);
      addTimes.push(performance.now() - t0);
    }
  }
  // Routes arrive through the stream; wait until every node has one per other node.
  const deadline = Date.now() + 10_000;
  for (const node of lab.nodes) {
    while ((await lab.routesOf(node)).filter((r) => r.protocol === "201").length < lab.nodes.length - 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const subnets = new Map<string, string>();
  for (const pod of lab.pods) {
    const ips = pod.result.ips as Array<{ address: string; gateway: string }>;
    const prefix = ips[0]?.address.split("/")[1] ?? "";
    const gw = ips[0]?.gateway ?? "";
    subnets.set(pod.node.name, `${gw.replace(/\.\d+$/, ".0")}/${prefix}`);
  }
  log("Nodes");
  log(
    table([
      ["NODE", "NODE IP", "SUBNET", "GATEWAY"],
      ...lab.nodes.map((n) => [n.name, n.ip, subnets.get(n.name) ?? "?", (subnets.get(n.name) ?? "").replace(/\.0\/\d+$/, ".1")]),
    ]),
  );
  log("\nPods (created by exec'ing the trellis CNI shim, CNI_COMMAND=ADD)");
  log(
    table([
      ["POD", "NODE", "ADDRESS", "INTERFACE", "HOST VETH"],
      ...lab.pods.map((p) => {
        const ifs = p.result.interfaces as Array<{ name: string }>;
        return [p.name, p.node.name, p.address, p.ifName, ifs[1]?.name ?? ""];
      }),
    ]),
  );
  log("\nRoutes (ip route, per node)");
  for (const node of lab.nodes) {
    log(`  ${node.name}:`);
    for (const r of await lab.routesOf(node)) {
      log(
        `    ${r.dst}${r.gateway ? ` via ${r.gateway}` : ""}${r.protocol === "201" ? "  proto trellis(201)" : r.protocol ? `  proto ${r.protocol}` : ""}`,
      );
    }
  }

  log("\nPing matrix (row pings column; ok = one echo reply within 1 s)");
  const pods: LabPod[] = lab.pods;
  const header = ["FROM \\ TO", ...pods.map((p) => p.address)];
  const rows: string[][] = [header];
  let failed = 0;
  for (const from of pods) {
    const row = [`${from.name} ${from.address}`];
    const results = await Promise.all(pods.map((to) => (to === from ? Promise.resolve(undefined) : lab!.ping(from, to.address))));
    for (const ok of results) {
      if (ok === undefined) row.push("-");
      else {
        row.push(ok ? "ok" : "FAIL");
        if (!ok) failed++;
      }
    }
    rows.push(row);
  }
  log(table(rows));

  log(
    `\nEgress: every pod connects to the outside host ${lab.outside.ip} (namespace ${lab.outside.netns}, no route to the pods), which answers with the source address it saw`,
  );
  const egressRows: string[][] = [["POD", "NODE", "NODE IP", "OUTSIDE SAW", ""]];
  let egressFailed = 0;
  for (const pod of pods) {
    const seen = await lab.sourceSeenBy(pod.netns, lab.outside.ip, lab.outside.port).catch((err: unknown) => `none (${String(err)})`);
    const ok = seen === pod.node.ip;
    if (!ok) egressFailed++;
    egressRows.push([`${pod.name} ${pod.address}`, pod.node.name, pod.node.ip, seen, ok ? "ok (masqueraded to the node IP)" : "FAIL"]);
  }
  log(table(egressRows));
  const total = pods.length * (pods.length - 1);
  const sorted = [...addTimes].sort((a, b) => a - b);
  log(
    `\n${total - failed} of ${total} pings succeeded; ${pods.length - egressFailed} of ${pods.length} pods reached the outside host as their node. ADD through the shim: median ${sorted[Math.floor(sorted.length / 2)]?.toFixed(1)} ms over ${sorted.length} pods. Demo took ${((Date.now() - started) / 1000).toFixed(1)} s.`,
  );
  if (keep) {
    const curl = (target: Parameters<Lab["metricsOf"]>[0]) => {
      const { netns, url } = lab!.metricsOf(target);
      return `nsenter --net=/run/netns/${netns} curl -s ${url}`;
    };
    const metrics = [
      `    control plane: ${curl("control-plane")}`,
      ...lab.nodes.map((n) => `    ${`${n.name}:`.padEnd(14)} ${curl(n)}`),
    ].join("\n");
    log(`
The cluster stays up (--keep). Work dir: ${lab.workDir}
  Admin API (mutual TLS with the lab's admin certificate; buf curl from the @bufbuild/buf package, through server reflection):
    nsenter --net=/run/netns/${lab.underlay} npx buf curl --protocol grpc --cacert ${lab.pki.ca} -E ${lab.pki.adminCert} --key ${lab.pki.adminKey} https://${lab.controlPlaneAddress}/trellis.admin.v1.AdminService/ListNodes
  A node's routes:       nsenter --net=/run/netns/${lab.nodes[0]?.netns} ip route
  Its egress masquerade: nsenter --net=/run/netns/${lab.nodes[0]?.netns} nft list table ip trellis
  A pod's view:          nsenter --net=/run/netns/${pods[0]?.netns} ip addr
  Metrics (Prometheus text, GET /metrics; each program listens on loopback inside its own namespace):
${metrics}
  Logs:                  ${lab.workDir}/control-plane.log, ${lab.workDir}/node-*/daemon.log
  Tear it down:          kill ${process.pid}   (or Ctrl-C here)
`);
    await new Promise(() => undefined); // until a signal tears it down
  }
  await lab.destroy();
  return failed === 0 && egressFailed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    await lab?.destroy();
    process.exit(1);
  },
);
