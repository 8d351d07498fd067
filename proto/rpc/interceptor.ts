// One log line per finished call, errors translated to statuses (STYLE.md §7), for every Trellis server.
import { Code, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { isReason, logLevelOf, reasonMetadataKey } from "../core/errors.js";
import { toConnectError } from "./connect-errors.js";

/** Server interceptor: one log line per finished call, errors translated to statuses (STYLE.md §7). */
export function serverInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const rpc = req.method.name;
    const fail = (err: unknown): never => {
      const ce = toConnectError(err);
      const sent = ce.metadata.get(reasonMetadataKey);
      const level = sent && isReason(sent) ? logLevelOf[sent] : "error";
      const durationMs = Math.round(performance.now() - started);
      log[level](
        { rpc, code: Code[ce.code], reason: sent ?? undefined, durationMs, err },
        level === "error" ? "rpc failed" : "rpc rejected",
      );
      throw ce;
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        log.debug({ rpc, durationMs: Math.round(performance.now() - started) }, "rpc completed");
        return res;
      }
      const inner = res.message;
      async function* logged() {
        try {
          yield* inner;
          log.debug({ rpc, durationMs: Math.round(performance.now() - started) }, "rpc completed");
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
