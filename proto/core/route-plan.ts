import { createHash } from "node:crypto";
import type { Route } from "../gen/trellis/controlplane/v1/node_pb.js";

/** A route in a node's table: pods of `dst` are reached through `via` (the node named `nodeName`). */
export interface HostRoute {
  readonly dst: string;
  readonly via: string;
  readonly nodeName: string;
}

/**
 * The routes node `me` should hold, given the cluster's route set. Pure; shared by the daemon (what to
 * apply) and the control plane (what the admin API calls desired).
 * - host-gw: one route per other node, `subnet via nodeIp`;
 * - central router (some live node is marked router): the router holds the host-gw routes, every other
 *   node sends the whole cluster CIDR to the router (its own subnet stays on its bridge, more specific).
 */
export function desiredRoutes(all: Iterable<Route>, me: string, clusterCidr: string): HostRoute[] {
  const routes = [...all].sort((a, b) => a.nodeName.localeCompare(b.nodeName));
  const router = routes.find((r) => r.router);
  if (router && router.nodeName !== me) return [{ dst: clusterCidr, via: router.nodeIp, nodeName: router.nodeName }];
  return routes.filter((r) => r.nodeName !== me).map((r) => ({ dst: r.subnet, via: r.nodeIp, nodeName: r.nodeName }));
}

/**
 * What a node reports instead of its routes (DESIGN.md §2): SHA-256 of "dst via\n" lines, sorted, so
 * that the same set gives the same digest on the node and on the control plane.
 */
export function routeDigest(routes: Iterable<{ readonly dst: string; readonly via: string }>): Uint8Array {
  const lines = [...routes].map((r) => `${r.dst} via ${r.via}\n`).sort();
  return createHash("sha256").update(lines.join("")).digest();
}
