// Measures ADD and DEL through the real trellis shim binary, one pod at a time, and the same with the
// reference plugins (Debian's containernetworking-plugins: bridge + host-local) exec'd the same way in
// the same run, on another node of the same lab. Reports medians, p99 and ratios; it never fails on speed.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { inNetns, must } from "../support/exec.js";
import { Lab, type LabNode } from "../support/lab.js";

const rounds = Number(process.argv[2] ?? 30);
const referenceDir = "/usr/lib/cni";

function stats(ms: number[]): { p50: number; p99: number } {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99) };
}

async function timeOne(fn: () => Promise<{ code: number; stdout: string; stderr: string }>): Promise<number> {
  const t0 = performance.now();
  const res = await fn();
  const ms = performance.now() - t0;
  if (res.code !== 0) throw new Error(`call failed (${res.code}): ${res.stdout}${res.stderr}`);
  return ms;
}

async function bench(
  name: string,
  lab: Lab,
  node: LabNode,
  exec: (cmd: "ADD" | "DEL", env: Record<string, string>) => Promise<{ code: number; stdout: string; stderr: string }>,
) {
  const add: number[] = [];
  const del: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const ns = `${lab.prefix}-b${name[0]}${i}`;
    await must("ip", ["netns", "add", ns]);
    try {
      const env = { CNI_CONTAINERID: `bench-${name}-${i}`, CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: "eth0" };
      add.push(await timeOne(() => exec("ADD", env)));
      del.push(await timeOne(() => exec("DEL", env)));
    } finally {
      await must("ip", ["netns", "del", ns]);
    }
  }
  return { name, node: node.name, add: stats(add), del: stats(del) };
}

async function main(): Promise<void> {
  const lab = await Lab.create({ nodes: 2 });
  try {
    const [n1, n2] = lab.nodes as [LabNode, LabNode];
    const results = [await bench("trellis", lab, n1, (cmd, env) => lab.shim(n1, cmd, env))];
    if (existsSync(join(referenceDir, "bridge"))) {
      const conf = JSON.stringify({
        cniVersion: "1.0.0",
        name: "reference",
        type: "bridge",
        bridge: "cni0",
        isGateway: true,
        ipam: { type: "host-local", subnet: "10.88.0.0/16", dataDir: join(lab.workDir, "host-local") },
      });
      results.push(
        await bench("reference", lab, n2, (cmd, env) =>
          inNetns(n2.netns, join(referenceDir, "bridge"), [], {
            stdin: conf,
            env: { PATH: process.env.PATH, CNI_COMMAND: cmd, CNI_PATH: referenceDir, ...env },
          }),
        ),
      );
    } else {
      process.stdout.write(`(no reference plugins in ${referenceDir}: apt-get install containernetworking-plugins to compare)\n`);
    }
    process.stdout.write(`ADD/DEL, one pod at a time, ${rounds} rounds each, ms:\n`);
    for (const r of results) {
      process.stdout.write(
        `  ${r.name.padEnd(10)} ADD p50 ${r.add.p50.toFixed(1)} p99 ${r.add.p99.toFixed(1)}   DEL p50 ${r.del.p50.toFixed(1)} p99 ${r.del.p99.toFixed(1)}\n`,
      );
    }
    const [t, ref] = results;
    if (t && ref) {
      process.stdout.write(
        `  ratio trellis/reference: ADD p50 ${(t.add.p50 / ref.add.p50).toFixed(2)}x, DEL p50 ${(t.del.p50 / ref.del.p50).toFixed(2)}x (below 1 is faster)\n`,
      );
    }
  } finally {
    await lab.destroy();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
