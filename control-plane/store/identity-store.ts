// What the control plane keeps about identities (DESIGN.md §6): join tokens (hashed) and, per node, the
// serials of the certificates it may use now. A port of its own, like every other store port: etcd is the
// only implementation in production; test/support has an in-memory one, and both pass
// test/contract/identity-store.ts.
import type { JoinTokenRecord, NodeCertificatesRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { Versioned } from "./versioned.js";

export interface IdentityStore {
  /** Stores a new join token under `id`; false when that id exists already. */
  createJoinToken(id: string, record: JoinTokenRecord): Promise<boolean>;
  findJoinToken(id: string): Promise<Versioned<JoinTokenRecord> | undefined>;
  /**
   * In one transaction: uses up join token `tokenId` (unchanged since `tokenRevision`) and writes `node`'s
   * certificates (unchanged since `certificatesRevision`, 0n: absent). False when either changed: the token
   * was used by someone else first, or the node's certificates moved on.
   */
  admit(
    tokenId: string,
    tokenRevision: bigint,
    node: string,
    certificates: NodeCertificatesRecord,
    certificatesRevision: bigint,
  ): Promise<boolean>;
  findNodeCertificates(node: string): Promise<Versioned<NodeCertificatesRecord> | undefined>;
  /** Writes `node`'s certificates if unchanged since `revision` (0n: absent); false when a race was lost. */
  putNodeCertificates(node: string, record: NodeCertificatesRecord, revision: bigint): Promise<boolean>;
  /** Revokes every certificate of `node` and drops its unused join tokens. */
  revokeNode(node: string): Promise<void>;
  /** Deletes join tokens that expired by `nowMs`; returns how many. */
  sweepJoinTokens(nowMs: number): Promise<number>;
  /**
   * Calls `onSnapshot` with every node's certificates now, then `onChange` with every change (undefined:
   * revoked) until `signal` aborts; after a lost watch, `onSnapshot` again. Resolves once the first
   * snapshot was delivered.
   */
  watchNodeCertificates(handlers: CertificateWatchHandlers, signal: AbortSignal): Promise<void>;
}

export interface CertificateWatchHandlers {
  onSnapshot(all: ReadonlyMap<string, NodeCertificatesRecord>): void;
  onChange(node: string, record: NodeCertificatesRecord | undefined): void;
}
