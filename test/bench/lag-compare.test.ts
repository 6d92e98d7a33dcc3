import { describe, expect, it } from 'vitest';
import { parseVariant } from '../../lib/bench/lag-compare.ts';

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
