import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { runShim } from "../../../cni-shim/skel.js";
import { TrellisError, type Reason } from "../../../proto/common/errors.js";
import { AddAttachmentResponseSchema, InterfaceSchema, IpConfigSchema, RouteSchema } from "../../../proto/gen/trellis/cni/v1/cni_pb.js";
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

async function shim(env: Record<string, string | undefined>, stdin: string | Error, opts: { fail?: unknown; paths?: string[] } = {}): Promise<Run> {
  const io = new FakeShimIo(env, stdin, new Set(opts.paths ?? [netns]));
  const daemon = new FakeDaemonClient(reply);
  if (opts.fail !== undefined) daemon.fail = opts.fail;
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

describe("runShim: VERSION", () => {
  it.each([
    [JSON.stringify({ cniVersion: "1.0.0" }), "1.0.0"],
    [JSON.stringify({ cniVersion: "1.1.0" }), "1.1.0"],
    ["", "1.1.0"],
    [JSON.stringify({ cniVersion: "0.3.1" }), "1.1.0"],
  ])("stdin %j answers cniVersion %s and the supported versions", async (stdin, version) => {
    const run = await shim({ CNI_COMMAND: "VERSION" }, stdin);
    expect(run.code).toBe(0);
    expect(run.io.stdout.map((s) => JSON.parse(s) as unknown)).toEqual([{ cniVersion: version, supportedVersions: ["1.0.0", "1.1.0"] }]);
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
    ["unsupported cniVersion", addEnv, conf({ cniVersion: "0.4.0" }), 1, "0.4.0"],
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
  ])("%s -> code %s", async (_what, env, stdin, code, inMessage) => {
    const run = await shim(env, stdin);
    const err = cniError(run);
    expect(err.code).toBe(code);
    expect(err.msg).toContain(inMessage);
    expect(run.sockets).toEqual([]);
    expect(run.daemon.added).toEqual([]);
    expect(run.daemon.deleted).toEqual([]);
  });

  it("an error answers in the request's cniVersion when it is a supported one", async () => {
    expect(cniError(await shim({ ...addEnv, CNI_CONTAINERID: "" }, conf({ cniVersion: "1.0.0" }))).cniVersion).toBe("1.0.0");
    expect(cniError(await shim({ ...addEnv, CNI_CONTAINERID: "" }, conf({ cniVersion: "0.4.0" }))).cniVersion).toBe("1.1.0");
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
  // request that the daemon completes when it is back". cni-shim/skel.ts does not implement this yet:
  // an UNAVAILABLE daemon makes DEL fail with code 11. Flip to `it` when it does.
  it.fails("DEL succeeds when the daemon is unreachable (STYLE.md §6; not implemented)", async () => {
    const run = await shim(delEnv, conf(), { fail: new TrellisError("UNAVAILABLE", "node daemon at /run/trellis/cni.sock: connect ENOENT") });
    expect(run.code).toBe(0);
    expect(run.io.stdout).toEqual([]);
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
