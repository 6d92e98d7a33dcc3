import { describe, expect, it } from 'vitest';
import { txnSummary, txnTable, type TxnBenchResult } from '../../lib/bench/txn.ts';

function result(kind: TxnBenchResult['kind'], keys: number, shards: number, writers: number, perSecond: number, ratioToWrites: number | null, errors: Record<string, number> = {}): TxnBenchResult {
  return { kind, keys, shards, writers, perSecond, keysPerSecond: perSecond * keys, p50Ms: 10, p99Ms: 30, ok: perSecond * 4, errors, errorSamples: [], ratioToWrites };
}

describe('Function: txnSummary and txnTable (bench --txn)', () => {
  it('sums up the cells at the most writers, each transaction with its ratio to single-key writes', () => {
    // Prepare
    const results = [
      result('write', 1, 1, 1, 20, null),
      result('write', 1, 1, 16, 100, null),
      result('write', 1, 8, 16, 200, null),
      result('txn', 2, 1, 16, 50, 0.5),
      result('txn', 2, 2, 16, 80, 0.4),
      result('txn', 8, 1, 16, 25, 0.25, { 'HTTP 503 Busy': 2 }),
      result('txn', 8, 8, 16, 30, 0.15),
    ];

    // Act
    const summary = txnSummary(results);
    const table = txnTable({ startedAt: '', quick: true, cellSeconds: 4, shardCount: 8, results, summaryLine: summary });

    // Assess
    expect(summary).toBe(
      'bench-txn: writers=16 write_1shard_per_s=100 write_8shards_per_s=200 txn2_1shard_per_s=50 txn2_1shard_ratio=0.5 txn2_2shards_per_s=80 txn2_2shards_ratio=0.4 txn8_1shard_per_s=25 txn8_1shard_ratio=0.25 txn8_8shards_per_s=30 txn8_8shards_ratio=0.15 errors=2',
    );
    expect(table).toHaveLength(2 + results.length);
    expect(table[2]).toBe('| 1 | 1-key write, 1 shard | 20 | 20 | (baseline) | 10 / 30 | 0 |');
    expect(table[7]).toBe('| 16 | txn 8 keys, 1 shard | 25 | 200 | 0.25 | 10 / 30 | 2 {"HTTP 503 Busy":2} |');
  });
});
