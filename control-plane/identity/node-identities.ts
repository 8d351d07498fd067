// Node identities (DESIGN.md §6): join tokens an admin creates, the first certificate a node gets for one,
// renewals, and revocation on eviction. The control plane sets every field of what it issues; a CSR gives
// only its public key. Each node's valid certificate serials are kept in etcd (the allow-list that
// CertificateRegistry checks on every call), so evicting a node revokes them all at once.
import { X509Certificate } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { TrellisError } from "../../proto/core/errors.js";
import { checkNodeName } from "../../proto/core/node-name.js";
import {
  IssuedCertificateSchema,
  JoinTokenRecordSchema,
  type NodeCertificatesRecord,
  NodeCertificatesRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { normalizeSerial } from "../../proto/rpc/peer-identity.js";
import { type CertificateAuthority, issueCertificate, publicKeyOfRequest } from "../../proto/rpc/x509.js";
import type { IdentityStore } from "../store/identity-store.js";
import { checkJoinToken, hashSecret, joinTokenLifetimeS, newJoinToken, parseJoinToken } from "./join-token.js";

export interface NodeIdentitiesDeps {
  readonly store: IdentityStore;
  /** The cluster CA with its key; undefined on a replica that may not sign (Join and renewal refused). */
  readonly ca?: CertificateAuthority;
  readonly log: Logger;
  readonly clock: () => number;
  readonly randomBytes: (n: number) => Uint8Array;
  /** Lifetime of node certificates, in seconds (7 days by default: notes/identity-anchors.md). */
  readonly certificateLifetimeS: number;
}

/** A node keeps at most this many certificates valid at once (the newest; renewals overlap briefly). */
const maxCertificatesPerNode = 4;
const maxRaces = 16;

export class NodeIdentities {
  constructor(private readonly deps: NodeIdentitiesDeps) {}

  /** A new token for `nodeName`, valid `ttlSeconds` (0: the default). The secret is returned once, never stored. */
  async createJoinToken(nodeName: string, ttlSeconds: bigint, createdBy: string): Promise<{ token: string; expiresAtMs: number }> {
    checkNodeName(nodeName, "node_name");
    const ttl = joinTokenLifetimeS(ttlSeconds);
    const now = this.deps.clock();
    const expiresAtMs = now + ttl * 1000;
    for (let attempt = 0; attempt < maxRaces; attempt++) {
      const token = newJoinToken(this.deps.randomBytes);
      const record = create(JoinTokenRecordSchema, {
        nodeName,
        secretSha256: hashSecret(token.secret),
        expiresAtMs: BigInt(expiresAtMs),
        createdAtMs: BigInt(now),
        createdBy,
      });
      if (await this.deps.store.createJoinToken(token.id, record)) {
        this.deps.log.info({ node: nodeName, token: token.id, ttlS: ttl }, `join token created by ${createdBy}`);
        return { token: token.text, expiresAtMs };
      }
    }
    throw new TrellisError("CONFLICT", "could not pick an unused join token id; try again");
  }

  /** A node's first certificate, for a valid join token made for its name. The token is used up. */
  async join(tokenText: string, nodeName: string, csrPem: string): Promise<string> {
    checkNodeName(nodeName, "node_name");
    const { id, secret } = parseJoinToken(tokenText);
    const ca = this.signer();
    const publicKey = await publicKeyOfRequest(csrPem);
    for (let attempt = 0; attempt < maxRaces; attempt++) {
      const token = await this.deps.store.findJoinToken(id);
      checkJoinToken(id, token?.value, secret, nodeName, this.deps.clock());
      const current = await this.deps.store.findNodeCertificates(nodeName);
      const { pem, issued } = await this.issue(ca, nodeName, publicKey);
      const next = this.withCertificate(current?.value, issued);
      if (await this.deps.store.admit(id, token?.modRevision ?? 0n, nodeName, next, current?.modRevision ?? 0n)) {
        this.deps.log.info({ node: nodeName, token: id, serial: issued.serial }, "node joined: first certificate issued");
        return pem;
      }
    }
    throw new TrellisError("CONFLICT", `could not admit node ${nodeName}: lost ${maxRaces} etcd races in a row`);
  }

  /** A new certificate for a node that holds a valid one (checked by the caller); the old stays valid. */
  async renew(nodeName: string, csrPem: string): Promise<string> {
    const ca = this.signer();
    const publicKey = await publicKeyOfRequest(csrPem);
    for (let attempt = 0; attempt < maxRaces; attempt++) {
      const current = await this.deps.store.findNodeCertificates(nodeName);
      if (!current) throw revoked(nodeName);
      const { pem, issued } = await this.issue(ca, nodeName, publicKey);
      if (await this.deps.store.putNodeCertificates(nodeName, this.withCertificate(current.value, issued), current.modRevision)) {
        this.deps.log.info({ node: nodeName, serial: issued.serial }, "node certificate renewed");
        return pem;
      }
    }
    throw new TrellisError("CONFLICT", `could not renew the certificate of node ${nodeName}: lost ${maxRaces} etcd races in a row`);
  }

  /** Every certificate of `nodeName` stops working at once, and its unused join tokens go. */
  async revoke(nodeName: string): Promise<void> {
    await this.deps.store.revokeNode(nodeName);
    this.deps.log.info({ node: nodeName }, "node certificates revoked: it must join again with a new token");
  }

  async sweepJoinTokens(): Promise<number> {
    return this.deps.store.sweepJoinTokens(this.deps.clock());
  }

  private signer(): CertificateAuthority {
    if (!this.deps.ca) {
      throw new TrellisError(
        "UNAVAILABLE",
        "this control-plane replica cannot sign node certificates: start it with --ca-key (the cluster CA's key), or send the call to a replica that has it",
      );
    }
    return this.deps.ca;
  }

  private async issue(ca: CertificateAuthority, nodeName: string, publicKey: Parameters<typeof issueCertificate>[1]["publicKey"]) {
    const pem = await issueCertificate(ca, {
      identity: { kind: "node", name: nodeName },
      publicKey,
      lifetimeS: this.deps.certificateLifetimeS,
      now: new Date(this.deps.clock()),
    });
    const cert = new X509Certificate(pem);
    const issued = create(IssuedCertificateSchema, {
      serial: normalizeSerial(cert.serialNumber),
      notAfterMs: BigInt(Date.parse(cert.validTo)),
    });
    return { pem, issued };
  }

  /** `current` plus `issued`, without expired certificates, keeping the newest few. */
  private withCertificate(current: NodeCertificatesRecord | undefined, issued: NodeCertificatesRecord["certificates"][number]) {
    const now = BigInt(this.deps.clock());
    const kept = (current?.certificates ?? []).filter((c) => c.notAfterMs > now);
    return create(NodeCertificatesRecordSchema, { certificates: [...kept, issued].slice(-maxCertificatesPerNode) });
  }
}

export function revoked(nodeName: string): TrellisError {
  return new TrellisError(
    "UNAUTHENTICATED",
    `the certificate of node ${nodeName} is revoked (the node was evicted) or was never issued by this cluster: join again with a new token (AdminService.CreateJoinToken, then the daemon's --join-token-file)`,
  );
}
