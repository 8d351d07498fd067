// X.509 for Trellis identities (DESIGN.md §6), on @peculiar/x509 over Node's WebCrypto: no hand-written
// ASN.1. Keys are ECDSA P-256 (notes/identity-anchors.md). The CA decides every field of what it issues:
// subject, the one identity URI SAN, usages, lifetime; a CSR contributes only its public key, and only
// when its signature proves the requester holds the private key.
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { TrellisError } from "../core/errors.js";
import { type Identity, identityUri, parseIdentityUri } from "../core/identity.js";

type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export interface KeyPairPem {
  readonly privateKeyPem: string;
  readonly publicKey: CryptoKey;
  readonly privateKey: CryptoKey;
}

export interface CertificateAuthority {
  readonly certificatePem: string;
  readonly privateKey: CryptoKey;
}

export async function generateKeyPair(): Promise<KeyPairPem> {
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { privateKeyPem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY"), publicKey: keys.publicKey, privateKey: keys.privateKey };
}

export async function importPrivateKey(pem: string): Promise<CryptoKey> {
  try {
    return await webcrypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(pem), algorithm, true, ["sign"]);
  } catch (err) {
    throw new TrellisError("INVALID_ARGUMENT", "the private key is not a PEM PKCS#8 ECDSA P-256 key", { cause: err });
  }
}

function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // a positive INTEGER
  return Buffer.from(bytes).toString("hex");
}

/** A new self-signed cluster CA, valid for `days`. */
export async function createCertificateAuthority(
  commonName: string,
  days: number,
  now = new Date(),
): Promise<CertificateAuthority & KeyPairPem> {
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    notBefore: new Date(now.getTime() - 5 * 60_000), // as the certificates it signs (issueCertificate)
    notAfter: new Date(now.getTime() + days * 86_400_000),
    keys: { publicKey: keys.publicKey, privateKey: keys.privateKey },
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { ...keys, certificatePem: cert.toString("pem") };
}

export interface IssueRequest {
  readonly identity: Identity;
  readonly publicKey: CryptoKey;
  /** Lifetime in seconds. */
  readonly lifetimeS: number;
  /** A client certificate (every identity), or also a server one (the control plane) with these names. */
  readonly server?: { readonly dnsNames: readonly string[]; readonly ips: readonly string[] };
  readonly now?: Date;
}

/** Issues a certificate for exactly `identity`: its URI SAN, CN = its name, client (and server) auth, not a CA. */
export async function issueCertificate(ca: CertificateAuthority, req: IssueRequest): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certificatePem);
  const now = req.now ?? new Date();
  // Backdated for the clocks of other replicas and nodes behind this one (5 minutes, as Kubernetes' signer
  // does: a replica 90 s ahead signed certificates the others refused as not yet valid), but never by more
  // than a tenth of a short lifetime.
  const backdateMs = Math.min(5 * 60_000, req.lifetimeS * 100);
  const names: x509.JsonGeneralName[] = [{ type: "url", value: identityUri(req.identity) }];
  for (const dns of req.server?.dnsNames ?? []) names.push({ type: "dns", value: dns });
  for (const ip of req.server?.ips ?? []) names.push({ type: "ip", value: ip });
  const usages = [x509.ExtendedKeyUsage.clientAuth, ...(req.server ? [x509.ExtendedKeyUsage.serverAuth] : [])];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${req.identity.name}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - backdateMs),
    notAfter: new Date(now.getTime() + req.lifetimeS * 1000),
    publicKey: req.publicKey,
    signingKey: ca.privateKey,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension(usages, true),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return cert.toString("pem");
}

/** A PKCS#10 request signed with `keys`: the requester proves it holds the private key. */
export async function createCertificateRequest(keys: KeyPairPem, identity: Identity): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${identity.name}`,
    keys: { publicKey: keys.publicKey, privateKey: keys.privateKey },
    signingAlgorithm: algorithm,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: identityUri(identity) }], false)],
  });
  return csr.toString("pem");
}

/** The public key of a CSR whose signature verifies; INVALID_ARGUMENT for anything else. */
export async function publicKeyOfRequest(csrPem: string): Promise<CryptoKey> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new TrellisError("INVALID_ARGUMENT", "the certificate request is not a PEM PKCS#10 request", { cause: err });
  }
  if (!(await csr.verify())) throw new TrellisError("INVALID_ARGUMENT", "the certificate request's signature does not verify");
  try {
    return await csr.publicKey.export(algorithm, ["verify"]);
  } catch (err) {
    throw new TrellisError("INVALID_ARGUMENT", "the certificate request's key is not ECDSA P-256", { cause: err });
  }
}

/** The Trellis identity a certificate names in its URI SAN; undefined when it names none or several. */
export function identityOfCertificate(certificatePem: string): Identity | undefined {
  const cert = new x509.X509Certificate(certificatePem);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const found = (san?.names.items ?? []).filter((n) => n.type === "url").flatMap((n) => parseIdentityUri(n.value) ?? []);
  return found.length === 1 ? found[0] : undefined;
}
