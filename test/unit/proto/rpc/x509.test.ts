import { X509Certificate } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  createCertificateAuthority,
  createCertificateRequest,
  generateKeyPair,
  identityOfCertificate,
  importPrivateKey,
  issueCertificate,
  publicKeyOfRequest,
} from "../../../../proto/rpc/x509.js";

describe("X.509 for Trellis identities", () => {
  it("a node's CSR becomes a certificate for exactly that node, signed by the CA, for client auth only", async () => {
    const ca = await createCertificateAuthority("trellis-ca", 365);
    const node = await generateKeyPair();
    const csr = await createCertificateRequest(node, { kind: "node", name: "node-2" });
    const pem = await issueCertificate(ca, {
      identity: { kind: "node", name: "node-2" },
      publicKey: await publicKeyOfRequest(csr),
      lifetimeS: 7 * 86_400,
    });

    const cert = new X509Certificate(pem);
    const caCert = new X509Certificate(ca.certificatePem);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.subject).toBe("CN=node-2");
    expect(cert.subjectAltName).toBe("URI:spiffe://trellis/node/node-2");
    expect(cert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]); // clientAuth only
    expect(identityOfCertificate(pem)).toEqual({ kind: "node", name: "node-2" });
    const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(6.9);
    expect(days).toBeLessThan(7.1);
    expect(caCert.ca).toBe(true);
  });

  it("the identity is the CA's choice: a CSR asking for another name gets the one issued", async () => {
    const ca = await createCertificateAuthority("trellis-ca", 1);
    const keys = await generateKeyPair();
    const csr = await createCertificateRequest(keys, { kind: "admin", name: "mallory" });
    const pem = await issueCertificate(ca, {
      identity: { kind: "node", name: "node-3" },
      publicKey: await publicKeyOfRequest(csr),
      lifetimeS: 3600,
    });
    expect(identityOfCertificate(pem)).toEqual({ kind: "node", name: "node-3" });
  });

  it("a server certificate carries its DNS names and addresses and both usages", async () => {
    const ca = await createCertificateAuthority("trellis-ca", 1);
    const keys = await generateKeyPair();
    const pem = await issueCertificate(ca, {
      identity: { kind: "control-plane", name: "cp-1" },
      publicKey: keys.publicKey,
      lifetimeS: 3600,
      server: { dnsNames: ["cp.example"], ips: ["192.168.1.1"] },
    });
    const cert = new X509Certificate(pem);
    expect(cert.subjectAltName).toBe("URI:spiffe://trellis/control-plane/cp-1, DNS:cp.example, IP Address:192.168.1.1");
    expect(cert.keyUsage?.sort()).toEqual(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    expect(cert.checkHost("cp.example")).toBe("cp.example");
  });

  it("refuses a CSR whose signature does not verify, and one that is not a CSR", async () => {
    const keys = await generateKeyPair();
    const csr = await createCertificateRequest(keys, { kind: "node", name: "node-2" });
    const der = Buffer.from(csr.replace(/-----[^-]+-----|\s/g, ""), "base64");
    der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0xff; // a bit of the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(publicKeyOfRequest(tampered)).rejects.toThrow(/signature does not verify/);
    await expect(publicKeyOfRequest("not a csr")).rejects.toThrow(/not a PEM PKCS#10 request/);
  });

  it("a private key round-trips through its PEM", async () => {
    const keys = await generateKeyPair();
    expect(keys.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const imported = await importPrivateKey(keys.privateKeyPem);
    expect(imported.type).toBe("private");
    await expect(importPrivateKey("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")).rejects.toThrow(/not a PEM PKCS#8/);
  });
});
