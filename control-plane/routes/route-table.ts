import { create } from "@bufbuild/protobuf";
import { desiredRoutes } from "../../proto/core/route-plan.js";
import {
  type Route,
  type RouteEvent,
  RouteEventSchema,
  RouteEventType,
  RouteSchema,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { NodeRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { NodeChange } from "../store/node-store.js";

/** The cluster's route set, by node name. Pure. */
export type RouteTable = ReadonlyMap<string, Route>;

/** The route a node record asks for: none for a node that withdrew. */
export function routeOf(node: NodeRecord): Route | undefined {
  return node.live
    ? create(RouteSchema, { nodeName: node.name, subnet: node.subnet, nodeIp: node.nodeIp, router: node.router, mtu: node.mtu })
    : undefined;
}

export function tableOf(nodes: readonly NodeRecord[]): RouteTable {
  const table = new Map<string, Route>();
  for (const node of nodes) {
    const route = routeOf(node);
    if (route) table.set(node.name, route);
  }
  return table;
}

function sameRoute(a: Route, b: Route): boolean {
  return a.subnet === b.subnet && a.nodeIp === b.nodeIp && a.router === b.router && a.mtu === b.mtu;
}

/**
 * Applies node changes to a table; returns the new table (`table` itself when `inPlace`, for a table nobody
 * else holds yet) and only the route events they cause.
 */
export function applyNodeChanges(
  table: RouteTable,
  changes: readonly NodeChange[],
  inPlace = false,
): { next: RouteTable; events: RouteEvent[] } {
  const next = inPlace ? (table as Map<string, Route>) : new Map(table);
  const events: RouteEvent[] = [];
  for (const change of changes) {
    const before = next.get(change.name);
    const after = change.node && routeOf(change.node);
    if (after && !(before && sameRoute(before, after))) {
      next.set(change.name, after);
      events.push(create(RouteEventSchema, { type: RouteEventType.UPSERT, route: after }));
    } else if (!after && before) {
      next.delete(change.name);
      events.push(create(RouteEventSchema, { type: RouteEventType.DELETE, route: before }));
    }
  }
  return { next, events };
}

/** The route events that turn `before` into `after`: an upsert for each route new or changed, a delete for each gone. Pure. */
export function diffTables(before: RouteTable, after: RouteTable): RouteEvent[] {
  const events: RouteEvent[] = [];
  for (const [name, route] of after) {
    const old = before.get(name);
    if (!(old && sameRoute(old, route))) events.push(create(RouteEventSchema, { type: RouteEventType.UPSERT, route }));
  }
  for (const [name, route] of before) {
    if (!after.has(name)) events.push(create(RouteEventSchema, { type: RouteEventType.DELETE, route }));
  }
  return events;
}

/** What a node should hold (host-gw, or the central router's cluster route), as Route messages. Pure. */
export function desiredRoutesFor(node: string, nodes: readonly NodeRecord[], clusterCidr: string): Route[] {
  return desiredRoutes(tableOf(nodes).values(), node, clusterCidr).map((r) =>
    create(RouteSchema, { nodeName: r.nodeName, subnet: r.dst, nodeIp: r.via }),
  );
}

/** desired minus reported and reported minus desired, comparing destination and next hop. Pure. */
export function diffRoutes(desired: readonly Route[], reported: readonly Route[]): { missing: Route[]; extra: Route[] } {
  const key = (r: Route) => `${r.subnet} ${r.nodeIp}`;
  const have = new Set(reported.map(key));
  const want = new Set(desired.map(key));
  return { missing: desired.filter((r) => !have.has(key(r))), extra: reported.filter((r) => !want.has(key(r))) };
}
