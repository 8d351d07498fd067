// The cluster CA on disk: DIR/ca.crt and DIR/ca.key (0600), and issued credentials as KIND-NAME.crt/.key.
// Keys are created with mode 0600 (never chmod'ed afterwards: no window where others may read them) and
// written durably.
import { constants } from "node:fs";
import { mkdir, open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { TrellisError } from "../../proto/core/errors.js";
import type { Identity } from "../../proto/core/identity.js";
import {
  type CertificateAuthority,
  createCertificateAuthority,
  generateKeyPair,
  importPrivateKey,
  issueCertificate,
} from "../../proto/rpc/x509.js";

async function writeNew(path: string, content: string, mode: number): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "EEXIST")
      throw new TrellisError("ALREADY_EXISTS", `${path} exists already; remove it first if you mean to replace it`);
    throw err;
  });
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function initCa(dir: string, days: number): Promise<{ certificate: string; key: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const certificate = join(dir, "ca.crt");
  const key = join(dir, "ca.key");
  const ca = await createCertificateAuthority("trellis-ca", days);
  await writeNew(key, ca.privateKeyPem, 0o600);
  await writeNew(certificate, ca.certificatePem, 0o644);
  return { certificate, key };
}

export async function loadCa(dir: string): Promise<CertificateAuthority> {
  const read = (name: string) =>
    readFile(join(dir, name), "utf8").catch((err: unknown) => {
      throw new TrellisError("NOT_FOUND", `${join(dir, name)} cannot be read; create the CA with: trellis-ca init --dir ${dir}`, {
        cause: err,
      });
    });
  return { certificatePem: await read("ca.crt"), privateKey: await importPrivateKey(await read("ca.key")) };
}

export async function issueCredential(
  caDir: string,
  out: string,
  identity: Identity,
  lifetimeS: number,
  server?: { dnsNames: readonly string[]; ips: readonly string[] },
): Promise<{ certificate: string; key: string }> {
  const ca = await loadCa(caDir);
  const keys = await generateKeyPair();
  const pem = await issueCertificate(ca, { identity, publicKey: keys.publicKey, lifetimeS, server });
  await mkdir(out, { recursive: true, mode: 0o700 });
  const base = join(out, `${identity.kind}-${identity.name}`);
  await writeNew(`${base}.key`, keys.privateKeyPem, 0o600);
  await writeNew(`${base}.crt`, pem, 0o644);
  return { certificate: `${base}.crt`, key: `${base}.key` };
}
