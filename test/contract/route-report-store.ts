// The contract of RouteReportStore (control-plane/store/route-report-store.ts), run on the Memory stores
// (unit) and on etcd (integration). EtcdRouteReportStore is the reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { Stores } from "../../control-plane/store/stores.js";
import { RouteSchema } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { ReportedRoutesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { registerNode } from "./node-store.js";

const report = (revision: bigint, ...missing: string[]) =>
  create(ReportedRoutesRecordSchema, {
    revision,
    reportedAtMs: 1_700_000_000_000n,
    routeCount: 3,
    digest: new Uint8Array([1, 2, 3, 254]),
    missing: missing.map((subnet) => create(RouteSchema, { nodeName: "x", subnet, nodeIp: "192.168.1.99" })),
  });

/** Writes `record` as `node`'s report, expecting what is stored to be at `expected`; fails the test if it is not written. */
async function put(s: Stores, node: string, record: ReturnType<typeof report>, expected: bigint): Promise<bigint> {
  const res = await s.routeReports.putReportedRoutes(node, record, expected);
  if (!res.written)
    throw new Error(
      `test setup: ${node}'s report was not written: ${JSON.stringify(res, (_, v) => (typeof v === "bigint" ? String(v) : v))}`,
    );
  return res.modRevision;
}

export function describeRouteReportStoreContract(name: string, make: () => Promise<Stores>): void {
  describe(`RouteReportStore contract: ${name}`, () => {
    it("a node's report is stored whole, replaced by its next one, and listed by node", async () => {
      const s = await make();
      await registerNode(s, "n1", "192.168.1.11", "10.244.1.0/24");
      await registerNode(s, "n2", "192.168.1.12", "10.244.2.0/24");
      expect(await s.routeReports.findReportedRoutes("n1")).toBeUndefined();
      expect(await s.routeReports.listReportedRoutes()).toEqual(new Map());
      const first = await put(s, "n1", report(1n, "10.244.9.0/24"), 0n);
      await put(s, "n2", report(4n), 0n);
      expect(await s.routeReports.findReportedRoutes("n1")).toEqual({ value: report(1n, "10.244.9.0/24"), modRevision: first });
      const second = await put(s, "n1", report(2n), first);
      expect(second).toBeGreaterThan(first);
      expect(await s.routeReports.findReportedRoutes("n1")).toEqual({ value: report(2n), modRevision: second });
      expect(await s.routeReports.findReportedRoutes("n3")).toBeUndefined();
      expect(await s.routeReports.listReportedRoutes()).toEqual(
        new Map([
          ["n1", report(2n)],
          ["n2", report(4n)],
        ]),
      );
    });

    it("a write expecting another mod revision is refused and says what is stored, in the same call", async () => {
      const s = await make();
      await registerNode(s, "n1", "192.168.1.11", "10.244.1.0/24");
      const first = await put(s, "n1", report(1n), 0n);
      expect(await s.routeReports.putReportedRoutes("n1", report(2n), 0n)).toEqual({
        written: false,
        registered: true,
        current: { value: report(1n), modRevision: first },
      });
      expect(await s.routeReports.putReportedRoutes("n1", report(2n), first + 100n)).toMatchObject({ written: false, registered: true });
      expect((await s.routeReports.findReportedRoutes("n1"))?.value).toEqual(report(1n));
    });

    it("no report is written for a node that has no record", async () => {
      const s = await make();
      expect(await s.routeReports.putReportedRoutes("ghost", report(1n), 0n)).toEqual({ written: false, registered: false });
      expect(await s.routeReports.findReportedRoutes("ghost")).toBeUndefined();
    });
  });
}
