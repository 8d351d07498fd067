import type { AllocationStore } from "./allocation-store.js";
import type { ClusterConfigStore } from "./cluster-config-store.js";
import type { EventStore } from "./event-store.js";
import type { IdentityStore } from "./identity-store.js";
import type { LivenessStore } from "./liveness-store.js";
import type { NodeStore } from "./node-store.js";
import type { RouteReportStore } from "./route-report-store.js";
import type { SubnetStore } from "./subnet-store.js";

/** Every store port the control plane uses, one per aggregate; main.ts opens them over one etcd client. */
export interface Stores {
  readonly nodes: NodeStore;
  readonly liveness: LivenessStore;
  readonly subnets: SubnetStore;
  readonly allocations: AllocationStore;
  readonly routeReports: RouteReportStore;
  readonly clusterConfig: ClusterConfigStore;
  readonly events: EventStore;
  readonly identity: IdentityStore;
}
