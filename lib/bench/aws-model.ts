/**
 * `npm run bench -- --aws-model`: the write path under AWS Lambda's concurrency model against
 * the one-process API, in the same run, with the AWS latency model on (docs/aws-model.md).
 *
 * For each API model (one long-lived process; Lambda: one request per execution environment)
 * it starts a local cloud with no replica regions, then for each cell runs closed-loop writers
 * over HTTP (`PUT /kv/{key}`, 100-byte values, each writer its own keys) and counts every
 * DynamoDB transaction of the cluster — the API's and the shard leaders' (in the node
 * processes) — and how many DynamoDB refused.
 */
import { performance } from 'node:perf_hooks';
import { observeAwsRequests } from '../adapters/aws/clients.ts';
import { shardOf } from '../core/shard.ts';
import { startLocalCloud, type LocalCloud } from '../local/cloud.ts';
import { startDynamoLocal, startSqsEmulator } from '../local/emulators.ts';
import { failureCode, HttpClient } from './http.ts';
import { cpuMeter } from './cpu.ts';
import { closedLoop, type Progress } from './load.ts';
import { round } from './stats.ts';

/**
 * process: one long-lived API process, every write racing on its own (the in-process group
 * commit; what the local cloud used to be). lambda-direct: Lambda's model with that same write
 * path (what deployed epochkv did). lambda-leader: Lambda's model, every write through its
 * shard's leader. lambda: Lambda's model with the default write path (itself while the shard is
 * quiet, through the leader once it is busy).
 */
export type ApiModel = 'process' | 'lambda-direct' | 'lambda-leader' | 'lambda';
export const apiModels: readonly ApiModel[] = ['process', 'lambda-direct', 'lambda-leader', 'lambda'];

const modelTitles: Record<ApiModel, string> = {
  process: 'one-process API, racing writers (the old local cloud)',
  'lambda-direct': "Lambda's model, racing writers (before)",
  'lambda-leader': "Lambda's model, every write through the shard's leader",
  lambda: "Lambda's model, the default write path",
};

export interface AwsModelCell {
  /** 'one shard': every key on shard 0; '8 shards': keys spread over the 8 shards. */
  keys: 'one shard' | '8 shards';
  writers: number;
}

export interface AwsModelResult {
  model: ApiModel;
  keys: AwsModelCell['keys'];
  writers: number;
  writesPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  ok: number;
  errors: Record<string, number>;
  /** The first few failed answers' bodies, to tell what failed. */
  errorSamples: string[];
  /** TransactWriteItems sent by the API and the leaders, and those DynamoDB refused. */
  transactions: number;
  failedTransactions: number;
  /** Every AWS request of the cluster per acknowledged write (heartbeats and lease renewals included). */
  requestsPerWrite: number;
  /** Cores used during the cell: this process (load, API), DynamoDB Local, the node processes, the machine. */
  cores: Record<string, number>;
}

export interface AwsModelReport {
  startedAt: string;
  quick: boolean;
  cellSeconds: number;
  shardCount: number;
  results: AwsModelResult[];
  summaryLine: string;
}

export const awsModelCells: readonly AwsModelCell[] = [
  { keys: 'one shard', writers: 1 },
  { keys: 'one shard', writers: 4 },
  { keys: 'one shard', writers: 16 },
  { keys: 'one shard', writers: 64 },
  { keys: '8 shards', writers: 64 },
];

const shardCount = 8;
const valueBytes = 100;
/** Keys per writer: a writer cycles through its own, so no two writers share a key. */
const keysPerWriter = 8;

/** Keys for a cell: on shard 0 only, or anywhere. */
function keyTable(cell: AwsModelCell): string[][] {
  const table: string[][] = [];
  let candidate = 0;
  for (let writer = 0; writer < cell.writers; writer += 1) {
    const keys: string[] = [];
    while (keys.length < keysPerWriter) {
      const key = `bench/${cell.keys === 'one shard' ? 's0' : 'all'}/${candidate}`;
      candidate += 1;
      if (cell.keys === '8 shards' || shardOf(key, shardCount) === 0) keys.push(key);
    }
    table.push(keys);
  }
  return table;
}

type Counts = Record<string, { calls: number; failed: number }>;

function add(total: Counts, more: Counts): Counts {
  const sum: Counts = structuredClone(total);
  for (const [operation, counts] of Object.entries(more)) {
    const entry = (sum[operation] ??= { calls: 0, failed: 0 });
    entry.calls += counts.calls;
    entry.failed += counts.failed;
  }
  return sum;
}

function minus(after: Counts, before: Counts): Counts {
  const difference: Counts = {};
  for (const [operation, counts] of Object.entries(after)) {
    difference[operation] = { calls: counts.calls - (before[operation]?.calls ?? 0), failed: counts.failed - (before[operation]?.failed ?? 0) };
  }
  return difference;
}

/** Every AWS request of the cluster so far: this process's (the API) and the node processes'. */
async function clusterCounts(cloud: LocalCloud, local: Counts): Promise<Counts> {
  return add(local, await cloud.nodeRequestCounts());
}

async function runModel(model: ApiModel, cells: readonly AwsModelCell[], cellMs: number, warmupMs: number, progress: Progress, emulators: { dynamoEndpoint: string; sqsEndpoint: string; dynamoPid: number | undefined }): Promise<AwsModelResult[]> {
  const local: Counts = {};
  const stopObserving = observeAwsRequests((record) => {
    const counts = (local[record.operation] ??= { calls: 0, failed: 0 });
    counts.calls += 1;
    if (record.error !== undefined) counts.failed += 1;
  });
  const cloud = await startLocalCloud({
    basePort: 0,
    dynamoEndpoint: emulators.dynamoEndpoint,
    sqsEndpoint: emulators.sqsEndpoint,
    tablePrefix: `bench-aws-${model}-${Date.now().toString(36)}`,
    replicaRegions: [],
    shardCount,
    singleProcess: model === 'process',
    writePath: model === 'lambda' ? 'intake' : model === 'lambda-leader' ? 'leader' : 'direct',
    awsLatency: true,
    // The benchmark is the load: the local rate limit must not shape it.
    rateLimitPerSecond: 1_000_000,
    log: () => undefined,
  });
  const client = new HttpClient(512);
  const results: AwsModelResult[] = [];
  try {
    await cloud.waitForLeaders(30_000);
    const value = new Uint8Array(valueBytes).fill(120);
    // Unmeasured: the JVM of DynamoDB Local compiles its hot paths in the first seconds of load.
    const warmKeys = keyTable({ keys: '8 shards', writers: 16 });
    await closedLoop({
      label: `${model} warmup`,
      concurrency: 16,
      durationMs: warmupMs * 3,
      op: async (worker, sequence) => {
        const answer = await client.request('PUT', `${cloud.apiUrl}/kv/${encodeURIComponent(`warm/${warmKeys[worker]![sequence % keysPerWriter]!}`)}`, { body: value, timeoutMs: 30_000 }).catch(() => undefined);
        return answer?.status === 200 ? { ok: true } : { ok: false, code: 'warmup' };
      },
    });
    for (const cell of cells) {
      const keys = keyTable(cell);
      const before = await clusterCounts(cloud, local);
      const errorSamples: string[] = [];
      const cpu = cpuMeter(() => ({
        'dynamodb-local': emulators.dynamoPid === undefined ? [] : [emulators.dynamoPid],
        nodes: cloud.nodes().flatMap((node) => (node.pid === undefined ? [] : [node.pid])),
      }));
      const startMs = performance.now();
      const phase = await closedLoop({
        label: `${model} ${cell.keys} ${cell.writers} writers`,
        concurrency: cell.writers,
        durationMs: cellMs,
        warmupMs,
        progress,
        op: async (worker, sequence) => {
          const key = keys[worker]![sequence % keysPerWriter]!;
          try {
            const answer = await client.request('PUT', `${cloud.apiUrl}/kv/${encodeURIComponent(key)}`, { body: value, timeoutMs: 30_000 });
            if (answer.status === 200) return { ok: true };
            if (errorSamples.length < 5) errorSamples.push(`${answer.status} ${answer.body.toString('utf8').slice(0, 300)}`);
            return { ok: false, code: failureCode(answer) };
          } catch (error) {
            return { ok: false, code: failureCode(undefined, error) };
          }
        },
      });
      const cores = cpu.stop();
      // Counted over the whole cell, warmup included: per write of the whole cell.
      const counts = minus(await clusterCounts(cloud, local), before);
      const writesAll = phase.completed;
      const transactions = counts.TransactWriteItems ?? { calls: 0, failed: 0 };
      const requests = Object.values(counts).reduce((sum, entry) => sum + entry.calls, 0);
      const result: AwsModelResult = {
        model,
        keys: cell.keys,
        writers: cell.writers,
        writesPerSecond: round(phase.opsPerSecond, 1),
        p50Ms: phase.latency.p50Ms,
        p99Ms: phase.latency.p99Ms,
        ok: phase.ok,
        errors: phase.errors,
        errorSamples,
        transactions: writesAll === 0 ? 0 : round(transactions.calls / writesAll, 2),
        failedTransactions: writesAll === 0 ? 0 : round(transactions.failed / writesAll, 2),
        requestsPerWrite: writesAll === 0 ? 0 : round(requests / writesAll, 1),
        cores,
      };
      results.push(result);
      progress(
        `${model.padEnd(13)} ${cell.keys.padEnd(10)} ${String(cell.writers).padStart(3)} writers: ${result.writesPerSecond} writes/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.transactions} transactions per write (${result.failedTransactions} failed), ${result.requestsPerWrite} requests per write, cores ${Object.entries(cores).map(([name, used]) => `${name} ${used}`).join(' ')}, errors ${phase.failed}${phase.failed > 0 ? ` ${JSON.stringify(phase.errors)}` : ''} (${round((performance.now() - startMs) / 1000, 0)} s)`,
      );
    }
  } finally {
    client.destroy();
    stopObserving();
    await cloud.stop();
  }
  return results;
}

function errorCount(result: AwsModelResult | undefined): number {
  return result === undefined ? 0 : Object.values(result.errors).reduce((sum, count) => sum + count, 0);
}

/** The table of a report, one row per cell, the models side by side. */
export function awsModelTable(report: AwsModelReport): string[] {
  const lines = [
    '| keys | writers | one process: writes/s | Lambda, racing (before): writes/s, p50 ms, failed txn per write, errors | Lambda, all through the leader: writes/s, p50 ms | Lambda model: writes/s | Lambda p50 / p99 ms | Lambda transactions per write (failed) | Lambda requests per write | Lambda errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const cell of awsModelCells) {
    const find = (model: ApiModel) => report.results.find((result) => result.model === model && result.keys === cell.keys && result.writers === cell.writers);
    const process = find('process');
    const before = find('lambda-direct');
    const leader = find('lambda-leader');
    const lambda = find('lambda');
    if (process === undefined && lambda === undefined && before === undefined) continue;
    lines.push(
      `| ${cell.keys} | ${cell.writers} | ${process?.writesPerSecond ?? '–'} | ${before === undefined ? '–' : `${before.writesPerSecond}, ${before.p50Ms}, ${before.failedTransactions}, ${errorCount(before)}`} | ${leader === undefined ? '–' : `${leader.writesPerSecond}, ${leader.p50Ms}`} | ${lambda?.writesPerSecond ?? '–'} | ${lambda?.p50Ms ?? '–'} / ${lambda?.p99Ms ?? '–'} | ${lambda?.transactions ?? '–'} (${lambda?.failedTransactions ?? '–'}) | ${lambda?.requestsPerWrite ?? '–'} | ${errorCount(lambda)} |`,
    );
  }
  return lines;
}

export function awsModelSummary(results: readonly AwsModelResult[]): string {
  const lambda = results.find((result) => result.model === 'lambda' && result.keys === 'one shard' && result.writers === 64);
  const process = results.find((result) => result.model === 'process' && result.keys === 'one shard' && result.writers === 64);
  const ratio = lambda !== undefined && process !== undefined && process.writesPerSecond > 0 ? round(lambda.writesPerSecond / process.writesPerSecond, 2) : null;
  // The one-writer target: p50 at most twice the racing path's under the same model, same run.
  const one = results.find((result) => result.model === 'lambda' && result.keys === 'one shard' && result.writers === 1);
  const oneBefore = results.find((result) => result.model === 'lambda-direct' && result.keys === 'one shard' && result.writers === 1);
  const oneRatio = one?.p50Ms != null && oneBefore?.p50Ms != null && oneBefore.p50Ms > 0 ? round(one.p50Ms / oneBefore.p50Ms, 2) : 'n/a';
  return `bench-aws: shard_writes_per_s=${lambda?.writesPerSecond ?? 'n/a'} process_writes_per_s=${process?.writesPerSecond ?? 'n/a'} ratio_to_process=${ratio ?? 'n/a'} failed_txn_per_write=${lambda?.failedTransactions ?? 'n/a'} p50_ms=${lambda?.p50Ms ?? 'n/a'} p99_ms=${lambda?.p99Ms ?? 'n/a'} errors=${errorCount(lambda)} one_writer_p50_ratio=${oneRatio}`;
}

export async function runAwsModelBench(options: { quick: boolean; progress: Progress; models?: readonly ApiModel[] }): Promise<AwsModelReport> {
  const cellSeconds = options.quick ? 5 : 15;
  const warmupMs = options.quick ? 1_000 : 2_000;
  const startedAt = new Date().toISOString();
  const results: AwsModelResult[] = [];
  // One DynamoDB Local (in memory) and SQS emulator for both models: the same warm engine.
  const dynamo = await startDynamoLocal({});
  const sqs = await startSqsEmulator({ port: 0 });
  try {
    for (const model of options.models ?? apiModels) {
      options.progress(`${modelTitles[model]}: ${awsModelCells.length} cells of ${cellSeconds} s (AWS latency model on)`);
      results.push(...(await runModel(model, awsModelCells, cellSeconds * 1_000, warmupMs, options.progress, { dynamoEndpoint: dynamo.endpoint, sqsEndpoint: sqs.endpoint, dynamoPid: dynamo.process.pid })));
    }
  } finally {
    await sqs.stop();
    await dynamo.stop();
  }
  return { startedAt, quick: options.quick, cellSeconds, shardCount, results, summaryLine: awsModelSummary(results) };
}
