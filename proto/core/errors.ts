/** The reasons a Trellis operation fails; codes exist only at the edges (rpc/errors.ts, cni-shim/result.ts). */
export const reasons = [
  "INVALID_ARGUMENT",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "UNAUTHENTICATED",
  "EXHAUSTED",
  "VERSION_SKEW",
  "CONFLICT",
  "UNAVAILABLE",
  "TIMEOUT",
  "KERNEL",
  "DATA_LOSS",
  "INTERNAL",
] as const;

export type Reason = (typeof reasons)[number];

export class TrellisError extends Error {
  override readonly name = "TrellisError";
  constructor(
    readonly reason: Reason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export function isReason(value: string): value is Reason {
  return (reasons as readonly string[]).includes(value);
}

/** gRPC status code of each reason (STYLE.md §6). */
export const grpcCodeOf: Record<Reason, number> = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  UNAUTHENTICATED: 16,
  EXHAUSTED: 8,
  VERSION_SKEW: 9,
  CONFLICT: 10,
  UNAVAILABLE: 14,
  TIMEOUT: 4,
  KERNEL: 13,
  DATA_LOSS: 15,
  INTERNAL: 13,
};

/**
 * CNI error code of each reason (STYLE.md §6): what the shim prints for a failed call, and how the daemon
 * labels a failed request in its metrics (trellis_cni_requests_total{code}).
 */
export const cniCodeOf: Record<Reason, number> = {
  INVALID_ARGUMENT: 7,
  NOT_FOUND: 3,
  ALREADY_EXISTS: 100,
  PERMISSION_DENIED: 103,
  UNAUTHENTICATED: 103,
  EXHAUSTED: 101,
  VERSION_SKEW: 102,
  CONFLICT: 11,
  UNAVAILABLE: 11,
  TIMEOUT: 11,
  KERNEL: 999,
  DATA_LOSS: 999,
  INTERNAL: 999,
};

/** Log level an edge uses when it reports a failure with this reason. */
export const logLevelOf: Record<Reason, "info" | "warn" | "error"> = {
  INVALID_ARGUMENT: "info",
  NOT_FOUND: "info",
  ALREADY_EXISTS: "info",
  PERMISSION_DENIED: "warn",
  UNAUTHENTICATED: "warn",
  EXHAUSTED: "warn",
  VERSION_SKEW: "warn",
  CONFLICT: "warn",
  UNAVAILABLE: "warn",
  TIMEOUT: "warn",
  KERNEL: "error",
  DATA_LOSS: "error",
  INTERNAL: "error",
};

/** Metadata key that carries the reason next to a gRPC status. */
export const reasonMetadataKey = "trellis-reason";

/**
 * The reason a client gives a failed call: the one the server sent in `trellis-reason` when it is one,
 * else one by gRPC status code (a server that did not send one, or a failure of the transport itself).
 */
export function reasonOfStatus(code: number, sentReason: string | undefined): Reason {
  if (sentReason && isReason(sentReason)) return sentReason;
  const byCode: Record<number, Reason> = {
    1: "UNAVAILABLE", // cancelled: the peer went away
    3: "INVALID_ARGUMENT",
    4: "TIMEOUT",
    5: "NOT_FOUND",
    7: "PERMISSION_DENIED",
    12: "VERSION_SKEW", // unimplemented: a peer of another version
    14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
  };
  return byCode[code] ?? "INTERNAL";
}
