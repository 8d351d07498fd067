// Request validation over the wire (issue 9 point 7): a control plane serving mutual TLS against a real
// etcd answers a malformed field with INVALID_ARGUMENT (gRPC code 3) and the message, and writes nothing.
import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { syncAllocationsLimit } from "../../control-plane/allocations/allocation-mirror.js";
import { AllocationRecordSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { createCertificateAuthority, createCertificateRequest, generateKeyPair, issueCertificate } from "../../proto/rpc/x509.js";
import { type InProcessControlPlane, namespace, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

let etcd: EtcdHandle;
let raw: Etcd3;
let cp: InProcessControlPlane;
let node: Client<typeof NodeService>;
const root = namespace();

beforeAll(async () => {
  etcd = await startEtcd();
  raw = new Etcd3({ hosts: etcd.endpoint });
  const ca = await createCertificateAuthority("trellis-test-ca", 1);
  const serverKeys = await generateKeyPair();
  const server = {
    cert: await issueCertificate(ca, {
      identity: { kind: "control-plane", name: "cp-1" },
      publicKey: serverKeys.publicKey,
      lifetimeS: 3600,
      server: { dnsNames: ["localhost"], ips: ["127.0.0.1"] },
    }),
    key: serverKeys.privateKeyPem,
  };
  cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root, tls: { ...server, ca: ca.certificatePem }, ca });
  // node-1 joins as a daemon does: a join token, then a certificate for its own key.
  const keys = await generateKeyPair();
  const { token } = await cp.identities.createJoinToken("node-1", 0n, "test");
  const cert = await cp.identities.join(token, "node-1", await createCertificateRequest(keys, { kind: "node", name: "node-1" }));
  node = createClient(
    NodeService,
    createGrpcTransport({ baseUrl: `https://${cp.address}`, nodeOptions: { ca: ca.certificatePem, cert, key: keys.privateKeyPem } }),
  );
});
afterAll(async () => {
  await cp?.stop();
  raw?.close();
  await etcd?.stop();
});

/** Every key and value under the test's root, and etcd's revision: equal before and after means nothing was written. */
async function etcdState() {
  const res = await raw.getAll().prefix(root).exec();
  return {
    revision: res.header.revision,
    kvs: res.kvs.map((kv) => `${kv.key.toString()}=${kv.value.toString()}@${kv.mod_revision}`).sort(),
  };
}

async function statusOf(call: Promise<unknown>): Promise<ConnectError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "the call was accepted").toBeDefined();
  return ConnectError.from(err);
}

const record = (i: number) =>
  create(AllocationRecordSchema, {
    address: `10.244.1.${(i % 250) + 2}`,
    attachment: { networkName: "trellis", containerId: `c${i}`, ifName: "eth0", podNamespace: "default", podName: `pod-${i}` },
    hostVeth: `tr${i.toString(16).padStart(11, "0")}`,
    createdAtMs: 1n,
  });

describe("request validation over mutual TLS", () => {
  it("a RegisterNode with an invalid node_ip is INVALID_ARGUMENT with the message, and etcd is unchanged", async () => {
    const before = await etcdState();
    const err = await statusOf(node.registerNode({ nodeName: "node-1", nodeIp: "192.168.1.300", mtu: 1500 }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe('node_ip "192.168.1.300" is not an IPv4 address');
    expect(err.metadata.get("trellis-reason")).toBe("INVALID_ARGUMENT");
    expect(await etcdState()).toEqual(before);
    expect((await cp.stores.nodes.listNodes()).nodes).toEqual([]);
  });

  it("the check runs before the handler: a node_ip only the validator refuses (0.0.0.0) changes nothing either", async () => {
    const before = await etcdState();
    const err = await statusOf(node.registerNode({ nodeName: "node-1", nodeIp: "0.0.0.0", mtu: 1500 }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(/^node_ip 0.0.0.0 is not a unicast address/);
    expect(await etcdState()).toEqual(before);
  });

  it("a SyncAllocations larger than the limit is INVALID_ARGUMENT, and etcd is unchanged", async () => {
    const { subnet } = await node.registerNode({ nodeName: "node-1", nodeIp: "192.168.1.11", mtu: 1500 });
    expect(subnet).toMatch(/^10\.244\./);
    const before = await etcdState();
    const recorded = Array.from({ length: syncAllocationsLimit + 1 }, (_, i) => record(i));
    const err = await statusOf(node.syncAllocations({ nodeName: "node-1", recorded }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe(
      `recorded holds ${syncAllocationsLimit + 1} entries; at most ${syncAllocationsLimit} recorded and ${syncAllocationsLimit} released allocations per call, split the batch`,
    );
    expect(await etcdState()).toEqual(before);
    expect(await cp.stores.allocations.listAllocations("node-1")).toEqual([]);
  });
});
