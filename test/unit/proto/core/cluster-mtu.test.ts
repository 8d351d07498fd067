import { describe, expect, it } from "vitest";
import { clusterMtu } from "../../../../proto/core/cluster-mtu.js";

describe("clusterMtu: the most common MTU among live nodes", () => {
  it.each<[number[], number | undefined]>([
    [[], undefined],
    [[1500], 1500],
    [[1500, 1500, 1400], 1500],
    [[9000, 1500, 9000], 9000],
    // a tie goes to the smaller MTU: it fits every path
    [[1500, 9000], 1500],
    [[9000, 9000, 1450, 1450, 1500], 1450],
    // 0 is "unknown" (a node that did not say), never a vote
    [[0, 0, 1500], 1500],
  ])("%j -> %s", (mtus, expected) => {
    expect(clusterMtu(mtus)).toBe(expected);
  });
});
