import { describe, expect, it } from "vitest";
import { routeApplyLagSeconds } from "../../../../node-daemon/routes/apply-lag.js";

describe("routeApplyLagSeconds", () => {
  it.each([
    [1_000, 1_250, 0.25],
    [1_000, 1_000, 0],
    [1_000, 61_000, 60],
    // The node's clock is behind the control plane's: a change cannot arrive before it was decided.
    [1_000, 900, 0],
  ])("decided at %i ms, in the kernel at %i ms: %f s", (decidedAtMs, nowMs, seconds) => {
    expect(routeApplyLagSeconds(decidedAtMs, nowMs)).toBe(seconds);
  });
});
