import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateRegistry } from "../../control-plane/identity/certificate-registry.js";
import { openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { IssuedCertificateSchema, NodeCertificatesRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { describeIdentityStoreContract } from "../contract/identity-store.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, freePort, startEtcd } from "../support/etcd.js";
import { waitFor } from "../support/wait.js";

let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describeIdentityStoreContract("etcd", async () => openEtcdStores({ endpoints: [etcd.endpoint], root: namespace() }).identity);

describe("the certificate registry over etcd replaced under it", () => {
  it("a restore that no longer holds a node's certificates revokes them on this replica too", async () => {
    const clientPort = await freePort();
    const peerPort = await freePort();
    let own = await startEtcd({ clientPort, peerPort });
    const stores = openEtcdStores({ endpoints: [own.endpoint], root: namespace(), callTimeoutMs: 2_000 });
    const store = stores.identity;
    const stop = new AbortController();
    try {
      const record = create(NodeCertificatesRecordSchema, {
        certificates: [create(IssuedCertificateSchema, { serial: "aa", notAfterMs: 4_000_000_000_000n })],
      });
      await store.putNodeCertificates("n1", record, 0n);
      const registry = new CertificateRegistry(store, Date.now);
      const revoked: string[] = [];
      registry.onRevoked((node) => revoked.push(node));
      await registry.start(stop.signal);
      expect(await registry.isValid("n1", "aa")).toBe(true);
      await own.stop(); // the "restore": a new etcd on the same address, without n1's certificates
      own = await startEtcd({ clientPort, peerPort });
      await waitFor("the registry to drop n1", async () => revoked.includes("n1"), 20_000, 100);
      expect(await registry.isValid("n1", "aa")).toBe(false);
    } finally {
      stop.abort();
      stores.close();
      await own.stop();
    }
  }, 60_000);
});
