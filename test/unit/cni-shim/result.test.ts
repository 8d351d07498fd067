import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { CniError, cniCodes, latestCniVersion, toCniError, toCniResult, versionResult } from "../../../cni-shim/result.js";
import { reasons, TrellisError, type Reason } from "../../../proto/common/errors.js";
import { AddAttachmentResponseSchema, InterfaceSchema, IpConfigSchema, RouteSchema } from "../../../proto/gen/trellis/cni/v1/cni_pb.js";

describe("toCniError", () => {
  // STYLE.md §6, CNI code column.
  const table: Record<Reason, number> = {
    INVALID_ARGUMENT: 7,
    NOT_FOUND: 3,
    ALREADY_EXISTS: 100,
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
    expect(toCniError(new CniError(cniCodes.invalidEnv, "CNI_PATH is not set"), "1.1.0")).toEqual({ cniVersion: "1.1.0", code: 4, msg: "CNI_PATH is not set" });
    expect(toCniError(new CniError(cniCodes.decode, "bad", "at line 1"))).toEqual({ cniVersion: latestCniVersion, code: 6, msg: "bad", details: "at line 1" });
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

describe("versionResult", () => {
  it("names the version and every supported one", () => {
    expect(versionResult("1.0.0")).toEqual({ cniVersion: "1.0.0", supportedVersions: ["1.0.0", "1.1.0"] });
  });
});
