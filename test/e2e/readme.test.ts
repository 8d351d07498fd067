// The README's two first-screen commands, taken from the README itself: the demo command runs the way a
// newcomer runs it (a fresh copy of the tree with no dist/ and no node_modules), and both commands must
// name only scripts, files and programs that exist. CI (.ci/run) runs the test command from the same block.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { must, run } from "../support/exec.js";
import { root } from "../support/lab.js";
import { type ReadmeCommand, readmeCommands, unresolved } from "../support/readme.js";

const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === "true") throw new Error("e2e tests need root in CI");

/** Runs a shell line in `cwd` as its own process group, so a timeout stops everything it started. */
function shell(line: string, cwd: string, timeoutMs: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn("bash", ["-c", line], { cwd, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    const timer = setTimeout(() => {
      output += `\n[timed out after ${timeoutMs} ms]\n`;
      if (child.pid) process.kill(-child.pid, "SIGTERM"); // the group this test started (the demo tears down on SIGTERM)
    }, timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, output });
    });
  });
}

/** A copy of the tree as a fresh clone would have it: tracked and new files, nothing ignored (no dist/, node_modules). */
async function freshCopy(): Promise<string> {
  const dest = await mkdtemp(join(tmpdir(), "trellis-readme-"));
  const listed = (await must("git", ["-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])).split("\0");
  for (const file of listed.filter(Boolean)) {
    const from = join(root, file);
    const info = await stat(from).catch(() => undefined); // a tracked file deleted in the work tree is not copied
    if (!info?.isFile()) continue;
    await mkdir(dirname(join(dest, file)), { recursive: true });
    await copyFile(from, join(dest, file));
    await chmod(join(dest, file), info.mode & 0o777);
  }
  return dest;
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

const onPath = async (program: string) => (await run("bash", ["-c", `command -v -- "$1"`, "bash", program])).code === 0;

describe.skipIf(!isRoot)("the README's first commands, as a newcomer runs them (needs root)", () => {
  let commands: ReadmeCommand[] = [];
  let copy = "";

  beforeAll(async () => {
    commands = readmeCommands(await readFile(join(root, "README.md"), "utf8"));
    copy = await freshCopy();
  });
  afterAll(async () => {
    if (copy) await rm(copy, { recursive: true, force: true });
  });

  it("shows exactly two commands, and CI runs the second one as written", async () => {
    expect(
      commands.map((c) => c.command),
      "README.md's first ```sh block must hold two commands: set up and run the demo; set up and run the tests",
    ).toHaveLength(2);
    const ci = await run("bash", [join(root, ".ci/run"), "--print"]);
    expect(ci.stdout.trim(), ".ci/run must run the README's test command").toBe(commands[1]?.command);
  });

  it("the demo command works on a fresh copy with no dist/ and no node_modules, and every pod pings every other", async () => {
    const demo = commands[0];
    if (!demo) throw new Error("README.md shows no demo command");
    expect((await readdir(copy)).filter((f) => f === "dist" || f === "node_modules")).toEqual([]);

    const { code, output } = await shell(demo.command, copy, 540_000);
    const tail = output.split("\n").slice(-40).join("\n");
    expect(code, `README command 1 (${demo.comment}) \`${demo.command}\` failed on a fresh copy:\n${tail}`).toBe(0);
    const pings = /(\d+) of (\d+) pings succeeded/.exec(output);
    expect(pings, `the demo printed no ping summary:\n${tail}`).not.toBeNull();
    expect(Number(pings?.[2])).toBeGreaterThan(0);
    expect(pings?.[1], tail).toBe(pings?.[2]);
  }, 600_000);

  it("npm run build leaves no file in dist/ whose source is gone", async () => {
    // A file left from an older tree (a moved or deleted source) must not survive a build.
    await mkdir(join(copy, "dist", "old"), { recursive: true });
    await writeFile(join(copy, "dist", "old", "moved-away.js"), "");
    const build = await shell("npm run build", copy, 300_000);
    expect(build.code, build.output).toBe(0);
    const built = (await filesUnder(join(copy, "dist"))).filter((f) => f.endsWith(".js"));
    expect(built.length, "npm run build built nothing into dist/").toBeGreaterThan(0);
    expect(built.filter((f) => !existsSync(join(copy, f.replace(/\.js$/, ".ts"))))).toEqual([]);
  }, 300_000);

  it("every script, file and program the two commands name exists", async () => {
    for (const c of commands) {
      expect(await unresolved(c.command, copy, onPath), `README command \`${c.command}\` (${c.comment})`).toEqual([]);
    }
  });
});
