/**
 * The cluster's MTU (DESIGN.md §1): the most common MTU among live nodes; a tie goes to the smaller, which
 * fits every path. 0 means a node did not say, and does not count. Undefined when no node said. Pure.
 */
export function clusterMtu(mtus: Iterable<number>): number | undefined {
  const counts = new Map<number, number>();
  for (const m of mtus) if (m > 0) counts.set(m, (counts.get(m) ?? 0) + 1);
  let best: number | undefined;
  let bestCount = 0;
  for (const [mtu, count] of counts) {
    if (count > bestCount || (count === bestCount && best !== undefined && mtu < best)) {
      best = mtu;
      bestCount = count;
    }
  }
  return best;
}
