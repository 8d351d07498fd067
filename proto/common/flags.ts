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

/**
 * The start of every program's main: parse the process's arguments, or print the help (and return
 * undefined: the program is done) or the error (and exit 2).
 */
export function configOrExit<T>(program: string, parse: (argv: readonly string[]) => T | "help", help: string): T | undefined {
  let config: T | "help";
  try {
    config = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${program}: ${(err as Error).message}\n`);
    return process.exit(2);
  }
  if (config === "help") {
    process.stdout.write(help);
    return undefined;
  }
  return config;
}
