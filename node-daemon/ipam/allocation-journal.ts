import { close, constants, fdatasync, fsync, link, open, write } from "node:fs";
import { mkdir, readdir, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { TrellisError } from "../../proto/core/errors.js";
import { type AllocationRecord, AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { AllocationJournal } from "./journal.js";

/**
 * One file per pod address under `<stateDir>/allocations/`, named by the address. A reservation is
 * written to a temp file, fsynced, then hard-linked to its final name: link(2) fails when the name
 * exists, so two reservations of one address can never both succeed, even across processes; the
 * directory is fsynced before the call returns, so an acknowledged ADD or DEL survives a power cut.
 * Calls that arrive while the directory is being synced share the next sync (group commit), so a
 * burst of ADDs pays for far fewer directory syncs than it has ADDs, and each still returns only once
 * its own entry is on disk. fd-based calls: the FileHandle API costs more CPU per call.
 */
const openFd = promisify(open);
const writeFd = promisify(write) as (fd: number, text: string) => Promise<unknown>;
const datasyncFd = promisify(fdatasync);
const fsyncFd = promisify(fsync);
const closeFd = promisify(close);
const linkPath = promisify(link);

export class FileAllocationJournal implements AllocationJournal {
  private readonly dir: string;
  private dirFd?: Promise<number>;
  /** The directory sync running now, and the one that will start after it (shared by everyone waiting). */
  private syncing?: Promise<void>;
  private nextSync?: Promise<void>;

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
      const fd = await openFd(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await writeFd(fd, toJsonString(AllocationRecordSchema, record));
        await datasyncFd(fd);
      } finally {
        closeFd(fd).catch(() => undefined);
      }
      try {
        await linkPath(tmp, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
        throw err;
      }
      await this.syncDir();
      return true;
    } catch (err) {
      throw new TrellisError("INTERNAL", `could not record allocation of ${record.address} in ${this.dir}`, { cause: err });
    } finally {
      unlink(tmp).catch(() => undefined); // the name is not needed any more; load() removes one a crash left
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

  /** Resolves once a directory sync that started after this call has finished. */
  private syncDir(): Promise<void> {
    if (!this.syncing) {
      this.syncing = this.syncOnce().finally(() => {
        this.syncing = undefined;
      });
      return this.syncing;
    }
    this.nextSync ??= this.syncing
      .catch(() => undefined)
      .then(() => {
        this.nextSync = undefined;
        return this.syncDir();
      });
    return this.nextSync;
  }

  private async syncOnce(): Promise<void> {
    this.dirFd ??= openFd(this.dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await fsyncFd(await this.dirFd);
    } catch (err) {
      this.dirFd = undefined;
      throw err;
    }
  }
}
