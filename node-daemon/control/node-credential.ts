// The node's own key and certificate (DESIGN.md §6): made by joining with a token, renewed at a jittered
// 70-90% of its lifetime with a fresh key (notes/identity-anchors.md), kept in one file (mode 0600) so that
// key and certificate are replaced together by one rename.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { constants } from "node:fs";
import { mkdir, open, readFile, rename } from "node:fs/promises";
import { dirname } from "node:path";
import { TrellisError } from "../../proto/core/errors.js";
import { identityOfSubjectAltName, normalizeSerial } from "../../proto/rpc/peer-identity.js";

export interface NodeCredential {
  readonly keyPem: string;
  readonly certificatePem: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly serial: string;
}

const pemBlocks = (text: string, label: string) =>
  text.match(new RegExp(`-----BEGIN ${label}-----[\\s\\S]+?-----END ${label}-----\\n?`, "g")) ?? [];

/** The credential in `text` (a key and a certificate for `nodeName`, as writeCredential stores them). */
export function parseCredential(text: string, nodeName: string, where: string): NodeCredential {
  const [keyPem] = pemBlocks(text, "PRIVATE KEY");
  const [certificatePem] = pemBlocks(text, "CERTIFICATE");
  if (!keyPem || !certificatePem) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `${where} does not hold a private key and a certificate; remove it and join again with a token`,
    );
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certificatePem);
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new Error("the key is not the certificate's");
  } catch (err) {
    throw new TrellisError("INVALID_ARGUMENT", `${where}: ${(err as Error).message}; remove it and join again with a token`, {
      cause: err,
    });
  }
  const identity = identityOfSubjectAltName(cert.subjectAltName);
  if (identity?.kind !== "node" || identity.name !== nodeName) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `${where} is a certificate for ${identity ? `${identity.kind} ${identity.name}` : "no Trellis identity"}, not node ${nodeName}: point --credential at this node's own file, or join with a token for ${nodeName}`,
    );
  }
  return {
    keyPem,
    certificatePem,
    notBeforeMs: Date.parse(cert.validFrom),
    notAfterMs: Date.parse(cert.validTo),
    serial: normalizeSerial(cert.serialNumber),
  };
}

/** When to renew: at a random 70-90% of the lifetime, measured from notBefore; at least 1 s from now. Pure. */
export function renewalDelayMs(credential: NodeCredential, nowMs: number, rand: () => number): number {
  const lifetime = credential.notAfterMs - credential.notBeforeMs;
  const at = credential.notBeforeMs + lifetime * (0.7 + 0.2 * rand());
  return Math.max(1_000, Math.round(at - nowMs));
}

export async function readCredentialFile(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new TrellisError("INVALID_ARGUMENT", `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Replaces the credential file durably: a new file created with mode 0600 (never readable by others, not
 * even for a moment), synced, renamed over the old one, and the directory synced.
 */
export async function writeCredentialFile(path: string, credential: { keyPem: string; certificatePem: string }): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.new`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await fh.chmod(0o600); // a file left by a crash keeps its old mode through O_TRUNC
    await fh.writeFile(`${credential.keyPem.trimEnd()}\n${credential.certificatePem.trimEnd()}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), constants.O_RDONLY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
