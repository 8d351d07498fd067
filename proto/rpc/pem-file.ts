// A secret file named by a command-line flag (TLS material, a join token): read with an error that names
// the flag.
import { readFile } from "node:fs/promises";
import { TrellisError } from "../core/errors.js";

export function readPemFile(path: string, flag: string): Promise<string> {
  return readFile(path, "utf8").catch((err: unknown) => {
    throw new TrellisError("INVALID_ARGUMENT", `${flag} ${path} cannot be read: ${(err as Error).message}`);
  });
}
