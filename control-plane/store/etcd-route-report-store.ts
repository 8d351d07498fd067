import { toJsonString } from "@bufbuild/protobuf";
import { type ReportedRoutesRecord, ReportedRoutesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, rangePaged } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import type { RouteReportStore } from "./route-report-store.js";

/** RouteReportStore over etcd. What nodes reported of their routes: reported-routes/<node>. */
export class EtcdRouteReportStore extends EtcdStore implements RouteReportStore {
  async putReportedRoutes(node: string, record: ReportedRoutesRecord): Promise<void> {
    const value = toJsonString(ReportedRoutesRecordSchema, record);
    await this.call("put", `record routes reported by ${node}`, () => this.etcd.put(this.keys.reportedRoutes(node)).value(value).exec());
  }

  async findReportedRoutes(node: string): Promise<ReportedRoutesRecord | undefined> {
    const res = await this.call("get", `read routes reported by ${node}`, () => this.etcd.get(this.keys.reportedRoutes(node)).exec());
    const kv = res.kvs[0];
    return kv && decodeRecord(ReportedRoutesRecordSchema, kv);
  }

  async listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>> {
    const prefix = this.keys.reportedRoutesPrefix;
    const res = await this.call("range", "list reported routes", () => rangePaged(this.etcd, prefix));
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), decodeRecord(ReportedRoutesRecordSchema, kv)]));
  }
}
