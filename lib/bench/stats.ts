/**
 * Pure statistics for the benchmark: percentiles, latency summaries and CDF points. No I/O,
 * no clock: the unit tests pin every definition.
 */

/**
 * The nearest-rank percentile of sorted values: the smallest value such that at least `p`
 * percent of the values are at or below it (`p` in 0..100; p = 0 gives the minimum). Null for
 * no values.
 */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within 0..100, got ${p}`);
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1] as number;
}

export interface LatencySummary {
  count: number;
  meanMs: number | null;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

/** Summary of latencies (ms); values are rounded to 0.1 ms. */
export function summarize(values: readonly number[]): LatencySummary {
  const sorted = [...values].sort((a, b) => a - b);
  const round = (value: number | null) => (value === null ? null : Math.round(value * 10) / 10);
  const mean = sorted.length === 0 ? null : sorted.reduce((sum, value) => sum + value, 0) / sorted.length;
  return {
    count: sorted.length,
    meanMs: round(mean),
    p50Ms: round(percentile(sorted, 50)),
    p95Ms: round(percentile(sorted, 95)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted.at(-1) ?? null),
  };
}

/**
 * Points of the empirical CDF of `values`, at most `pointsMax` of them (evenly spaced in rank,
 * always including the minimum and the maximum): `[value, fraction at or below]`.
 */
export function cdfPoints(values: readonly number[], pointsMax = 200): [number, number][] {
  if (pointsMax < 2) throw new RangeError('a CDF needs at least 2 points');
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return [];
  const points: [number, number][] = [];
  const steps = Math.min(n, pointsMax);
  for (let step = 0; step < steps; step += 1) {
    const rank = steps === 1 ? n : Math.max(1, Math.round(1 + (step * (n - 1)) / (steps - 1)));
    points.push([sorted[rank - 1] as number, rank / n]);
  }
  return points;
}

/** Operations per second, or 0 for an empty interval. */
export function rate(count: number, elapsedMs: number): number {
  return elapsedMs <= 0 ? 0 : (count * 1000) / elapsedMs;
}

/** Rounds to `digits` decimals (for reports). */
export function round(value: number, digits = 1): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/**
 * Median of unsorted values (the mean of the middle two for an even count), or null. Unlike the
 * latency percentiles this summarizes a handful of runs, where the nearest rank would report
 * the lower middle run as "the median".
 */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
