/**
 * `npm run bench [-- --quick]`: throughput, latency, replication lag, failover, scaling and
 * cost of epochkv on the local cloud, against the raw DynamoDB Local limit of its write
 * transaction and against etcd when it is installed. Prints a table, writes JSON, Markdown and
 * an SVG chart under bench/results/. The last line of stdout is the summary.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { BenchReport } from '../lib/bench/report.ts';
import { runBench, writeReport } from '../lib/bench/run.ts';
import { awsModelTable, runAwsModelBench } from '../lib/bench/aws-model.ts';
import { runTxnBench, txnTable } from '../lib/bench/txn.ts';
import { locksTable, runLocksBench } from '../lib/bench/locks.ts';
import { numberOption } from '../lib/cli-options.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const usage = `usage: npm run bench -- [--quick] [--profile] [--no-etcd] [--results <dir>] [--no-save-latest] [--lag-rate <writes/s>] [--lag-seconds <s>]
       npm run bench -- --aws-model [--quick] [--results <dir>]
       npm run bench -- --txn [--quick] [--results <dir>]
       npm run bench -- --locks [--quick] [--results <dir>]
       npm run bench -- --render <report.json>

  --aws-model       the write path under Lambda's concurrency model against the one-process API,
                    with the AWS latency model on: one shard at 1, 4, 16 and 64 writers, 8 shards at
                    64 writers, for the one-process API and three write paths under Lambda's model
                    (5 s cells with --quick, 15 s without). Writes JSON to the results directory.
                    Last line: bench-aws: shard_writes_per_s=… process_writes_per_s=…
                    ratio_to_process=… failed_txn_per_write=… p50_ms=… p99_ms=… errors=…
                    one_writer_p50_ratio=…

  --txn             transactions (POST /txn) of 2 and 8 keys, on 1 shard and on 2 or 8 shards,
                    under Lambda's concurrency model with the AWS latency model on, each as a
                    ratio to single-key writes measured in the same run at the same writers
                    (1 and 16 writers with --quick, 4 s cells; 1, 16 and 64 without, 12 s).
                    Writes JSON to the results directory. Last line: bench-txn: writers=…
                    write_1shard_per_s=… write_8shards_per_s=… txn2_1shard_per_s=… txn2_1shard_ratio=…
                    txn2_2shards_… txn8_1shard_… txn8_8shards_… errors=…

  --locks           lock acquire→release round trips (POST /locks then DELETE /locks?token=) under
                    Lambda's concurrency model with the AWS latency model on: N clients on one
                    lock name (contended) and on N names of their own, each as a ratio to
                    single-key writes at the same clients in the same run (1 and 8 clients with
                    --quick, 4 s cells; 1, 8 and 32 without, 12 s). Writes JSON to the results
                    directory. Last line: bench-locks: clients=… single_per_s=… single_ratio=…
                    write_per_s=… one_name_per_s=… one_name_ratio=… one_name_p50_ms=… own_names_… errors=…

  --quick           a 1–2 minute version: fewer cells, shorter phases, 2 failovers
  --profile         CPU-profile an extra write phase (always done in full runs)
  --no-etcd         skip the etcd peer even when etcd is installed
  --results <dir>   where JSON, Markdown and SVG go (default bench/results)
  --no-save-latest  a full run also writes lib/bench/latest.md and latest.svg (the README copy); not with this
  --lag-rate <n>    run the replication-lag phase at n writes/s (1–5000) instead of half the highest
                    sustained rate, to compare code or machines at one load (the lag target is then not judged)
  --lag-seconds <s> the replication-lag phase's length, 5–600 s (default 5 quick, 30 full)
  --render <file>   print the tables of a saved JSON report and write its Markdown and SVG again (no run)

Runs one DynamoDB Local (in memory) and the SQS emulator, the local cloud (8 shards, 3 node
processes, 2 replica regions) and, when \`etcd\` is on PATH, a 3-member etcd cluster.
The last line: bench: write_ratio_to_limit=<x> p99_ms=<y> lag_p99_ms=<z> failover_ms=<w>`;

let values;
try {
  values = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      'aws-model': { type: 'boolean', default: false },
      txn: { type: 'boolean', default: false },
      locks: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'no-etcd': { type: 'boolean', default: false },
      results: { type: 'string', default: 'bench/results' },
      'no-save-latest': { type: 'boolean', default: false },
      'lag-rate': { type: 'string' },
      'lag-seconds': { type: 'string' },
      render: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values;
} catch (error) {
  console.error(`${(error as Error).message}\n\n${usage}`);
  process.exit(2);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}
if (values.render !== undefined) {
  const report = JSON.parse(readFileSync(values.render, 'utf8')) as BenchReport;
  const name = path.basename(values.render).replace(/\.json$/, '');
  const latest = report.mode === 'full' && values['no-save-latest'] !== true ? 'lib/bench' : undefined;
  writeReport(report, name, path.dirname(values.render), latest, (line) => console.log(line));
  console.log(report.summaryLine);
  process.exit(0);
}
const quick = values.quick === true;
const resultsDirectory: string = values.results ?? 'bench/results';
/**
 * Runs one of the single-report benchmarks: prints its table (and any extra lines), writes its
 * JSON under --results, prints the summary line, and exits (1 with the stack when it failed).
 */
async function runReportBench<R extends { startedAt: string; summaryLine: string }>(name: string, run: () => Promise<R>, table: (report: R) => string[], extraLines: (report: R) => string[] = () => []): Promise<never> {
  try {
    const report = await run();
    mkdirSync(resultsDirectory, { recursive: true });
    const file = path.join(resultsDirectory, `${name}-${report.startedAt.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
    console.log('');
    for (const line of table(report)) console.log(line);
    console.log('');
    for (const line of extraLines(report)) console.log(line);
    console.log(`report: ${file}`);
    console.log(report.summaryLine);
    process.exit(0);
  } catch (error) {
    console.error(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  }
}
if (values['aws-model'] === true) await runReportBench('aws-model', () => runAwsModelBench({ quick, progress: (line) => console.log(line) }), awsModelTable);
if (values.txn === true) await runReportBench('txn', () => runTxnBench({ quick, progress: (line) => console.log(line) }), txnTable);
if (values.locks === true) {
  await runReportBench('locks', () => runLocksBench({ quick, progress: (line) => console.log(line), loadAverage: () => os.loadavg()[0] ?? 0 }), locksTable, (report) => [
    `load average (1 min): ${report.loadAverage.start} at the start, ${report.loadAverage.end} at the end, on ${os.cpus().length} cores`,
  ]);
}
let lagSeconds: number | undefined;
let lagRatePerSecond: number | undefined;
try {
  if (values['lag-seconds'] !== undefined) lagSeconds = numberOption(values['lag-seconds'], 'lag-seconds', { min: 5, max: 600, what: 'a number of seconds' });
  if (values['lag-rate'] !== undefined) lagRatePerSecond = numberOption(values['lag-rate'], 'lag-rate', { min: 1, max: 5000, what: 'a number of writes per second' });
} catch (error) {
  console.error(`${(error as Error).message}\n\n${usage}`);
  process.exit(2);
}
try {
  await runBench({
    quick,
    profile: values.profile === true,
    etcd: values['no-etcd'] !== true,
    resultsDirectory,
    // A run at a chosen lag rate is a comparison, not the README's copy.
    latestDirectory: quick || values['no-save-latest'] === true || lagRatePerSecond !== undefined || lagSeconds !== undefined ? undefined : 'lib/bench',
    lagRatePerSecond,
    lagSeconds,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    print: (line) => console.log(line),
  });
  process.exit(0);
} catch (error) {
  console.error(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
}
