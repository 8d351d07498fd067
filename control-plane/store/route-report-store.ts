import type { ReportedRoutesRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { Versioned } from "./versioned.js";

/** What a conditional report write found: written (at `modRevision`), or not, and why. */
export type ReportWrite =
  | { readonly written: true; readonly modRevision: bigint }
  /** The node has no record (never registered, or removed), or its report's mod revision was not the expected one: `current` is what is stored. */
  | { readonly written: false; readonly registered: boolean; readonly current?: Versioned<ReportedRoutesRecord> };

/** What each node last reported of its routes (a digest; the routes it misses). */
export interface RouteReportStore {
  /**
   * Stores `record` as node `node`'s report in one round trip, only while the node is registered and its
   * stored report's mod revision is `expectedModRevision` (0n: none stored). When not written, says what
   * is stored instead, read in the same transaction.
   */
  putReportedRoutes(node: string, record: ReportedRoutesRecord, expectedModRevision: bigint): Promise<ReportWrite>;
  findReportedRoutes(node: string): Promise<Versioned<ReportedRoutesRecord> | undefined>;
  listReportedRoutes(): Promise<Map<string, ReportedRoutesRecord>>;
}
