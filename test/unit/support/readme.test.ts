import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { readmeCommands, shellWords, unresolved } from "../../support/readme.js";

describe("readmeCommands", () => {
  it("takes the lines of the first sh block that are neither blank nor comments, with the comment above each", () => {
    const readme = [
      "# Title",
      "",
      "```sh",
      "# 1. demo",
      "bash .ci/setup && npm run demo",
      "",
      "# 2. tests",
      "npm test",
      "```",
      "```sh",
      "later",
    ].join("\n");
    expect(readmeCommands(readme)).toEqual([
      { comment: "1. demo", command: "bash .ci/setup && npm run demo" },
      { comment: "2. tests", command: "npm test" },
    ]);
  });
  it.each([
    ["no sh block", "# Title\n```js\nx\n```\n"],
    ["an unclosed block", "```sh\nnpm test\n"],
  ])("fails on %s", (_what, readme) => {
    expect(() => readmeCommands(readme)).toThrow(/README/);
  });
});

describe("shellWords", () => {
  it.each([
    ["a && b", ["a", "&&", "b"]],
    ["echo 'x && y' || (echo \"z\"; exit 1)", ["echo", "x && y", "||", "(", "echo", "z", ";", "exit", "1", ")"]],
    ["a|b", ["a", "|", "b"]],
  ])("%s", (line, words) => {
    expect(shellWords(line)).toEqual(words);
  });
});

describe("unresolved", () => {
  let dir = "";
  const everywhere = async () => true;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "trellis-readme-unit-"));
    await mkdir(join(dir, ".ci"));
    await writeFile(join(dir, ".ci/setup"), "true\n");
    await writeFile(join(dir, "main.js"), "");
    const scripts = {
      demo: "npm run build && node main.js",
      build: "tsc -p .",
      test: "npm run build && node gone.js",
      broken: "npm run nothing",
    };
    await writeFile(join(dir, "package.json"), JSON.stringify({ scripts }));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("is empty when every script, file and program exists", async () => {
    expect(await unresolved("bash .ci/setup && npm run demo -- --keep", dir, everywhere)).toEqual([]);
  });
  it.each([
    ["bash .ci/gone && npm run demo", ["bash needs .ci/gone, which does not exist"]],
    ["npm run demos", ['npm script "demos" is not in package.json']],
    ["npm test", ['node needs gone.js, which does not exist (in npm script "test")']],
    ["npm run broken", ['npm script "nothing" is not in package.json (in npm script "broken")']],
  ])("names what `%s` lacks", async (line, problems) => {
    expect(await unresolved(line, dir, everywhere)).toEqual(problems);
  });
  it("names a program that is not installed", async () => {
    expect(await unresolved("bash .ci/setup && frobnicate", dir, async (p) => p !== "frobnicate")).toEqual([
      'program "frobnicate" is neither in node_modules/.bin nor on PATH',
    ]);
  });
});
