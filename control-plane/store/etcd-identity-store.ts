// IdentityStore over etcd (DESIGN.md §5-6): keys join-tokens/<id> and node-certificates/<node>.
import { toJsonString } from "@bufbuild/protobuf";
import {
  type JoinTokenRecord,
  JoinTokenRecordSchema,
  type NodeCertificatesRecord,
  NodeCertificatesRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, followWatch } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import type { CertificateWatchHandlers, IdentityStore } from "./identity-store.js";
import type { Versioned } from "./versioned.js";

export class EtcdIdentityStore extends EtcdStore implements IdentityStore {
  async createJoinToken(id: string, record: JoinTokenRecord): Promise<boolean> {
    const key = this.keys.joinToken(id);
    const res = await this.call("txn", `store a join token for ${record.nodeName}`, () =>
      this.etcd
        .if(key, "Version", "==", 0)
        .then(this.etcd.put(key).value(toJsonString(JoinTokenRecordSchema, record)))
        .commit(),
    );
    return this.applied(res, "join_token");
  }

  async findJoinToken(id: string): Promise<Versioned<JoinTokenRecord> | undefined> {
    const res = await this.call("get", `read join token ${id}`, () => this.etcd.get(this.keys.joinToken(id)).exec());
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(JoinTokenRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async admit(
    tokenId: string,
    tokenRevision: bigint,
    node: string,
    certificates: NodeCertificatesRecord,
    certificatesRevision: bigint,
  ): Promise<boolean> {
    const tokenKey = this.keys.joinToken(tokenId);
    const certKey = this.keys.nodeCertificates(node);
    const res = await this.call("txn", `admit node ${node}`, () =>
      this.etcd
        .if(tokenKey, "Mod", "==", String(tokenRevision))
        .and(certKey, "Mod", "==", String(certificatesRevision))
        .then(this.etcd.delete().key(tokenKey), this.etcd.put(certKey).value(toJsonString(NodeCertificatesRecordSchema, certificates)))
        .commit(),
    );
    return this.applied(res, "join_token");
  }

  async findNodeCertificates(node: string): Promise<Versioned<NodeCertificatesRecord> | undefined> {
    const res = await this.call("get", `read the certificates of node ${node}`, () =>
      this.etcd.get(this.keys.nodeCertificates(node)).exec(),
    );
    const kv = res.kvs[0];
    return kv && { value: decodeRecord(NodeCertificatesRecordSchema, kv), modRevision: BigInt(kv.mod_revision) };
  }

  async putNodeCertificates(node: string, record: NodeCertificatesRecord, revision: bigint): Promise<boolean> {
    const key = this.keys.nodeCertificates(node);
    const res = await this.call("txn", `record a certificate of node ${node}`, () =>
      this.etcd
        .if(key, "Mod", "==", String(revision))
        .then(this.etcd.put(key).value(toJsonString(NodeCertificatesRecordSchema, record)))
        .commit(),
    );
    return this.applied(res, "node_certificates");
  }

  async revokeNode(node: string): Promise<void> {
    const tokens = await this.listJoinTokens();
    const mine = tokens.filter((t) => t.record.nodeName === node).map((t) => this.etcd.delete().key(this.keys.joinToken(t.id)));
    await this.call("txn", `revoke the certificates of node ${node}`, () =>
      this.etcd
        .if(this.keys.nodeCertificates(node), "Version", ">", -1)
        .then(this.etcd.delete().key(this.keys.nodeCertificates(node)), ...mine)
        .commit(),
    );
  }

  async sweepJoinTokens(nowMs: number): Promise<number> {
    const expired = (await this.listJoinTokens()).filter((t) => t.record.expiresAtMs <= BigInt(nowMs));
    for (const t of expired) {
      this.applied(
        await this.call("txn", `delete expired join token ${t.id}`, () =>
          this.etcd
            .if(this.keys.joinToken(t.id), "Mod", "==", String(t.modRevision))
            .then(this.etcd.delete().key(this.keys.joinToken(t.id)))
            .commit(),
        ),
        "join_token",
      );
    }
    return expired.length;
  }

  private async listJoinTokens(): Promise<Array<{ id: string; record: JoinTokenRecord; modRevision: bigint }>> {
    const prefix = this.keys.joinTokensPrefix;
    const res = await this.call("range", "list join tokens", () => this.etcd.getAll().prefix(prefix).exec());
    return res.kvs.map((kv) => ({
      id: kv.key.toString().slice(prefix.length),
      record: decodeRecord(JoinTokenRecordSchema, kv),
      modRevision: BigInt(kv.mod_revision),
    }));
  }

  async watchNodeCertificates(handlers: CertificateWatchHandlers, signal: AbortSignal): Promise<void> {
    const prefix = this.keys.nodeCertificatesPrefix;
    const listAndWatch = async (): Promise<void> => {
      const res = await this.call("range", "list node certificates", () => this.etcd.getAll().prefix(prefix).exec());
      handlers.onSnapshot(
        new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), decodeRecord(NodeCertificatesRecordSchema, kv)])),
      );
      const watcher = await this.watch(
        "watch node certificates",
        this.etcd
          .watch()
          .prefix(prefix)
          .startRevision(String(BigInt(res.header.revision) + 1n)),
      );
      // Compacted, or etcd restarted or restored: start over from a fresh listing.
      followWatch(
        watcher,
        signal,
        (batch) => {
          for (const event of batch.events) {
            const node = event.kv.key.toString().slice(prefix.length);
            handlers.onChange(node, event.type === "Put" ? decodeRecord(NodeCertificatesRecordSchema, event.kv) : undefined);
          }
        },
        restart,
      );
    };
    const restart = (): void => {
      if (!signal.aborted) listAndWatch().catch(() => setTimeout(restart, 1_000).unref());
    };
    await listAndWatch();
  }
}
