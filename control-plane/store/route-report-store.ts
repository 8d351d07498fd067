import type { ReportedRoutesRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";

/** What each node last reported of its routes (a digest; the routes it misses). */
export interface RouteReportStore {
  putReportedRoutes(node: string, record: ReportedRoutesRecord): Promise<void>;
  findReportedRoutes(node: string): Promise<ReportedRoutesRecord | undefined>;
  listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>>;
}
