// Load shedding for a server's unary calls (issue 10, 5000 nodes): past a bound, a unary call is answered
// UNAVAILABLE at once instead of queued behind calls the server cannot finish before their deadlines.
import type { Interceptor } from "@connectrpc/connect";
import { TrellisError } from "../core/errors.js";
import { toConnectError } from "./connect-errors.js";

export interface LoadSheddingOptions {
  /** Unary calls worked on at once; past it they are refused. */
  readonly maxInFlight: number;
  /** Methods never refused (by name, such as "Heartbeat"): what must get through for nodes to stay live. */
  readonly exempt: ReadonlySet<string>;
  /** Told of each refusal (a log line at most every so often, a counter). */
  readonly onShed?: (inFlight: number) => void;
}

/**
 * Server interceptor, the outermost: counts the unary calls in progress and refuses one past
 * `maxInFlight` with UNAVAILABLE (the caller backs off or tries another replica). Streams are not counted
 * (a route stream is open for a node's lifetime; the listener bounds them), nor are `exempt` methods. An
 * overloaded replica with no bound took every call and worked on each after its caller had given up, and
 * the calls held in memory grew its heap to 2 GB at 5000 nodes.
 */
export function loadShedding(options: LoadSheddingOptions): Interceptor {
  let inFlight = 0;
  return (next) => async (req) => {
    if (req.stream || options.exempt.has(req.method.name)) return next(req);
    if (inFlight >= options.maxInFlight) {
      options.onShed?.(inFlight);
      throw toConnectError(
        new TrellisError("UNAVAILABLE", `the server is working on ${inFlight} calls, its limit; try again shortly or another replica`),
      );
    }
    inFlight++;
    try {
      return await next(req);
    } finally {
      inFlight--;
    }
  };
}
