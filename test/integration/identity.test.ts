// A control plane serving mutual TLS against a real etcd: the attacks of issue 9, each refused, and
// nothing changed by them. Certificates come from a CA made here, as trellis-ca makes them.
import tls from "node:tls";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createControlPlaneApi } from "../../node-daemon/rpc/control-plane-client.js";
import { TrellisError } from "../../proto/core/errors.js";
import type { Identity } from "../../proto/core/identity.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { createCertificateAuthority, generateKeyPair, issueCertificate } from "../../proto/rpc/x509.js";
import { type InProcessControlPlane, namespace, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

let etcd: EtcdHandle;
let cp: InProcessControlPlane;
let caPem = "";
const credentials = new Map<string, { cert: string; key: string }>();

async function credential(
  ca: Awaited<ReturnType<typeof createCertificateAuthority>>,
  identity: Identity,
  server?: { dnsNames: string[]; ips: string[] },
) {
  const keys = await generateKeyPair();
  return { cert: await issueCertificate(ca, { identity, publicKey: keys.publicKey, lifetimeS: 3600, server }), key: keys.privateKeyPem };
}

beforeAll(async () => {
  etcd = await startEtcd();
  const ca = await createCertificateAuthority("trellis-test-ca", 1);
  caPem = ca.certificatePem;
  for (const identity of [
    { kind: "node", name: "node-1" },
    { kind: "node", name: "node-2" },
    { kind: "admin", name: "alice" },
    { kind: "viewer", name: "bob" },
  ] as const) {
    credentials.set(`${identity.kind}/${identity.name}`, await credential(ca, identity));
  }
  const foreign = await createCertificateAuthority("someone-else", 1);
  credentials.set("foreign/node-2", await credential(foreign, { kind: "node", name: "node-2" }));
  const server = await credential(ca, { kind: "control-plane", name: "cp-1" }, { dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root: namespace(), tls: { ...server, ca: caPem } });
});
afterAll(async () => {
  await cp?.stop();
  await etcd?.stop();
});

function transport(who?: string, ca = caPem) {
  const cred = who ? credentials.get(who) : undefined;
  return createGrpcTransport({
    baseUrl: `https://${cp.address}`,
    nodeOptions: { ca, ...(cred ? { cert: cred.cert, key: cred.key } : {}) },
  });
}
const node = (who?: string) => createClient(NodeService, transport(who));
const admin = (who?: string) => createClient(AdminService, transport(who));

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(err, "the call was accepted").toBeDefined();
  return (err as Error).message;
}

describe("a control plane serving mutual TLS", () => {
  it("the daemon's client talks TLS with its certificate, and a refusal comes back as PERMISSION_DENIED", async () => {
    const cred = credentials.get("node/node-1");
    if (!cred) throw new Error("node-1's credential");
    const api = createControlPlaneApi(cp.address, { ca: caPem, ...cred });
    expect((await api.registerNode({ nodeName: "node-1", nodeIp: "192.168.1.11", mtu: 1500 })).subnet).toMatch(/^10\.244\./);
    const err = await api.heartbeat({ nodeName: "node-2" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrellisError);
    expect((err as TrellisError).reason).toBe("PERMISSION_DENIED");
  });

  it("each node registers as itself; another node's registration, deregistration or route report is PERMISSION_DENIED and changes nothing", async () => {
    await node("node/node-1").registerNode({ nodeName: "node-1", nodeIp: "192.168.1.11", mtu: 1500 });
    const own = await node("node/node-2").registerNode({ nodeName: "node-2", nodeIp: "192.168.1.12", mtu: 1500 });

    // node-1's certificate re-pointing node-2 at another IP, withdrawing it, reporting for it
    expect(await refusal(node("node/node-1").registerNode({ nodeName: "node-2", nodeIp: "192.168.1.66", mtu: 1500 }))).toMatch(
      /node node-1 may not act for node "node-2": a node acts only for itself/,
    );
    expect(await refusal(node("node/node-1").deregisterNode({ nodeName: "node-2" }))).toMatch(
      /PERMISSION_DENIED|permission_denied|may not act/,
    );
    expect(await refusal(node("node/node-1").heartbeat({ nodeName: "node-2" }))).toMatch(/may not act for node "node-2"/);
    // an operator's certificate is not a node's either
    expect(await refusal(node("admin/alice").registerNode({ nodeName: "node-2", nodeIp: "192.168.1.66", mtu: 1500 }))).toMatch(
      /admin alice may not act for node "node-2"/,
    );

    const got = await admin("admin/alice").getNode({ name: "node-2" });
    expect(got.node).toMatchObject({ name: "node-2", nodeIp: "192.168.1.12", subnet: own.subnet });
  });

  it("admin writes need an admin certificate; a viewer may read; a node may not use the admin API", async () => {
    await node("node/node-1").registerNode({ nodeName: "node-1", nodeIp: "192.168.1.11", mtu: 1500 });
    expect((await admin("viewer/bob").listNodes({})).nodes.map((n) => n.name)).toContain("node-1");
    expect(await refusal(admin("viewer/bob").evictNode({ name: "node-1" }))).toMatch(
      /viewer bob may not call EvictNode: it needs an admin certificate/,
    );
    expect(await refusal(admin("node/node-1").listNodes({}))).toMatch(
      /node node-1 may not call ListNodes: it needs an admin or viewer certificate/,
    );
    expect(await refusal(admin("viewer/bob").reserveSubnet({ subnet: "10.244.99.0/24", nodeName: "node-9" }))).toMatch(
      /needs an admin certificate/,
    );
    expect((await admin("admin/alice").listNodes({})).nodes.map((n) => n.name)).toContain("node-1"); // nothing was evicted
    await admin("admin/alice").reserveSubnet({ subnet: "10.244.99.0/24", nodeName: "node-9" });
    expect((await admin("viewer/bob").listReservations({})).reservations.map((r) => r.subnet)).toContain("10.244.99.0/24");
  });

  it("a caller without a certificate, or with one from another CA, does not get past the handshake", async () => {
    // At the TLS level: the server answers the handshake with an alert.
    const [host, port] = cp.address.split(":");
    const alert = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host, port: Number(port), ca: caPem, ALPNProtocols: ["h2"], servername: "localhost" });
      socket.on("error", (err) => resolve(err.message));
      socket.on("close", () => resolve("closed without an alert"));
      socket.on("secureConnect", () => socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    });
    expect(alert).toMatch(/certificate required|alert/i);
    // And through a gRPC client: the call fails, and the node it named is untouched.
    await refusal(admin().listNodes({}));
    await refusal(node("foreign/node-2").deregisterNode({ nodeName: "node-2" }));
    expect((await admin("admin/alice").listNodes({})).nodes.map((n) => n.name)).toContain("node-2");
  });
});
