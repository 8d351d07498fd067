import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import {
  DeregisterNodeResponseSchema,
  HeartbeatResponseSchema,
  JoinResponseSchema,
  type JoinService,
  ListNodeAllocationsResponseSchema,
  type NodeService,
  RecordAllocationResponseSchema,
  RegisterNodeResponseSchema,
  ReleaseAllocationResponseSchema,
  RenewCertificateResponseSchema,
  ReportRoutesResponseSchema,
  SyncAllocationsResponseSchema,
} from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { AllocationMirror } from "../allocations/allocation-mirror.js";
import type { NodeIdentities } from "../identity/node-identities.js";
import type { Liveness } from "../nodes/liveness.js";
import type { Registrar } from "../nodes/registrar.js";
import type { RouteFeed } from "../routes/route-feed.js";
import { RouteReports } from "../routes/route-reports.js";
import type { Stores } from "../store/stores.js";
import { actFor } from "./authorize.js";

export function createNodeService(deps: {
  registrar: Registrar;
  liveness: Liveness;
  feed: RouteFeed;
  mirror: AllocationMirror;
  clusterCidr: Cidr;
  stores: Pick<Stores, "nodes" | "routeReports">;
  clock: () => number;
  identities: NodeIdentities;
}): ServiceImpl<typeof NodeService> {
  const reports = new RouteReports({ routeReports: deps.stores.routeReports, clock: deps.clock });
  return {
    async registerNode(req, ctx) {
      actFor(ctx, req.nodeName);
      if (req.router) {
        throw new TrellisError(
          "PERMISSION_DENIED",
          `node ${req.nodeName} asked to be the central router: router mode is cluster config that only an admin sets (AdminService.SetRouter); start the daemon without --router`,
        );
      }
      const node = await deps.registrar.register({
        name: req.nodeName,
        nodeIp: req.nodeIp,
        mtu: req.mtu || 1500,
        heldSubnet: req.heldSubnet || undefined,
        instance: req.instance,
      });
      return create(RegisterNodeResponseSchema, { subnet: node.subnet, clusterCidr: deps.clusterCidr.toString() });
    },
    async heartbeat(req, ctx) {
      actFor(ctx, req.nodeName);
      await deps.liveness.heartbeat(req.nodeName, ctx.signal);
      return create(HeartbeatResponseSchema);
    },
    async deregisterNode(req, ctx) {
      actFor(ctx, req.nodeName);
      await deps.registrar.withdraw(req.nodeName);
      return create(DeregisterNodeResponseSchema);
    },
    // gRPC callers in protobuf (daemons) are served by route-stream.ts and never get here; this serves the rest (JSON).
    watchRoutes(req, ctx) {
      actFor(ctx, req.nodeName);
      return deps.feed.subscribe(ctx.signal, req.fromRevision, req.epoch);
    },
    async recordAllocation(req, ctx) {
      actFor(ctx, req.nodeName);
      await deps.mirror.record(req.nodeName, req.allocation);
      return create(RecordAllocationResponseSchema);
    },
    async releaseAllocation(req, ctx) {
      actFor(ctx, req.nodeName);
      await deps.mirror.release(req.nodeName, req.address);
      return create(ReleaseAllocationResponseSchema);
    },
    async syncAllocations(req, ctx) {
      actFor(ctx, req.nodeName);
      await deps.mirror.sync(req.nodeName, req.recorded, req.released);
      return create(SyncAllocationsResponseSchema);
    },
    async reportRoutes(req, ctx) {
      actFor(ctx, req.nodeName);
      await reports.record(req.nodeName, req);
      return create(ReportRoutesResponseSchema);
    },
    async renewCertificate(req, ctx) {
      actFor(ctx, req.nodeName);
      return create(RenewCertificateResponseSchema, { certificatePem: await deps.identities.renew(req.nodeName, req.csrPem) });
    },
    async listNodeAllocations(req, ctx) {
      actFor(ctx, req.nodeName);
      return create(ListNodeAllocationsResponseSchema, { allocations: await deps.mirror.list(req.nodeName) });
    },
  };
}

/** JoinService: a node without a certificate trades a join token for its first one. */
export function createJoinService(deps: { identities: NodeIdentities }): ServiceImpl<typeof JoinService> {
  return {
    async join(req) {
      return create(JoinResponseSchema, { certificatePem: await deps.identities.join(req.token, req.nodeName, req.csrPem) });
    },
  };
}
