// Writes to the control plane's copy of the node's allocations (DESIGN.md §2), off the pod path: ADD and
// DEL answer first; then the queue sends everything written meanwhile as one batch, keeping only the last
// write of each address (so a release never overtakes the record it releases), one batch at a time. A
// failed batch is logged and left to the periodic full sync (AttachmentService.syncMirror), which
// repairs any drift.
import type { Logger } from "pino";
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

/** The control plane's copy of the node's allocations; the node's journal stays authoritative. */
export interface AllocationMirror {
  /** Records and releases several at once; an address is in at most one of the lists. */
  sync(recorded: readonly AllocationRecord[], released: readonly string[]): Promise<void>;
  list(): Promise<AllocationRecord[]>;
}

/** One write: the allocation to record, or the address to release. */
type MirrorOp = { readonly record: AllocationRecord } | { readonly release: string };

/** The most writes one call carries (the control plane takes up to 1000 of each kind). */
export const mirrorBatchLimit = 500;

export class MirrorQueue {
  private readonly ops: MirrorOp[] = [];
  private draining?: Promise<void>;
  private dropped = 0;

  constructor(
    private readonly mirror: AllocationMirror | undefined,
    private readonly log: Logger,
    /** Most writes kept waiting; older ones are dropped (the periodic sync repairs them). */
    private readonly limit = 10_000,
    private readonly defer: (fn: () => void) => void = setImmediate,
  ) {}

  record(record: AllocationRecord): void {
    this.push({ record });
  }

  release(address: string): void {
    this.push({ release: address });
  }

  /** Resolves once every write queued so far was attempted. */
  async idle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  private push(op: MirrorOp): void {
    if (!this.mirror) return;
    this.ops.push(op);
    if (this.ops.length > this.limit) {
      this.ops.shift();
      if (this.dropped++ === 0)
        this.log.warn({ attempt: this.limit }, "control plane mirror is far behind; dropping writes until the next full sync");
    }
    this.draining ??= new Promise<void>((resolve) => this.defer(resolve)).then(() => this.drain());
  }

  private async drain(): Promise<void> {
    const mirror = this.mirror;
    try {
      while (mirror && this.ops.length > 0) {
        const last = new Map<string, MirrorOp>();
        for (const op of this.ops.splice(0, this.ops.length)) last.set("record" in op ? op.record.address : op.release, op);
        const writes = [...last.values()];
        for (let at = 0; at < writes.length; at += mirrorBatchLimit) {
          const batch = writes.slice(at, at + mirrorBatchLimit);
          const recorded = batch.flatMap((op) => ("record" in op ? [op.record] : []));
          const released = batch.flatMap((op) => ("release" in op ? [op.release] : []));
          await mirror.sync(recorded, released).catch((err: unknown) => {
            this.log.debug(
              { err },
              `could not mirror ${recorded.length} allocations and ${released.length} releases; the next full sync will`,
            );
          });
        }
      }
    } finally {
      this.dropped = 0;
      this.draining = undefined;
    }
  }
}
