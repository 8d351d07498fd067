// One log line per finished call, errors translated to statuses (STYLE.md §7), for every Trellis server.
import { Code, type ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { isReason, logLevelOf, reasonMetadataKey } from "../core/errors.js";
import { toConnectError } from "./connect-errors.js";

/**
 * The line a finished call logs: "rpc completed" at debug, or with `err`, "rpc rejected" at the level its
 * reason has (STYLE.md §7) or "rpc failed" at error. Returns the error as the status it was sent as.
 */
export function logCallEnd(log: Logger, rpc: string, startedMs: number, err?: unknown): ConnectError | undefined {
  const durationMs = Math.round(performance.now() - startedMs);
  if (err === undefined) {
    log.debug({ rpc, durationMs }, "rpc completed");
    return undefined;
  }
  const ce = toConnectError(err);
  const sent = ce.metadata.get(reasonMetadataKey);
  const level = sent && isReason(sent) ? logLevelOf[sent] : "error";
  log[level]({ rpc, code: Code[ce.code], reason: sent ?? undefined, durationMs, err }, level === "error" ? "rpc failed" : "rpc rejected");
  return ce;
}

/** Server interceptor: one log line per finished call, errors translated to statuses (STYLE.md §7). */
export function serverInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const rpc = req.method.name;
    const fail = (err: unknown): never => {
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
