import { type ChildProcess, execFile, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion; never throws for a non-zero exit (the caller decides). */
export function run(
  cmd: string,
  args: readonly string[],
  options: { stdin?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      [...args],
      { env: options.env ?? process.env, timeout: options.timeoutMs ?? 30_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.on("error", () => undefined); // a command that never reads stdin (ping) closes it early
    child.stdin?.end(options.stdin);
  });
}

/** Like `run`, but throws with the command's stderr when it fails. */
export async function must(cmd: string, args: readonly string[], options: { stdin?: string } = {}): Promise<string> {
  const res = await run(cmd, args, options);
  if (res.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${res.code}): ${res.stderr.trim() || res.stdout.trim()}`);
  return res.stdout;
}

/** Runs `args` inside the network namespace at /run/netns/<ns> (nsenter, not `ip netns exec`: DESIGN.md §7). */
export function inNetns(
  ns: string,
  cmd: string,
  args: readonly string[],
  options: { stdin?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return run("nsenter", [`--net=/run/netns/${ns}`, cmd, ...args], options);
}

export async function mustInNetns(ns: string, cmd: string, args: readonly string[], options: { stdin?: string } = {}): Promise<string> {
  return must("nsenter", [`--net=/run/netns/${ns}`, cmd, ...args], options);
}

/** A long-running process we started, with output going to a log file; stopped only by its own pid. */
export interface Started {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function startInNetns(name: string, ns: string, cmd: string, args: readonly string[], logFile: string): Started {
  const fd = openSync(logFile, "a");
  // nsenter without --fork execs the command itself: child.pid is the daemon's own pid.
  const child = spawn("nsenter", [`--net=/run/netns/${ns}`, cmd, ...args], { stdio: ["ignore", fd, fd] });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    name,
    child,
    logFile,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** CPU time (user + system) process `pid` has used so far, in seconds (USER_HZ 100); throws when it is gone. */
export async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // after "pid (comm) ": state is field 3
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
}
