import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { leaveCluster } from "../../../node-daemon/daemon.js";
import { TrellisError } from "../../../proto/core/errors.js";
import { RecordingNetlink } from "../../support/fakes.js";
import { rejectsWith } from "../expect-error.js";

// `trellis-node-daemon leave` (DESIGN.md §2, stopping is not leaving): leaving is explicit.
const log = pino({ level: "silent" });

function setUp(options: { serving?: boolean; deregister?: () => Promise<void> } = {}) {
  const net = new RecordingNetlink();
  net.routes = [
    { dst: "10.244.2.0/24", via: "192.168.1.12", owned: true },
    { dst: "10.244.3.0/24", via: "192.168.1.13", owned: true },
    { dst: "192.168.7.0/24", via: "192.168.1.1", owned: false }, // someone else's: never touched
  ];
  const done: string[] = [];
  const deps = {
    config: { socketPath: "/run/trellis/cni.sock" },
    log,
    net,
    control: {
      deregister:
        options.deregister ??
        (async () => {
          done.push("deregister");
        }),
    },
    masquerade: {
      check: async () => undefined,
      apply: async (cidr: string | undefined) => {
        done.push(`masquerade ${cidr ?? "removed"}`);
      },
    },
    serving: async () => options.serving ?? false,
  };
  return { net, done, deps };
}

describe("leaveCluster", () => {
  it("withdraws the node's route, removes only the routes Trellis owns and its nftables table", async () => {
    const { net, done, deps } = setUp();
    expect(await leaveCluster(deps)).toEqual({ routesRemoved: 2 });
    expect(done).toEqual(["deregister", "masquerade removed"]);
    expect(net.routes).toEqual([{ dst: "192.168.7.0/24", via: "192.168.1.1", owned: false }]);
  });

  it("refuses while a daemon serves the socket, says to stop it first, and changes nothing", async () => {
    const { net, done, deps } = setUp({ serving: true });
    const err = await rejectsWith(leaveCluster(deps), "CONFLICT");
    expect(err.message).toMatch(/the node daemon is running \(it serves \/run\/trellis\/cni\.sock\).*stop it first/);
    expect(done).toEqual([]);
    expect(net.routes).toHaveLength(3);
  });

  it("a node the control plane no longer knows (its subnet was freed) still removes what it holds", async () => {
    const { net, done, deps } = setUp({
      deregister: async () => {
        throw new TrellisError("NOT_FOUND", "node node-3 is not registered; register it first");
      },
    });
    expect(await leaveCluster(deps)).toEqual({ routesRemoved: 2 });
    expect(done).toEqual(["masquerade removed"]);
    expect(net.routes).toHaveLength(1);
  });

  it("does not remove anything when the control plane cannot be told (the route would stay)", async () => {
    const { net, done, deps } = setUp({
      deregister: async () => {
        throw new TrellisError("UNAVAILABLE", "no control plane answers");
      },
    });
    await expect(leaveCluster(deps)).rejects.toThrow(/no control plane answers/);
    expect(done).toEqual([]);
    expect(net.routes).toHaveLength(3);
  });
});
