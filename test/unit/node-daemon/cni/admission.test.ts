import { describe, expect, it } from "vitest";
import { Admission } from "../../../../node-daemon/cni/admission.js";
import { TrellisError } from "../../../../proto/core/errors.js";

function gate() {
  let open: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("Admission", () => {
  it("runs at most `limit` at once; the rest start in the order they came as slots free up", async () => {
    const admission = new Admission(2, 10);
    const gates = [gate(), gate(), gate(), gate()];
    const started: number[] = [];
    const runs = gates.map((g, i) =>
      admission.run(async () => {
        started.push(i);
        await g.opened;
        return i;
      }),
    );
    await tick();
    expect(started).toEqual([0, 1]);
    expect(admission.queued).toBe(2);
    gates[1]?.open();
    await tick();
    expect(started).toEqual([0, 1, 2]);
    for (const g of gates) g.open();
    expect(await Promise.all(runs)).toEqual([0, 1, 2, 3]);
    expect(admission.queued).toBe(0);
  });

  it("a failing operation frees its slot", async () => {
    const admission = new Admission(1, 10);
    await expect(admission.run(async () => Promise.reject(new Error("kernel said no")))).rejects.toThrow("kernel said no");
    await expect(admission.run(async () => "next")).resolves.toBe("next");
  });

  it("refuses at once with UNAVAILABLE when the queue is full", async () => {
    const admission = new Admission(1, 1);
    const g = gate();
    const first = admission.run(() => g.opened);
    const second = admission.run(async () => undefined);
    const third = await admission.run(async () => undefined).catch((err: unknown) => err);
    expect(third).toBeInstanceOf(TrellisError);
    expect((third as TrellisError).reason).toBe("UNAVAILABLE");
    expect((third as Error).message).toMatch(/working on 1 pod operations with 1 waiting; try again shortly/);
    g.open();
    await Promise.all([first, second]);
  });
});
