import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { RouteSync } from "../../../../node-daemon/routes/route-sync.js";
import { RouteSchema } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { RecordingNetlink } from "../../../support/fakes.js";

const route = (nodeName: string, subnet: string, nodeIp: string) => create(RouteSchema, { nodeName, subnet, nodeIp });

describe("RouteSync.counts (trellis_routes)", () => {
  it("is unknown before the first route set, then desired, installed and failed routes of the last reconciliation", async () => {
    const net = new RecordingNetlink();
    const sync = new RouteSync({ net, log: pino({ level: "silent" }), nodeName: "node-1", clusterCidr: "10.244.0.0/16" });
    expect(sync.counts).toBeUndefined();
    const routes = [
      route("node-1", "10.244.1.0/24", "192.168.1.11"), // its own: no route
      route("node-2", "10.244.2.0/24", "192.168.1.12"),
      route("node-3", "10.244.3.0/24", "192.168.1.13"),
      route("node-4", "10.244.4.0/24", "10.9.9.9"),
    ];
    net.failRouteVia.add("10.9.9.9"); // an unreachable next hop
    await sync.setRoutes(routes);
    expect(sync.counts).toEqual({ desired: 3, installed: 2, failed: 1 });
    net.failRouteVia.clear();
    await sync.reconcile();
    expect(sync.counts).toEqual({ desired: 3, installed: 3, failed: 0 });
    await sync.setRoutes(routes.slice(0, 2));
    expect(sync.counts).toEqual({ desired: 1, installed: 1, failed: 0 });
  });
});
