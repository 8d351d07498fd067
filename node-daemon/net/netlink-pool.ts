// Netlink worker threads (netlink-worker.ts): the event loop only encodes and parses, and never waits on
// the kernel. Jobs go to the least busy worker. One worker is the default: each costs ~9 MiB of RSS, a
// pod's set-up is one ~1 ms job, and deletes, the slow kernel work, are batched into device-group
// deletes (rtnetlink.ts DeleteBatcher) rather than spread over threads.
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { TrellisError } from "../../proto/core/errors.js";
import type { VethSpec } from "./netlink.js";
import type { NetlinkJob, NetlinkJobResult } from "./netlink-worker.js";
import type { NlMessage, NlRequest } from "./rtnetlink-codec.js";

interface Slot {
  worker: Worker;
  readonly jobs: Map<number, { resolve: (r: NlMessage[][]) => void; reject: (e: Error) => void; job: NetlinkJob }>;
}

/** The worker next to this file when running from dist/; tests running sources pass the built one. */
export const defaultWorkerFile = fileURLToPath(new URL("./netlink-worker.js", import.meta.url));

export class NetlinkPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    size = 1,
    private readonly workerFile = defaultWorkerFile,
  ) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const slot: Slot = { worker: new Worker(this.workerFile), jobs: new Map() };
    slot.worker.unref();
    slot.worker.on("message", (result: NetlinkJobResult) => {
      const pending = slot.jobs.get(result.id);
      if (!pending) return;
      slot.jobs.delete(result.id);
      if ("error" in result) {
        const job = pending.job;
        const netns = job.kind === "addVeth" ? job.veth.netns : job.kind === "transact" ? job.netns : undefined;
        const where = netns ? ` in ${netns}` : "";
        const reason = result.error.code === "ENOENT" && netns ? "NOT_FOUND" : "KERNEL";
        pending.reject(new TrellisError(reason, `netlink${where}: ${result.error.message}`));
      } else pending.resolve(result.replies);
    });
    slot.worker.on("error", (err) => this.replace(slot, err));
    slot.worker.on("exit", (code) => {
      if (!this.closed) this.replace(slot, new Error(`netlink worker exited with code ${code}`));
    });
    return slot;
  }

  /** A worker that died fails its jobs (their outcome is unknown) and is replaced. */
  private replace(slot: Slot, err: Error): void {
    const index = this.slots.indexOf(slot);
    if (index < 0) return;
    for (const { reject } of slot.jobs.values())
      reject(new TrellisError("KERNEL", `netlink worker failed: ${err.message}`, { cause: err }));
    slot.jobs.clear();
    if (!this.closed) this.slots[index] = this.spawn();
  }

  /** Sends `requests` in one write on a socket in `netns` (undefined: the daemon's own) and returns each one's replies. */
  transact(netns: string | undefined, requests: readonly NlRequest[]): Promise<NlMessage[][]> {
    return this.submit({ id: this.nextId++, kind: "transact", netns, requests });
  }

  /** Sets a veth pair up in one job (netlink-worker.ts addVeth): each step's replies, up to the first refused. */
  addVeth(veth: VethSpec): Promise<NlMessage[][]> {
    return this.submit({ id: this.nextId++, kind: "addVeth", veth });
  }

  /** Deletes links of the daemon's namespace in one job (netlink-worker.ts deleteLinks). */
  deleteLinks(names: readonly string[], group: number): Promise<NlMessage[][]> {
    return this.submit({ id: this.nextId++, kind: "deleteLinks", names, group });
  }

  private submit(job: NetlinkJob): Promise<NlMessage[][]> {
    if (this.closed) return Promise.reject(new TrellisError("UNAVAILABLE", "the netlink pool is closed"));
    const slot = this.slots.reduce((best, s) => (s.jobs.size < best.jobs.size ? s : best));
    return new Promise((resolve, reject) => {
      slot.jobs.set(job.id, { resolve, reject, job });
      slot.worker.postMessage(job);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
