import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { applyRouteMessage, type RouteSet } from "../../../../node-daemon/control/control-client.js";
import {
  RouteEventSchema,
  RouteEventType,
  RouteSchema,
  WatchRoutesResponseSchema,
  type RouteEvent,
} from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";

const route = (nodeName: string, subnet: string, nodeIp: string) => create(RouteSchema, { nodeName, subnet, nodeIp });
const upsert = (r: ReturnType<typeof route>) => create(RouteEventSchema, { type: RouteEventType.UPSERT, route: r });
const remove = (r: ReturnType<typeof route>) => create(RouteEventSchema, { type: RouteEventType.DELETE, route: r });
const snapshot = (routes: ReturnType<typeof route>[], revision = 10n) => create(WatchRoutesResponseSchema, { snapshot: true, routes, revision });
const events = (evs: RouteEvent[], revision = 11n) => create(WatchRoutesResponseSchema, { snapshot: false, events: evs, revision });
const plain = (set: RouteSet) => Object.fromEntries([...set].map(([k, r]) => [k, `${r.subnet} via ${r.nodeIp}`]));

const a = route("a", "10.244.1.0/24", "192.168.0.1");
const b = route("b", "10.244.2.0/24", "192.168.0.2");
const c = route("c", "10.244.3.0/24", "192.168.0.3");
const start: RouteSet = new Map([
  ["a", a],
  ["b", b],
]);

describe("applyRouteMessage", () => {
  it("a snapshot replaces the whole set", () => {
    const next = applyRouteMessage(start, snapshot([c]));
    expect(plain(next)).toEqual({ c: "10.244.3.0/24 via 192.168.0.3" });
  });

  it("an empty snapshot clears the set", () => {
    expect(applyRouteMessage(start, snapshot([])).size).toBe(0);
  });

  it("events patch the set: upsert adds, upsert changes, delete removes", () => {
    const next = applyRouteMessage(start, events([upsert(c), upsert(route("a", "10.244.1.0/24", "192.168.0.11")), remove(b)]));
    expect(plain(next)).toEqual({ a: "10.244.1.0/24 via 192.168.0.11", c: "10.244.3.0/24 via 192.168.0.3" });
  });

  it("a delete of an unknown route changes nothing", () => {
    expect(plain(applyRouteMessage(start, events([remove(c)])))).toEqual(plain(start));
  });

  it("events without a route, or of an unspecified type, are ignored", () => {
    const noRoute = create(RouteEventSchema, { type: RouteEventType.UPSERT });
    const unspecified = create(RouteEventSchema, { type: RouteEventType.UNSPECIFIED, route: c });
    expect(plain(applyRouteMessage(start, events([noRoute, unspecified])))).toEqual(plain(start));
  });

  it("events in a snapshot message apply on top of the snapshot", () => {
    const msg = create(WatchRoutesResponseSchema, { snapshot: true, routes: [a, b], events: [remove(a), upsert(c)], revision: 5n });
    expect(Object.keys(plain(applyRouteMessage(new Map(), msg))).sort()).toEqual(["b", "c"]);
  });

  it("later events win within one message", () => {
    const next = applyRouteMessage(new Map(), events([upsert(c), remove(c), upsert(route("c", "10.244.30.0/24", "192.168.0.3"))]));
    expect(plain(next)).toEqual({ c: "10.244.30.0/24 via 192.168.0.3" });
  });

  it("never mutates the set it was given", () => {
    const before = plain(start);
    applyRouteMessage(start, events([remove(a), upsert(c)]));
    applyRouteMessage(start, snapshot([]));
    expect(plain(start)).toEqual(before);
  });
});
