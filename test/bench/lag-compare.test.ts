import { describe, expect, inject, it } from 'vitest';
import { parseVariant, roundOrder, runLagCompare } from '../../lib/bench/lag-compare.ts';
import { median, round } from '../../lib/bench/stats.ts';

describe('bench:lag variants', () => {
  it('parses apply settings, with "Infinity" turning pulls off', () => {
    expect(parseVariant('{}')).toEqual({});
    expect(parseVariant('{"pullEveryMs":100,"pullBackoffFactor":1,"pollers":4,"batchSize":2}')).toEqual({ pullEveryMs: 100, pullBackoffFactor: 1, pollers: 4, batchSize: 2 });
    expect(parseVariant('{"pullAfterQueuedMs":"Infinity"}')).toEqual({ pullAfterQueuedMs: Number.POSITIVE_INFINITY });
  });

  it('refuses what is not a known setting in range, saying what to fix', () => {
    expect(() => parseVariant('pullEveryMs=50')).toThrow(/is not JSON: write an object/);
    expect(() => parseVariant('[1]')).toThrow(/must be a JSON object/);
    expect(() => parseVariant('{"pullEvery":50}')).toThrow(/unknown setting "pullEvery"; known: pullAfterQueuedMs/);
    expect(() => parseVariant('{"pullEveryMs":-1}')).toThrow(/pullEveryMs must be a number from 0 to 60000, got -1/);
    expect(() => parseVariant('{"pollers":2.5}')).toThrow(/pollers must be an integer from 1 to 10/);
    expect(() => parseVariant('{"batchSize":"3"}')).toThrow(/batchSize must be an integer from 1 to 10, got "3"/);
  });
});

describe('bench:lag order', () => {
  it('rotates the variants by one each round, so each runs in each place equally often', () => {
    expect([0, 1, 2, 3].map((round) => roundOrder(2, round))).toEqual([[0, 1], [1, 0], [0, 1], [1, 0]]);
    const three = [0, 1, 2].map((round) => roundOrder(3, round));
    expect(three).toEqual([[0, 1, 2], [1, 2, 0], [2, 0, 1]]);
    for (let variant = 0; variant < 3; variant += 1) {
      // Over three rounds, variant runs once in each place.
      expect(three.map((order) => order.indexOf(variant)).sort()).toEqual([0, 1, 2]);
    }
    expect(roundOrder(1, 5)).toEqual([0]);
  });
});

describe('bench:lag run', () => {
  it('measures the lag of each variant on a fresh cluster and prints a line per run and a median per variant', async () => {
    const lines: string[] = [];
    const runs = await runLagCompare({
      ratePerSecond: 40,
      seconds: 2,
      rounds: 2,
      variants: [{}, { pullEveryMs: 100 }],
      print: (line) => lines.push(line),
      emulators: { dynamoEndpoint: inject('dynamoEndpoint'), sqsEndpoint: inject('sqsEndpoint') },
      warmupMs: { first: 1_000, later: 500 },
    });
    // The second round runs the variants the other way round.
    expect(runs.map((run) => [run.round, run.variant, run.position])).toEqual([
      [1, 0, 1],
      [1, 1, 2],
      [2, 1, 1],
      [2, 0, 2],
    ]);
    for (const run of runs) {
      // About 80 writes each: every one committed and applied in both replica regions.
      expect(run.achievedPerSecond).toBeGreaterThan(30);
      expect(run.regions.map((region) => region.region).sort()).toEqual(['ap-southeast-2', 'eu-west-1']);
      for (const region of run.regions) {
        expect(region.unapplied).toBe(0);
        expect(region.p50Ms).toBeGreaterThan(0);
        expect(region.p99Ms).toBeGreaterThanOrEqual(region.p50Ms as number);
        expect(region.maxMs).toBeGreaterThanOrEqual(region.p99Ms as number);
      }
      expect(run.worstP99Ms).toBe(Math.max(...run.regions.map((region) => region.p99Ms as number)));
      expect(run.loop.utilization).toBeGreaterThan(0);
      expect(run.loop.utilization).toBeLessThanOrEqual(1);
      expect(run.loop.delayP99Ms).toBeGreaterThanOrEqual(0);
    }
    expect(lines.filter((line) => line.startsWith('round 1 variant '))).toHaveLength(2);
    expect(lines.find((line) => line.startsWith('round 2 variant 1 {"pullEveryMs":100} (run 1 of the round)'))).toBeDefined();
    expect(lines.find((line) => line.startsWith('variant 1 {"pullEveryMs":100}: p99 median'))).toContain(`runs: ${runs[1]?.worstP99Ms}, ${runs[2]?.worstP99Ms}`);
    const firsts = runs.filter((run) => run.position === 1).map((run) => run.worstP99Ms as number);
    expect(lines.find((line) => line.startsWith('by position'))).toContain(`run 1 of a round ${round(median(firsts) as number, 1)} ms (2 runs)`);
  }, 120_000);
});
