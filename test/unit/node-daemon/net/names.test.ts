import { describe, expect, it } from "vitest";
import { hostVethName, isHostVethName, macFor } from "../../../../node-daemon/net/names.js";
import { parseIpv4 } from "../../../../proto/core/cidr.js";
import { invalidIfNameReason } from "../../../../proto/core/cni-names.js";

describe("hostVethName", () => {
  const ids: Array<[string, string]> = [
    ["abc123", "eth0"],
    ["4f1c7e0f2b9d4a8e9c3b5a7d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f", "eth0"],
    ["abc123", "net1"],
    ["x", "é"],
  ];

  it.each(ids)("for %s/%s is tr + 11 hex chars, 13 bytes, and recognised", (containerId, ifName) => {
    const name = hostVethName(containerId, ifName);
    expect(name).toMatch(/^tr[0-9a-f]{11}$/);
    expect(name).toHaveLength(13);
    expect(Buffer.byteLength(name)).toBeLessThanOrEqual(15);
    expect(invalidIfNameReason(name)).toBeUndefined();
    expect(isHostVethName(name)).toBe(true);
  });

  it("is deterministic", () => {
    expect(hostVethName("abc123", "eth0")).toBe(hostVethName("abc123", "eth0"));
  });

  it("is the sha256 prefix of containerId/ifName", () => {
    // sha256("abc123/eth0"), computed independently: printf 'abc123/eth0' | sha256sum
    expect(hostVethName("abc123", "eth0")).toBe("trb52a0cba512");
  });

  it("differs by container and by interface", () => {
    const names = new Set(ids.map(([c, i]) => hostVethName(c, i)));
    expect(names.size).toBe(ids.length);
  });
});

describe("isHostVethName", () => {
  it.each([
    ["tr0123456789a", true],
    ["tr0123456789", false],
    ["tr0123456789ab", false],
    ["tr0123456789A", false],
    ["trellis0", false],
    ["veth1234", false],
    ["xr0123456789a", false],
    ["", false],
  ])("%j: %s", (name, expected) => {
    expect(isHostVethName(name)).toBe(expected);
  });
});

describe("invalidIfNameReason", () => {
  it.each([
    ["eth0", undefined],
    ["trellis0", undefined],
    ["a", undefined],
    ["fifteen-chars15", undefined],
    ["sixteen-chars-16", "is 16 bytes long; Linux allows at most 15 bytes"],
    ["éééééééé", "is 16 bytes long; Linux allows at most 15 bytes"],
    ["", "is empty"],
    [".", "may not be . or .."],
    ["..", "may not be . or .."],
    ["br/0", "may not contain '/', ':' or whitespace"],
    ["eth0:1", "may not contain '/', ':' or whitespace"],
    ["eth 0", "may not contain '/', ':' or whitespace"],
    ["eth\t0", "may not contain '/', ':' or whitespace"],
    ["eth0\n", "may not contain '/', ':' or whitespace"],
  ])("%j -> %s", (name, reason) => {
    expect(invalidIfNameReason(name)).toBe(reason);
  });
});

describe("macFor", () => {
  it.each([
    ["10.244.3.7", "pod", "0a:58:0a:f4:03:07"],
    ["10.244.3.7", "host", "0a:59:0a:f4:03:07"],
    ["10.244.3.1", "bridge", "0a:5a:0a:f4:03:01"],
    ["0.0.0.0", "pod", "0a:58:00:00:00:00"],
    ["255.255.255.255", "host", "0a:59:ff:ff:ff:ff"],
  ] as const)("%s as %s -> %s", (address, kind, mac) => {
    expect(macFor(parseIpv4(address), kind)).toBe(mac);
  });

  it("is a locally administered unicast address", () => {
    const first = parseInt(macFor(parseIpv4("10.244.3.7"), "pod").slice(0, 2), 16);
    expect(first & 0b10).toBe(0b10); // locally administered
    expect(first & 0b01).toBe(0); // unicast
  });
});
