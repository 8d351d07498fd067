import { constants } from "node:fs";
import { link, mkdir, open, readdir, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { TrellisError } from "../../proto/common/errors.js";
import { type AllocationRecord, AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { AllocationJournal } from "./journal.js";

/**
 * One file per pod address under `<stateDir>/allocations/`, named by the address. A reservation is
 * written to a temp file, fsynced, then hard-linked to its final name: link(2) fails when the name
 * exists, so two reservations of one address can never both succeed, even across processes; the
 * directory is fsynced before the call returns, so an acknowledged ADD or DEL survives a power cut.
 */
export class FileAllocationJournal implements AllocationJournal {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "allocations");
  }

  async load(): Promise<AllocationRecord[]> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const records: AllocationRecord[] = [];
    for (const name of await readdir(this.dir)) {
      const path = join(this.dir, name);
      if (name.endsWith(".tmp")) {
        await unlink(path); // a reservation that crashed before it was linked: never acknowledged
        continue;
      }
      try {
        records.push(fromJsonString(AllocationRecordSchema, await readFile(path, "utf8")));
      } catch (err) {
        throw new TrellisError("DATA_LOSS", `allocation file ${path} is unreadable; inspect it, then move it away`, { cause: err });
      }
    }
    return records;
  }

  async reserve(record: AllocationRecord): Promise<boolean> {
    const final = join(this.dir, record.address);
    const tmp = `${final}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    try {
      const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await fh.writeFile(toJsonString(AllocationRecordSchema, record));
        await fh.sync();
      } finally {
        await fh.close();
      }
      try {
        await link(tmp, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
        throw err;
      }
      await this.syncDir();
      return true;
    } catch (err) {
      throw new TrellisError("INTERNAL", `could not record allocation of ${record.address} in ${this.dir}`, { cause: err });
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  async release(address: string): Promise<void> {
    try {
      await unlink(join(this.dir, address));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new TrellisError("INTERNAL", `could not release allocation of ${address} in ${this.dir}`, { cause: err });
    }
    await this.syncDir();
  }

  private async syncDir(): Promise<void> {
    const fh = await open(this.dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}
