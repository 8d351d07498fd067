import { toJsonString } from "@bufbuild/protobuf";
import { CompareResult, CompareTarget } from "etcd3";
import { type ReportedRoutesRecord, ReportedRoutesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, rangePaged } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import type { ReportWrite, RouteReportStore } from "./route-report-store.js";
import type { Versioned } from "./versioned.js";

/** RouteReportStore over etcd. What nodes reported of their routes: reported-routes/<node>. */
export class EtcdRouteReportStore extends EtcdStore implements RouteReportStore {
  async putReportedRoutes(node: string, record: ReportedRoutesRecord, expectedModRevision: bigint): Promise<ReportWrite> {
    const nodeKey = Buffer.from(this.keys.node(node));
    const key = Buffer.from(this.keys.reportedRoutes(node));
    const value = Buffer.from(toJsonString(ReportedRoutesRecordSchema, record));
    const res = await this.call("txn", `record routes reported by ${node}`, () =>
      this.etcd.kv.txn({
        compare: [
          { key: nodeKey, target: CompareTarget.Version, result: CompareResult.Greater, version: 0 },
          { key, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: String(expectedModRevision) },
        ],
        success: [{ request_put: { key, value } }],
        failure: [{ request_range: { key: nodeKey, count_only: true } }, { request_range: { key } }],
      }),
    );
    if (res.succeeded) return { written: true, modRevision: BigInt(res.header.revision) };
    // A first write (nothing expected) that finds a report stored is a read, not a conflict.
    if (expectedModRevision !== 0n) this.applied(res, "report_routes");
    const [nodes, reports] = res.responses.map((r) => r.response_range);
    const kv = reports?.kvs[0];
    return {
      written: false,
      registered: Number(nodes?.count ?? 0) > 0,
      current: kv && { value: decodeRecord(ReportedRoutesRecordSchema, kv), modRevision: BigInt(kv.mod_revision) },
    };
  }

  async findReportedRoutes(node: string): Promise<Versioned<ReportedRoutesRecord> | undefined> {
    const res = await this.call("get", `read routes reported by ${node}`, () => this.etcd.get(this.keys.reportedRoutes(node)).exec());
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(ReportedRoutesRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>> {
    const prefix = this.keys.reportedRoutesPrefix;
    const res = await this.call("range", "list reported routes", () => rangePaged(this.etcd, prefix));
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), decodeRecord(ReportedRoutesRecordSchema, kv)]));
  }
}
