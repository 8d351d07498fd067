import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { CniError, cniCodes, latestCniVersion, toCniError, toCniResult, versionAtLeast, versionResult } from "../../../cni-shim/result.js";
import { type Reason, reasons, TrellisError } from "../../../proto/core/errors.js";
import { AddAttachmentResponseSchema, InterfaceSchema, IpConfigSchema, RouteSchema } from "../../../proto/gen/trellis/cni/v1/cni_pb.js";

describe("toCniError", () => {
  // STYLE.md §6, CNI code column.
  const table: Record<Reason, number> = {
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

  it.each(reasons.map((r) => [r, table[r]] as const))("%s -> CNI code %s", (reason, code) => {
    expect(toCniError(new TrellisError(reason, "it failed"), "1.0.0")).toEqual({
      cniVersion: "1.0.0",
      code,
      msg: "it failed",
      details: `reason ${reason}`,
    });
  });

  it("a CniError keeps its own code, and details only when it has some", () => {
    expect(toCniError(new CniError(cniCodes.invalidEnv, "CNI_PATH is not set"), "1.1.0")).toEqual({
      cniVersion: "1.1.0",
      code: 4,
      msg: "CNI_PATH is not set",
    });
    expect(toCniError(new CniError(cniCodes.decode, "bad", "at line 1"))).toEqual({
      cniVersion: latestCniVersion,
      code: 6,
      msg: "bad",
      details: "at line 1",
    });
  });

  it.each([new Error("kaboom"), "a string", undefined])("anything else (%s) is 999 internal error", (err) => {
    const out = toCniError(err);
    expect(out.code).toBe(999);
    expect(out.msg).toBe("internal error in the trellis shim; see its log on stderr");
    expect(out.details).toBeUndefined(); // the cause goes to the log, never to the runtime
  });

  it("the latest version is 1.1.0", () => {
    expect(latestCniVersion).toBe("1.1.0");
  });

  it("STATUS codes are the CNI spec's 50 (plugin not available) and 51 (limited connectivity)", () => {
    expect(cniCodes.notAvailable).toBe(50);
    expect(cniCodes.limitedConnectivity).toBe(51);
    expect(toCniError(new CniError(cniCodes.limitedConnectivity, "routes are stale"), "1.1.0")).toEqual({
      cniVersion: "1.1.0",
      code: 51,
      msg: "routes are stale",
    });
  });
});

describe("versionAtLeast", () => {
  it.each<[string, string, boolean]>([
    ["1.1.0", "1.1.0", true],
    ["1.1.0", "1.0.0", true],
    ["1.0.0", "1.1.0", false],
    ["0.4.0", "0.4.0", true],
    ["0.3.1", "0.4.0", false],
    ["0.3.0", "0.3.1", false],
    ["1.0.0", "0.4.0", true],
    ["0.10.0", "0.4.0", true], // numeric, not text, comparison
    ["0.4.0", "0.10.0", false],
    ["1.0", "1.0.0", true], // a missing part counts as 0
    ["2.0.0", "1.1.0", true],
  ])("%s >= %s is %s", (version, minimum, expected) => {
    expect(versionAtLeast(version, minimum)).toBe(expected);
  });
});

describe("toCniResult", () => {
  it("leaves out empty optional fields", () => {
    const res = create(AddAttachmentResponseSchema, {
      interfaces: [create(InterfaceSchema, { name: "eth0" })],
      ips: [create(IpConfigSchema, { address: "10.244.3.7/24", interface: 0 })],
      routes: [create(RouteSchema, { dst: "10.0.0.0/8" })],
    });
    expect(toCniResult(res, "1.1.0")).toEqual({
      cniVersion: "1.1.0",
      interfaces: [{ name: "eth0" }],
      ips: [{ interface: 0, address: "10.244.3.7/24" }],
      routes: [{ dst: "10.0.0.0/8" }],
      dns: {},
    });
  });

  it.each([
    ["1.0.0", undefined],
    ["1.1.0", 9000],
  ])("mtu of an interface in a %s result: %s", (version, mtu) => {
    const res = create(AddAttachmentResponseSchema, { interfaces: [create(InterfaceSchema, { name: "eth0", mtu: 9000 })] });
    const out = toCniResult(res, version) as { interfaces: Array<{ mtu?: number }> };
    expect(out.interfaces[0]?.mtu).toBe(mtu);
  });
});

describe("toCniResult by version", () => {
  const res = create(AddAttachmentResponseSchema, {
    interfaces: [
      create(InterfaceSchema, { name: "trellis0", mac: "0a:5a:0a:f4:03:01", mtu: 1450 }),
      create(InterfaceSchema, { name: "eth0", mac: "0a:58:0a:f4:03:07", mtu: 1450, sandbox: "/var/run/netns/p" }),
    ],
    ips: [create(IpConfigSchema, { address: "10.244.3.7/24", gateway: "10.244.3.1", interface: 1 })],
    routes: [create(RouteSchema, { dst: "0.0.0.0/0", gw: "10.244.3.1" })],
  });
  const ip = { interface: 1, address: "10.244.3.7/24", gateway: "10.244.3.1" };
  const bridge = { name: "trellis0", mac: "0a:5a:0a:f4:03:01" };
  const pod = { name: "eth0", mac: "0a:58:0a:f4:03:07", sandbox: "/var/run/netns/p" };

  it.each<[string, Record<string, unknown>, Record<string, unknown>, Record<string, unknown>]>([
    ["0.3.0", bridge, pod, { version: "4", ...ip }],
    ["0.3.1", bridge, pod, { version: "4", ...ip }],
    ["0.4.0", bridge, pod, { version: "4", ...ip }],
    ["1.0.0", bridge, pod, ip],
    ["1.1.0", { ...bridge, mtu: 1450 }, { ...pod, mtu: 1450 }, ip],
  ])("a %s result has its version's shape", (version, first, second, firstIp) => {
    expect(toCniResult(res, version)).toEqual({
      cniVersion: version,
      interfaces: [first, second],
      ips: [firstIp],
      routes: [{ dst: "0.0.0.0/0", gw: "10.244.3.1" }],
      dns: {},
    });
  });

  it("a zero mtu is left out of a 1.1.0 result", () => {
    const out = toCniResult(
      create(AddAttachmentResponseSchema, { interfaces: [create(InterfaceSchema, { name: "eth0", mtu: 0 })] }),
      "1.1.0",
    );
    expect(out.interfaces).toEqual([{ name: "eth0" }]);
  });
});

describe("versionResult", () => {
  it.each(["0.3.1", "1.0.0", "1.1.0"])("names the version %s and every supported one, oldest first", (version) => {
    expect(versionResult(version)).toEqual({ cniVersion: version, supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
  });

  it("is a copy: changing it does not change the next answer", () => {
    (versionResult("1.1.0").supportedVersions as string[]).push("9.9.9");
    expect(versionResult("1.1.0").supportedVersions).toHaveLength(5);
  });
});
