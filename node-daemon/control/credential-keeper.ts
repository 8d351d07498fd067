// Gets the node its certificate and keeps it fresh (DESIGN.md §6): the stored one when it is still good,
// else a new one for the join token; then a renewal with a fresh key at 70-90% of each lifetime, through
// the control plane, without a restart. Whoever holds connections is told (onRenewed) and builds new
// ones; open streams go on over the connections they have.
import type { Logger } from "pino";
import { TrellisError } from "../../proto/core/errors.js";
import type { Identity } from "../../proto/core/identity.js";
import { type KeyAndRequest, keyAndRequestInProcess } from "./csr-worker.js";
import { type NodeCredential, parseCredential, readCredentialFile, renewalDelayMs, writeCredentialFile } from "./node-credential.js";

export interface CredentialKeeperDeps {
  readonly nodeName: string;
  /** The credential file (--credential). */
  readonly path: string;
  /** Reads the join token (--join-token-file); undefined when none was given. */
  readonly readJoinToken?: () => Promise<string>;
  /** JoinService.Join, one per control-plane replica: tried in turn, with backoff, while unreachable. */
  readonly joinVia: ReadonlyArray<(token: string, csrPem: string, signal: AbortSignal) => Promise<string>>;
  readonly log: Logger;
  readonly clock: () => number;
  readonly rand: () => number;
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Makes a fresh key and its CSR (default: in this process; the daemon uses a worker, csr-worker.ts). */
  readonly keyAndRequest?: (identity: Identity) => Promise<KeyAndRequest>;
}

/** Reasons a join or renewal will not succeed by trying again. */
const final = new Set(["UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"]);

export class CredentialKeeper {
  private credential?: NodeCredential;

  constructor(private readonly deps: CredentialKeeperDeps) {}

  get current(): NodeCredential {
    if (!this.credential) throw new TrellisError("INTERNAL", "no node credential yet: call obtain() first");
    return this.credential;
  }

  /** The stored credential when it is valid for a while yet; otherwise one made by joining with the token. */
  async obtain(signal: AbortSignal): Promise<NodeCredential> {
    const { path, nodeName, log } = this.deps;
    const text = await readCredentialFile(path);
    const stored = text === undefined ? undefined : parseCredential(text, nodeName, path);
    if (stored && stored.notAfterMs > this.deps.clock() + 60_000) {
      log.info({ serial: stored.serial, notAfter: new Date(stored.notAfterMs).toISOString() }, "using the stored node certificate");
      this.credential = stored;
      return stored;
    }
    const why = stored
      ? `the certificate in ${path} expired at ${new Date(stored.notAfterMs).toISOString()}`
      : `there is no certificate in ${path} yet`;
    if (!this.deps.readJoinToken) {
      throw new TrellisError(
        "UNAUTHENTICATED",
        `${why}: ask an admin for a join token (AdminService.CreateJoinToken for node ${nodeName}) and start the daemon with --join-token-file`,
      );
    }
    log.info(`${why}: joining with the join token`);
    const token = await this.deps.readJoinToken();
    const credential = await this.newCredential((csr) => this.join(token, csr, signal), signal);
    log.info(
      { serial: credential.serial, notAfter: new Date(credential.notAfterMs).toISOString() },
      "joined the cluster: certificate issued",
    );
    return credential;
  }

  /**
   * Renews before every expiry until `signal` aborts, through `renew` (NodeService.RenewCertificate over
   * the current credential), then hands the new credential to `onRenewed`. A failed renewal is retried
   * with backoff; once the certificate has expired the node must join again, which this says loudly.
   */
  async renewLoop(
    renew: (csrPem: string) => Promise<string>,
    onRenewed: (credential: NodeCredential) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const { log, clock } = this.deps;
    while (!signal.aborted) {
      await this.deps.sleep(renewalDelayMs(this.current, clock(), this.deps.rand), signal);
      for (let delay = 1_000; !signal.aborted; delay = Math.min(delay * 2, 60_000)) {
        try {
          const credential = await this.newCredential(renew, signal);
          log.info({ serial: credential.serial, notAfter: new Date(credential.notAfterMs).toISOString() }, "node certificate renewed");
          onRenewed(credential);
          break;
        } catch (err) {
          if (signal.aborted) return;
          const expired = this.current.notAfterMs <= clock();
          if (expired || (err instanceof TrellisError && final.has(err.reason))) {
            log.error(
              { err },
              `could not renew the node certificate${expired ? " before it expired" : ""}: ask an admin for a join token, write it to the --join-token-file and restart the daemon`,
            );
          } else log.warn({ err, durationMs: delay }, "node certificate renewal failed, retrying");
          await this.deps.sleep(delay, signal);
        }
      }
    }
  }

  private async join(token: string, csrPem: string, signal: AbortSignal): Promise<string> {
    const { joinVia, log } = this.deps;
    for (let attempt = 0, delay = 250; ; attempt++, delay = Math.min(delay * 2, 10_000)) {
      const join = joinVia[attempt % joinVia.length];
      if (!join) throw new TrellisError("INVALID_ARGUMENT", "no control-plane address configured");
      try {
        return await join(token, csrPem, signal);
      } catch (err) {
        if (signal.aborted || (err instanceof TrellisError && final.has(err.reason))) throw err;
        log.warn({ err, attempt: attempt + 1, durationMs: delay }, "could not reach a control plane to join, retrying");
        await this.deps.sleep(delay, signal);
      }
    }
  }

  /** A fresh key, a CSR for it, a certificate from `issue`; stored durably before it is used. */
  private async newCredential(issue: (csrPem: string) => Promise<string>, signal: AbortSignal): Promise<NodeCredential> {
    const keys = await (this.deps.keyAndRequest ?? keyAndRequestInProcess)({ kind: "node", name: this.deps.nodeName });
    const certificatePem = await issue(keys.csrPem);
    if (signal.aborted) throw new TrellisError("UNAVAILABLE", "stopping");
    const credential = parseCredential(`${keys.privateKeyPem}\n${certificatePem}`, this.deps.nodeName, "the issued certificate");
    await writeCredentialFile(this.deps.path, credential);
    this.credential = credential;
    return credential;
  }
}
