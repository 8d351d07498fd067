import { EtcdAllocationStore } from "./etcd-allocation-store.js";
import { EtcdClusterConfigStore } from "./etcd-cluster-config-store.js";
import { EtcdCompactor } from "./etcd-compactor.js";
import { EtcdContext, type EtcdStoreOptions } from "./etcd-context.js";
import { EtcdEventStore } from "./etcd-event-store.js";
import { EtcdIdentityStore } from "./etcd-identity-store.js";
import { EtcdLivenessStore } from "./etcd-liveness-store.js";
import { EtcdNodeStore } from "./etcd-node-store.js";
import { EtcdRouteReportStore } from "./etcd-route-report-store.js";
import { EtcdSubnetStore } from "./etcd-subnet-store.js";
import type { Stores } from "./stores.js";

export interface EtcdStores extends Stores {
  readonly compactor: EtcdCompactor;
  /** Closes the one etcd client every store shares. */
  close(): void;
}

/** Every store port over one etcd client (DESIGN.md §5). */
export function openEtcdStores(options: EtcdStoreOptions): EtcdStores {
  const context = new EtcdContext(options);
  return {
    nodes: new EtcdNodeStore(context),
    liveness: new EtcdLivenessStore(context),
    subnets: new EtcdSubnetStore(context),
    allocations: new EtcdAllocationStore(context),
    routeReports: new EtcdRouteReportStore(context),
    clusterConfig: new EtcdClusterConfigStore(context),
    events: new EtcdEventStore(context),
    identity: new EtcdIdentityStore(context),
    compactor: new EtcdCompactor(context),
    close: () => context.close(),
  };
}
