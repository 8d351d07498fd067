import { readdir, readFile, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fromJsonString } from "@bufbuild/protobuf";
import { pendingDeletesDirName } from "../../proto/core/protocol.js";
import { type Attachment, AttachmentSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

export interface PendingDelete {
  readonly id: string;
  /** Undefined when the file could not be decoded (it is still removed once seen). */
  readonly attachment?: Attachment;
}

/** DEL requests the shim left while the daemon was down (DESIGN.md §2); the daemon completes them. */
export interface PendingDeletes {
  list(): Promise<PendingDelete[]>;
  remove(id: string): Promise<void>;
  /** How many wait, without reading them (trellis_pending_deletes). */
  count(): Promise<number>;
}

/** The shim writes them next to the daemon's socket: `<dir of socket>/pending-deletes/<hash>.json`. */
export class FilePendingDeletes implements PendingDeletes {
  private readonly dir: string;

  constructor(socketPath: string) {
    this.dir = join(dirname(socketPath), pendingDeletesDirName);
  }

  async list(): Promise<PendingDelete[]> {
    const out: PendingDelete[] = [];
    for (const name of await this.names()) {
      const text = await readFile(join(this.dir, name), "utf8").catch(() => undefined);
      let attachment: Attachment | undefined;
      try {
        attachment = text === undefined ? undefined : fromJsonString(AttachmentSchema, text);
      } catch {
        attachment = undefined;
      }
      out.push({ id: name, attachment });
    }
    return out;
  }

  async count(): Promise<number> {
    return (await this.names()).length;
  }

  /** The finished requests' files (the shim writes a dot-file, then renames it). */
  private async names(): Promise<string[]> {
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? [] : Promise.reject(err)));
    return names.filter((n) => n.endsWith(".json") && !n.startsWith("."));
  }

  async remove(id: string): Promise<void> {
    await unlink(join(this.dir, id)).catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? undefined : Promise.reject(err)));
  }
}
