import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { desiredRoutes } from "../../../../proto/core/route-plan.js";
import { RouteSchema } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";

const route = (n: number, router = false) =>
  create(RouteSchema, { nodeName: `node-${n}`, subnet: `10.244.${n}.0/24`, nodeIp: `192.168.1.${10 + n}`, router });
const text = (routes: ReturnType<typeof desiredRoutes>) => routes.map((r) => `${r.dst} via ${r.via}`);

describe("desiredRoutes", () => {
  it("host-gw: one route per other node, never one to itself", () => {
    expect(text(desiredRoutes([route(1), route(2), route(3)], "node-1", "10.244.0.0/16"))).toEqual([
      "10.244.2.0/24 via 192.168.1.12",
      "10.244.3.0/24 via 192.168.1.13",
    ]);
  });

  it("central router: the router holds every other node's route", () => {
    expect(text(desiredRoutes([route(1, true), route(2), route(3)], "node-1", "10.244.0.0/16"))).toEqual([
      "10.244.2.0/24 via 192.168.1.12",
      "10.244.3.0/24 via 192.168.1.13",
    ]);
  });

  it("central router: every other node sends the whole cluster CIDR to the router", () => {
    for (const me of ["node-2", "node-3"]) {
      expect(text(desiredRoutes([route(2), route(1, true), route(3)], me, "10.244.0.0/16"))).toEqual(["10.244.0.0/16 via 192.168.1.11"]);
    }
  });

  it("two nodes marked router: the first by name is the router, for everyone alike", () => {
    expect(text(desiredRoutes([route(3, true), route(2, true), route(1)], "node-1", "10.244.0.0/16"))).toEqual([
      "10.244.0.0/16 via 192.168.1.12",
    ]);
    expect(text(desiredRoutes([route(3, true), route(2, true), route(1)], "node-3", "10.244.0.0/16"))).toEqual([
      "10.244.0.0/16 via 192.168.1.12",
    ]);
  });

  it("no other node: no route", () => {
    expect(desiredRoutes([route(1)], "node-1", "10.244.0.0/16")).toEqual([]);
  });
});
