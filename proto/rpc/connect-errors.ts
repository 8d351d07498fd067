// The reason <-> gRPC status mapping of STYLE.md §6, for Connect servers and clients.
import { type Code, ConnectError } from "@connectrpc/connect";
import { grpcCodeOf, isReason, reasonMetadataKey, reasonOfStatus, TrellisError } from "../core/errors.js";

/** Domain error -> gRPC status with the reason in metadata; unknown errors leave as INTERNAL. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const e = err instanceof TrellisError ? err : new TrellisError("INTERNAL", "internal error", { cause: err });
  return new ConnectError(e.message, grpcCodeOf[e.reason] as Code, { [reasonMetadataKey]: e.reason }, undefined, e);
}

/** gRPC status -> domain error: the reason from metadata, or one derived from the code. */
export function fromConnectError(err: unknown, what: string): TrellisError {
  if (err instanceof TrellisError) return err;
  const ce = ConnectError.from(err);
  const sent = ce.metadata.get(reasonMetadataKey) ?? undefined;
  if (sent && isReason(sent)) return new TrellisError(sent, ce.rawMessage, { cause: err });
  // A peer that died mid-call (reset, refused, socket gone) is unreachable, not a bug: try again later.
  const lostPeer = /ECONNRESET|ECONNREFUSED|ENOENT|EPIPE|ECONNABORTED|socket hang up|GOAWAY|stream closed|session closed/i.test(
    `${ce.rawMessage} ${String((ce.cause as { code?: unknown } | undefined)?.code ?? "")}`,
  );
  const byStatus = reasonOfStatus(ce.code, undefined);
  const reason = byStatus === "INTERNAL" && lostPeer ? "UNAVAILABLE" : byStatus;
  return new TrellisError(reason, `${what}: ${ce.rawMessage}`, { cause: err });
}
