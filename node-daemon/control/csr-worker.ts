// A node's key and certificate request, made on a short-lived worker thread. @peculiar/x509 costs 17 MiB
// of RSS once loaded and a module cannot be unloaded, so a daemon that made its CSR in-process would
// carry it for good for a join or a renewal every few days (issue 8: the daemon stays under 100 MiB).
// The worker's heap goes away with it.
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import type { Identity } from "../../proto/core/identity.js";

/** A fresh private key (PKCS#8 PEM) and a CSR for `identity` signed with it. */
export interface KeyAndRequest {
  readonly privateKeyPem: string;
  readonly csrPem: string;
}

interface Job {
  readonly csrFor: Identity;
}

type Reply = { readonly ok: KeyAndRequest } | { readonly error: string };

async function make(identity: Identity): Promise<KeyAndRequest> {
  const { createCertificateRequest, generateKeyPair } = await import("../../proto/rpc/x509.js");
  const keys = await generateKeyPair();
  return { privateKeyPem: keys.privateKeyPem, csrPem: await createCertificateRequest(keys, identity) };
}

/** In this process (tests running sources, where a worker cannot load a .ts file). */
export const keyAndRequestInProcess = make;

/** On a worker thread running this file (from dist/); rejects with the worker's error. */
export function keyAndRequestInWorker(identity: Identity): Promise<KeyAndRequest> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { csrFor: identity } satisfies Job });
    worker.once("message", (reply: Reply) => {
      if ("ok" in reply) resolve(reply.ok);
      else reject(new Error(`could not make a certificate request: ${reply.error}`));
    });
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`the certificate request worker exited with code ${code}`)));
  });
}

if (!isMainThread && (workerData as Partial<Job> | undefined)?.csrFor) {
  const { csrFor } = workerData as Job;
  make(csrFor).then(
    (ok) => parentPort?.postMessage({ ok } satisfies Reply),
    (err: unknown) => parentPort?.postMessage({ error: (err as Error).message } satisfies Reply),
  );
}
