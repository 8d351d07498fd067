// The contract of IdentityStore (control-plane/store/identity-store.ts), run on the in-memory store (unit)
// and on etcd (integration), so NodeIdentities' tests on the memory store mean something.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { IdentityStore } from "../../control-plane/store/identity-store.js";
import {
  IssuedCertificateSchema,
  JoinTokenRecordSchema,
  type NodeCertificatesRecord,
  NodeCertificatesRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { waitFor } from "../support/wait.js";

const token = (nodeName: string, expiresAtMs = 2_000_000_000_000n) =>
  create(JoinTokenRecordSchema, { nodeName, secretSha256: new Uint8Array(32).fill(7), expiresAtMs, createdAtMs: 1n, createdBy: "admin a" });
const certs = (...serials: string[]): NodeCertificatesRecord =>
  create(NodeCertificatesRecordSchema, {
    certificates: serials.map((serial) => create(IssuedCertificateSchema, { serial, notAfterMs: 2_000_000_000_000n })),
  });

export function describeIdentityStoreContract(name: string, make: () => Promise<IdentityStore & { close?(): Promise<void> }>): void {
  describe(`IdentityStore contract: ${name}`, () => {
    it("a token id is created once and read back whole", async () => {
      const store = await make();
      expect(await store.createJoinToken("abc123", token("n1"))).toBe(true);
      expect(await store.createJoinToken("abc123", token("n2"))).toBe(false);
      const found = await store.findJoinToken("abc123");
      expect(found?.value).toEqual(token("n1"));
      expect(found?.modRevision).toBeGreaterThan(0n);
      expect(await store.findJoinToken("zzz999")).toBeUndefined();
      await store.close?.();
    });

    it("admit uses the token up and writes the certificates, once: a second admit with the same token fails", async () => {
      const store = await make();
      await store.createJoinToken("abc123", token("n1"));
      const t = await store.findJoinToken("abc123");
      expect(await store.admit("abc123", t?.modRevision ?? 0n, "n1", certs("aa"), 0n)).toBe(true);
      expect(await store.findJoinToken("abc123")).toBeUndefined();
      expect((await store.findNodeCertificates("n1"))?.value).toEqual(certs("aa"));
      expect(await store.admit("abc123", t?.modRevision ?? 0n, "n1", certs("bb"), 0n)).toBe(false);
      expect((await store.findNodeCertificates("n1"))?.value).toEqual(certs("aa"));
      await store.close?.();
    });

    it("admit fails when the node's certificates changed since they were read, and then uses nothing up", async () => {
      const store = await make();
      await store.createJoinToken("abc123", token("n1"));
      const t = await store.findJoinToken("abc123");
      await store.putNodeCertificates("n1", certs("aa"), 0n);
      expect(await store.admit("abc123", t?.modRevision ?? 0n, "n1", certs("bb"), 0n)).toBe(false);
      expect(await store.findJoinToken("abc123")).toBeDefined();
      await store.close?.();
    });

    it("putNodeCertificates compares revisions: a stale writer loses", async () => {
      const store = await make();
      expect(await store.putNodeCertificates("n1", certs("aa"), 0n)).toBe(true);
      const read = await store.findNodeCertificates("n1");
      expect(await store.putNodeCertificates("n1", certs("aa", "bb"), read?.modRevision ?? 0n)).toBe(true);
      expect(await store.putNodeCertificates("n1", certs("cc"), read?.modRevision ?? 0n)).toBe(false);
      expect((await store.findNodeCertificates("n1"))?.value).toEqual(certs("aa", "bb"));
      await store.close?.();
    });

    it("revokeNode drops the node's certificates and its unused tokens, and no one else's", async () => {
      const store = await make();
      await store.putNodeCertificates("n1", certs("aa"), 0n);
      await store.putNodeCertificates("n2", certs("bb"), 0n);
      await store.createJoinToken("tok111", token("n1"));
      await store.createJoinToken("tok222", token("n2"));
      await store.revokeNode("n1");
      await store.revokeNode("ghost");
      expect(await store.findNodeCertificates("n1")).toBeUndefined();
      expect(await store.findJoinToken("tok111")).toBeUndefined();
      expect(await store.findNodeCertificates("n2")).toBeDefined();
      expect(await store.findJoinToken("tok222")).toBeDefined();
      await store.close?.();
    });

    it("sweepJoinTokens deletes exactly the expired ones", async () => {
      const store = await make();
      await store.createJoinToken("old111", token("n1", 1_000n));
      await store.createJoinToken("new222", token("n2", 5_000n));
      expect(await store.sweepJoinTokens(1_000)).toBe(1);
      expect(await store.findJoinToken("old111")).toBeUndefined();
      expect(await store.findJoinToken("new222")).toBeDefined();
      await store.close?.();
    });

    it("watchNodeCertificates gives a snapshot, then every change, revocations as undefined", async () => {
      const store = await make();
      await store.putNodeCertificates("n1", certs("aa"), 0n);
      const snapshots: string[][] = [];
      const changes: string[] = [];
      const stop = new AbortController();
      await store.watchNodeCertificates(
        {
          onSnapshot: (all) => snapshots.push([...all.keys()]),
          onChange: (node, record) => changes.push(`${node}=${record ? record.certificates.map((c) => c.serial).join("+") : "revoked"}`),
        },
        stop.signal,
      );
      expect(snapshots).toEqual([["n1"]]);
      await store.putNodeCertificates("n2", certs("bb"), 0n);
      await store.revokeNode("n1");
      await waitFor("two changes", async () => changes.length >= 2, 5_000);
      expect(changes).toEqual(["n2=bb", "n1=revoked"]);
      stop.abort();
      await store.close?.();
    });
  });
}
