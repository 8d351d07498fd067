import { describe, expect, it } from "vitest";
import { Cidr, formatIpv4, parseIpv4 } from "../../../../proto/core/cidr.js";
import { trellisErrorOf } from "../../expect-error.js";

const ip = (text: string) => parseIpv4(text);

describe("parseIpv4 / formatIpv4", () => {
  it.each([
    ["0.0.0.0", 0n],
    ["10.244.1.2", (10n << 24n) + (244n << 16n) + (1n << 8n) + 2n],
    ["192.168.0.255", (192n << 24n) + (168n << 16n) + 255n],
    ["255.255.255.255", (1n << 32n) - 1n],
  ])("%s <-> %s", (text, value) => {
    expect(parseIpv4(text)).toBe(value);
    expect(formatIpv4(value)).toBe(text);
  });

  it.each(["", "10.0.0", "10.0.0.256", "10.0.0.1/24", "not-an-ip", " 10.0.0.1", "::1", "010.0.0.1"])(
    "rejects %j with INVALID_ARGUMENT naming what it parsed",
    (text) => {
      const err = trellisErrorOf(() => parseIpv4(text, "--node-ip"));
      expect(err.reason).toBe("INVALID_ARGUMENT");
      expect(err.message).toContain("--node-ip");
      expect(err.message).toContain(JSON.stringify(text));
    },
  );
});

describe("Cidr.parse", () => {
  it.each([
    ["10.244.0.0/16", 16, "10.244.0.0"],
    ["10.244.3.0/24", 24, "10.244.3.0"],
    ["0.0.0.0/0", 0, "0.0.0.0"],
    ["192.168.1.7/32", 32, "192.168.1.7"],
  ])("parses %s", (text, prefix, network) => {
    const cidr = Cidr.parse(text);
    expect(cidr.prefixLength).toBe(prefix);
    expect(cidr.network).toBe(ip(network));
    expect(cidr.toString()).toBe(text);
  });

  it.each([
    ["10.244.1.0/16", "10.244.0.0/16"],
    ["10.244.3.7/24", "10.244.3.0/24"],
    ["192.168.1.1/0", "0.0.0.0/0"],
    ["10.0.0.5/30", "10.0.0.4/30"],
  ])("%s has host bits set: the message suggests %s", (text, canonical) => {
    const err = trellisErrorOf(() => Cidr.parse(text, "--cluster-cidr"));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain("host bits");
    expect(err.message).toContain(`did you mean ${canonical}?`);
    expect(err.message).toContain("--cluster-cidr");
  });

  it.each(["10.244.0.0", "10.244.0.0/", "10.244.0.0/33", "10.244.0.0/-1", "10.244.0.0/1x", "10.244.0.0/100", "10.244.0.0/16/8"])(
    "rejects the bad prefix in %j",
    (text) => {
      const err = trellisErrorOf(() => Cidr.parse(text, "subnet"));
      expect(err.reason).toBe("INVALID_ARGUMENT");
      expect(err.message).toContain(`subnet ${JSON.stringify(text)}`);
      expect(err.message).toContain("not an IPv4 CIDR");
    },
  );

  it.each(["banana/16", "10.244.0/16", "10.244.0.256/24", "/24", "::/0"])("rejects %j whose address is not an IPv4 address", (text) => {
    const err = trellisErrorOf(() => Cidr.parse(text));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(/^CIDR /);
    expect(err.message).toContain("not an IPv4");
  });
});

describe("Cidr arithmetic", () => {
  it.each([
    ["10.0.0.0/8", 1n << 24n],
    ["10.244.0.0/16", 65536n],
    ["10.244.1.0/24", 256n],
    ["10.244.1.0/29", 8n],
    ["10.244.1.1/32", 1n],
    ["0.0.0.0/0", 1n << 32n],
  ])("%s has size %s, network and broadcast included", (text, size) => {
    const cidr = Cidr.parse(text);
    expect(cidr.size).toBe(size);
    expect(cidr.last).toBe(cidr.network + size - 1n);
  });

  it("last is the broadcast address", () => {
    expect(formatIpv4(Cidr.parse("10.244.1.0/24").last)).toBe("10.244.1.255");
  });

  it.each([
    ["10.244.1.0/24", "10.244.1.0", true],
    ["10.244.1.0/24", "10.244.1.255", true],
    ["10.244.1.0/24", "10.244.1.77", true],
    ["10.244.1.0/24", "10.244.0.255", false],
    ["10.244.1.0/24", "10.244.2.0", false],
    ["0.0.0.0/0", "255.255.255.255", true],
  ])("%s contains %s: %s", (cidr, address, expected) => {
    expect(Cidr.parse(cidr).contains(ip(address))).toBe(expected);
  });

  it.each([
    ["10.244.0.0/16", "10.244.3.0/24", true, true],
    ["10.244.0.0/16", "10.244.0.0/16", true, true],
    ["10.244.3.0/24", "10.244.0.0/16", false, true],
    ["10.244.0.0/16", "10.245.0.0/24", false, false],
    ["10.244.3.0/24", "10.244.3.128/25", true, true],
    ["10.244.3.0/25", "10.244.3.128/25", false, false],
    ["10.244.3.0/24", "10.244.4.0/24", false, false],
  ])("%s covers %s: %s; they overlap: %s", (a, b, covers, overlaps) => {
    const [x, y] = [Cidr.parse(a), Cidr.parse(b)];
    expect(x.covers(y)).toBe(covers);
    expect(x.overlaps(y)).toBe(overlaps);
    expect(y.overlaps(x)).toBe(overlaps);
  });

  it.each([
    ["10.244.0.0/16", 24, 256n],
    ["10.244.0.0/16", 16, 1n],
    ["10.244.0.0/16", 26, 1024n],
    ["10.244.0.0/24", 16, 0n],
    ["10.244.0.0/20", 24, 16n],
  ])("%s splits into %s-bit subnets %s times", (text, prefix, count) => {
    expect(Cidr.parse(text).subnetCount(prefix)).toBe(count);
  });

  it.each([
    [0n, "10.244.0.0/24"],
    [1n, "10.244.1.0/24"],
    [255n, "10.244.255.0/24"],
  ])("subnet(24, %s) of 10.244.0.0/16 is %s", (index, expected) => {
    const subnet = Cidr.parse("10.244.0.0/16").subnet(24, index);
    expect(subnet.toString()).toBe(expected);
    expect(subnet.equals(Cidr.parse(expected))).toBe(true);
  });

  it("subnets of a non-octet prefix are contiguous and inside the parent", () => {
    const parent = Cidr.parse("10.244.8.0/22");
    const subnets = Array.from({ length: 16 }, (_, i) => parent.subnet(26, BigInt(i)));
    expect(subnets[0]?.toString()).toBe("10.244.8.0/26");
    expect(subnets[1]?.toString()).toBe("10.244.8.64/26");
    expect(subnets[15]?.toString()).toBe("10.244.11.192/26");
    for (const s of subnets) expect(parent.covers(s)).toBe(true);
  });

  it.each([
    [24, -1n],
    [24, 256n],
    [8, 0n],
  ])("subnet(%s, %s) outside 10.244.0.0/16 is a RangeError", (prefix, index) => {
    expect(() => Cidr.parse("10.244.0.0/16").subnet(prefix, index)).toThrow(RangeError);
  });

  it("address(i) counts from the network address and stays inside", () => {
    const cidr = Cidr.parse("10.244.1.0/24");
    expect(formatIpv4(cidr.address(0n))).toBe("10.244.1.0");
    expect(formatIpv4(cidr.address(5n))).toBe("10.244.1.5");
    expect(() => cidr.address(256n)).toThrow(RangeError);
    expect(() => cidr.address(-1n)).toThrow(RangeError);
  });

  it("of() masks the host bits", () => {
    expect(Cidr.of(ip("10.244.7.9"), 16).toString()).toBe("10.244.0.0/16");
    expect(Cidr.of(ip("10.244.7.9"), 32).toString()).toBe("10.244.7.9/32");
  });

  it("equals compares network and prefix", () => {
    expect(Cidr.parse("10.244.0.0/16").equals(Cidr.parse("10.244.0.0/16"))).toBe(true);
    expect(Cidr.parse("10.244.0.0/16").equals(Cidr.parse("10.244.0.0/17"))).toBe(false);
    expect(Cidr.parse("10.244.0.0/24").equals(Cidr.parse("10.244.1.0/24"))).toBe(false);
  });
});
