// The line a finished call logs (STYLE.md §6-7): its level comes from the reason, the one sent or, for a
// status connect-node made itself (a deadline that passed on the server), the one its code maps to.
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { TrellisError } from "../../../../proto/core/errors.js";
import { logCallEnd } from "../../../../proto/rpc/interceptor.js";
import { captureLog } from "../../../support/control-plane.js";

describe("logCallEnd", () => {
  it.each([
    ["a domain error", new TrellisError("NOT_FOUND", "node n1 is not registered"), 30, "rpc rejected", "NOT_FOUND"],
    [
      "connect's own deadline status (issue 10: logged as 'rpc failed' at 5000 nodes)",
      new ConnectError("the operation timed out", Code.DeadlineExceeded),
      40,
      "rpc rejected",
      "TIMEOUT",
    ],
    ["a status without a reason that maps to none", new ConnectError("stream closed", Code.Internal), 50, "rpc failed", "INTERNAL"],
    ["a bug", new Error("undefined is not a function"), 50, "rpc failed", "INTERNAL"],
  ])("%s: logged at the level of its reason", (_what, err, level, msg, reason) => {
    const { log, lines } = captureLog();
    const sent = logCallEnd(log, "Heartbeat", performance.now(), err);
    expect(lines).toEqual([expect.objectContaining({ level, msg, rpc: "Heartbeat", reason })]);
    expect(sent).toBeInstanceOf(ConnectError);
  });

  it("a call that ended well: 'rpc completed' at debug, nothing sent", () => {
    const { log, lines } = captureLog();
    expect(logCallEnd(log, "Heartbeat", performance.now())).toBeUndefined();
    expect(lines).toEqual([expect.objectContaining({ level: 20, msg: "rpc completed" })]);
  });
});
