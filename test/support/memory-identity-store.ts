// IdentityStore in memory, with etcd's revision semantics (every write bumps one counter; a compare
// against 0n means "absent"), for fast domain tests. test/contract/identity-store.ts holds it to the
// same contract as the etcd one.
import { clone } from "@bufbuild/protobuf";
import type { CertificateWatchHandlers, IdentityStore } from "../../control-plane/store/identity-store.js";
import type { Versioned } from "../../control-plane/store/versioned.js";
import {
  type JoinTokenRecord,
  JoinTokenRecordSchema,
  type NodeCertificatesRecord,
  NodeCertificatesRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";

export class MemoryIdentityStore implements IdentityStore {
  private revision = 0n;
  private readonly tokens = new Map<string, Versioned<JoinTokenRecord>>();
  private readonly certificates = new Map<string, Versioned<NodeCertificatesRecord>>();
  private readonly watchers = new Set<CertificateWatchHandlers>();

  async createJoinToken(id: string, record: JoinTokenRecord): Promise<boolean> {
    if (this.tokens.has(id)) return false;
    this.tokens.set(id, { value: clone(JoinTokenRecordSchema, record), modRevision: ++this.revision });
    return true;
  }

  async findJoinToken(id: string): Promise<Versioned<JoinTokenRecord> | undefined> {
    const t = this.tokens.get(id);
    return t && { value: clone(JoinTokenRecordSchema, t.value), modRevision: t.modRevision };
  }

  async admit(
    tokenId: string,
    tokenRevision: bigint,
    node: string,
    certificates: NodeCertificatesRecord,
    certificatesRevision: bigint,
  ): Promise<boolean> {
    if ((this.tokens.get(tokenId)?.modRevision ?? 0n) !== tokenRevision) return false;
    if ((this.certificates.get(node)?.modRevision ?? 0n) !== certificatesRevision) return false;
    this.tokens.delete(tokenId);
    this.setCertificates(node, certificates);
    return true;
  }

  async findNodeCertificates(node: string): Promise<Versioned<NodeCertificatesRecord> | undefined> {
    const c = this.certificates.get(node);
    return c && { value: clone(NodeCertificatesRecordSchema, c.value), modRevision: c.modRevision };
  }

  async putNodeCertificates(node: string, record: NodeCertificatesRecord, revision: bigint): Promise<boolean> {
    if ((this.certificates.get(node)?.modRevision ?? 0n) !== revision) return false;
    this.setCertificates(node, record);
    return true;
  }

  async revokeNode(node: string): Promise<void> {
    for (const [id, t] of this.tokens) if (t.value.nodeName === node) this.tokens.delete(id);
    if (this.certificates.delete(node)) {
      this.revision++;
      for (const w of this.watchers) w.onChange(node, undefined);
    }
  }

  async sweepJoinTokens(nowMs: number): Promise<number> {
    let swept = 0;
    for (const [id, t] of this.tokens) {
      if (t.value.expiresAtMs <= BigInt(nowMs)) {
        this.tokens.delete(id);
        swept++;
      }
    }
    return swept;
  }

  async watchNodeCertificates(handlers: CertificateWatchHandlers, signal: AbortSignal): Promise<void> {
    handlers.onSnapshot(new Map([...this.certificates].map(([node, c]) => [node, clone(NodeCertificatesRecordSchema, c.value)])));
    this.watchers.add(handlers);
    signal.addEventListener("abort", () => this.watchers.delete(handlers), { once: true });
  }

  private setCertificates(node: string, record: NodeCertificatesRecord): void {
    this.certificates.set(node, { value: clone(NodeCertificatesRecordSchema, record), modRevision: ++this.revision });
    for (const w of this.watchers) w.onChange(node, clone(NodeCertificatesRecordSchema, record));
  }
}
