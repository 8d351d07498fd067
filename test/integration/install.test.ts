// The install commands (issue 11, installs), run from the built dist/ into a temporary root, as an operator
// runs them with --root /: the programs they install start (--help loads every module they import), the
// env file is written once and then kept, and systemd-analyze verify accepts the units.
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { daemonHelp } from "../../node-daemon/config.js";
import { run } from "../support/exec.js";
import { dist, shimBinary } from "../support/lab.js";

const systemdAnalyze = (await run("systemd-analyze", ["--version"])).code === 0;
if (!systemdAnalyze && process.env.CI === "true") {
  throw new Error("systemd-analyze is missing (Debian package systemd): .ci/setup installs it; the units must be verified in CI");
}

const install = (kind: "node-daemon" | "control-plane", ...args: string[]) =>
  run(process.execPath, [join(dist, kind, "deploy", "install.js"), ...args], { timeoutMs: 120_000 });
const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe("install commands into a temporary root", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "trellis-install-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("a node: the shim in the CNI bin dir, the unit, the env file with every flag, and program files that run", async () => {
    const res = await install("node-daemon", "--root", root);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`next: set the flags in ${root}/etc/trellis/node-daemon.env`);
    const shim = join(root, "opt/cni/bin/trellis");
    expect(await mode(shim)).toBe(0o755);
    expect((await stat(shim)).size).toBe((await stat(shimBinary)).size);
    const unit = await readFile(join(root, "etc/systemd/system/trellis-node-daemon.service"), "utf8");
    expect(unit).toContain(
      `ExecStart=${process.execPath} --max-semi-space-size=1 --optimize-for-size /opt/trellis/dist/node-daemon/main.js $TRELLIS_NODE_DAEMON_FLAGS`,
    );
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^After=network-online.target$/m);
    expect(unit).toMatch(/^Wants=network-online.target$/m);
    expect(unit).toMatch(/^EnvironmentFile=\/etc\/trellis\/node-daemon.env$/m);
    const envFile = join(root, "etc/trellis/node-daemon.env");
    expect(await mode(envFile)).toBe(0o600);
    const env = await readFile(envFile, "utf8");
    const flags = [...daemonHelp.matchAll(/^\s+(--[a-z-]+)/gm)].map((m) => m[1]);
    expect(flags.length).toBeGreaterThan(10);
    for (const flag of flags) expect(env, `${flag} in the env file`).toMatch(new RegExp(`^#.*${flag}`, "m"));
    expect(env).toMatch(/^TRELLIS_NODE_DAEMON_FLAGS="--node-name NODE-NAME --node-ip NODE-IP /m);
    // the installed daemon loads (every import resolves from the installed node_modules) and says what is wrong
    const help = await run(process.execPath, [join(root, "opt/trellis/dist/node-daemon/main.js"), "--help"]);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toBe(daemonHelp);
    const bad = await run(process.execPath, [join(root, "opt/trellis/dist/node-daemon/main.js"), "--node-name", "NODE-NAME"]);
    expect(bad.code).toBe(2); // RestartPreventExitStatus=2: a flag error is not restarted in a loop
    expect(bad.stderr).toMatch(/--node-name "NODE-NAME"/);
  });

  it("run again: keeps the operator's env file, replaces the unit and the programs", async () => {
    const envFile = join(root, "etc/trellis/node-daemon.env");
    await writeFile(envFile, 'TRELLIS_NODE_DAEMON_FLAGS="--node-name node-1 --node-ip 192.168.1.11"\n');
    const res = await install("node-daemon", "--root", root, "--prefix", "/usr/local/lib/trellis");
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`kept ${envFile} (it exists; not overwritten)`);
    expect(await readFile(envFile, "utf8")).toBe('TRELLIS_NODE_DAEMON_FLAGS="--node-name node-1 --node-ip 192.168.1.11"\n');
    const unit = await readFile(join(root, "etc/systemd/system/trellis-node-daemon.service"), "utf8");
    expect(unit).toContain(" /usr/local/lib/trellis/dist/node-daemon/main.js $TRELLIS_NODE_DAEMON_FLAGS");
    expect(unit).not.toContain("/opt/trellis");
  });

  it("a control-plane host: the unit, the env file, and program files that run (control plane and trellis-ca)", async () => {
    const res = await install("control-plane", "--root", root);
    expect(res.code, res.stderr).toBe(0);
    const unit = await readFile(join(root, "etc/systemd/system/trellis-control-plane.service"), "utf8");
    expect(unit).toContain(`ExecStart=${process.execPath} /opt/trellis/dist/control-plane/main.js $TRELLIS_CONTROL_PLANE_FLAGS`);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(await readFile(join(root, "etc/trellis/control-plane.env"), "utf8")).toMatch(/^TRELLIS_CONTROL_PLANE_FLAGS="--etcd-endpoints /m);
    for (const program of ["control-plane/main.js", "control-plane/ca/main.js"]) {
      const help = await run(process.execPath, [join(root, "opt/trellis/dist", program), "--help"]);
      expect(help.code, `${program}: ${help.stderr}`).toBe(0);
    }
  });

  it.each([
    [["--root", "relative/dir"], /--root "relative\/dir" must be an absolute path/],
    [["--prefix", "/opt/my trellis"], /--prefix "\/opt\/my trellis" must not contain whitespace/],
    [["--cni-bin-dir", "/x"], /Unknown option '--cni-bin-dir'.*see --help/], // control-plane hosts have no shim
  ])("refuses %j with exit 2, saying what is wrong", async (args, message) => {
    const res = await install("control-plane", ...args);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
  });

  it("--help tells what it installs and where", async () => {
    const res = await install("node-daemon", "--help");
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/--cni-bin-dir DIR .*\(default \/opt\/cni\/bin\)/);
    expect(res.stdout).toMatch(/An env file\s+that\s+exists already is kept/);
  });

  const verifyTitle = systemdAnalyze
    ? "systemd-analyze verify accepts both installed units"
    : "systemd-analyze verify (skipped: systemd-analyze is not installed; Debian package systemd, which .ci/setup installs)";
  it.skipIf(!systemdAnalyze)(verifyTitle, async () => {
    for (const kind of ["node-daemon", "control-plane"] as const) {
      const unit = join(root, "etc/systemd/system", `trellis-${kind}.service`);
      const res = await run("systemd-analyze", ["verify", unit]);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stderr.split("\n").filter((l) => l.includes(`trellis-${kind}.service`))).toEqual([]);
    }
  });
});
