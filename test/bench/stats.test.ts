import { describe, expect, it } from 'vitest';
import { cdfPoints, median, percentile, rate, summarize } from '../../lib/bench/stats.ts';

describe('percentile (nearest rank)', () => {
  const values = [15, 20, 35, 40, 50];

  it('matches the nearest-rank definition', () => {
    expect(percentile(values, 5)).toBe(15);
    expect(percentile(values, 30)).toBe(20);
    expect(percentile(values, 40)).toBe(20);
    expect(percentile(values, 50)).toBe(35);
    expect(percentile(values, 100)).toBe(50);
  });

  it('gives the minimum at 0 and null for no values', () => {
    expect(percentile(values, 0)).toBe(15);
    expect(percentile([], 99)).toBeNull();
  });

  it('p99 of 1..100 is 99, p99 of 1..1000 is 990', () => {
    expect(percentile(Array.from({ length: 100 }, (_, index) => index + 1), 99)).toBe(99);
    expect(percentile(Array.from({ length: 1000 }, (_, index) => index + 1), 99)).toBe(990);
  });

  it('refuses a percentile outside 0..100', () => {
    expect(() => percentile(values, 101)).toThrow(RangeError);
    expect(() => percentile(values, Number.NaN)).toThrow(RangeError);
  });
});

describe('summarize', () => {
  it('sorts, rounds to 0.1 ms and reports mean, percentiles and max', () => {
    const summary = summarize([3.04, 1, 2, 10, 4]);
    expect(summary).toEqual({ count: 5, meanMs: 4, p50Ms: 3, p95Ms: 10, p99Ms: 10, maxMs: 10 });
  });

  it('is all null for no values', () => {
    expect(summarize([])).toEqual({ count: 0, meanMs: null, p50Ms: null, p95Ms: null, p99Ms: null, maxMs: null });
  });
});

describe('cdfPoints', () => {
  it('starts at the minimum, ends at the maximum with fraction 1, and never decreases', () => {
    const values = Array.from({ length: 1000 }, (_, index) => ((index * 7919) % 1000) + 1);
    const points = cdfPoints(values, 50);
    expect(points).toHaveLength(50);
    expect(points[0]).toEqual([1, 1 / 1000]);
    expect(points.at(-1)).toEqual([1000, 1]);
    for (let index = 1; index < points.length; index += 1) {
      expect(points[index]![0]).toBeGreaterThanOrEqual(points[index - 1]![0]);
      expect(points[index]![1]).toBeGreaterThan(points[index - 1]![1]);
    }
  });

  it('keeps every point of a small sample and none of an empty one', () => {
    expect(cdfPoints([5, 1, 3])).toEqual([
      [1, 1 / 3],
      [3, 2 / 3],
      [5, 1],
    ]);
    expect(cdfPoints([])).toEqual([]);
  });
});

describe('rate and median', () => {
  it('computes operations per second', () => {
    expect(rate(500, 2_000)).toBe(250);
    expect(rate(10, 0)).toBe(0);
  });

  it('median is the middle value, or the mean of the middle two', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([5, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNull();
  });
});
