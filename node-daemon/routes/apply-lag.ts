/**
 * Seconds from the control plane deciding a route change (`decidedAtMs`, its replica's wall clock) to this
 * node's kernel holding it (`nowMs`, this node's wall clock). Two machines' clocks: with NTP they agree
 * within milliseconds, and whatever skew is left adds to the lag or takes from it. A node whose clock is
 * behind the control plane's would measure a negative lag: it counts as 0 (a change cannot arrive before
 * it was decided), so the histogram never holds impossible values; a large skew still shows as lag. Pure.
 */
export function routeApplyLagSeconds(decidedAtMs: number, nowMs: number): number {
  return Math.max(0, nowMs - decidedAtMs) / 1000;
}
