import type { ClusterConfigRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";

/** What every replica must agree on (DESIGN.md §5). */
export interface ClusterConfigStore {
  /** Stores `config` unless a cluster config is stored already; returns the one stored. */
  ensureClusterConfig(config: ClusterConfigRecord): Promise<ClusterConfigRecord>;
}
