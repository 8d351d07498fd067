import { describe, expect, it } from "vitest";
import { parseCaArgs } from "../../../../control-plane/ca/ca-config.js";

describe("trellis-ca arguments", () => {
  it.each([[[]], [["--help"]], [["issue", "--help"]]])("%j asks for the help", (argv) => {
    expect(parseCaArgs(argv)).toBe("help");
  });

  it("init takes the directory and a lifetime", () => {
    expect(parseCaArgs(["init", "--dir", "/etc/trellis/ca"])).toEqual({ command: "init", dir: "/etc/trellis/ca", days: 3650 });
    expect(parseCaArgs(["init", "--dir", "d", "--days", "30"])).toEqual({ command: "init", dir: "d", days: 30 });
    expect(parseCaArgs(["init", "--dir", "d", "--admin", "alice", "--out", "o"])).toEqual({
      command: "init",
      dir: "d",
      days: 3650,
      admin: { identity: { kind: "admin", name: "alice" }, out: "o" },
    });
    expect(() => parseCaArgs(["init", "--dir", "d", "--admin", "alice"])).toThrow(/--admin needs --out/);
  });

  it("issue defaults to 12 hours for operators and 7 days for the rest", () => {
    expect(parseCaArgs(["issue", "--dir", "d", "--kind", "admin", "--name", "alice", "--out", "o"])).toEqual({
      command: "issue",
      dir: "d",
      out: "o",
      identity: { kind: "admin", name: "alice" },
      hours: 12,
    });
    expect(
      parseCaArgs([
        "issue",
        "--dir",
        "d",
        "--kind",
        "control-plane",
        "--name",
        "cp-1",
        "--out",
        "o",
        "--dns",
        "cp.example, cp",
        "--ip",
        "192.168.1.1",
      ]),
    ).toEqual({
      command: "issue",
      dir: "d",
      out: "o",
      identity: { kind: "control-plane", name: "cp-1" },
      hours: 8760,
      server: { dnsNames: ["cp.example", "cp"], ips: ["192.168.1.1"] },
    });
  });

  it.each([
    [["init"], /--dir is required/],
    [["renew", "--dir", "d"], /unknown command "renew"; use init or issue/],
    [["issue", "--dir", "d", "--kind", "root", "--name", "x", "--out", "o"], /--kind must be one of admin, viewer, control-plane/],
    [["issue", "--dir", "d", "--kind", "node", "--name", "n1", "--out", "o"], /nodes join with a token/],
    [["issue", "--dir", "d", "--kind", "admin", "--name", "Alice!", "--out", "o"], /admin name "Alice!" must be/],
    [["issue", "--dir", "d", "--kind", "admin", "--name", "alice"], /--out is required/],
    [
      ["issue", "--dir", "d", "--kind", "admin", "--name", "alice", "--out", "o", "--dns", "x"],
      /--dns and --ip are for control-plane certificates only/,
    ],
    [["issue", "--dir", "d", "--kind", "admin", "--name", "a1", "--out", "o", "--hours", "0"], /--hours "0" is not a whole number from 1/],
    [["init", "--dir", "d", "--bogus"], /Unknown option '--bogus'; see --help/],
  ])("%j is refused, naming what is wrong", (argv, message) => {
    expect(() => parseCaArgs(argv)).toThrow(message);
  });
});
