import { Cidr } from "../../proto/core/cidr.js";
import type { SubnetUse } from "../store/subnet-store.js";
import { FreeSubnets, type SubnetPool } from "./subnet-pool.js";

/**
 * A replica's view of which subnets are leased and which were freed, for choosing new nodes' subnets.
 * Read per registration, that view made registering N nodes cost O(N²) keys read from etcd (issue 10);
 * here it is read at most once per `maxAgeMs`, one read at a time, in the background once there is a
 * view, and every registration chooses from the view it has. A view may be stale; the claim transaction
 * is the authority (a subnet leased meanwhile fails the claim, one freed meanwhile fails a claim made as
 * never used), so staleness costs a retry, never a subnet leased twice. Subnets this replica claimed or
 * lost a claim to since the view was read count as leased until a read that started after that shows them.
 */
export class SubnetUseCache {
  private view?: { readonly free: FreeSubnets; readonly readAt: number };
  private reading?: { readonly generation: number; readonly free: Promise<FreeSubnets> };
  /** Counts invalidations: a read that started before one does not count as fresh. */
  private generation = 0;
  /** Subnets noted as taken, and when (this.now()). */
  private readonly taken = new Map<string, number>();

  constructor(
    private readonly pool: SubnetPool,
    private readonly read: () => Promise<SubnetUse>,
    private readonly maxAgeMs = 1_000,
    /** Monotonic milliseconds. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * The view. The first one, and the first after invalidate(), is waited for. One older than `maxAgeMs` is
   * handed out at once while it is read again, and a read that fails keeps it: at 4000 simulated nodes the
   * list of every lease took over 5 s on a loaded etcd, and every registration waiting on it failed with
   * it, while a stale view only costs a lost race now and then.
   */
  async get(): Promise<FreeSubnets> {
    const view = this.view;
    if (!view) return this.refresh();
    if (this.now() - view.readAt >= this.maxAgeMs) this.refresh().catch(() => undefined); // the next get reads again
    return view.free;
  }

  /** `subnet` is leased now (a claim of this replica), or a claim of it was just lost. */
  noteTaken(subnet: string): void {
    this.taken.set(subnet, this.now());
    this.view?.free.markTaken(Cidr.parse(subnet));
  }

  /** The next get() reads again: this replica freed a subnet, or the view is known to be wrong. */
  invalidate(): void {
    this.view = undefined;
    this.generation++;
  }

  private refresh(): Promise<FreeSubnets> {
    if (this.reading?.generation === this.generation) return this.reading.free;
    const generation = this.generation;
    const startedAt = this.now();
    const free = this.read().then((use) => {
      const leased = use.leasedSubnets.map((s) => Cidr.parse(s, "stored lease key"));
      const freed = use.freedSubnets.map((f) => ({
        subnet: Cidr.parse(f.subnet, "stored freed subnet key"),
        freedRevision: f.freedRevision,
      }));
      const subnets = new FreeSubnets(this.pool, leased, freed);
      // etcd reads are linearizable: a claim that committed before this read started is in it.
      for (const [subnet, at] of this.taken) {
        if (at < startedAt) this.taken.delete(subnet);
        else subnets.markTaken(Cidr.parse(subnet));
      }
      if (generation === this.generation) this.view = { free: subnets, readAt: startedAt };
      return subnets;
    });
    const reading = { generation, free };
    this.reading = reading;
    const done = () => {
      if (this.reading === reading) this.reading = undefined;
    };
    free.then(done, done);
    return free;
  }
}
