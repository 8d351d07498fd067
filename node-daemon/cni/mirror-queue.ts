// Writes to the control plane's copy of the node's allocations (DESIGN.md §2), off the pod path: ADD and
// DEL answer first, then the queue sends their mirror writes one at a time, in the order they happened, so
// a release never overtakes the record it releases. A failed write is logged and left to the periodic
// full sync (AttachmentService.syncMirror), which repairs any drift.
import type { Logger } from "pino";
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

/** The control plane's copy of the node's allocations; the node's journal stays authoritative. */
export interface AllocationMirror {
  record(record: AllocationRecord): Promise<void>;
  release(address: string): Promise<void>;
  list(): Promise<AllocationRecord[]>;
}

interface MirrorOp {
  readonly what: string;
  readonly run: (mirror: AllocationMirror) => Promise<void>;
}

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
    this.push({ what: `allocation ${record.address}`, run: (m) => m.record(record) });
  }

  release(address: string): void {
    this.push({ what: `release of ${address}`, run: (m) => m.release(address) });
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
      for (let op = this.ops.shift(); op && mirror; op = this.ops.shift()) {
        await op.run(mirror).catch((err: unknown) => this.log.debug({ err }, `could not mirror ${op?.what}; the next sync will`));
      }
    } finally {
      this.dropped = 0;
      this.draining = undefined;
    }
  }
}
