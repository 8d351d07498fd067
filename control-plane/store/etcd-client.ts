// The one way the control plane dials etcd (every Etcd* store): endpoints, call deadlines and, when
// configured, TLS with a client certificate (DESIGN.md §6; notes/identity-anchors.md §3). etcd3 hands the
// credentials to gRPC once, when it builds its pool, so a new client certificate needs a new client.
import { ConsecutiveBreaker, circuitBreaker, handleWhen, retry } from "cockatiel";
import { Etcd3, GRPCUnavailableError } from "etcd3";
import { TrellisError } from "../../proto/core/errors.js";

export interface EtcdConnection {
  readonly endpoints: readonly string[];
  /** Deadline of one unary etcd call, of dialing and of a watch's creation (default 5 s). A watch, once made, has none. */
  readonly callTimeoutMs?: number;
  /** PEM texts; when set, endpoints must be https:// */
  readonly tls?: { readonly ca: string; readonly cert: string; readonly key: string };
}

export const defaultCallTimeoutMs = 5_000;

/**
 * Only UNAVAILABLE says an etcd host cannot be reached (refused, reset, or silent past gRPC's keepalive).
 * etcd3's defaults also count a call that missed its deadline, or was cancelled, as the host failing: three
 * in a row refuse every call to it for 5 s, and each such call is retried twice more with a fresh deadline.
 * A replica whose own event loop lags misses every deadline at once, against every host: at 3400 nodes
 * both replicas refused thousands of heartbeat writes that way, and the nodes' retries fed the overload
 * (issue 10; test/integration/etcd-fault-handling.test.ts).
 */
const hostUnreachable = handleWhen((err) => err instanceof GRPCUnavailableError);

/**
 * An etcd member that stops answering without closing the connection is found by pings, not by call
 * deadlines: within 30 s. The ping's timeout runs on the replica's event loop, and after a stall it fires
 * before the answer waiting in the socket is read: with 5 s, at 4000 simulated nodes (stalls of 5 s and
 * more) the connection was dropped twice in a minute, and with it every watch.
 */
const keepalive = { "grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 20_000 };

/** A client for `connection`; INVALID_ARGUMENT, saying what to do, when the endpoints and TLS disagree. */
export function createEtcdClient(connection: EtcdConnection): Etcd3 {
  checkEndpoints(connection);
  const callTimeoutMs = connection.callTimeoutMs ?? defaultCallTimeoutMs;
  const { tls } = connection;
  try {
    return new Etcd3({
      hosts: [...connection.endpoints],
      dialTimeout: callTimeoutMs,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
      grpcOptions: keepalive,
      faultHandling: {
        // An unreachable host is skipped for 5 s after 3 failures in a row; a call is tried once more, on
        // another host, only when its host was unreachable.
        host: () => circuitBreaker(hostUnreachable, { halfOpenAfter: 5_000, breaker: new ConsecutiveBreaker(3) }),
        global: retry(hostUnreachable, { maxAttempts: 1 }),
      },
      ...(tls && {
        credentials: {
          rootCertificate: Buffer.from(tls.ca),
          privateKey: Buffer.from(tls.key),
          certChain: Buffer.from(tls.cert),
        },
      }),
    });
  } catch (err) {
    // gRPC builds the TLS context here: unreadable PEM, or a key that is not the certificate's.
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `the etcd CA, client certificate and key (--etcd-ca, --etcd-cert, --etcd-key) are not usable together: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

function checkEndpoints({ endpoints, tls }: EtcdConnection): void {
  if (endpoints.length === 0) throw new TrellisError("INVALID_ARGUMENT", "no etcd endpoint given");
  for (const endpoint of endpoints) {
    const https = endpoint.startsWith("https://");
    if (!https && !endpoint.startsWith("http://")) {
      throw new TrellisError("INVALID_ARGUMENT", `etcd endpoint ${JSON.stringify(endpoint)} does not start with http:// or https://`);
    }
    if (tls && !https) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `etcd endpoint ${endpoint} is cleartext, but an etcd client certificate is given: use https:// endpoints for etcd with TLS`,
      );
    }
    if (!tls && https) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `etcd endpoint ${endpoint} is https://, but no etcd CA, client certificate and key are given: give all three (--etcd-ca, --etcd-cert, --etcd-key), or use http:// endpoints`,
      );
    }
  }
}

/**
 * Why an etcd call could not be made: gRPC's message, tidied, after what to check when the failure is a TLS
 * one (a refused client certificate, an unverifiable server, TLS on one side only). Without `connection`,
 * only the failures that can come from TLS alone get a hint.
 */
export function explainEtcdFailure(err: unknown, connection?: EtcdConnection): string {
  const raw = err instanceof Error ? err.message : String(err);
  const message = raw
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/g, "")
    .replace(/\s*Resolution note:\s*$/, "")
    .replace(/\s+/g, " ")
    .trim();
  const hint = tlsHint(message, connection === undefined ? undefined : connection.tls !== undefined);
  return hint ? `${hint} (${message})` : message;
}

/** `tls`: whether the client dialed with TLS; undefined when not known. */
function tlsHint(message: string, tls: boolean | undefined): string | undefined {
  if (/alert bad certificate|alert unknown ca|alert certificate required|alert certificate unknown/i.test(message)) {
    return "etcd refused this client certificate (--etcd-cert, --etcd-key): it must be signed by a CA in etcd's --trusted-ca-file and allow client auth";
  }
  if (
    /unable to verify|self[- ]signed|unable to get (local )?issuer|certificate signature failure|altnames|certificate has expired|not yet valid/i.test(
      message,
    )
  ) {
    return "etcd's serving certificate does not verify against --etcd-ca or does not name the endpoint's host";
  }
  if (/before secure TLS connection|wrong version number|packet length too long/i.test(message)) {
    return "the etcd endpoint does not speak TLS: check that etcd serves https there (its --cert-file and --key-file), or use an http:// endpoint without --etcd-ca, --etcd-cert and --etcd-key";
  }
  const unreachable = /ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|DEADLINE/i.test(message);
  if (tls === false && !unreachable && /No connection established|Failed to connect|Connection dropped/i.test(message)) {
    return "etcd does not answer cleartext gRPC here: if it requires TLS with client certificates (--client-cert-auth), give https:// endpoints and --etcd-ca, --etcd-cert and --etcd-key";
  }
  return undefined;
}
