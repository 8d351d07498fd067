import { describe, expect, it } from "vitest";
import { envFileFor, installPlan, parseInstallArgs, productionPackages, unitFor } from "../../../../proto/core/install-plan.js";

const files = {
  unit: "trellis-node-daemon.service",
  unitText: "ExecStart=/usr/bin/node /opt/trellis/dist/node-daemon/main.js $FLAGS\n",
  envFile: "node-daemon.env",
  envText: "FLAGS=\n",
  distFolders: ["node-daemon", "proto"],
};

describe("installPlan", () => {
  it("a node: program files, the shim, the unit (replaced) and the env file (kept when it exists)", () => {
    const plan = installPlan("node", { root: "/tmp/r", prefix: "/opt/trellis", cniBinDir: "/opt/cni/bin" }, files, "/usr/local/bin/node", [
      "node_modules/pino",
    ]);
    expect(plan).toEqual([
      { action: "tree", from: "dist/node-daemon", to: "/tmp/r/opt/trellis/dist/node-daemon" },
      { action: "tree", from: "dist/proto", to: "/tmp/r/opt/trellis/dist/proto" },
      { action: "copy", from: "package.json", to: "/tmp/r/opt/trellis/package.json", mode: 0o644 },
      { action: "tree", from: "node_modules/pino", to: "/tmp/r/opt/trellis/node_modules/pino" },
      { action: "copy", from: "dist/bin/trellis", to: "/tmp/r/opt/cni/bin/trellis", mode: 0o755 },
      {
        action: "write",
        to: "/tmp/r/etc/systemd/system/trellis-node-daemon.service",
        text: "ExecStart=/usr/local/bin/node /opt/trellis/dist/node-daemon/main.js $FLAGS\n",
        mode: 0o644,
        keepExisting: false,
      },
      { action: "write", to: "/tmp/r/etc/trellis/node-daemon.env", text: "FLAGS=\n", mode: 0o600, keepExisting: true },
    ]);
  });

  it("a control-plane host gets no shim", () => {
    const plan = installPlan("control-plane", { root: "/", prefix: "/opt/trellis", cniBinDir: "/opt/cni/bin" }, files, "/usr/bin/node", []);
    expect(plan.map((s) => s.to)).not.toContain("/opt/cni/bin/trellis");
    expect(plan.map((s) => s.to)).toContain("/etc/trellis/node-daemon.env");
  });
});

describe("parseInstallArgs", () => {
  it("has the documented defaults", () => {
    expect(parseInstallArgs([], "node")).toEqual({ root: "/", prefix: "/opt/trellis", cniBinDir: "/opt/cni/bin" });
    expect(parseInstallArgs(["--prefix", "/usr/local/trellis/"], "node")).toMatchObject({ prefix: "/usr/local/trellis" });
  });

  it.each([
    [["--root", "x"], "node", /--root "x" must be an absolute path/],
    [["--cni-bin-dir", "opt/cni"], "node", /--cni-bin-dir "opt\/cni" must be an absolute path/],
    [["--prefix", "/a b"], "node", /must not contain whitespace/],
    [["--cni-bin-dir", "/x"], "control-plane", /Unknown option '--cni-bin-dir'.*see --help/],
  ] as const)("refuses %j for a %s host", (argv, kind, message) => {
    expect(() => parseInstallArgs(argv, kind)).toThrow(message);
  });
});

describe("productionPackages", () => {
  it("lists the top-level packages that are not dev-only, scoped ones included, nested ones left to their parent", () => {
    expect(
      productionPackages({
        packages: {
          "": {},
          "node_modules/pino": {},
          "node_modules/@bufbuild/protobuf": {},
          "node_modules/typescript": { dev: true },
          "node_modules/etcd3/node_modules/cockatiel": {},
        },
      }),
    ).toEqual(["node_modules/@bufbuild/protobuf", "node_modules/pino"]);
  });
});

describe("unitFor and envFileFor", () => {
  it("points the unit at the prefix and the node binary", () => {
    expect(unitFor("ExecStart=/usr/bin/node /opt/trellis/dist/x.js\n", "/srv/t", "/nix/node")).toBe(
      "ExecStart=/nix/node /srv/t/dist/x.js\n",
    );
  });

  it("comments out the whole help and ends with the one variable", () => {
    const text = envFileFor("u.service", "FLAGS", "Usage: x\n\nFlags:\n  --a N   a (default 1)\n", "--a 2");
    expect(text).toContain("#   Usage: x\n#\n#   Flags:\n#     --a N   a (default 1)\n");
    expect(text.trimEnd().split("\n").at(-1)).toBe('FLAGS="--a 2"');
    expect(text.split("\n").filter((l) => l && !l.startsWith("#"))).toEqual(['FLAGS="--a 2"']);
  });
});
