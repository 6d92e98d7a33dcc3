import { describe, expect, it } from 'vitest';
import { locksSummary, locksTable, type LockBenchResult } from '../../lib/bench/locks.ts';

function result(kind: LockBenchResult['kind'], clients: number, perSecond: number, ratioToWrites: number | null, errors: Record<string, number> = {}): LockBenchResult {
  return { kind, clients, perSecond, p50Ms: 10, p99Ms: 30, ok: perSecond * 4, errors, errorSamples: [], ratioToWrites };
}

describe('Function: locksSummary and locksTable (bench --locks)', () => {
  it('sums up the one-client round trip and the contended and distinct cells at the most clients, each with its ratio to single-key writes', () => {
    // Prepare
    const results = [
      result('write', 1, 20, null),
      result('lock-one', 1, 5, 0.25),
      result('write', 8, 100, null),
      result('lock-one', 8, 6, 0.06, { 'acquire HTTP 409 LockHeld': 1 }),
      result('lock-own', 8, 30, 0.3),
    ];

    // Act
    const summary = locksSummary(results);
    const table = locksTable({ startedAt: '', quick: true, cellSeconds: 4, shardCount: 8, loadAverage: { start: 1, end: 2 }, results, summaryLine: summary });

    // Assess
    expect(summary).toBe(
      'bench-locks: clients=8 single_per_s=5 single_ratio=0.25 single_p50_ms=10 single_p99_ms=30 write_per_s=100 one_name_per_s=6 one_name_ratio=0.06 one_name_p50_ms=10 one_name_p99_ms=30 own_names_per_s=30 own_names_ratio=0.3 own_names_p50_ms=10 own_names_p99_ms=30 errors=1',
    );
    expect(table).toHaveLength(2 + results.length);
    expect(table[3]).toBe('| 1 | lock round trip | 5 | 0.25 | 10 / 30 | 0 |');
    expect(table[5]).toBe('| 8 | lock round trip, 1 name | 6 | 0.06 | 10 / 30 | 1 {"acquire HTTP 409 LockHeld":1} |');
    expect(table[6]).toBe('| 8 | lock round trip, 8 names | 30 | 0.3 | 10 / 30 | 0 |');
  });
});
