// Counts and times every CNI request the daemon answers, labelled with the CNI code the shim reports for
// the answer (trellis_cni_requests_total{command,code}, trellis_cni_request_duration_seconds{command}).
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { cniCodeOf, isReason, type Reason, reasonMetadataKey, TrellisError } from "../../proto/core/errors.js";
import { CniService, RouteState } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

export interface CniRequestObserver {
  observeCni(command: string, code: number, seconds: number): void;
}

export type CniCommand = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS";

const commandOf: Readonly<Record<string, CniCommand>> = {
  AddAttachment: "ADD",
  DeleteAttachment: "DEL",
  CheckAttachment: "CHECK",
  GarbageCollect: "GC",
  GetStatus: "STATUS",
};

const unreachable = (reason: Reason) => reason === "UNAVAILABLE" || reason === "TIMEOUT";

/**
 * The CNI code the shim reports for a failed call (cni-shim/skel.ts): DEL of something gone succeeds, and
 * so does a DEL the daemon cannot take now (the shim leaves it to the daemon); STATUS without a ready
 * daemon is 50; anything else by its reason (proto/core/errors.ts), 999 for an error without one. Pure.
 */
export function cniCodeOfFailure(command: CniCommand, err: unknown): number {
  const sent = err instanceof ConnectError ? err.metadata.get(reasonMetadataKey) : null;
  const reason = err instanceof TrellisError ? err.reason : sent && isReason(sent) ? sent : undefined;
  if (!reason) return 999;
  if (command === "DEL" && (reason === "NOT_FOUND" || unreachable(reason))) return 0;
  if (command === "STATUS" && unreachable(reason)) return 50;
  return cniCodeOf[reason];
}

/** The CNI code the shim reports for a successful call: 0, or 51 for STATUS while routes are not current. Pure. */
export function cniCodeOfSuccess(command: CniCommand, message: unknown): number {
  if (command !== "STATUS") return 0;
  return (message as { routeState?: RouteState }).routeState === RouteState.CURRENT ? 0 : 51;
}

/** Server interceptor for CniService: one observation per answered call; other services pass through. */
export function cniMetricsInterceptor(metrics: CniRequestObserver): Interceptor {
  return (next) => async (req) => {
    const command = req.service.typeName === CniService.typeName ? commandOf[req.method.name] : undefined;
    if (!command) return next(req);
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      const res = await next(req);
      metrics.observeCni(command, res.stream ? 0 : cniCodeOfSuccess(command, res.message), seconds());
      return res;
    } catch (err) {
      metrics.observeCni(command, cniCodeOfFailure(command, err), seconds());
      throw err;
    }
  };
}
