import { describe, expect, it } from "vitest";
import { gatewayOf, pickFreeAddress, podAddressCount } from "../../../../node-daemon/ipam/pod-allocator.js";
import { Cidr, formatIpv4, parseIpv4 } from "../../../../proto/core/cidr.js";
import { rejectsWith } from "../../expect-error.js";

const ip = (text: string) => parseIpv4(text);
const taken = (...addresses: string[]) => new Set(addresses.map(ip));
const pick = (subnet: string, used: ReadonlySet<bigint>, after?: string) =>
  formatIpv4(pickFreeAddress(Cidr.parse(subnet), used, after === undefined ? undefined : ip(after)));

/** Picks until EXHAUSTED, like an allocator that never frees; returns the addresses in order. */
function drain(subnet: Cidr): string[] {
  const used = new Set<bigint>();
  const out: string[] = [];
  let after: bigint | undefined;
  for (;;) {
    try {
      after = pickFreeAddress(subnet, used, after);
    } catch {
      return out;
    }
    used.add(after);
    out.push(formatIpv4(after));
    if (out.length > 70_000) throw new Error("never exhausted");
  }
}

describe("gatewayOf / podAddressCount", () => {
  it("the gateway is the first host address", () => {
    expect(formatIpv4(gatewayOf(Cidr.parse("10.244.3.0/24")))).toBe("10.244.3.1");
  });

  it.each([
    ["10.244.3.0/24", 253n],
    ["10.244.3.0/29", 5n],
    ["10.244.3.0/30", 1n],
  ])("%s has %s pod addresses", (subnet, count) => {
    expect(podAddressCount(Cidr.parse(subnet))).toBe(count);
  });
});

describe("pickFreeAddress", () => {
  it("starts at .2: skips the network address and the gateway", () => {
    expect(pick("10.244.3.0/24", taken())).toBe("10.244.3.2");
  });

  it("skips taken addresses", () => {
    expect(pick("10.244.3.0/24", taken("10.244.3.2", "10.244.3.3", "10.244.3.5"))).toBe("10.244.3.4");
  });

  it.each([
    ["10.244.3.2", "10.244.3.3"],
    ["10.244.3.100", "10.244.3.101"],
    ["10.244.3.253", "10.244.3.254"],
    ["10.244.3.254", "10.244.3.2"], // wraps past the broadcast address
  ])("round-robin: after %s comes %s", (after, expected) => {
    expect(pick("10.244.3.0/24", taken(after), after)).toBe(expected);
  });

  it("does not reuse a released address at once", () => {
    // .2 and .3 handed out, .2 released: the next one is .4, not .2.
    expect(pick("10.244.3.0/24", taken("10.244.3.3"), "10.244.3.3")).toBe("10.244.3.4");
  });

  it("wraps to a free address below `after`", () => {
    const used = taken(...Array.from({ length: 253 }, (_, i) => `10.244.3.${i + 2}`).filter((a) => a !== "10.244.3.7"));
    expect(pick("10.244.3.0/24", used, "10.244.3.200")).toBe("10.244.3.7");
  });

  it.each([
    ["the gateway", "10.244.3.1"],
    ["the network address", "10.244.3.0"],
    ["the broadcast address", "10.244.3.255"],
    ["an address outside the subnet", "10.244.4.9"],
  ])("`after` = %s starts from the beginning", (_what, after) => {
    expect(pick("10.244.3.0/24", taken(), after)).toBe("10.244.3.2");
  });

  it("a /29 has exactly 5 pod addresses: .2 to .6", () => {
    expect(drain(Cidr.parse("10.244.3.8/29"))).toEqual(["10.244.3.10", "10.244.3.11", "10.244.3.12", "10.244.3.13", "10.244.3.14"]);
  });

  it("never hands out network, gateway or broadcast of a /24, and hands out all 253 others", () => {
    const out = drain(Cidr.parse("10.244.3.0/24"));
    expect(out).toHaveLength(253);
    expect(new Set(out).size).toBe(253);
    expect(out).not.toContain("10.244.3.0");
    expect(out).not.toContain("10.244.3.1");
    expect(out).not.toContain("10.244.3.255");
  });

  it("EXHAUSTED when full, and the message says the subnet is full", async () => {
    const subnet = Cidr.parse("10.244.3.8/29");
    const used = taken("10.244.3.10", "10.244.3.11", "10.244.3.12", "10.244.3.13", "10.244.3.14");
    const err = await rejectsWith(
      Promise.resolve().then(() => pickFreeAddress(subnet, used, ip("10.244.3.12"))),
      "EXHAUSTED",
    );
    expect(err.message).toContain("10.244.3.8/29 is full");
    expect(err.message).toContain("5 pod addresses");
  });

  it.each(["10.244.3.0/31", "10.244.3.7/32"])("EXHAUSTED for %s, which has no room for pods", async (subnet) => {
    const err = await rejectsWith(
      Promise.resolve().then(() => pickFreeAddress(Cidr.parse(subnet), new Set())),
      "EXHAUSTED",
    );
    expect(err.message).toContain(subnet);
  });
});
