// The contract of RouteReportStore (control-plane/store/route-report-store.ts), run on the Memory stores
// (unit) and on etcd (integration). EtcdRouteReportStore is the reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { Stores } from "../../control-plane/store/stores.js";
import { RouteSchema } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { ReportedRoutesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";

const report = (revision: bigint, ...missing: string[]) =>
  create(ReportedRoutesRecordSchema, {
    revision,
    reportedAtMs: 1_700_000_000_000n,
    routeCount: 3,
    digest: new Uint8Array([1, 2, 3, 254]),
    missing: missing.map((subnet) => create(RouteSchema, { nodeName: "x", subnet, nodeIp: "192.168.1.99" })),
  });

export function describeRouteReportStoreContract(name: string, make: () => Promise<Stores>): void {
  describe(`RouteReportStore contract: ${name}`, () => {
    it("a node's report is stored whole, replaced by its next one, and listed by node", async () => {
      const s = await make();
      expect(await s.routeReports.findReportedRoutes("n1")).toBeUndefined();
      expect(await s.routeReports.listReportedRoutes()).toEqual(new Map());
      await s.routeReports.putReportedRoutes("n1", report(1n, "10.244.9.0/24"));
      await s.routeReports.putReportedRoutes("n2", report(4n));
      expect(await s.routeReports.findReportedRoutes("n1")).toEqual(report(1n, "10.244.9.0/24"));
      await s.routeReports.putReportedRoutes("n1", report(2n));
      expect(await s.routeReports.findReportedRoutes("n1")).toEqual(report(2n));
      expect(await s.routeReports.findReportedRoutes("n3")).toBeUndefined();
      expect(await s.routeReports.listReportedRoutes()).toEqual(
        new Map([
          ["n1", report(2n)],
          ["n2", report(4n)],
        ]),
      );
    });
  });
}
