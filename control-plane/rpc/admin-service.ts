import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { clusterMtu } from "../../proto/core/cluster-mtu.js";
import { TrellisError } from "../../proto/core/errors.js";
import { routeDigest } from "../../proto/core/route-plan.js";
import {
  type AdminService,
  type Allocation,
  AllocationSchema,
  CreateJoinTokenResponseSchema,
  DeleteReservationResponseSchema,
  DrainNodeResponseSchema,
  EventKind,
  EvictNodeResponseSchema,
  GetClusterConfigResponseSchema,
  GetNodeResponseSchema,
  GetRoutesResponseSchema,
  LeaseSchema,
  ListAllocationsResponseSchema,
  ListLeasesResponseSchema,
  ListNodesResponseSchema,
  ListReservationsResponseSchema,
  LookupAddressResponseSchema,
  type Node,
  NodeSchema,
  ReleaseLeaseResponseSchema,
  ReservationSchema,
  ReserveSubnetResponseSchema,
  RouteSchema,
  SetRouterResponseSchema,
  type WatchEventsResponse,
  WatchEventsResponseSchema,
} from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import type { Route } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import type { NodeRecord, SubnetReservationRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { describePeer, peerKey } from "../../proto/rpc/peer-identity.js";
import type { NodeIdentities } from "../identity/node-identities.js";
import type { ExpiryPolicy } from "../nodes/expiry-plan.js";
import type { Registrar } from "../nodes/registrar.js";
import { reportMatches } from "../routes/route-reports.js";
import { desiredRoutesFor, diffRoutes } from "../routes/route-table.js";
import type { ClusterEvent } from "../store/event-store.js";
import type { Stores } from "../store/stores.js";
import type { SubnetPool } from "../subnets/subnet-pool.js";

export interface AdminDeps {
  readonly stores: Stores;
  readonly pool: SubnetPool;
  readonly registrar: Registrar;
  readonly policy: ExpiryPolicy;
  readonly clock: () => number;
  readonly identities: NodeIdentities;
}

const ts = (ms: bigint | number) => timestampFromMs(Number(ms));
/** Allocations in one ListAllocations answer, at most and by default (about 0.5 MiB). */
export const maxAllocationsPage = 1000;
/** Events one WatchEvents stream may have waiting before it is ended as too slow. */
const maxQueuedEvents = 10_000;
const secondsLeft = (untilMs: number, nowMs: number) => BigInt(Math.max(0, Math.ceil((untilMs - nowMs) / 1000)));

function required(value: string, field: string): string {
  if (!value) throw new TrellisError("INVALID_ARGUMENT", `${field} is required`);
  return value;
}

function allocationOf(node: string, r: AllocationRecord): Allocation {
  const a = r.attachment;
  return create(AllocationSchema, {
    nodeName: node,
    address: r.address,
    containerId: a?.containerId ?? "",
    ifName: a?.ifName ?? "",
    podNamespace: a?.podNamespace ?? "",
    podName: a?.podName ?? "",
    hostVeth: r.hostVeth,
    createdAt: ts(r.createdAtMs),
  });
}

function reservationOf(r: SubnetReservationRecord) {
  return create(ReservationSchema, { subnet: r.subnet, nodeName: r.nodeName, createdAt: ts(r.createdAtMs) });
}

const adminRoute = (r: Route) => create(RouteSchema, { dst: r.subnet, via: r.nodeIp, nodeName: r.nodeName });

const eventKinds: Record<ClusterEvent["kind"], EventKind> = {
  node: EventKind.NODE,
  lease: EventKind.LEASE,
  allocation: EventKind.ALLOCATION,
  reservation: EventKind.RESERVATION,
};

/** The operator's view of the pod network (DESIGN.md §2, admin API). Reads the stores; writes through the Registrar. */
export function createAdminService(deps: AdminDeps): ServiceImpl<typeof AdminService> {
  const { stores, pool, registrar, policy } = deps;

  /** The nodes (or one), and the cluster's MTU: the most common among live nodes (proto/core/cluster-mtu.ts). */
  async function describeNodes(only?: string): Promise<{ nodes: Node[]; clusterMtu: number }> {
    // Pods are counted from the keys alone and every list is read in pages (issue 10, finding 2).
    const [{ nodes }, heartbeats, pods, reported] = await Promise.all([
      stores.nodes.listNodes(),
      stores.liveness.listHeartbeats(),
      stores.allocations.countAllocations(),
      stores.routeReports.listReportedRoutes(),
    ]);
    const now = deps.clock();
    const mtu = clusterMtu(nodes.filter((n) => n.live).map((n) => n.mtu)) ?? 0;
    const described = nodes
      .filter((n) => only === undefined || n.name === only)
      .map((n: NodeRecord) => {
        const lastSeen = heartbeats.get(n.name)?.lastSeenMs ?? n.registeredAtMs;
        return create(NodeSchema, {
          name: n.name,
          nodeIp: n.nodeIp,
          subnet: n.subnet,
          live: n.live,
          mtu: n.mtu,
          registeredAt: ts(n.registeredAtMs),
          lastSeen: ts(lastSeen),
          leaseTtlLeftSeconds: n.live ? secondsLeft(Number(lastSeen) + policy.ttlMs, now) : 0n,
          releasedReason: n.releasedReason,
          releasedAt: n.live ? undefined : ts(n.releasedAtMs),
          graceLeftSeconds: n.live ? 0n : secondsLeft(Number(n.releasedAtMs) + policy.graceMs, now),
          routeRevision: reported.get(n.name)?.revision ?? 0n,
          pods: pods.get(n.name) ?? 0,
          router: n.router,
          mtuDiffers: n.live && mtu !== 0 && n.mtu !== mtu,
        });
      });
    return { nodes: described, clusterMtu: mtu };
  }

  return {
    async listNodes() {
      return create(ListNodesResponseSchema, await describeNodes());
    },
    async getNode(req) {
      const [node] = (await describeNodes(required(req.name, "name"))).nodes;
      if (!node) throw new TrellisError("NOT_FOUND", `node ${req.name} is not known`);
      return create(GetNodeResponseSchema, { node });
    },
    async listLeases() {
      const [records, { nodes }] = await Promise.all([stores.subnets.listLeases(), stores.nodes.listNodes()]);
      const byName = new Map(nodes.map((n) => [n.name, n]));
      return create(ListLeasesResponseSchema, {
        leases: records.map((l) =>
          create(LeaseSchema, {
            subnet: l.subnet,
            nodeName: l.nodeName,
            leasedAt: ts(l.leasedAtMs),
            live: byName.get(l.nodeName)?.live ?? false,
            releasedReason: byName.get(l.nodeName)?.releasedReason ?? "",
          }),
        ),
      });
    },
    async listReservations() {
      return create(ListReservationsResponseSchema, { reservations: (await stores.subnets.listReservations()).map(reservationOf) });
    },
    async listAllocations(req) {
      if (req.nodeName && !(await stores.nodes.findNode(req.nodeName)))
        throw new TrellisError("NOT_FOUND", `node ${req.nodeName} is not known`);
      const page = await stores.allocations.listAllocationsPage(
        req.nodeName || undefined,
        req.pageToken,
        req.pageSize || maxAllocationsPage,
      );
      return create(ListAllocationsResponseSchema, {
        allocations: page.allocations.map((a) => allocationOf(a.node, a.record)),
        nextPageToken: page.next,
      });
    },
    async lookupAddress(req) {
      const address = parseIpv4(required(req.address, "address"), "address");
      if (!pool.cluster.contains(address)) {
        throw new TrellisError("INVALID_ARGUMENT", `address ${req.address} is outside the cluster CIDR ${pool.cluster.toString()}`);
      }
      const { nodes } = await stores.nodes.listNodes();
      const holder = nodes.find((n) => Cidr.parse(n.subnet).contains(address));
      const text = req.address.trim();
      const found = holder && (await stores.allocations.listAllocations(holder.name)).find((a) => a.record.address === text);
      if (!found)
        throw new TrellisError(
          "NOT_FOUND",
          `no pod holds ${text}${holder ? ` (it lies in ${holder.name}'s subnet ${holder.subnet})` : ""}`,
        );
      return create(LookupAddressResponseSchema, { allocation: allocationOf(found.node, found.record), subnet: holder.subnet });
    },
    async getRoutes(req) {
      const name = required(req.nodeName, "node_name");
      const [{ nodes }, stored] = await Promise.all([stores.nodes.listNodes(), stores.routeReports.findReportedRoutes(name)]);
      const reported = stored?.value;
      if (!nodes.some((n) => n.name === name)) throw new TrellisError("NOT_FOUND", `node ${name} is not known`);
      const desired = desiredRoutesFor(name, nodes, pool.cluster.toString());
      const common = {
        desired: desired.map(adminRoute),
        reportedRevision: reported?.revision ?? 0n,
        reportedAt: reported ? ts(reported.reportedAtMs) : undefined,
      };
      if (reported && reported.routes.length === 0 && reported.digest.length > 0) {
        // A digest report: the node's routes are known to be the desired ones only when the digests agree.
        const inSync = reportMatches(reported, routeDigest(desired.map((r) => ({ dst: r.subnet, via: r.nodeIp }))), desired.length);
        return create(GetRoutesResponseSchema, {
          ...common,
          reported: inSync ? desired.map(adminRoute) : [],
          missing: reported.missing.map(adminRoute),
          inSync,
          reportedCount: reported.routeCount,
        });
      }
      const { missing, extra } = diffRoutes(desired, reported?.routes ?? []);
      return create(GetRoutesResponseSchema, {
        ...common,
        reported: (reported?.routes ?? []).map(adminRoute),
        missing: missing.map(adminRoute),
        extra: extra.map(adminRoute),
        inSync: reported !== undefined && missing.length === 0 && extra.length === 0,
        reportedCount: reported?.routes.length ?? 0,
      });
    },
    async getClusterConfig() {
      const [found, { nodes }] = await Promise.all([stores.liveness.findDisruption(), stores.nodes.listNodes()]);
      const disruption = found?.value;
      return create(GetClusterConfigResponseSchema, {
        clusterCidr: pool.cluster.toString(),
        subnetPrefixLength: pool.prefixLength,
        leaseTtlSeconds: BigInt(policy.ttlMs / 1000),
        gracePeriodSeconds: BigInt(policy.graceMs / 1000),
        disruptionShare: policy.disruptionShare,
        disruption: disruption?.active ?? false,
        disruptionSince: disruption?.active ? ts(disruption.sinceMs) : undefined,
        disruptionOverdueNodes: disruption?.active ? disruption.overdueNodes : [],
        routerNode: nodes.find((n) => n.router)?.name ?? "",
      });
    },
    async createJoinToken(req, ctx) {
      const { token, expiresAtMs } = await deps.identities.createJoinToken(
        required(req.nodeName, "node_name"),
        req.ttlSeconds,
        describePeer(ctx.values.get(peerKey)),
      );
      return create(CreateJoinTokenResponseSchema, { token, expiresAt: ts(expiresAtMs) });
    },
    async setRouter(req) {
      await registrar.setRouter(required(req.nodeName, "node_name"), req.router);
      const [node] = (await describeNodes(req.nodeName)).nodes;
      return create(SetRouterResponseSchema, { node });
    },
    async drainNode(req) {
      // Leaving on a node's behalf: the route goes at once, the certificate stays (a daemon started again comes back).
      await registrar.withdraw(required(req.name, "name"), "drained");
      return create(DrainNodeResponseSchema);
    },
    async evictNode(req) {
      const name = required(req.name, "name");
      // Revoked first: an evicted node must not be able to come straight back with its old certificate.
      await deps.identities.revoke(name);
      await registrar.withdraw(name, "evicted");
      return create(EvictNodeResponseSchema);
    },
    async releaseLease(req) {
      return create(ReleaseLeaseResponseSchema, { nodeName: await registrar.release(required(req.subnet, "subnet")) });
    },
    async reserveSubnet(req) {
      const reservation = await registrar.reserve(required(req.subnet, "subnet"), required(req.nodeName, "node_name"));
      return create(ReserveSubnetResponseSchema, { reservation: reservationOf(reservation) });
    },
    async deleteReservation(req) {
      await stores.subnets.deleteReservation(Cidr.parse(required(req.subnet, "subnet"), "subnet").toString());
      return create(DeleteReservationResponseSchema);
    },
    async *watchEvents(_req, ctx) {
      // Bounded (issue 10, finding 12): a client that does not read is told it fell behind, and the
      // stream ends, instead of this replica queueing for it without limit. So is one whose watch ended.
      const queue: WatchEventsResponse[] = [];
      let ended: TrellisError | undefined;
      let wake: (() => void) | undefined;
      const watching = new AbortController();
      const stopWatching = () => watching.abort();
      ctx.signal.addEventListener("abort", stopWatching, { once: true });
      const end = (err: TrellisError) => {
        ended ??= err;
        watching.abort();
        wake?.();
      };
      try {
        await stores.events.watchEvents(
          (e) => {
            if (ended) return;
            if (queue.length >= maxQueuedEvents) {
              end(
                new TrellisError(
                  "EXHAUSTED",
                  `this WatchEvents stream fell ${maxQueuedEvents} events behind and was ended; call WatchEvents again (and List* for what changed meanwhile)`,
                ),
              );
              return;
            }
            queue.push(create(WatchEventsResponseSchema, { ...e, kind: eventKinds[e.kind] }));
            wake?.();
          },
          watching.signal,
          (err) =>
            end(
              new TrellisError(
                "UNAVAILABLE",
                `the event watch ended (${err.message}); call WatchEvents again (and List* for what changed meanwhile)`,
              ),
            ),
        );
        ctx.signal.addEventListener("abort", () => wake?.(), { once: true });
        while (!ctx.signal.aborted) {
          const next = queue.shift();
          if (next) yield next;
          else if (ended) throw ended;
          else await new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        ctx.signal.removeEventListener("abort", stopWatching);
        watching.abort();
      }
    },
  };
}
