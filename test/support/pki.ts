// A throwaway cluster PKI for tests (DESIGN.md §6), as trellis-ca makes one: the cluster CA, the control
// plane's serving certificate for 127.0.0.1 and localhost, and an admin and a viewer credential, as PEM
// texts and as files (keys 0600) for buf curl and the control-plane binary. Node credentials are not made
// here: a node joins (a join token, then a CSR for its own key), so that the control plane holds its
// certificate in its allow-list; one the CA signs offline is refused (see control-plane.ts).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { TlsMaterial } from "../../proto/rpc/listen.js";
import { type CertificateAuthority, createCertificateAuthority, type KeyPairPem } from "../../proto/rpc/x509.js";
import { type PemPair, writeIssued } from "./etcd.js";

/** A client certificate and its key (PEM texts). */
export interface Credential {
  readonly cert: string;
  readonly key: string;
}

export interface TestPki {
  /** Temp dir holding the files below; `destroy()` removes it. */
  readonly dir: string;
  /** The cluster CA with its key: the control plane signs node certificates with it. */
  readonly ca: CertificateAuthority & KeyPairPem;
  readonly caPem: string;
  readonly caFile: string;
  /** The CA's key (mode 0600), for the binary's --ca-key. */
  readonly caKeyFile: string;
  /** The control plane's serving certificate (control-plane/cp-1; 127.0.0.1 and localhost). */
  readonly server: PemPair;
  /** What the control plane serves with: its certificate, asking every client for one the CA signed. */
  readonly serverTls: TlsMaterial;
  /** admin/test-admin and viewer/test-viewer. */
  readonly admin: PemPair;
  readonly viewer: PemPair;
  /** buf curl's flags for https with this CA and `who`'s certificate (the admin's by default). */
  bufCurlFlags(who?: PemPair): string[];
  destroy(): Promise<void>;
}

/** A new cluster CA (valid a day) and its credentials, in a new temp dir. */
export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "trellis-pki-"));
  try {
    const ca = await createCertificateAuthority("trellis-test-ca", 1);
    const caFile = join(dir, "ca.crt");
    const caKeyFile = join(dir, "ca.key");
    await writeFile(caFile, ca.certificatePem);
    await writeFile(caKeyFile, ca.privateKeyPem, { mode: 0o600 });
    const [server, admin, viewer] = await Promise.all([
      writeIssued(ca, dir, "control-plane", { kind: "control-plane", name: "cp-1" }, { dnsNames: ["localhost"], ips: ["127.0.0.1"] }),
      writeIssued(ca, dir, "admin", { kind: "admin", name: "test-admin" }),
      writeIssued(ca, dir, "viewer", { kind: "viewer", name: "test-viewer" }),
    ]);
    return {
      dir,
      ca,
      caPem: ca.certificatePem,
      caFile,
      caKeyFile,
      server,
      serverTls: { cert: server.cert, key: server.key, ca: ca.certificatePem },
      admin,
      viewer,
      bufCurlFlags: (who = admin) => ["--cacert", caFile, "--cert", who.certFile, "--key", who.keyFile],
      destroy: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A gRPC transport to `address` ("host:port") over TLS checked against `caPem`, presenting `who` (none: no client certificate). */
export function mtlsTransport(address: string, caPem: string, who?: Credential): Transport {
  return createGrpcTransport({
    baseUrl: `https://${address}`,
    nodeOptions: { ca: caPem, ...(who ? { cert: who.cert, key: who.key } : {}) },
  });
}
