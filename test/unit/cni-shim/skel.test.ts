import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { runShim } from "../../../cni-shim/skel.js";
import { type Reason, TrellisError } from "../../../proto/core/errors.js";
import {
  AddAttachmentResponseSchema,
  type GetStatusResponse,
  GetStatusResponseSchema,
  InterfaceSchema,
  IpConfigSchema,
  RouteSchema,
  RouteState,
} from "../../../proto/gen/trellis/cni/v1/cni_pb.js";
import { FakeDaemonClient, FakeShimIo } from "../../support/fakes.js";

const netns = "/var/run/netns/pod1";
const addEnv: Record<string, string | undefined> = {
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "c0ffee01",
  CNI_NETNS: netns,
  CNI_IFNAME: "eth0",
  CNI_PATH: "/opt/cni/bin",
  CNI_ARGS: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_UID=uid-1",
};
const conf = (fields: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: "1.0.0", name: "trellis", type: "trellis", ...fields });

const reply = create(AddAttachmentResponseSchema, {
  interfaces: [
    create(InterfaceSchema, { name: "trellis0", mac: "0a:5a:0a:f4:03:01", mtu: 1450 }),
    create(InterfaceSchema, { name: "tr0123456789a", mac: "0a:59:0a:f4:03:07", mtu: 1450 }),
    create(InterfaceSchema, { name: "eth0", mac: "0a:58:0a:f4:03:07", mtu: 1450, sandbox: netns }),
  ],
  ips: [create(IpConfigSchema, { address: "10.244.3.7/24", gateway: "10.244.3.1", interface: 2 })],
  routes: [create(RouteSchema, { dst: "0.0.0.0/0", gw: "10.244.3.1" })],
});

interface Run {
  code: number;
  io: FakeShimIo;
  daemon: FakeDaemonClient;
  sockets: string[];
}

interface ShimOptions {
  /** What every daemon call fails with. */
  fail?: unknown;
  /** Paths that exist (default: the pod's netns). */
  paths?: string[];
  /** What leaving a pending delete fails with. */
  failPendingDelete?: Error;
  /** The daemon's STATUS answer. */
  status?: GetStatusResponse;
}

async function shim(env: Record<string, string | undefined>, stdin: string | Error, opts: ShimOptions = {}): Promise<Run> {
  const io = new FakeShimIo(env, stdin, new Set(opts.paths ?? [netns]));
  if (opts.failPendingDelete) io.failPendingDelete = opts.failPendingDelete;
  const daemon = new FakeDaemonClient(reply);
  if (opts.fail !== undefined) daemon.fail = opts.fail;
  if (opts.status) daemon.statusReply = opts.status;
  const sockets: string[] = [];
  const code = await runShim(io, (socketPath) => {
    sockets.push(socketPath);
    return daemon;
  });
  return { code, io, daemon, sockets };
}

/** The run printed exactly one JSON object on stdout: the CNI error; returns it. */
function cniError(run: Run): { cniVersion: string; code: number; msg: string; details?: string } {
  expect(run.code).not.toBe(0);
  expect(run.io.stdout).toHaveLength(1);
  const out = JSON.parse(run.io.stdout[0] ?? "") as Record<string, unknown>;
  expect(out).toEqual(expect.objectContaining({ cniVersion: expect.any(String), code: expect.any(Number), msg: expect.any(String) }));
  expect(run.io.errors).toHaveLength(1);
  expect(run.io.errors[0]?.fields.code).toBe(out.code);
  return out as { cniVersion: string; code: number; msg: string; details?: string };
}

const allVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

describe("runShim: VERSION", () => {
  it.each([
    [JSON.stringify({ cniVersion: "0.3.0" }), "0.3.0"],
    [JSON.stringify({ cniVersion: "0.3.1" }), "0.3.1"],
    [JSON.stringify({ cniVersion: "0.4.0" }), "0.4.0"],
    [JSON.stringify({ cniVersion: "1.0.0" }), "1.0.0"],
    [JSON.stringify({ cniVersion: "1.1.0" }), "1.1.0"],
    ["", "1.1.0"],
    ["{not json", "1.1.0"],
    [JSON.stringify({}), "1.1.0"],
    [JSON.stringify({ cniVersion: 1 }), "1.1.0"],
    [JSON.stringify({ cniVersion: "0.2.0" }), "1.1.0"],
    [JSON.stringify({ cniVersion: "2.0.0" }), "1.1.0"],
  ])("stdin %j answers cniVersion %s and every supported version", async (stdin, version) => {
    const run = await shim({ CNI_COMMAND: "VERSION" }, stdin);
    expect(run.code).toBe(0);
    expect(run.io.stdout.map((s) => JSON.parse(s) as unknown)).toEqual([{ cniVersion: version, supportedVersions: allVersions }]);
    expect(run.io.errors).toEqual([]);
    expect(run.sockets).toEqual([]);
  });
});

describe("runShim: input errors print one CNI error and never call the daemon", () => {
  const without = (key: string) => ({ ...addEnv, [key]: undefined });
  it.each<[string, Record<string, string | undefined>, string | Error, number, string]>([
    ["missing CNI_COMMAND", without("CNI_COMMAND"), conf(), 4, "CNI_COMMAND"],
    ["unknown CNI_COMMAND", { ...addEnv, CNI_COMMAND: "FROB" }, conf(), 4, "FROB"],
    ["lower-case command", { ...addEnv, CNI_COMMAND: "add" }, conf(), 4, "CNI_COMMAND"],
    ["unreadable stdin", addEnv, new Error("EPIPE"), 5, "stdin"],
    ["non-JSON stdin", addEnv, "{not json", 6, "not JSON"],
    ["a JSON array", addEnv, "[]", 6, "JSON object"],
    ["config without name", addEnv, JSON.stringify({ cniVersion: "1.0.0", type: "trellis" }), 7, '"name"'],
    ["config with an empty name", addEnv, conf({ name: "" }), 7, '"name"'],
    ["config without cniVersion", addEnv, JSON.stringify({ name: "trellis" }), 7, '"cniVersion"'],
    ["a cniVersion older than any supported", addEnv, conf({ cniVersion: "0.2.0" }), 1, "0.2.0"],
    ["a cniVersion newer than any supported", addEnv, conf({ cniVersion: "2.0.0" }), 1, "2.0.0"],
    ["a cniVersion that is not a string", addEnv, conf({ cniVersion: 1 }), 7, '"cniVersion"'],
    ["a prevResult that is a string", addEnv, conf({ prevResult: "ok" }), 7, "prevResult"],
    ["a prevResult that is a number", addEnv, conf({ prevResult: 0 }), 7, "prevResult"],
    ["a prevResult that is null", addEnv, conf({ prevResult: null }), 7, "prevResult"],
    ["a prevResult that is a list", addEnv, conf({ prevResult: [] }), 7, "prevResult"],
    ["relative daemonSocket", addEnv, conf({ daemonSocket: "cni.sock" }), 7, "daemonSocket"],
    ["missing CNI_CONTAINERID", without("CNI_CONTAINERID"), conf(), 4, "CNI_CONTAINERID"],
    ["bad CNI_CONTAINERID", { ...addEnv, CNI_CONTAINERID: "-rf /" }, conf(), 4, "CNI_CONTAINERID"],
    ["CNI_CONTAINERID with a slash", { ...addEnv, CNI_CONTAINERID: "abc/def" }, conf(), 4, "CNI_CONTAINERID"],
    ["missing CNI_IFNAME", without("CNI_IFNAME"), conf(), 4, "CNI_IFNAME"],
    ["CNI_IFNAME longer than 15 bytes", { ...addEnv, CNI_IFNAME: "eth0123456789abc" }, conf(), 4, "15 bytes"],
    ["CNI_IFNAME of 16 bytes in 8 characters", { ...addEnv, CNI_IFNAME: "éééééééé" }, conf(), 4, "15 bytes"],
    ["CNI_IFNAME with '/'", { ...addEnv, CNI_IFNAME: "eth/0" }, conf(), 4, "CNI_IFNAME"],
    ["CNI_IFNAME with ':'", { ...addEnv, CNI_IFNAME: "eth0:1" }, conf(), 4, "CNI_IFNAME"],
    ["CNI_IFNAME ..", { ...addEnv, CNI_IFNAME: ".." }, conf(), 4, "CNI_IFNAME"],
    ["CNI_NETNS missing for ADD", without("CNI_NETNS"), conf(), 4, "CNI_NETNS"],
    ["CNI_NETNS that does not exist", { ...addEnv, CNI_NETNS: "/var/run/netns/gone" }, conf(), 4, "/var/run/netns/gone"],
    ["missing CNI_PATH", without("CNI_PATH"), conf(), 4, "CNI_PATH"],
    ["unknown CNI_ARGS key", { ...addEnv, CNI_ARGS: "K8S_POD_NAME=web-1;FOO=bar" }, conf(), 4, "FOO"],
    ["IgnoreUnknown=0 with an unknown key", { ...addEnv, CNI_ARGS: "IgnoreUnknown=0;FOO=bar" }, conf(), 4, "FOO"],
    ["CNI_ARGS entry without =", { ...addEnv, CNI_ARGS: "K8S_POD_NAME" }, conf(), 4, "K8S_POD_NAME"],
    ["DEL without CNI_CONTAINERID", { ...without("CNI_CONTAINERID"), CNI_COMMAND: "DEL" }, conf(), 4, "CNI_CONTAINERID"],
    ["a relative CNI_NETNS (the daemon would resolve it elsewhere)", { ...addEnv, CNI_NETNS: "var/run/netns/pod1" }, conf(), 4, "absolute"],
  ])("%s -> code %s", async (_what, env, stdin, code, inMessage) => {
    const run = await shim(env, stdin);
    const err = cniError(run);
    expect(err.code).toBe(code);
    expect(err.msg).toContain(inMessage);
    expect(run.sockets).toEqual([]);
    expect(run.daemon.added).toEqual([]);
    expect(run.daemon.deleted).toEqual([]);
  });

  it.each([
    ["0.3.1", "0.3.1"],
    ["0.4.0", "0.4.0"],
    ["1.0.0", "1.0.0"],
    ["0.2.0", "1.1.0"],
    ["2.0.0", "1.1.0"],
  ])("an error of a %s request answers in cniVersion %s (the request's when supported, else the latest)", async (requested, answered) => {
    expect(cniError(await shim({ ...addEnv, CNI_CONTAINERID: "" }, conf({ cniVersion: requested }))).cniVersion).toBe(answered);
  });

  it("a CNI_NETNS the shim cannot even look up (ENAMETOOLONG) is code 4, not an internal error", async () => {
    class UncheckablePaths extends FakeShimIo {
      override pathExists(path: string): Promise<boolean> {
        throw new Error(`ENAMETOOLONG: name too long, open '${path}'`); // as Bun.file() throws, synchronously
      }
    }
    const io = new UncheckablePaths({ ...addEnv, CNI_NETNS: `/${"a".repeat(70_000)}` }, conf());
    const daemon = new FakeDaemonClient(reply);
    expect(await runShim(io, () => daemon)).toBe(1);
    expect(JSON.parse(io.stdout[0] ?? "")).toMatchObject({ code: 4, msg: expect.stringContaining("ENAMETOOLONG") });
    expect(daemon.added).toEqual([]);
  });

  it("the stderr log line carries the command and ids, never the config", async () => {
    const run = await shim({ ...addEnv, CNI_IFNAME: "eth/0" }, conf({ secret: "hunter2" }));
    cniError(run);
    expect(run.io.errors[0]?.fields).toMatchObject({ command: "ADD", containerId: "c0ffee01", ifName: "eth/0", code: 4 });
    expect(JSON.stringify(run.io.errors)).not.toContain("hunter2");
  });
});

describe("runShim: ADD", () => {
  it("passes the attachment (pod identity from CNI_ARGS) to the daemon on the default socket", async () => {
    const run = await shim(addEnv, conf());
    expect(run.code).toBe(0);
    expect(run.sockets).toEqual(["/run/trellis/cni.sock"]);
    expect(run.daemon.added).toHaveLength(1);
    expect(run.daemon.added[0]).toMatchObject({
      networkName: "trellis",
      containerId: "c0ffee01",
      ifName: "eth0",
      netns,
      podNamespace: "default",
      podName: "web-1",
      podUid: "uid-1",
    });
  });

  it("uses the daemonSocket of the config", async () => {
    expect((await shim(addEnv, conf({ daemonSocket: "/tmp/t/cni.sock" }))).sockets).toEqual(["/tmp/t/cni.sock"]);
  });

  it.each(["IgnoreUnknown=1", "IgnoreUnknown=true", "IgnoreUnknown=TRUE"])("%s accepts unknown CNI_ARGS keys", async (ignore) => {
    const run = await shim({ ...addEnv, CNI_ARGS: `${ignore};K8S_POD_NAME=web-2;FOO=bar;K8S_POD_NAMESPACE=prod` }, conf());
    expect(run.code).toBe(0);
    expect(run.daemon.added[0]).toMatchObject({ podName: "web-2", podNamespace: "prod" });
  });

  it("works without CNI_ARGS", async () => {
    const run = await shim({ ...addEnv, CNI_ARGS: undefined }, conf());
    expect(run.code).toBe(0);
    expect(run.daemon.added[0]).toMatchObject({ podName: "", podNamespace: "" });
  });

  it("prints one 1.0.0 result with interfaces, ips, routes and dns, without mtu", async () => {
    const run = await shim(addEnv, conf({ cniVersion: "1.0.0" }));
    expect(run.code).toBe(0);
    expect(run.io.stdout).toHaveLength(1);
    expect(JSON.parse(run.io.stdout[0] ?? "")).toEqual({
      cniVersion: "1.0.0",
      interfaces: [
        { name: "trellis0", mac: "0a:5a:0a:f4:03:01" },
        { name: "tr0123456789a", mac: "0a:59:0a:f4:03:07" },
        { name: "eth0", mac: "0a:58:0a:f4:03:07", sandbox: netns },
      ],
      ips: [{ interface: 2, address: "10.244.3.7/24", gateway: "10.244.3.1" }],
      routes: [{ dst: "0.0.0.0/0", gw: "10.244.3.1" }],
      dns: {},
    });
    expect(run.io.errors).toEqual([]);
  });

  it.each(["0.3.0", "0.3.1", "0.4.0"])(
    "a %s request gets a result in its version whose ips say version 4, without mtu",
    async (version) => {
      const run = await shim(addEnv, conf({ cniVersion: version }));
      expect(run.code).toBe(0);
      expect(JSON.parse(run.io.stdout[0] ?? "")).toEqual({
        cniVersion: version,
        interfaces: [
          { name: "trellis0", mac: "0a:5a:0a:f4:03:01" },
          { name: "tr0123456789a", mac: "0a:59:0a:f4:03:07" },
          { name: "eth0", mac: "0a:58:0a:f4:03:07", sandbox: netns },
        ],
        ips: [{ version: "4", interface: 2, address: "10.244.3.7/24", gateway: "10.244.3.1" }],
        routes: [{ dst: "0.0.0.0/0", gw: "10.244.3.1" }],
        dns: {},
      });
    },
  );

  it("a 1.1.0 request gets a 1.1.0 result whose interfaces carry their mtu", async () => {
    const run = await shim(addEnv, conf({ cniVersion: "1.1.0" }));
    const out = JSON.parse(run.io.stdout[0] ?? "") as { cniVersion: string; interfaces: Array<{ mtu?: number }> };
    expect(out.cniVersion).toBe("1.1.0");
    expect(out.interfaces.map((i) => i.mtu)).toEqual([1450, 1450, 1450]);
  });
});

describe("runShim: DEL", () => {
  const delEnv = { ...addEnv, CNI_COMMAND: "DEL" };

  it("success prints nothing and exits 0", async () => {
    const run = await shim(delEnv, conf());
    expect(run.code).toBe(0);
    expect(run.io.stdout).toEqual([]);
    expect(run.daemon.deleted).toHaveLength(1);
    expect(run.daemon.deleted[0]).toMatchObject({ containerId: "c0ffee01", ifName: "eth0", networkName: "trellis" });
  });

  it.each([
    ["missing", { CNI_NETNS: undefined }],
    ["gone", { CNI_NETNS: "/var/run/netns/gone" }],
  ])("needs no netns (netns %s)", async (_what, patch) => {
    const run = await shim({ ...delEnv, ...patch }, conf());
    expect(run.code).toBe(0);
    expect(run.daemon.deleted).toHaveLength(1);
  });

  it("NOT_FOUND from the daemon is success", async () => {
    const run = await shim(delEnv, conf(), { fail: new TrellisError("NOT_FOUND", "no such attachment") });
    expect(run.code).toBe(0);
    expect(run.io.stdout).toEqual([]);
  });

  it("other daemon errors fail DEL", async () => {
    const err = cniError(await shim(delEnv, conf(), { fail: new TrellisError("KERNEL", "ip link del failed") }));
    expect(err.code).toBe(999);
  });

  // STYLE.md §6: "When the daemon is unreachable, DEL still succeeds: the shim leaves a durable delete
  // request that the daemon completes when it is back".
  it.each<[Reason, string]>([
    ["UNAVAILABLE", "node daemon at /run/trellis/cni.sock: connect ENOENT"],
    ["TIMEOUT", "node daemon at /run/trellis/cni.sock: no answer within 10000 ms"],
  ])("DEL succeeds when the daemon is unreachable (%s) and leaves a pending delete by its socket", async (reason, message) => {
    const run = await shim({ ...delEnv, CNI_NETNS: undefined }, conf(), { fail: new TrellisError(reason, message) });
    expect(run.code).toBe(0);
    expect(run.io.stdout).toEqual([]);
    expect(run.io.errors).toEqual([]);
    expect(run.io.pendingDeletes).toHaveLength(1);
    expect(run.io.pendingDeletes[0]?.socket).toBe("/run/trellis/cni.sock");
    expect(run.io.pendingDeletes[0]?.attachment).toMatchObject({
      networkName: "trellis",
      containerId: "c0ffee01",
      ifName: "eth0",
      podName: "web-1",
    });
  });

  it("the pending delete goes next to the daemonSocket of the config", async () => {
    const run = await shim(delEnv, conf({ daemonSocket: "/tmp/t/cni.sock" }), { fail: new TrellisError("UNAVAILABLE", "connect ENOENT") });
    expect(run.code).toBe(0);
    expect(run.io.pendingDeletes.map((p) => p.socket)).toEqual(["/tmp/t/cni.sock"]);
  });

  it("DEL with the daemon unreachable fails with code 11 when the pending delete cannot be left either", async () => {
    const run = await shim(delEnv, conf(), {
      fail: new TrellisError("UNAVAILABLE", "connect ENOENT"),
      failPendingDelete: new Error("EROFS: read-only file system"),
    });
    const err = cniError(run);
    expect(err.code).toBe(11);
    expect(err.msg).toContain("connect ENOENT");
    expect(err.msg).toContain("EROFS");
    expect(run.io.pendingDeletes).toEqual([]);
  });

  it.each<[Reason, number]>([
    ["NOT_FOUND", 0],
    ["KERNEL", 1],
    ["CONFLICT", 1],
  ])("a reachable daemon answering %s leaves no pending delete (exit %s)", async (reason, exit) => {
    const run = await shim(delEnv, conf(), { fail: new TrellisError(reason, `failed with ${reason}`) });
    expect(run.code).toBe(exit);
    expect(run.io.pendingDeletes).toEqual([]);
  });
});

describe("runShim: CHECK", () => {
  const checkEnv = { ...addEnv, CNI_COMMAND: "CHECK" };

  it.each(["0.4.0", "1.0.0", "1.1.0"])("cniVersion %s: asks the daemon, prints nothing and exits 0", async (version) => {
    const run = await shim(checkEnv, conf({ cniVersion: version, prevResult: { cniVersion: version, interfaces: [], ips: [] } }));
    expect(run.code).toBe(0);
    expect(run.io.stdout).toEqual([]);
    expect(run.sockets).toEqual(["/run/trellis/cni.sock"]);
    expect(run.daemon.checked).toHaveLength(1);
    expect(run.daemon.checked[0]).toMatchObject({
      networkName: "trellis",
      containerId: "c0ffee01",
      ifName: "eth0",
      netns,
      podName: "web-1",
    });
    expect(run.daemon.added).toEqual([]);
  });

  it.each(["0.3.0", "0.3.1"])("cniVersion %s has no CHECK: code 1 naming 0.4.0, the daemon untouched", async (version) => {
    const run = await shim(checkEnv, conf({ cniVersion: version }));
    const err = cniError(run);
    expect(err).toMatchObject({ code: 1, cniVersion: version });
    expect(err.msg).toContain("0.4.0");
    expect(run.sockets).toEqual([]);
  });

  it.each<[string, Record<string, string | undefined>, string]>([
    ["missing", { CNI_NETNS: undefined }, "CNI_NETNS"],
    ["empty", { CNI_NETNS: "" }, "CNI_NETNS"],
    ["gone", { CNI_NETNS: "/var/run/netns/gone" }, "/var/run/netns/gone"],
  ])("needs the netns (netns %s -> code 4)", async (_what, patch, inMessage) => {
    const run = await shim({ ...checkEnv, ...patch }, conf());
    const err = cniError(run);
    expect(err.code).toBe(4);
    expect(err.msg).toContain(inMessage);
    expect(run.daemon.checked).toEqual([]);
  });

  it.each<[Reason, number]>([
    ["NOT_FOUND", 3],
    ["KERNEL", 999],
    ["UNAVAILABLE", 11],
    ["TIMEOUT", 11],
  ])("the daemon answering %s -> code %s, and never a pending delete", async (reason, code) => {
    const run = await shim(checkEnv, conf(), { fail: new TrellisError(reason, `check failed with ${reason}`) });
    expect(cniError(run)).toEqual({ cniVersion: "1.0.0", code, msg: `check failed with ${reason}`, details: `reason ${reason}` });
    expect(run.io.pendingDeletes).toEqual([]);
  });
});

describe("runShim: STATUS", () => {
  // STATUS needs only the command and the config: no container, interface or netns.
  const statusEnv = { CNI_COMMAND: "STATUS" };
  const status = (routeState: RouteState, detail = "") => create(GetStatusResponseSchema, { subnet: "10.244.3.0/24", routeState, detail });

  it("routes current: exit 0, nothing on stdout", async () => {
    const run = await shim(statusEnv, conf({ cniVersion: "1.1.0" }), { status: status(RouteState.CURRENT) });
    expect(run.code).toBe(0);
    expect(run.io.stdout).toEqual([]);
    expect(run.io.errors).toEqual([]);
    expect(run.sockets).toEqual(["/run/trellis/cni.sock"]);
  });

  it("asks the daemon on the daemonSocket of the config", async () => {
    expect((await shim(statusEnv, conf({ cniVersion: "1.1.0", daemonSocket: "/tmp/t/cni.sock" }))).sockets).toEqual(["/tmp/t/cni.sock"]);
  });

  it.each(["0.3.1", "0.4.0", "1.0.0"])("cniVersion %s has no STATUS: code 1 naming 1.1.0, the daemon untouched", async (version) => {
    const run = await shim(statusEnv, conf({ cniVersion: version }));
    const err = cniError(run);
    expect(err.code).toBe(1);
    expect(err.msg).toContain("1.1.0");
    expect(run.sockets).toEqual([]);
  });

  it.each<[Reason]>([["UNAVAILABLE"], ["TIMEOUT"]])(
    "a daemon that answers %s -> code 50 (cannot serve ADD) with its message",
    async (reason) => {
      const run = await shim(statusEnv, conf({ cniVersion: "1.1.0" }), {
        fail: new TrellisError(reason, "node daemon at /run/trellis/cni.sock: connect ENOENT"),
      });
      const err = cniError(run);
      expect(err.code).toBe(50);
      expect(err.msg).toContain("connect ENOENT");
    },
  );

  it.each<[Reason, number]>([
    ["VERSION_SKEW", 102],
    ["INTERNAL", 999],
  ])("other daemon errors keep their own code (%s -> %s)", async (reason, code) => {
    expect(cniError(await shim(statusEnv, conf({ cniVersion: "1.1.0" }), { fail: new TrellisError(reason, "no") })).code).toBe(code);
  });

  it.each([
    ["the daemon's detail", "the route stream from the control plane is broken (connection reset); reconnecting", "connection reset"],
    ["a generic detail when the daemon gives none", "", "routes are stale"],
  ])("stale routes -> code 51 (limited connectivity) with %s", async (_what, detail, inMessage) => {
    const run = await shim(statusEnv, conf({ cniVersion: "1.1.0" }), { status: status(RouteState.STALE, detail) });
    const err = cniError(run);
    expect(err).toMatchObject({ cniVersion: "1.1.0", code: 51 });
    expect(err.msg).toContain(inMessage);
  });
});

describe("runShim: GC", () => {
  const gcEnv = { CNI_COMMAND: "GC" };
  const gcConf = (fields: Record<string, unknown>) => conf({ cniVersion: "1.1.0", ...fields });
  const keys = (run: Run) =>
    run.daemon.collected.map((c) => ({ networkName: c.networkName, valid: c.valid.map((k) => `${k.containerId}/${k.ifName}`) }));

  it.each(["cni.dev/valid-attachments", "cni.dev/attachments"])(
    "passes the attachments of %s to the daemon, prints nothing",
    async (key) => {
      const run = await shim(
        gcEnv,
        gcConf({
          [key]: [
            { containerID: "c1", ifname: "eth0" },
            { containerID: "c2", ifname: "net1" },
          ],
        }),
      );
      expect(run.code).toBe(0);
      expect(run.io.stdout).toEqual([]);
      expect(run.sockets).toEqual(["/run/trellis/cni.sock"]);
      expect(keys(run)).toEqual([{ networkName: "trellis", valid: ["c1/eth0", "c2/net1"] }]);
    },
  );

  it("cni.dev/valid-attachments wins over the older cni.dev/attachments", async () => {
    const run = await shim(
      gcEnv,
      gcConf({
        "cni.dev/valid-attachments": [{ containerID: "new", ifname: "eth0" }],
        "cni.dev/attachments": [{ containerID: "old", ifname: "eth0" }],
      }),
    );
    expect(keys(run)).toEqual([{ networkName: "trellis", valid: ["new/eth0"] }]);
  });

  it("no list at all is refused with code 7 (it would release every pod of the network)", async () => {
    const run = await shim(gcEnv, gcConf({}));
    expect(cniError(run)).toMatchObject({ code: 7, msg: expect.stringContaining("cni.dev/valid-attachments") });
    expect(run.daemon.collected).toEqual([]);
  });

  it("an empty list is passed as is: nothing of the network is valid", async () => {
    const run = await shim(gcEnv, gcConf({ name: "other-net", "cni.dev/valid-attachments": [] }));
    expect(run.code).toBe(0);
    expect(keys(run)).toEqual([{ networkName: "other-net", valid: [] }]);
  });

  it.each<[string, unknown]>([
    ["an object", { containerID: "c1", ifname: "eth0" }],
    ["a string", "c1/eth0"],
    ["null", null],
    ["a list holding a string", ["c1/eth0"]],
    ["a list holding null", [null]],
    ["an entry without ifname", [{ containerID: "c1" }]],
    ["an entry without containerID", [{ ifname: "eth0" }]],
    ["an entry with a numeric containerID", [{ containerID: 1, ifname: "eth0" }]],
    ["an entry spelled like the proto", [{ containerId: "c1", ifName: "eth0" }]],
  ])("cni.dev/valid-attachments as %s -> code 7, the daemon untouched", async (_what, value) => {
    const run = await shim(gcEnv, gcConf({ "cni.dev/valid-attachments": value }));
    const err = cniError(run);
    expect(err.code).toBe(7);
    expect(err.msg).toContain("cni.dev/valid-attachments");
    expect(run.sockets).toEqual([]);
  });

  it("a wrong shape of the older key names that key", async () => {
    const err = cniError(await shim(gcEnv, gcConf({ "cni.dev/attachments": "all" })));
    expect(err.code).toBe(7);
    expect(err.msg).toContain("cni.dev/attachments");
  });

  it.each(["0.4.0", "1.0.0"])("cniVersion %s has no GC: code 1, the daemon untouched", async (version) => {
    const run = await shim(gcEnv, conf({ cniVersion: version, "cni.dev/valid-attachments": [] }));
    expect(cniError(run).code).toBe(1);
    expect(run.daemon.collected).toEqual([]);
    expect(run.sockets).toEqual([]);
  });

  it.each<[Reason, number]>([
    ["UNAVAILABLE", 11],
    ["KERNEL", 999],
  ])("the daemon failing with %s -> code %s", async (reason, code) => {
    const run = await shim(gcEnv, gcConf({ "cni.dev/valid-attachments": [] }), {
      fail: new TrellisError(reason, `gc failed with ${reason}`),
    });
    expect(cniError(run)).toEqual({ cniVersion: "1.1.0", code, msg: `gc failed with ${reason}`, details: `reason ${reason}` });
  });
});

describe("runShim: daemon errors map to CNI codes", () => {
  it.each<[Reason, number]>([
    ["UNAVAILABLE", 11],
    ["TIMEOUT", 11],
    ["CONFLICT", 11],
    ["EXHAUSTED", 101],
    ["ALREADY_EXISTS", 100],
    ["VERSION_SKEW", 102],
    ["INVALID_ARGUMENT", 7],
    ["NOT_FOUND", 3],
    ["KERNEL", 999],
    ["INTERNAL", 999],
  ])("ADD failing with %s -> code %s, one JSON object, the reason in details", async (reason, code) => {
    const run = await shim(addEnv, conf({ cniVersion: "1.0.0" }), { fail: new TrellisError(reason, `failed with ${reason}`) });
    const err = cniError(run);
    expect(err).toEqual({ cniVersion: "1.0.0", code, msg: `failed with ${reason}`, details: `reason ${reason}` });
  });

  it("a non-Trellis error is 999 internal error", async () => {
    const err = cniError(await shim(addEnv, conf(), { fail: new RangeError("boom") }));
    expect(err.code).toBe(999);
    expect(err.msg).toContain("internal error");
  });
});
