// Who may do what (DESIGN.md §6): nobody acts for a node but that node, nobody administers but an admin,
// a viewer may only read. The caller is the identity in its client certificate (proto/rpc/peer-identity.ts);
// a control plane without TLS (a lab on loopback) identifies nobody and so checks nothing.
import type { HandlerContext, Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { TrellisError } from "../../proto/core/errors.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { describePeer, type Peer, peerKey } from "../../proto/rpc/peer-identity.js";
import type { CertificateRegistry } from "../identity/certificate-registry.js";
import { revoked } from "../identity/node-identities.js";

/** NodeService: the caller must be exactly the node the request names. */
export function actFor(ctx: HandlerContext, nodeName: string): void {
  actForPeer(ctx.values.get(peerKey), nodeName);
}

/** actFor, given the caller. */
export function actForPeer(peer: Peer, nodeName: string): void {
  if (peer === "plaintext") return;
  if (typeof peer === "object" && peer.kind === "node" && peer.name === nodeName) return;
  throw new TrellisError(
    "PERMISSION_DENIED",
    `${describePeer(peer)} may not act for node ${JSON.stringify(nodeName)}: a node acts only for itself`,
  );
}

/**
 * NodeService: the caller's certificate must be one its node may use now (not revoked by an eviction).
 * Checked before every call; actFor then checks the node it acts for.
 */
export function nodeCertificateCheck(registry: CertificateRegistry): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName !== NodeService.typeName) return next(req);
    await checkNodeCertificate(registry, req.contextValues.get(peerKey));
    return next(req);
  };
}

/** nodeCertificateCheck, given the caller: throws when it is a node whose certificate was revoked. */
export async function checkNodeCertificate(registry: Pick<CertificateRegistry, "isValid">, peer: Peer): Promise<void> {
  if (typeof peer === "object" && peer.kind === "node" && !(await registry.isValid(peer.name, peer.serial))) throw revoked(peer.name);
}

/** AdminService methods that only read: the ones whose names say so. Everything else is a write. */
const isRead = (method: string) => /^(List|Get|Lookup|Watch)/.test(method);

/** AdminService: reads need an admin or viewer certificate, writes an admin one; each write is logged with who made it. */
export function adminAuthorization(log: Logger): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName !== AdminService.typeName) return next(req);
    const peer = req.contextValues.get(peerKey);
    const write = !isRead(req.method.name);
    if (peer !== "plaintext") {
      const allowed = typeof peer === "object" && (peer.kind === "admin" || (!write && peer.kind === "viewer"));
      if (!allowed) {
        throw new TrellisError(
          "PERMISSION_DENIED",
          `${describePeer(peer)} may not call ${req.method.name}: it needs ${write ? "an admin" : "an admin or viewer"} certificate`,
        );
      }
    }
    const res = await next(req);
    if (write) {
      const m = (req.stream ? {} : req.message) as { name?: string; nodeName?: string; subnet?: string };
      log.info(
        { rpc: req.method.name, node: m.name || m.nodeName || undefined, subnet: m.subnet || undefined },
        `admin write by ${describePeer(peer)}`,
      );
    }
    return res;
  };
}
