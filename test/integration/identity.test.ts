// A control plane serving mutual TLS against a real etcd: the attacks of issue 9, each refused, and
// nothing changed by them. Operators' certificates come from a CA made here, as trellis-ca makes them;
// nodes join with tokens, as daemons do.
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import tls from "node:tls";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlClient, type ControlPlaneApi } from "../../node-daemon/control/control-client.js";
import { CredentialKeeper } from "../../node-daemon/control/credential-keeper.js";
import type { NodeCredential } from "../../node-daemon/control/node-credential.js";
import { createControlPlaneApi, createJoinApi } from "../../node-daemon/rpc/control-plane-client.js";
import { TrellisError } from "../../proto/core/errors.js";
import type { Identity } from "../../proto/core/identity.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import { NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import {
  createCertificateAuthority,
  createCertificateRequest,
  generateKeyPair,
  identityOfCertificate,
  issueCertificate,
} from "../../proto/rpc/x509.js";
import { type InProcessControlPlane, namespace, startInProcessControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";
import { waitFor } from "../support/wait.js";

let etcd: EtcdHandle;
let cp: InProcessControlPlane;
let ca: Awaited<ReturnType<typeof createCertificateAuthority>>;
let caPem = "";
let serverTls: { cert: string; key: string; ca: string };
/** Added to the control plane's clock (token expiry). */
let skewMs = 0;
const credentials = new Map<string, { cert: string; key: string }>();

async function credential(authority: typeof ca, identity: Identity, server?: { dnsNames: string[]; ips: string[] }) {
  const keys = await generateKeyPair();
  return {
    cert: await issueCertificate(authority, { identity, publicKey: keys.publicKey, lifetimeS: 3600, server }),
    key: keys.privateKeyPem,
  };
}

/** A token from admin alice, for `nodeName`. */
async function token(nodeName: string, ttlSeconds = 0): Promise<string> {
  return (await admin("admin/alice").createJoinToken({ nodeName, ttlSeconds: BigInt(ttlSeconds) })).token;
}

/** Joins as a daemon does: its own key, a CSR, the token; returns the key and the certificate. */
async function join(nodeName: string, tokenText: string, at = cp) {
  const keys = await generateKeyPair();
  const csr = await createCertificateRequest(keys, { kind: "node", name: nodeName });
  if (!at.joinAddress) throw new Error("the control plane serves no join port");
  const cert = await createJoinApi(at.joinAddress, caPem)(tokenText, nodeName, csr, new AbortController().signal);
  return { cert, key: keys.privateKeyPem };
}

beforeAll(async () => {
  etcd = await startEtcd();
  ca = await createCertificateAuthority("trellis-test-ca", 1);
  caPem = ca.certificatePem;
  for (const identity of [
    { kind: "admin", name: "alice" },
    { kind: "viewer", name: "bob" },
  ] as const) {
    credentials.set(`${identity.kind}/${identity.name}`, await credential(ca, identity));
  }
  const foreign = await createCertificateAuthority("someone-else", 1);
  credentials.set("foreign/node-2", await credential(foreign, { kind: "node", name: "node-2" }));
  // Signed by the cluster CA, but never issued by the control plane (not joined): made with the CA's key.
  credentials.set("unjoined/node-2", await credential(ca, { kind: "node", name: "node-2" }));
  serverTls = {
    ...(await credential(ca, { kind: "control-plane", name: "cp-1" }, { dnsNames: ["localhost"], ips: ["127.0.0.1"] })),
    ca: caPem,
  };
  cp = await startInProcessControlPlane({ etcd: etcd.endpoint, root: namespace(), tls: serverTls, ca, clock: () => Date.now() + skewMs });
  credentials.set("node/node-1", await join("node-1", await token("node-1")));
  credentials.set("node/node-2", await join("node-2", await token("node-2")));
});
afterAll(async () => {
  await cp?.stop();
  await etcd?.stop();
});

function transport(who?: string, at = cp) {
  const cred = who ? credentials.get(who) : undefined;
  return createGrpcTransport({
    baseUrl: `https://${at.address}`,
    nodeOptions: { ca: caPem, ...(cred ? { cert: cred.cert, key: cred.key } : {}) },
  });
}
const node = (who?: string) => createClient(NodeService, transport(who));
const admin = (who?: string) => createClient(AdminService, transport(who));

/** A server stream's first message. */
async function firstMessage<T>(stream: AsyncIterable<T>): Promise<T | undefined> {
  for await (const message of stream) return message;
  return undefined;
}

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
    expect(await refusal(firstMessage(node("node/node-1").watchRoutes({ nodeName: "node-2" })))).toMatch(
      /\[permission_denied\] node node-1 may not act for node "node-2"/,
    );
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
    // A certificate the cluster CA signed but the control plane never issued (no join): refused too.
    expect(await refusal(node("unjoined/node-2").deregisterNode({ nodeName: "node-2" }))).toMatch(
      /revoked \(the node was evicted\) or was never issued by this cluster: join again with a new token/,
    );
    expect((await admin("admin/alice").listNodes({})).nodes.map((n) => n.name)).toContain("node-2");
  });
});

describe("joining with a token", () => {
  it("a node joins with a token and gets a certificate for exactly its name, then acts as that node", async () => {
    const cred = await join("node-3", await token("node-3"));
    expect(identityOfCertificate(cred.cert)).toEqual({ kind: "node", name: "node-3" });
    credentials.set("node/node-3", cred);
    expect((await node("node/node-3").registerNode({ nodeName: "node-3", nodeIp: "192.168.1.13", mtu: 1500 })).subnet).toMatch(
      /^10\.244\./,
    );
  });

  it("a reused token, an expired token, a token for another name, a malformed token: refused, and nothing is issued", async () => {
    const once = await token("node-4");
    await join("node-4", once);
    expect(await refusal(join("node-4", once))).toMatch(/join token \w+ is not valid \(unknown, used already, or a wrong secret\)/);

    const short = await token("node-5", 60);
    skewMs = 120_000;
    try {
      expect(await refusal(join("node-5", short))).toMatch(/join token \w+ expired at .*: ask an admin for a new one/);
    } finally {
      skewMs = 0;
    }

    const forSix = await token("node-6");
    expect(await refusal(join("node-7", forSix))).toMatch(/was created for node "node-6", not "node-7"/);
    // The refused attempt did not use it up: node-6 still joins with it.
    await join("node-6", forSix);

    const [id] = forSix.split(".");
    expect(await refusal(join("node-6", `${id}.0000000000000000`))).toMatch(/is not valid/);
    expect(await refusal(join("node-6", "not-a-token"))).toMatch(/not of the form abcdef\.0123456789abcdef/);
    expect((await admin("admin/alice").listNodes({})).nodes.map((n) => n.name)).not.toContain("node-7");
  });

  it("only an admin creates tokens: a viewer and a node get PERMISSION_DENIED", async () => {
    expect(await refusal(admin("viewer/bob").createJoinToken({ nodeName: "node-8" }))).toMatch(/viewer bob may not call CreateJoinToken/);
    expect(await refusal(admin("node/node-1").createJoinToken({ nodeName: "node-8" }))).toMatch(/node node-1 may not call/);
  });

  it("router mode is set by an admin only: a node asking for it is refused and nothing changes", async () => {
    expect(
      await refusal(node("node/node-1").registerNode({ nodeName: "node-1", nodeIp: "192.168.1.11", mtu: 1500, router: true })),
    ).toMatch(/router mode is cluster config that only an admin sets/);
    expect(await refusal(admin("viewer/bob").setRouter({ nodeName: "node-1", router: true }))).toMatch(/needs an admin certificate/);
    expect((await admin("admin/alice").getClusterConfig({})).routerNode).toBe("");
    await node("node/node-1").registerNode({ nodeName: "node-1", nodeIp: "192.168.1.11", mtu: 1500 });
    expect((await admin("admin/alice").setRouter({ nodeName: "node-1", router: true })).node?.router).toBe(true);
    expect((await admin("admin/alice").getClusterConfig({})).routerNode).toBe("node-1");
    // A registration keeps what the admin set.
    await node("node/node-1").registerNode({ nodeName: "node-1", nodeIp: "192.168.1.11", mtu: 1500 });
    expect((await admin("admin/alice").getNode({ name: "node-1" })).node?.router).toBe(true);
    await admin("admin/alice").setRouter({ nodeName: "node-1", router: false });
    expect((await admin("admin/alice").getClusterConfig({})).routerNode).toBe("");
  });

  it("a drained node loses its route at once and keeps its certificate: it registers again without a new token (unlike eviction)", async () => {
    const cred = await join("node-8", await token("node-8"));
    credentials.set("node/node-8", cred);
    const own = await node("node/node-8").registerNode({ nodeName: "node-8", nodeIp: "192.168.1.18", mtu: 1500 });
    expect(await refusal(admin("viewer/bob").drainNode({ name: "node-8" }))).toMatch(
      /viewer bob may not call DrainNode: it needs an admin certificate/,
    );
    expect(await refusal(admin("node/node-8").drainNode({ name: "node-8" }))).toMatch(/node node-8 may not call DrainNode/);
    expect((await admin("admin/alice").getNode({ name: "node-8" })).node?.live).toBe(true);

    await admin("admin/alice").drainNode({ name: "node-8" });
    expect((await admin("admin/alice").getNode({ name: "node-8" })).node).toMatchObject({ live: false, releasedReason: "drained" });
    expect((await admin("admin/alice").getRoutes({ nodeName: "node-1" })).desired.map((r) => r.nodeName)).not.toContain("node-8");
    expect(await refusal(node("node/node-8").heartbeat({ nodeName: "node-8" }))).toMatch(
      /node-8 is not live \(drained\); register it again/,
    );
    // the same certificate registers again, and gets the same subnet back
    expect((await node("node/node-8").registerNode({ nodeName: "node-8", nodeIp: "192.168.1.18", mtu: 1500 })).subnet).toBe(own.subnet);
    expect((await admin("admin/alice").getNode({ name: "node-8" })).node?.live).toBe(true);
    await expect(admin("admin/alice").drainNode({ name: "ghost" })).rejects.toMatchObject({ code: 5 });
  });

  it("an evicted node is refused, its open route stream is cut, until it joins again with a new token", async () => {
    const cred = await join("node-9", await token("node-9"));
    credentials.set("node/node-9", cred);
    await node("node/node-9").registerNode({ nodeName: "node-9", nodeIp: "192.168.1.19", mtu: 1500 });
    const stream = node("node/node-9").watchRoutes({ nodeName: "node-9" })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.snapshot).toBe(true);
    const ended = (async () => {
      for (;;) if ((await stream.next()).done) return "ended";
    })().catch((err: unknown) => `broken: ${String(err)}`);

    await admin("admin/alice").evictNode({ name: "node-9" });
    expect(await ended).toMatch(/ended|broken/);
    expect(await refusal(node("node/node-9").heartbeat({ nodeName: "node-9" }))).toMatch(/node-9 is revoked \(the node was evicted\)/);
    expect(await refusal(firstMessage(node("node/node-9").watchRoutes({ nodeName: "node-9" })))).toMatch(/node-9 is revoked/);
    expect(await refusal(node("node/node-9").registerNode({ nodeName: "node-9", nodeIp: "192.168.1.19", mtu: 1500 }))).toMatch(/revoked/);
    const routes = await admin("admin/alice").getRoutes({ nodeName: "node-1" });
    expect(routes.desired.map((r) => r.nodeName)).not.toContain("node-9");

    credentials.set("node/node-9", await join("node-9", await token("node-9")));
    await node("node/node-9").registerNode({ nodeName: "node-9", nodeIp: "192.168.1.19", mtu: 1500 });
    expect((await admin("admin/alice").getNode({ name: "node-9" })).node?.live).toBe(true);
  });
});

describe("certificate renewal", () => {
  it("renews before expiry with a new key, over the live connection, without a restart and without reopening the route stream", async () => {
    const short = await startInProcessControlPlane({
      etcd: etcd.endpoint,
      root: namespace(),
      tls: serverTls,
      ca,
      nodeCertificateLifetimeS: 6,
    });
    const dir = await mkdtemp(joinPath(tmpdir(), "trellis-renew-"));
    const stop = new AbortController();
    try {
      const tokenText = (await createClient(AdminService, transport("admin/alice", short)).createJoinToken({ nodeName: "node-r" })).token;
      const log = pino({ level: "silent" });
      const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);
      if (!short.joinAddress) throw new Error("no join port");
      const joinApi = createJoinApi(short.joinAddress, caPem);
      const keeper = new CredentialKeeper({
        nodeName: "node-r",
        path: joinPath(dir, "node.pem"),
        readJoinToken: async () => tokenText,
        joinVia: [(t, csr, signal) => joinApi(t, "node-r", csr, signal)],
        log,
        clock: Date.now,
        rand: () => 0.5,
        sleep,
      });
      let watches = 0;
      const replicasWith = (c: NodeCredential): ControlPlaneApi[] => {
        const api = createControlPlaneApi(short.address, { ca: caPem, cert: c.certificatePem, key: c.keyPem });
        return [
          {
            ...api,
            watchRoutes: (req, options) => {
              watches++;
              return api.watchRoutes(req, options);
            },
          },
        ];
      };
      const first = await keeper.obtain(stop.signal);
      expect((await stat(joinPath(dir, "node.pem"))).mode & 0o777).toBe(0o600);
      const control = new ControlClient({
        replicas: replicasWith(first),
        log,
        nodeName: "node-r",
        nodeIp: "192.168.1.50",
        mtu: 1500,
        sleep,
      });
      await control.register(stop.signal);
      const seen: string[][] = [];
      void control.watchRoutes(async (set) => {
        seen.push([...set.keys()].sort());
      }, stop.signal);
      await waitFor("the first route set", async () => seen.length > 0);

      const renewed: NodeCredential[] = [];
      void keeper.renewLoop(
        (csr) => control.renewCertificate(csr),
        (c) => {
          renewed.push(c);
          control.useReplicas(replicasWith(c));
        },
        stop.signal,
      );
      await waitFor("a renewal", async () => renewed.length > 0, 15_000);
      expect(renewed[0]?.serial).not.toBe(first.serial);
      expect(renewed[0]?.keyPem).not.toBe(first.keyPem);
      // Past the first certificate's expiry: calls go over the new one; the stream opened with the old one still delivers.
      await waitFor("the first certificate to expire", async () => Date.now() > first.notAfterMs + 500, 15_000);
      await control.reportRoutes({ revision: 0n, routeCount: 0, digest: new Uint8Array(32), missing: [] });
      const other = await join(
        "node-s",
        (await createClient(AdminService, transport("admin/alice", short)).createJoinToken({ nodeName: "node-s" })).token,
        short,
      );
      await createControlPlaneApi(short.address, { ca: caPem, ...other }).registerNode({
        nodeName: "node-s",
        nodeIp: "192.168.1.51",
        mtu: 1500,
      });
      await waitFor("node-s's route over the old stream", async () => seen.at(-1)?.includes("node-s"), 10_000);
      expect(watches).toBe(1);
      expect(control.routesCurrent.current).toBe(true);
    } finally {
      stop.abort();
      await short.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 40_000);
});
