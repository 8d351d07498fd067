// Reads the Prometheus text format (what GET /metrics answers) into samples, for tests that check numbers.

/** Samples by series: `name{label="value",...}` with labels sorted by name, or just `name`. */
export type Samples = ReadonlyMap<string, number>;

export function seriesKey(name: string, labels: Readonly<Record<string, string>> = {}): string {
  const pairs = Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return pairs.length === 0 ? name : `${name}{${pairs.join(",")}}`;
}

/** Parses exposition text; throws on a line it does not understand, so a test never checks half a scrape. */
export function parseMetrics(text: string): Samples {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m?.[1] || m[3] === undefined) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] ?? ""] = JSON.parse(`"${l[2] ?? ""}"`) as string;
    const value = m[3] === "+Inf" ? Number.POSITIVE_INFINITY : m[3] === "-Inf" ? Number.NEGATIVE_INFINITY : Number(m[3]);
    samples.set(seriesKey(m[1], labels), value);
  }
  return samples;
}

/** The value of one series; undefined when the scrape has none. */
export function sampleOf(samples: Samples, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  return samples.get(seriesKey(name, labels));
}
