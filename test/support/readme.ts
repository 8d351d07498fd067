// The README's first screen promises two commands (set a fresh machine up and run the demo; set it up and
// pass the tests). This module reads them from the README itself and checks, without running them, that
// everything they name exists: files, npm scripts (followed into the scripts they call), and programs.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface ReadmeCommand {
  /** The comment line just above the command in the README. */
  readonly comment: string;
  readonly command: string;
}

/**
 * The commands of the README's first ```sh block: every line that is neither blank nor a comment.
 * `.ci/run` reads the same block by the same rule.
 */
export function readmeCommands(readme: string): ReadmeCommand[] {
  const lines = readme.split("\n");
  const start = lines.findIndex((l) => l.trim() === "```sh");
  if (start < 0) throw new Error("README.md has no ```sh block: the first screen must show the setup commands in one");
  const commands: ReadmeCommand[] = [];
  let comment = "";
  for (const line of lines.slice(start + 1)) {
    const text = line.trim();
    if (text.startsWith("```")) return commands;
    if (text.startsWith("#")) comment = text.replace(/^#+\s*/, "");
    else if (text !== "") commands.push({ comment, command: text });
  }
  throw new Error("README.md's first ```sh block is not closed");
}

/** Shell words and operators of a command line: quotes are honoured; `&&`, `||`, `;`, `|`, `(`, `)` are operators. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] ?? "";
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unclosed ${c} in: ${line}`);
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if ("&|;()".includes(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
      const two = line.slice(i, i + 2);
      if (two === "&&" || two === "||") {
        words.push(two);
        i++;
      } else words.push(c);
    } else word = (word ?? "") + c;
  }
  if (word !== undefined) words.push(word);
  return words;
}

/** The simple commands of a line: its words split at operators. */
function simpleCommands(line: string): string[][] {
  const out: string[][] = [[]];
  for (const w of shellWords(line)) {
    if (["&&", "||", ";", "|", "(", ")"].includes(w)) out.push([]);
    else out[out.length - 1]?.push(w);
  }
  return out.filter((c) => c.length > 0);
}

/** Flags whose value is a file the command reads. */
const fileFlags = new Set(["--config", "-p", "--project", "--template"]);

/**
 * What a command line names that does not exist in `root` (relative paths resolve there): a file run by
 * bash or node, a file given to --config/-p/--template, an npm script (followed into its own body), or a
 * program that is neither in node_modules/.bin nor on PATH. Empty when everything resolves.
 */
export async function unresolved(
  line: string,
  root: string,
  onPath: (program: string) => Promise<boolean>,
  seen = new Set<string>(),
): Promise<string[]> {
  const problems: string[] = [];
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts?: Record<string, string> };
  const scripts = pkg.scripts ?? {};
  for (const words of simpleCommands(line)) {
    const [program = "", ...args] = words;
    if (program === "npm") {
      const [sub = "", name = ""] = args;
      const script = sub === "test" || sub === "start" ? sub : sub === "run" || sub === "run-script" ? name : undefined;
      if (script === undefined) continue; // npm ci, npm install: npm's own commands
      const body = scripts[script];
      if (body === undefined) problems.push(`npm script "${script}" is not in package.json`);
      else if (!seen.has(script)) {
        seen.add(script);
        problems.push(...(await unresolved(body, root, onPath, seen)).map((p) => `${p} (in npm script "${script}")`));
      }
      continue;
    }
    const local = existsSync(join(root, "node_modules", ".bin", program));
    if (!local && !(await onPath(program))) problems.push(`program "${program}" is neither in node_modules/.bin nor on PATH`);
    const files: string[] = [];
    if ((program === "bash" || program === "sh" || program === "node") && args[0] && !args[0].startsWith("-")) files.push(args[0]);
    args.forEach((a, i) => {
      const next = args[i + 1];
      if (fileFlags.has(a) && next !== undefined) files.push(next);
    });
    for (const f of files) if (!existsSync(join(root, f))) problems.push(`${program} needs ${f}, which does not exist`);
  }
  return problems;
}
