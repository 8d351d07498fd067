// Carries out an install plan (proto/core/install-plan.ts) from a built repository: copies, trees and
// written files, each replaced atomically where it is one file. The two install commands' shared I/O.
import { chmod, cp, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { TrellisError } from "../core/errors.js";
import { configOrReport, type ProgramOutput } from "../core/flags.js";
import {
  envFileFor,
  type HostKind,
  type InstallStep,
  installHelp,
  installPlan,
  parseInstallArgs,
  productionPackages,
  underRoot,
} from "../core/install-plan.js";

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** Runs `steps` with files from `repo`; returns one line per step for the operator. */
export async function runInstall(repo: string, steps: readonly InstallStep[]): Promise<string[]> {
  const done: string[] = [];
  for (const step of steps) {
    await mkdir(dirname(step.to), { recursive: true });
    if (step.action === "write") {
      if (step.keepExisting && (await exists(step.to))) {
        done.push(`kept ${step.to} (it exists; not overwritten)`);
        continue;
      }
      const tmp = `${step.to}.trellis-tmp`;
      await writeFile(tmp, step.text, { mode: step.mode });
      await chmod(tmp, step.mode);
      await rename(tmp, step.to);
      done.push(`wrote ${step.to}`);
      continue;
    }
    const from = join(repo, step.from);
    if (!(await exists(from))) {
      throw new TrellisError(
        "NOT_FOUND",
        `${from} is missing: build the repository first (npm ci && npm run build), then run the install again`,
      );
    }
    if (step.action === "copy") {
      const tmp = `${step.to}.trellis-tmp`;
      await cp(from, tmp, { dereference: true });
      await chmod(tmp, step.mode);
      await rename(tmp, step.to); // a running shim or daemon keeps its old file
      done.push(`installed ${step.to}`);
    } else {
      await cp(from, step.to, { recursive: true, dereference: true, force: true });
      done.push(`copied ${step.from} to ${step.to}`);
    }
  }
  return done;
}

/** What one program's install command hands in: its unit and the flags its env file starts with. */
export interface HostInstall {
  readonly kind: HostKind;
  /** The command as the operator types it, for the help and errors. */
  readonly command: string;
  readonly unit: string;
  /** The unit's source, relative to the repository (e.g. node-daemon/deploy/trellis-node-daemon.service). */
  readonly unitSource: string;
  readonly envFile: string;
  readonly envVariable: string;
  readonly programHelp: string;
  readonly exampleFlags: string;
  readonly distFolders: readonly string[];
}

/**
 * An install command's main: flags, the plan, the work, and what to do next, on `out`. `repo` is the built
 * repository (found from the command's own file in dist/). Returns the exit code.
 */
export async function installHost(host: HostInstall, repo: string, argv: readonly string[], out: ProgramOutput): Promise<number> {
  const options = configOrReport(host.command, argv, (a) => parseInstallArgs(a, host.kind), installHelp(host.command, host.kind), out);
  if (!options) return Number(out.exitCode ?? 0);
  try {
    const lock = JSON.parse(await readFile(join(repo, "package-lock.json"), "utf8")) as Parameters<typeof productionPackages>[0];
    const packages: string[] = [];
    for (const p of productionPackages(lock)) if (await exists(join(repo, p))) packages.push(p); // optional ones may be absent
    const files = {
      unit: host.unit,
      unitText: await readFile(join(repo, host.unitSource), "utf8"),
      envFile: host.envFile,
      envText: envFileFor(host.unit, host.envVariable, host.programHelp, host.exampleFlags),
      distFolders: host.distFolders,
    };
    const done = await runInstall(repo, installPlan(host.kind, options, files, process.execPath, packages));
    const env = underRoot(options.root, `/etc/trellis/${host.envFile}`);
    out.stdout.write(
      `${done.filter((line) => !line.startsWith("copied node_modules/")).join("\n")}\n(and ${packages.length} packages in ${underRoot(options.root, `${options.prefix}/node_modules`)})\n` +
        `next: set the flags in ${env}, then: systemctl daemon-reload && systemctl enable --now ${host.unit}\n`,
    );
    return 0;
  } catch (err) {
    out.stderr.write(`${host.command}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
