import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { applyNodeChanges, diffTables, type RouteTable, routeOf, tableOf } from "../../../../control-plane/routes/route-table.js";
import type { NodeChange } from "../../../../control-plane/store/node-store.js";
import { RouteEventType } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { type NodeRecord, NodeRecordSchema } from "../../../../proto/gen/trellis/store/v1/store_pb.js";

const node = (name: string, subnet: string, nodeIp: string, live = true): NodeRecord =>
  create(NodeRecordSchema, { name, subnet, nodeIp, live, mtu: 1500, registeredAtMs: 1n });
const put = (n: NodeRecord): NodeChange => ({ type: "put", name: n.name, node: n });
const del = (name: string): NodeChange => ({ type: "delete", name });

/** A table as plain data: name -> "subnet via nodeIp". */
function plain(table: RouteTable): Record<string, string> {
  return Object.fromEntries([...table].map(([name, r]) => [name, `${r.subnet} via ${r.nodeIp} (${r.nodeName})`]));
}
const events = (evs: ReturnType<typeof applyNodeChanges>["events"]) =>
  evs.map((e) => `${RouteEventType[e.type]} ${e.route?.nodeName} ${e.route?.subnet} ${e.route?.nodeIp}`);

const a = node("a", "10.244.1.0/24", "192.168.0.1");
const b = node("b", "10.244.2.0/24", "192.168.0.2");

describe("routeOf / tableOf", () => {
  it("a live node has a route to its subnet via its node IP; a withdrawn one has none", () => {
    expect(routeOf(a)).toMatchObject({ nodeName: "a", subnet: "10.244.1.0/24", nodeIp: "192.168.0.1" });
    expect(routeOf(node("c", "10.244.3.0/24", "192.168.0.3", false))).toBeUndefined();
  });

  it("keys the live nodes' routes by node name", () => {
    const table = tableOf([a, b, node("c", "10.244.3.0/24", "192.168.0.3", false)]);
    expect(plain(table)).toEqual({
      a: "10.244.1.0/24 via 192.168.0.1 (a)",
      b: "10.244.2.0/24 via 192.168.0.2 (b)",
    });
  });

  it("is empty for no nodes", () => {
    expect(tableOf([]).size).toBe(0);
  });
});

describe("applyNodeChanges", () => {
  const base = tableOf([a, b]);

  it("upserts a new node", () => {
    const c = node("c", "10.244.3.0/24", "192.168.0.3");
    const { next, events: evs } = applyNodeChanges(base, [put(c)]);
    expect(events(evs)).toEqual(["UPSERT c 10.244.3.0/24 192.168.0.3"]);
    expect(plain(next)).toMatchObject({ c: "10.244.3.0/24 via 192.168.0.3 (c)" });
    expect(next.size).toBe(3);
  });

  it("carries the node's MTU, so every node can compare its own with the cluster's", () => {
    expect(routeOf(a)?.mtu).toBe(1500);
    const { events: evs } = applyNodeChanges(base, [put(create(NodeRecordSchema, { ...a, mtu: 9000 }))]);
    expect(evs.map((e) => e.route?.mtu)).toEqual([9000]);
  });

  it("sends no event for a put that changes nothing the route depends on", () => {
    const again = create(NodeRecordSchema, { ...a, registeredAtMs: 99n });
    const { next, events: evs } = applyNodeChanges(base, [put(again)]);
    expect(evs).toEqual([]);
    expect(plain(next)).toEqual(plain(base));
  });

  it.each([
    ["node IP", node("a", "10.244.1.0/24", "192.168.0.99"), "UPSERT a 10.244.1.0/24 192.168.0.99"],
    ["subnet", node("a", "10.244.7.0/24", "192.168.0.1"), "UPSERT a 10.244.7.0/24 192.168.0.1"],
  ])("a %s change is an upsert", (_what, changed, expected) => {
    const { next, events: evs } = applyNodeChanges(base, [put(changed)]);
    expect(events(evs)).toEqual([expected]);
    expect(next.get("a")).toMatchObject({ subnet: changed.subnet, nodeIp: changed.nodeIp });
  });

  it("a node that turns live=false is deleted, with its old route in the event", () => {
    const { next, events: evs } = applyNodeChanges(base, [put(node("a", "10.244.1.0/24", "192.168.0.1", false))]);
    expect(events(evs)).toEqual(["DELETE a 10.244.1.0/24 192.168.0.1"]);
    expect(next.has("a")).toBe(false);
    expect(next.has("b")).toBe(true);
  });

  it("a deleted node record is a route delete", () => {
    const { next, events: evs } = applyNodeChanges(base, [del("b")]);
    expect(events(evs)).toEqual(["DELETE b 10.244.2.0/24 192.168.0.2"]);
    expect([...next.keys()]).toEqual(["a"]);
  });

  it.each([
    ["delete of an unknown node", del("zzz")],
    ["withdrawal of an unknown node", put(node("zzz", "10.244.9.0/24", "192.168.0.9", false))],
  ])("%s causes no event", (_what, change) => {
    const { next, events: evs } = applyNodeChanges(base, [change]);
    expect(evs).toEqual([]);
    expect(plain(next)).toEqual(plain(base));
  });

  it("applies a batch in order and reports only the net events per step", () => {
    const c = node("c", "10.244.3.0/24", "192.168.0.3");
    const { next, events: evs } = applyNodeChanges(base, [
      put(c),
      put(c),
      del("a"),
      del("a"),
      put(node("c", "10.244.3.0/24", "192.168.0.33")),
    ]);
    expect(events(evs)).toEqual([
      "UPSERT c 10.244.3.0/24 192.168.0.3",
      "DELETE a 10.244.1.0/24 192.168.0.1",
      "UPSERT c 10.244.3.0/24 192.168.0.33",
    ]);
    expect(plain(next)).toEqual({ b: "10.244.2.0/24 via 192.168.0.2 (b)", c: "10.244.3.0/24 via 192.168.0.33 (c)" });
  });

  it("never mutates the table it was given", () => {
    const before = plain(base);
    applyNodeChanges(base, [del("a"), put(node("d", "10.244.4.0/24", "192.168.0.4"))]);
    expect(plain(base)).toEqual(before);
  });
});

describe("diffTables", () => {
  it("an upsert for each route new or changed, a delete for each gone, nothing for one unchanged; applied, they give the new table", () => {
    const c = node("c", "10.244.3.0/24", "192.168.0.3");
    const before = tableOf([a, b]);
    const after = tableOf([a, { ...b, nodeIp: "192.168.0.22" }, c]);
    const diff = diffTables(before, after);
    expect(events(diff).sort()).toEqual(["UPSERT b 10.244.2.0/24 192.168.0.22", "UPSERT c 10.244.3.0/24 192.168.0.3"]);
    expect(events(diffTables(after, tableOf([a])))).toEqual(["DELETE b 10.244.2.0/24 192.168.0.22", "DELETE c 10.244.3.0/24 192.168.0.3"]);
    expect(diffTables(after, after)).toEqual([]);
  });
});
