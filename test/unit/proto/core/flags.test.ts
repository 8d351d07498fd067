import { describe, expect, it } from "vitest";
import { TrellisError } from "../../../../proto/core/errors.js";
import { configOrReport } from "../../../../proto/core/flags.js";

function output() {
  const out = { stdout: "", stderr: "", exitCode: undefined as number | string | null | undefined };
  return {
    out,
    io: {
      stdout: { write: (t: string) => (out.stdout += t) },
      stderr: { write: (t: string) => (out.stderr += t) },
      set exitCode(code: number | string | null | undefined) {
        out.exitCode = code;
      },
    },
  };
}

const parse = (argv: readonly string[]) => {
  if (argv[0] === "--help") return "help" as const;
  if (argv[0] === "--bad") throw new TrellisError("INVALID_ARGUMENT", "--bad is not a flag; see --help");
  return { ok: true };
};

describe("configOrReport", () => {
  it("returns the config and prints nothing", () => {
    const { out, io } = output();
    expect(configOrReport("prog", [], parse, "HELP\n", io)).toEqual({ ok: true });
    expect(out).toEqual({ stdout: "", stderr: "", exitCode: undefined });
  });
  it("prints the help to stdout, exit 0", () => {
    const { out, io } = output();
    expect(configOrReport("prog", ["--help"], parse, "HELP\n", io)).toBeUndefined();
    expect(out).toEqual({ stdout: "HELP\n", stderr: "", exitCode: 0 });
  });
  it("prints the error, named after the program, to stderr, exit 2", () => {
    const { out, io } = output();
    expect(configOrReport("prog", ["--bad"], parse, "HELP\n", io)).toBeUndefined();
    expect(out).toEqual({ stdout: "", stderr: "prog: --bad is not a flag; see --help\n", exitCode: 2 });
  });
});
