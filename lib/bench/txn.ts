/**
 * `npm run bench -- --txn`: multi-key transactions (`POST /txn`) under Lambda's concurrency
 * model with the AWS latency model on, each as a ratio to single-key writes (`PUT /kv/{key}`)
 * measured in the same run, on the same cluster, at the same number of writers.
 *
 * One local cloud (8 shards, 3 node processes, no replica regions: the home write path alone,
 * as `--aws-model` measures it). Closed-loop writers over HTTP, each on its own keys, so no two
 * writers race on a key: what is measured is the commit, not conflicts between clients. A
 * transaction puts every one of its keys (100-byte values, no compares); its keys lie on one
 * shard or on as many shards as it has keys (2 keys on 2 shards, 8 on 8). Single-key writes
 * are measured on one shard and over all 8, and each transaction cell is compared with the
 * writes of the same spread: one shard with one shard, several with all eight.
 */
import { performance } from 'node:perf_hooks';
import { shardOf } from '../core/shard.ts';
import { startBenchCloud } from './bench-cloud.ts';
import { failureCode, HttpClient } from './http.ts';
import { closedLoop, type Progress } from './load.ts';
import { round } from './stats.ts';

export interface TxnBenchCell {
  /** write: one PUT /kv/{key}; txn: one POST /txn putting `keys` keys. */
  kind: 'write' | 'txn';
  keys: number;
  /** Shards the keys of one operation lie on; for single-key writes, the shards the writers' keys cover. */
  shards: number;
  writers: number;
}

export interface TxnBenchResult extends TxnBenchCell {
  /** Operations (writes or transactions) answered 200 per second. */
  perSecond: number;
  /** Keys written per second: perSecond × keys. */
  keysPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  ok: number;
  errors: Record<string, number>;
  errorSamples: string[];
  /** perSecond over the single-key writes' of the same writers and spread (1 shard, or all 8); null for the writes themselves. */
  ratioToWrites: number | null;
}

export interface TxnBenchReport {
  startedAt: string;
  quick: boolean;
  cellSeconds: number;
  shardCount: number;
  results: TxnBenchResult[];
  summaryLine: string;
}

const shardCount = 8;
const valueBytes = 100;
/** Single-key writers cycle through this many keys of their own. */
const writeKeysPerWriter = 8;

/** The cells of one writer count: the two single-key baselines first, then the transactions. */
function cellsFor(writers: number): TxnBenchCell[] {
  return [
    { kind: 'write', keys: 1, shards: 1, writers },
    { kind: 'write', keys: 1, shards: shardCount, writers },
    { kind: 'txn', keys: 2, shards: 1, writers },
    { kind: 'txn', keys: 2, shards: 2, writers },
    { kind: 'txn', keys: 8, shards: 1, writers },
    { kind: 'txn', keys: 8, shards: 8, writers },
  ];
}

export function txnCellLabel(cell: TxnBenchCell): string {
  if (cell.kind === 'write') return `1-key write, ${cell.shards === 1 ? '1 shard' : `${cell.shards} shards`}`;
  return `txn ${cell.keys} keys, ${cell.shards === 1 ? '1 shard' : `${cell.shards} shards`}`;
}

/** Keys per writer: a writer's own, never another's; key n of a writer on shard n mod `shards`. */
function keyTable(cell: TxnBenchCell, tag: string): string[][] {
  const perWriter = cell.kind === 'write' ? writeKeysPerWriter : cell.keys;
  let candidate = 0;
  return Array.from({ length: cell.writers }, (_, writer) =>
    Array.from({ length: perWriter }, (_, position) => {
      const shard = position % cell.shards;
      for (;;) {
        const key = `bench-txn/${tag}/w${writer}/${candidate}`;
        candidate += 1;
        if (shardOf(key, shardCount) === shard) return key;
      }
    }),
  );
}

function errorCount(result: TxnBenchResult | undefined): number {
  return result === undefined ? 0 : Object.values(result.errors).reduce((sum, count) => sum + count, 0);
}

/** The single-key writes a cell is compared with: same writers, one shard or all of them. */
function baselineOf(results: readonly TxnBenchResult[], cell: TxnBenchCell): TxnBenchResult | undefined {
  return results.find((result) => result.kind === 'write' && result.writers === cell.writers && result.shards === (cell.shards === 1 ? 1 : shardCount));
}

export function txnTable(report: TxnBenchReport): string[] {
  const lines = ['| writers | operation | per s | keys written per s | ratio to 1-key writes | p50 / p99 ms | errors |', '| ---: | --- | ---: | ---: | ---: | ---: | ---: |'];
  for (const result of report.results) {
    lines.push(
      `| ${result.writers} | ${txnCellLabel(result)} | ${result.perSecond} | ${result.keysPerSecond} | ${result.ratioToWrites ?? '(baseline)'} | ${result.p50Ms ?? '–'} / ${result.p99Ms ?? '–'} | ${errorCount(result)}${errorCount(result) > 0 ? ` ${JSON.stringify(result.errors)}` : ''} |`,
    );
  }
  return lines;
}

/** One line at the most writers: each transaction cell's rate and its ratio to single-key writes. */
export function txnSummary(results: readonly TxnBenchResult[]): string {
  const writers = Math.max(0, ...results.map((result) => result.writers));
  const at = results.filter((result) => result.writers === writers);
  const find = (kind: TxnBenchCell['kind'], keys: number, shards: number) => at.find((result) => result.kind === kind && result.keys === keys && result.shards === shards);
  const cell = (name: string, keys: number, shards: number) => {
    const found = find('txn', keys, shards);
    return `${name}_per_s=${found?.perSecond ?? 'n/a'} ${name}_ratio=${found?.ratioToWrites ?? 'n/a'}`;
  };
  const errors = at.reduce((sum, result) => sum + errorCount(result), 0);
  return `bench-txn: writers=${writers} write_1shard_per_s=${find('write', 1, 1)?.perSecond ?? 'n/a'} write_8shards_per_s=${find('write', 1, shardCount)?.perSecond ?? 'n/a'} ${cell('txn2_1shard', 2, 1)} ${cell('txn2_2shards', 2, 2)} ${cell('txn8_1shard', 8, 1)} ${cell('txn8_8shards', 8, 8)} errors=${errors}`;
}

export async function runTxnBench(options: { quick: boolean; progress: Progress }): Promise<TxnBenchReport> {
  const cellSeconds = options.quick ? 4 : 12;
  const warmupMs = options.quick ? 1_000 : 2_000;
  const writerCounts = options.quick ? [1, 16] : [1, 16, 64];
  const startedAt = new Date().toISOString();
  const results: TxnBenchResult[] = [];
  const { cloud, stop } = await startBenchCloud(`bench-txn-${Date.now().toString(36)}`, shardCount);
  const client = new HttpClient(512);
  try {
    const value = Buffer.alloc(valueBytes, 120);
    const text = value.toString('utf8');
    // Unmeasured: DynamoDB Local's JVM compiles its hot paths in the first seconds of load.
    const warmKeys = keyTable({ kind: 'write', keys: 1, shards: shardCount, writers: 16 }, 'warm');
    await closedLoop({
      label: 'txn bench warmup',
      concurrency: 16,
      durationMs: warmupMs * 3,
      op: async (worker, sequence) => {
        const answer = await client.request('PUT', `${cloud.apiUrl}/kv/${encodeURIComponent(warmKeys[worker]![sequence % writeKeysPerWriter]!)}`, { body: value, timeoutMs: 30_000 }).catch(() => undefined);
        return answer?.status === 200 ? { ok: true } : { ok: false, code: 'warmup' };
      },
    });
    for (const writers of writerCounts) {
      for (const cell of cellsFor(writers)) {
        const keys = keyTable(cell, `${cell.kind}${cell.keys}-${cell.shards}-${writers}`);
        const errorSamples: string[] = [];
        const body = (worker: number) => JSON.stringify({ success: keys[worker]!.map((key) => ({ op: 'put', key, value: text })) });
        const bodies = keys.map((_, worker) => body(worker));
        const startMs = performance.now();
        const phase = await closedLoop({
          label: `${txnCellLabel(cell)}, ${writers} writers`,
          concurrency: writers,
          durationMs: cellSeconds * 1_000,
          warmupMs,
          progress: options.progress,
          op: async (worker, sequence) => {
            try {
              const answer =
                cell.kind === 'write'
                  ? await client.request('PUT', `${cloud.apiUrl}/kv/${encodeURIComponent(keys[worker]![sequence % writeKeysPerWriter]!)}`, { body: value, timeoutMs: 30_000 })
                  : await client.request('POST', `${cloud.apiUrl}/txn`, { body: bodies[worker]!, headers: { 'content-type': 'application/json' }, timeoutMs: 30_000 });
              if (answer.status === 200) return { ok: true };
              if (errorSamples.length < 5) errorSamples.push(`${answer.status} ${answer.body.toString('utf8').slice(0, 300)}`);
              return { ok: false, code: failureCode(answer) };
            } catch (error) {
              return { ok: false, code: failureCode(undefined, error) };
            }
          },
        });
        const perSecond = round(phase.opsPerSecond, 1);
        const partial: TxnBenchResult = { ...cell, perSecond, keysPerSecond: round(phase.opsPerSecond * cell.keys, 1), p50Ms: phase.latency.p50Ms, p99Ms: phase.latency.p99Ms, ok: phase.ok, errors: phase.errors, errorSamples, ratioToWrites: null };
        const baseline = cell.kind === 'txn' ? baselineOf(results, cell) : undefined;
        const result: TxnBenchResult = { ...partial, ratioToWrites: baseline === undefined || baseline.perSecond === 0 ? null : round(perSecond / baseline.perSecond, 2) };
        results.push(result);
        options.progress(
          `${txnCellLabel(cell).padEnd(26)} ${String(writers).padStart(3)} writers: ${perSecond}/s (${result.keysPerSecond} keys/s)${result.ratioToWrites === null ? '' : `, ratio ${result.ratioToWrites} to 1-key writes`}, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, errors ${phase.failed}${phase.failed > 0 ? ` ${JSON.stringify(phase.errors)}` : ''} (${round((performance.now() - startMs) / 1000, 0)} s)`,
        );
      }
    }
  } finally {
    client.destroy();
    await stop();
  }
  return { startedAt, quick: options.quick, cellSeconds, shardCount, results, summaryLine: txnSummary(results) };
}
