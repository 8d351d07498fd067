import type { KernelRoute, OwnedRoute } from "../net/netlink.js";

export interface RouteDiff {
  /** Owned routes to add or correct. */
  readonly replace: OwnedRoute[];
  /** Owned routes no longer wanted. */
  readonly remove: OwnedRoute[];
  /** Wanted destinations held by a route Trellis does not own: left alone (DESIGN.md invariant 4). */
  readonly blocked: OwnedRoute[];
}

/** What turns the kernel's routes into the desired set (dst -> via), touching only owned routes. Pure. */
export function diffRoutes(desired: ReadonlyMap<string, string>, kernel: readonly KernelRoute[]): RouteDiff {
  const owned = new Map(kernel.filter((r) => r.owned).map((r) => [r.dst, r.via]));
  const foreign = new Set(kernel.filter((r) => !r.owned).map((r) => r.dst));
  const replace: OwnedRoute[] = [];
  const blocked: OwnedRoute[] = [];
  for (const [dst, via] of desired) {
    if (owned.get(dst) === via) continue;
    if (foreign.has(dst)) blocked.push({ dst, via });
    else replace.push({ dst, via });
  }
  const remove = [...owned].filter(([dst]) => !desired.has(dst)).map(([dst, via]) => ({ dst, via }));
  return { replace, remove, blocked };
}
