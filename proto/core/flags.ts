import { parseArgs } from "node:util";
import { TrellisError } from "./errors.js";

/** Command-line parsing shared by the programs: every error names the flag and points to --help. Pure. */

export const logLevels = ["trace", "debug", "info", "warn", "error"];

export type FlagSpec = Record<string, { type: "string"; default: string } | { type: "boolean"; short?: string; default: boolean }>;

export function parseFlags<T extends FlagSpec>(argv: readonly string[], options: T) {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new TrellisError("INVALID_ARGUMENT", `${(err as Error).message}; see --help`);
  }
}

export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m?.[1] || port > 65535) throw new TrellisError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not HOST:PORT`);
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port };
}

/**
 * A metrics listener's address: HOST:PORT (port 0: any free port), or undefined for "off" (or "") — no
 * metrics listener. Throws INVALID_ARGUMENT naming the flag. Pure.
 */
export function parseMetricsAddress(text: string, flag: string): { host: string; port: number } | undefined {
  if (text === "off" || text === "") return undefined;
  try {
    return parseHostPort(text, flag);
  } catch {
    throw new TrellisError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not HOST:PORT (e.g. 127.0.0.1:9464) or "off"`);
  }
}

export function parseIntFlag(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    throw new TrellisError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a whole number from ${min} to ${max}`);
  }
  return n;
}

export function checkLogLevel(level: string): string {
  if (!logLevels.includes(level)) throw new TrellisError("INVALID_ARGUMENT", `--log-level ${level} is not one of ${logLevels.join(", ")}`);
  return level;
}

/** The part of `process` a main hands in, so this module stays free of I/O. */
export interface ProgramOutput {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
  exitCode?: number | string | null | undefined;
}

/**
 * The start of every program's main: its config, or undefined once the help (exit 0) or the error
 * (exit 2) was printed to `out`. `main(process)` hands in the process itself.
 */
export function configOrReport<T>(
  program: string,
  argv: readonly string[],
  parse: (argv: readonly string[]) => T | "help",
  help: string,
  out: ProgramOutput,
): T | undefined {
  const args = programArgs(program, argv, parse, help);
  if ("config" in args) return args.config;
  out[args.to].write(args.print);
  out.exitCode = args.exitCode;
  return undefined;
}

/** What a program's main does with its arguments: run with a config, or print and exit. */
type ProgramArgs<T> = { readonly config: T } | { readonly print: string; readonly to: "stdout" | "stderr"; readonly exitCode: number };

/** Parses a program's arguments: its config, or the help (exit 0), or the error (exit 2). Pure; main acts on it. */
function programArgs<T>(
  program: string,
  argv: readonly string[],
  parse: (argv: readonly string[]) => T | "help",
  help: string,
): ProgramArgs<T> {
  try {
    const config = parse(argv);
    return config === "help" ? { print: help, to: "stdout", exitCode: 0 } : { config };
  } catch (err) {
    return { print: `${program}: ${(err as Error).message}\n`, to: "stderr", exitCode: 2 };
  }
}
