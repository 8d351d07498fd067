import { describe, expect, it } from "vitest";
import {
  createSubnetPool,
  FreeSubnets,
  freeSubnetCount,
  pickFreeSubnet,
  type SubnetPool,
} from "../../../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../../../proto/core/cidr.js";
import { seeded } from "../../../support/prng.js";
import { rejectsWith, trellisErrorOf } from "../../expect-error.js";

const cidr = (text: string) => Cidr.parse(text);
const pool = (cluster: string, prefix: number) => createSubnetPool(cidr(cluster), prefix);
const strings = (cs: readonly Cidr[]) => cs.map((c) => c.toString());

/** Deterministic PRNG (mulberry32) so a failing property run can be replayed from its seed. */

describe("createSubnetPool", () => {
  it("keeps the cluster and the subnet size", () => {
    const p = pool("10.244.0.0/16", 24);
    expect(p.cluster.toString()).toBe("10.244.0.0/16");
    expect(p.prefixLength).toBe(24);
  });

  it.each([
    ["10.244.0.0/25", 24],
    ["10.244.0.0/24", 16],
    ["10.0.0.0/30", 29],
  ])("rejects cluster %s smaller than one /%s subnet, naming both", (cluster, prefix) => {
    const err = trellisErrorOf(() => pool(cluster, prefix));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain(cluster);
    expect(err.message).toContain(`/${prefix}`);
  });

  it.each([0, 31, 32, 24.5, -1])("rejects subnet size /%s", (prefix) => {
    const err = trellisErrorOf(() => pool("10.244.0.0/16", prefix));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain(`/${prefix}`);
  });

  it("accepts a cluster exactly one subnet large", () => {
    expect(pool("10.244.0.0/24", 24).cluster.subnetCount(24)).toBe(1n);
  });
});

describe("pickFreeSubnet without rand: lowest free", () => {
  it("skips index 0 when the pool has at least 4 subnets", () => {
    expect(pickFreeSubnet(pool("10.244.0.0/16", 24), []).toString()).toBe("10.244.1.0/24");
    expect(pickFreeSubnet(pool("10.244.0.0/22", 24), []).toString()).toBe("10.244.1.0/24");
  });

  it.each([
    ["10.244.0.0/24", 24, "10.244.0.0/24"],
    ["10.244.0.0/23", 24, "10.244.0.0/24"],
  ])("uses index 0 of %s when it has fewer than 4 /%s subnets", (cluster, prefix, expected) => {
    expect(pickFreeSubnet(pool(cluster, prefix), []).toString()).toBe(expected);
  });

  it("returns the lowest subnet not leased", () => {
    const p = pool("10.244.0.0/16", 24);
    const leased = [cidr("10.244.1.0/24"), cidr("10.244.2.0/24"), cidr("10.244.4.0/24")];
    expect(pickFreeSubnet(p, leased).toString()).toBe("10.244.3.0/24");
  });

  it("treats a lease of another size that overlaps a subnet as taking it", () => {
    const p = pool("10.244.0.0/16", 24);
    expect(pickFreeSubnet(p, [cidr("10.244.1.128/25")]).toString()).toBe("10.244.2.0/24");
    expect(pickFreeSubnet(p, [cidr("10.244.0.0/23")]).toString()).toBe("10.244.2.0/24");
  });

  it("ignores leases outside the cluster", () => {
    expect(pickFreeSubnet(pool("10.244.0.0/16", 24), [cidr("10.245.1.0/24")]).toString()).toBe("10.244.1.0/24");
  });
});

describe("pickFreeSubnet with rand", () => {
  // 10.244.0.0/20 in /24s: 16 subnets, index 0 reserved, 15 usable (indexes 1..15).
  const p = pool("10.244.0.0/20", 24);

  it.each([
    [0, "10.244.1.0/24"],
    [0.5, "10.244.8.0/24"], // start floor(0.5*15)=7 -> index 8
    [0.9999, "10.244.15.0/24"],
    [1, "10.244.1.0/24"], // an out-of-contract 1.0 wraps instead of leaving the cluster
  ])("rand() = %s with nothing leased picks %s", (r, expected) => {
    expect(pickFreeSubnet(p, [], () => r).toString()).toBe(expected);
  });

  it("scans forward from the random start past leased subnets", () => {
    const leased = [cidr("10.244.8.0/24"), cidr("10.244.9.0/24")];
    expect(pickFreeSubnet(p, leased, () => 0.5).toString()).toBe("10.244.10.0/24");
  });

  it("wraps to the start of the usable range, never to index 0", () => {
    const leased = [cidr("10.244.15.0/24")];
    expect(pickFreeSubnet(p, leased, () => 0.9999).toString()).toBe("10.244.1.0/24");
  });

  it("returns the only free subnet whatever rand says", () => {
    const leased = Array.from({ length: 15 }, (_, i) => p.cluster.subnet(24, BigInt(i + 1))).filter(
      (c) => c.toString() !== "10.244.6.0/24",
    );
    for (const r of [0, 0.1, 0.37, 0.5, 0.77, 0.9999]) {
      expect(pickFreeSubnet(p, leased, () => r).toString()).toBe("10.244.6.0/24");
    }
  });
});

describe("pickFreeSubnet exhaustion", () => {
  it.each([undefined, () => 0.42])("throws EXHAUSTED when every usable subnet is leased (rand %s)", async (rand) => {
    const p = pool("10.244.0.0/22", 24);
    const leased = [1n, 2n, 3n].map((i) => p.cluster.subnet(24, i));
    const err = await rejectsWith(
      Promise.resolve().then(() => pickFreeSubnet(p, leased, rand)),
      "EXHAUSTED",
    );
    expect(err.message).toContain("10.244.0.0/22");
    expect(err.message).toContain("/24");
  });

  it("a small pool is exhausted only when index 0 is leased too", () => {
    const p = pool("10.244.0.0/23", 24);
    expect(pickFreeSubnet(p, [cidr("10.244.0.0/24")]).toString()).toBe("10.244.1.0/24");
    expect(() => pickFreeSubnet(p, [cidr("10.244.0.0/24"), cidr("10.244.1.0/24")])).toThrow(/no free \/24 subnet/);
  });
});

describe("pickFreeSubnet property: picking until exhausted", () => {
  const cases: Array<[string, number, number]> = [];
  for (const [cluster, prefix] of [
    ["10.244.0.0/16", 24],
    ["10.244.0.0/20", 24],
    ["10.8.0.0/22", 26],
    ["10.244.0.0/23", 24],
    ["172.16.0.0/24", 30],
  ] as const) {
    for (const seed of [1, 2, 3, 0xdecaf]) cases.push([cluster, prefix, seed]);
  }

  it.each(cases)("%s in /%s, seed %s: distinct, inside, count = usable subnets", (cluster, prefix, seed) => {
    const p: SubnetPool = pool(cluster, prefix);
    const rand = seeded(seed);
    const leased: Cidr[] = [];
    for (;;) {
      let next: Cidr;
      try {
        next = pickFreeSubnet(p, leased, rand);
      } catch (err) {
        expect((err as { reason?: string }).reason).toBe("EXHAUSTED");
        break;
      }
      expect(leased.some((l) => l.overlaps(next))).toBe(false);
      leased.push(next);
      if (leased.length > 100_000) throw new Error("pickFreeSubnet never ran out");
    }
    const count = p.cluster.subnetCount(prefix);
    const expected = count >= 4n ? count - 1n : count;
    expect(BigInt(leased.length)).toBe(expected);
    expect(new Set(strings(leased)).size).toBe(leased.length);
    for (const s of leased) {
      expect(s.prefixLength).toBe(prefix);
      expect(p.cluster.covers(s)).toBe(true);
    }
    if (count >= 4n) expect(strings(leased)).not.toContain(p.cluster.subnet(prefix, 0n).toString());
  });
});

describe("pickFreeSubnet with freed subnets: never-used first, then the one freed longest ago", () => {
  // 10.244.0.0/22 in /24s: .1, .2 and .3 usable (index 0 stays unused)
  const small = pool("10.244.0.0/22", 24);
  const freed = (...entries: Array<[string, number]>) => entries.map(([s, rev]) => ({ subnet: cidr(s), freedRevision: BigInt(rev) }));

  it("skips a freed subnet while a never-used one is left, with or without rand", () => {
    const p = pool("10.244.0.0/16", 24);
    const f = freed(["10.244.2.0/24", 10]);
    expect(pickFreeSubnet(p, [cidr("10.244.1.0/24"), cidr("10.244.3.0/24")], undefined, f).toString()).toBe("10.244.4.0/24");
    const onlyOneNeverUsed = freed(["10.244.1.0/24", 5], ["10.244.2.0/24", 6]);
    for (const r of [0, 0.1, 0.5, 0.9999]) expect(pickFreeSubnet(small, [], () => r, onlyOneNeverUsed).toString()).toBe("10.244.3.0/24");
  });

  it("with only freed subnets left, takes the oldest-freed, not the lowest", () => {
    expect(
      pickFreeSubnet(small, [], undefined, freed(["10.244.1.0/24", 30], ["10.244.3.0/24", 10], ["10.244.2.0/24", 20])).toString(),
    ).toBe("10.244.3.0/24");
    expect(pickFreeSubnet(small, [cidr("10.244.3.0/24")], undefined, freed(["10.244.1.0/24", 30], ["10.244.2.0/24", 20])).toString()).toBe(
      "10.244.2.0/24",
    );
  });

  it("with rand, spreads over the older half of the freed subnets only", () => {
    const p = pool("10.244.0.0/21", 24); // 7 usable: .1 to .7
    const f = freed(["10.244.1.0/24", 1], ["10.244.2.0/24", 7], ["10.244.3.0/24", 3], ["10.244.4.0/24", 5]);
    const leased = [cidr("10.244.5.0/24"), cidr("10.244.6.0/24"), cidr("10.244.7.0/24")];
    const picks = new Set([0, 0.2, 0.49, 0.5, 0.7, 0.9999].map((r) => pickFreeSubnet(p, leased, () => r, f).toString()));
    expect([...picks].sort()).toEqual(["10.244.1.0/24", "10.244.3.0/24"]);
  });

  it("ignores freed records of leased subnets, other sizes, subnets outside the cluster and the unused first subnet", () => {
    const f = freed(["10.244.1.0/24", 1], ["10.244.2.0/25", 2], ["10.9.0.0/24", 3], ["10.244.0.0/24", 4], ["10.244.3.0/24", 9]);
    expect(pickFreeSubnet(small, [cidr("10.244.1.0/24")], undefined, f).toString()).toBe("10.244.2.0/24"); // never used as a /24
    expect(pickFreeSubnet(small, [cidr("10.244.1.0/24"), cidr("10.244.2.0/24")], undefined, f).toString()).toBe("10.244.3.0/24");
  });

  it("throws EXHAUSTED when every subnet is leased, whatever was freed before", () => {
    const leased = [1n, 2n, 3n].map((i) => small.cluster.subnet(24, i));
    expect(() => pickFreeSubnet(small, leased, undefined, freed(["10.244.1.0/24", 1]))).toThrow(/no free \/24 subnet/);
  });
});

describe("freeSubnetCount (trellis_subnets_free)", () => {
  it.each<[string, number, number, number]>([
    ["10.244.0.0/16", 24, 0, 255], // the first /24 stays unused (pickFreeSubnet never hands it out)
    ["10.244.0.0/16", 24, 3, 252],
    ["10.244.0.0/24", 26, 1, 2], // 4 subnets, the first unused
    ["10.244.0.0/24", 25, 1, 1], // 2 subnets: both usable
    ["10.244.0.0/24", 25, 5, 0], // never below 0
  ])("%s in /%i with %i leased: %i free", (cluster, prefix, leased, free) => {
    expect(freeSubnetCount(pool(cluster, prefix), leased)).toBe(free);
  });

  it("agrees with pickFreeSubnet: exactly that many picks succeed", () => {
    const p = pool("10.244.0.0/24", 27);
    const leased: Cidr[] = [];
    while (freeSubnetCount(p, leased.length) > 0) leased.push(pickFreeSubnet(p, leased));
    expect(leased).toHaveLength(7);
    expect(() => pickFreeSubnet(p, leased)).toThrow(/no free \/27 subnet left/);
  });
});

describe("FreeSubnets: one view, many picks", () => {
  it("picks from one index exactly as pickFreeSubnet would from the same leases, as subnets are marked taken", () => {
    const p = pool("10.244.0.0/20", 24);
    const leased = [cidr("10.244.1.0/24"), cidr("10.244.3.0/24"), cidr("10.244.4.0/25")];
    const free = new FreeSubnets(p, leased, [{ subnet: cidr("10.244.2.0/24"), freedRevision: 5n }]);
    const taken = [...leased];
    for (let i = 0; i < 12; i++) {
      const rand = i % 3 === 2 ? () => 0.5 : undefined; // every third pick random, the same draw on both sides
      const expected = pickFreeSubnet(p, taken, rand, [{ subnet: cidr("10.244.2.0/24"), freedRevision: 5n }]);
      const got = free.pick(rand);
      expect(got.toString()).toBe(expected.toString());
      free.markTaken(got);
      taken.push(got);
    }
    expect(() => free.pick()).toThrow(/no free \/24 subnet left .*\(15 leased\)/);
  });

  it("skips what the caller also counts as taken without losing it for later picks", () => {
    const free = new FreeSubnets(pool("10.244.0.0/16", 24), [cidr("10.244.1.0/24")]);
    expect(free.pick(undefined, [cidr("10.244.2.0/23")]).toString()).toBe("10.244.4.0/24");
    expect(free.pick().toString()).toBe("10.244.2.0/24");
  });

  it("answers isFree and wasFreed for subnets of the pool's size", () => {
    const free = new FreeSubnets(
      pool("10.244.0.0/16", 24),
      [cidr("10.244.1.0/24"), cidr("10.244.8.0/23")],
      [{ subnet: cidr("10.244.5.0/24"), freedRevision: 2n }],
    );
    expect(free.isFree(cidr("10.244.1.0/24"))).toBe(false);
    expect(free.isFree(cidr("10.244.9.0/24"))).toBe(false); // inside a leased /23
    expect(free.isFree(cidr("10.244.5.0/24"))).toBe(true);
    expect(free.isFree(cidr("10.244.6.0/24"), [cidr("10.244.6.0/24")])).toBe(false);
    expect(free.wasFreed(cidr("10.244.5.0/24"))).toBe(true);
    expect(free.wasFreed(cidr("10.244.6.0/24"))).toBe(false);
  });

  it("costs about the subnets it passes over: 5000 picks from a /8 with 5000 leased take well under a second", () => {
    const p = pool("10.0.0.0/8", 24);
    const leased = Array.from({ length: 5000 }, (_, i) => p.cluster.subnet(24, BigInt(i + 1)));
    const free = new FreeSubnets(p, leased);
    const started = performance.now();
    for (let i = 0; i < 5000; i++) free.markTaken(free.pick());
    expect(performance.now() - started).toBeLessThan(2_000); // an index per pick (pickFreeSubnet) takes about 4 s here
    expect(free.pick().toString()).toBe("10.39.17.0/24"); // subnet 10001
  });
});
