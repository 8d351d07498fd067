// NodeIdentities on the in-memory IdentityStore with an injected clock: tokens, joins, renewals and
// revocation, including the races (two joins with one token).
import { randomBytes, X509Certificate } from "node:crypto";
import { pino } from "pino";
import { beforeAll, describe, expect, it } from "vitest";
import { CertificateRegistry } from "../../../../control-plane/identity/certificate-registry.js";
import { checkJoinToken, joinTokenLifetimeS, newJoinToken, parseJoinToken } from "../../../../control-plane/identity/join-token.js";
import { NodeIdentities } from "../../../../control-plane/identity/node-identities.js";
import { normalizeSerial } from "../../../../proto/rpc/peer-identity.js";
import {
  type CertificateAuthority,
  createCertificateAuthority,
  createCertificateRequest,
  generateKeyPair,
  identityOfCertificate,
} from "../../../../proto/rpc/x509.js";
import { MemoryIdentityStore } from "../../../support/memory-identity-store.js";

let ca: CertificateAuthority;
let csr: string;
beforeAll(async () => {
  ca = await createCertificateAuthority("unit-ca", 1);
  csr = await createCertificateRequest(await generateKeyPair(), { kind: "node", name: "n1" });
});

function setup(lifetimeS = 3600) {
  let now = 1_800_000_000_000;
  const store = new MemoryIdentityStore();
  const identities = new NodeIdentities({
    store,
    ca,
    log: pino({ level: "silent" }),
    clock: () => now,
    randomBytes: (n) => randomBytes(n),
    certificateLifetimeS: lifetimeS,
  });
  return { store, identities, advance: (ms: number) => (now += ms), clock: () => now };
}

const serialOf = (pem: string) => normalizeSerial(new X509Certificate(pem).serialNumber);

describe("join tokens", () => {
  it("look like kubeadm's, with a uniform alphabet, and parse back", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const t = newJoinToken((n) => randomBytes(n));
      expect(t.text).toMatch(/^[a-z0-9]{6}\.[a-z0-9]{16}$/);
      expect(parseJoinToken(` ${t.text}\n`)).toEqual({ id: t.id, secret: t.secret });
      seen.add(t.id);
    }
    expect(seen.size).toBe(200);
    expect(() => parseJoinToken("ABCDEF.0123456789abcdef")).toThrow(/not of the form/);
  });

  it("lifetimes: 0 is the default hour, 60..86400 otherwise", () => {
    expect(joinTokenLifetimeS(0n)).toBe(3600);
    expect(joinTokenLifetimeS(86_400n)).toBe(86_400);
    expect(() => joinTokenLifetimeS(59n)).toThrow(/ttl_seconds 59 is not between 60 and 86400/);
    expect(() => joinTokenLifetimeS(86_401n)).toThrow(/not between/);
  });

  it("an unknown id and a wrong secret get the same answer", () => {
    expect(() => checkJoinToken("abc123", undefined, "x", "n1", 0)).toThrow(/is not valid \(unknown, used already, or a wrong secret\)/);
  });
});

describe("NodeIdentities", () => {
  it("a join issues a certificate for exactly the token's node, valid for the configured lifetime, and uses the token up", async () => {
    const { identities, store } = setup(7200);
    const { token } = await identities.createJoinToken("n1", 0n, "admin alice");
    const pem = await identities.join(token, "n1", csr);
    expect(identityOfCertificate(pem)).toEqual({ kind: "node", name: "n1" });
    const cert = new X509Certificate(pem);
    // the lifetime, plus the backdating for replicas and nodes whose clocks are behind (5 minutes, proto/rpc/x509.ts)
    expect(Date.parse(cert.validTo) - Date.parse(cert.validFrom)).toBe(7200_000 + 5 * 60_000);
    expect((await store.findNodeCertificates("n1"))?.value.certificates.map((c) => c.serial)).toEqual([serialOf(pem)]);
    await expect(identities.join(token, "n1", csr)).rejects.toThrow(/is not valid/);
  });

  it("two joins racing with one token: exactly one gets a certificate", async () => {
    const { identities } = setup();
    const { token } = await identities.createJoinToken("n1", 0n, "admin alice");
    const results = await Promise.allSettled([identities.join(token, "n1", csr), identities.join(token, "n1", csr)]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(results.find((r) => r.status === "rejected")?.reason).toMatchObject({ reason: "UNAUTHENTICATED" });
  });

  it("an expired token is refused by the clock, and swept", async () => {
    const { identities, advance } = setup();
    const { token } = await identities.createJoinToken("n1", 60n, "admin alice");
    advance(60_000);
    await expect(identities.join(token, "n1", csr)).rejects.toThrow(/expired at/);
    expect(await identities.sweepJoinTokens()).toBe(1);
  });

  it("a CSR whose signature does not verify is refused before the token is used", async () => {
    const { identities } = setup();
    const { token } = await identities.createJoinToken("n1", 0n, "admin alice");
    const der = Buffer.from(csr.replace(/-----[^-]+-----|\s/g, ""), "base64");
    der[der.length - 8] = (der[der.length - 8] ?? 0) ^ 0xff; // inside the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(identities.join(token, "n1", tampered)).rejects.toMatchObject({ reason: "INVALID_ARGUMENT" });
    await expect(identities.join(token, "n1", csr)).resolves.toContain("BEGIN CERTIFICATE");
  });

  it("renewal keeps the old certificate valid until it expires; revocation ends every one; the registry follows", async () => {
    const { identities, store, advance, clock } = setup(3600);
    const registry = new CertificateRegistry(store, clock);
    const revoked: string[] = [];
    registry.onRevoked((n) => revoked.push(n));
    await registry.start(new AbortController().signal);
    const first = await identities.join((await identities.createJoinToken("n1", 0n, "a")).token, "n1", csr);
    advance(10_000);
    const second = await identities.renew("n1", csr);
    expect(await registry.isValid("n1", serialOf(first))).toBe(true);
    expect(await registry.isValid("n1", serialOf(second))).toBe(true);
    advance(3_595_000);
    expect(await registry.isValid("n1", serialOf(first))).toBe(false); // expired
    expect(await registry.isValid("n1", serialOf(second))).toBe(true);
    await identities.revoke("n1");
    expect(revoked).toEqual(["n1"]);
    expect(await registry.isValid("n1", serialOf(second))).toBe(false);
    await expect(identities.renew("n1", csr)).rejects.toMatchObject({ reason: "UNAUTHENTICATED" });
  });

  it("a replica without the CA key refuses to sign, saying which flag it needs", async () => {
    const store = new MemoryIdentityStore();
    const unsigned = new NodeIdentities({
      store,
      log: pino({ level: "silent" }),
      clock: Date.now,
      randomBytes: (n) => randomBytes(n),
      certificateLifetimeS: 60,
    });
    const { token } = await unsigned.createJoinToken("n1", 0n, "a");
    await expect(unsigned.join(token, "n1", csr)).rejects.toThrow(/--ca-key/);
  });
});
