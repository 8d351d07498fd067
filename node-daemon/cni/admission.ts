// Bounds how many pod operations the daemon works on at once; the rest wait their turn in order. A call
// waits rather than failing (a runtime gives ADD minutes, the shim 90 s), until the queue itself is full:
// then it is refused at once with UNAVAILABLE (CNI code 11, try again later), so memory stays bounded.
import { TrellisError } from "../../proto/core/errors.js";

export class Admission {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly limit: number,
    readonly maxWaiting: number,
  ) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new TrellisError(
          "UNAVAILABLE",
          `the node daemon is working on ${this.active} pod operations with ${this.waiting.length} waiting; try again shortly`,
        );
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next)
        next(); // the slot passes straight on
      else this.active--;
    }
  }

  get queued(): number {
    return this.waiting.length;
  }
}
