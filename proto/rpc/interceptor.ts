// One log line per finished call, errors translated to statuses (STYLE.md §7), for every Trellis server.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { logLevelOf, reasonMetadataKey, reasonOfStatus } from "../core/errors.js";
import { toConnectError } from "./connect-errors.js";

/**
 * The line a finished call logs: "rpc completed" at debug, or with `err`, "rpc rejected" at the level its
 * reason has (STYLE.md §7; the reason sent, else the one its status code maps to) or "rpc failed" at
 * error. Returns the error as the status it was sent as.
 */
export function logCallEnd(log: Logger, rpc: string, startedMs: number, err?: unknown): ConnectError | undefined {
  const durationMs = Math.round(performance.now() - startedMs);
  if (err === undefined) {
    log.debug({ rpc, durationMs }, "rpc completed");
    return undefined;
  }
  const ce = toConnectError(err);
  // A status connect-node made itself carries no reason (its deadline passing on the server): the one its
  // code maps to, as the client reads it.
  const reason = reasonOfStatus(ce.code, ce.metadata.get(reasonMetadataKey) ?? undefined);
  const level = logLevelOf[reason];
  log[level]({ rpc, code: Code[ce.code], reason, durationMs, err }, level === "error" ? "rpc failed" : "rpc rejected");
  return ce;
}

/**
 * Whether the client reset the call's stream (connect-node aborts the handler's signal with the reset
 * code): it gave up, on its deadline (connect's client resets with INTERNAL_ERROR, grpc-go with CANCEL) or
 * because it went away. Nobody hears the status; it says nothing about the server.
 */
function resetByClient(signal: AbortSignal): boolean {
  return (
    signal.aborted && signal.reason instanceof ConnectError && signal.reason.rawMessage.startsWith("http/2 stream closed with error code")
  );
}

/** Server interceptor: one log line per finished call, errors translated to statuses (STYLE.md §7). */
export function serverInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const rpc = req.method.name;
    const fail = (err: unknown): never => {
      if (resetByClient(req.signal)) {
        // A peer that went away is UNAVAILABLE in the reason table (STYLE.md §6), logged at its level.
        const reset = req.signal.reason as ConnectError;
        log[logLevelOf.UNAVAILABLE](
          { rpc, code: Code[reset.code], durationMs: Math.round(performance.now() - started), err: reset },
          "rpc abandoned by the client",
        );
        throw err;
      }
      throw logCallEnd(log, rpc, started, err);
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        logCallEnd(log, rpc, started);
        return res;
      }
      const inner = res.message;
      async function* logged() {
        try {
          yield* inner;
          logCallEnd(log, rpc, started);
        } catch (err) {
          fail(err);
        }
      }
      return { ...res, message: logged() };
    } catch (err) {
      return fail(err);
    }
  };
}
