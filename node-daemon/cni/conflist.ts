import { mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Writes the conflist atomically (temp file, rename): a runtime never reads half of it. */
export async function writeConflist(dir: string, fileName: string, conflist: Record<string, unknown>): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, fileName);
  const tmp = join(dir, `.${fileName}.tmp`);
  await writeFile(tmp, `${JSON.stringify(conflist, null, 2)}\n`, { mode: 0o644 });
  await rename(tmp, path);
  return path;
}
