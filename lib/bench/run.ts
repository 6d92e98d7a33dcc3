/**
 * `npm run bench`: the benchmark. One DynamoDB Local and one SQS emulator serve every cluster
 * of the run; the main cluster is the local cloud's default shape (8 shards, 3 node processes,
 * home + 2 replica regions). Phases: the raw transaction limit and writes through the API at
 * each concurrency (interleaved, so both see the same machine), reads, replication lag at half
 * load, failover, the background of an idle cluster, scaling by shard count, the etcd peer;
 * then the cost model, the report (stdout, JSON, Markdown) and the chart (SVG).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { localCredentials } from '../adapters/aws/clients.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import { encodeToken } from '../core/session.ts';
import { shardOf } from '../core/shard.ts';
import { startLocalCloud, type LocalCloud } from '../local/cloud.ts';
import { startDynamoLocal, startSqsEmulator } from '../local/emulators.ts';
import { mulberry32 } from '../random.ts';
import type { ClusterStatus } from '../service/cluster-status.ts';
import { measureBackground } from './background.ts';
import {
  amortizedPerMillion,
  backgroundUsage,
  globalTablesWrite,
  itemSizeBytes,
  monthlyUsd,
  priceLines,
  readUsage,
  writeUsage,
  type BackgroundMeasurement,
  type MeasuredPhase,
} from './cost.ts';
import { cpuMeter, eventLoopMeter } from './cpu.ts';
import { EtcdCluster, etcdInstallHint, findEtcd } from './etcd.ts';
import { failureCode, HttpClient } from './http.ts';
import { closedLoop, openLoop, type Outcome, type PhaseResult } from './load.ts';
import { diffSnapshots, filterSnapshot, lagSamples, Meter, scaleSnapshot, subtractBackground, totals, type MeterSnapshot } from './meter.ts';
import { priceTable } from './prices.ts';
import { withCpuProfile, type ProfileSummary } from './profile.ts';
import { RawTransactions } from './raw.ts';
import {
  chartData,
  formatMarkdown,
  formatText,
  type BenchReport,
  type CellSummary,
  type CostReport,
  type EtcdReport,
  type FailoverRun,
  type HomeOnlyCell,
  type LagRegion,
  type ModeCell,
  type ReadCell,
  type ScalingRow,
  type Target,
  type WriteBreakdown,
  type WriteCell,
} from './report.ts';
import { cdfPoints, median, round, summarize } from './stats.ts';
import { renderChart } from './svg.ts';

export interface BenchOptions {
  quick: boolean;
  /** CPU-profile an extra write phase at concurrency 32 (always on in full runs). */
  profile: boolean;
  /** Run the etcd peer when etcd is installed. */
  etcd: boolean;
  resultsDirectory: string;
  /** Where the latest Markdown and SVG are copied for the README (full runs); undefined: nowhere. */
  latestDirectory: string | undefined;
  /** Run the replication-lag phase at this rate instead of half the highest sustained one (to compare code or machines at one load). */
  lagRatePerSecond?: number | undefined;
  /** The replication-lag phase's length instead of the plan's (5 s quick, 30 s full). */
  lagSeconds?: number | undefined;
  command: string;
  print: (line: string) => void;
}

interface Plan {
  writeCells: { valueBytes: number; concurrency: number }[];
  limitMs: number;
  systemMs: number;
  warmupMs: number;
  readMs: number;
  readConcurrency: number;
  lagMs: number;
  lightLagMs: number;
  cost4kMs: number;
  failovers: number;
  scalingShards: number[];
  scalingMs: number;
  /** Concurrencies of the write phase repeated on a cluster without replica regions. */
  homeOnlyConcurrency: number[];
  idleMs: number;
  /** Unmeasured load before the first measurement. */
  jvmWarmupMs: number;
  backgroundWindowMs: number;
  profileMs: number;
  etcdWriteLevels: number[];
  etcdWrite4k: boolean;
  etcdMs: number;
  etcdFailovers: number;
  /** Per replication mode and round (rounds interleave the modes against drift). */
  modeMs: number;
  modeRounds: number;
}

export function plan(quick: boolean): Plan {
  if (quick) {
    return {
      writeCells: [...[1, 32, 64].map((concurrency) => ({ valueBytes: 100, concurrency })), { valueBytes: 4096, concurrency: 32 }],
      limitMs: 1_600,
      systemMs: 2_500,
      warmupMs: 300,
      readMs: 2_000,
      readConcurrency: 32,
      lagMs: 5_000,
      lightLagMs: 3_000,
      cost4kMs: 2_500,
      failovers: 2,
      scalingShards: [1, 16],
      scalingMs: 2_500,
      homeOnlyConcurrency: [32],
      idleMs: 2_000,
      jvmWarmupMs: 2_000,
      backgroundWindowMs: 2_000,
      profileMs: 2_500,
      etcdWriteLevels: [1, 32],
      etcdWrite4k: false,
      etcdMs: 1_500,
      etcdFailovers: 1,
      modeMs: 1_500,
      modeRounds: 1,
    };
  }
  return {
    writeCells: [100, 4096].flatMap((valueBytes) => [1, 8, 32, 64].map((concurrency) => ({ valueBytes, concurrency }))),
    // As long as epochkv's phase: with 3-s halves the limit at concurrency 32 varied by a third
    // from one run to the next (DynamoDB Local's pauses weigh more in a short phase).
    limitMs: 10_000,
    systemMs: 10_000,
    warmupMs: 1_000,
    readMs: 8_000,
    readConcurrency: 32,
    lagMs: 30_000,
    lightLagMs: 10_000,
    cost4kMs: 10_000,
    failovers: 5,
    scalingShards: [1, 2, 4, 8, 16],
    scalingMs: 8_000,
    homeOnlyConcurrency: [8, 32],
    idleMs: 4_000,
    jvmWarmupMs: 8_000,
    backgroundWindowMs: 5_000,
    profileMs: 6_000,
    etcdWriteLevels: [1, 8, 32, 64],
    etcdWrite4k: true,
    etcdMs: 6_000,
    etcdFailovers: 5,
    modeMs: 4_000,
    modeRounds: 2,
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Two runs of the same phase as one (the limit is measured before and after each epochkv phase). */
function combine(first: PhaseResult, second: PhaseResult): PhaseResult {
  const latencies = [...first.latencies, ...second.latencies];
  const elapsedMs = first.elapsedMs + second.elapsedMs;
  const errors = { ...first.errors };
  for (const [code, count] of Object.entries(second.errors)) errors[code] = (errors[code] ?? 0) + count;
  return {
    ...first,
    elapsedMs,
    ok: latencies.length,
    failed: first.failed + second.failed,
    errors,
    opsPerSecond: elapsedMs > 0 ? (latencies.length * 1000) / elapsedMs : 0,
    latency: summarize(latencies),
    latencies,
    endMs: second.endMs,
    completed: first.completed + second.completed,
  };
}

function averageCores(first: Record<string, number>, second: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys({ ...first, ...second }).map((name) => [name, round(((first[name] ?? 0) + (second[name] ?? 0)) / 2, 2)]));
}

function cell(phase: PhaseResult): CellSummary {
  return { ...phase.latency, opsPerSecond: round(phase.opsPerSecond, 1), failed: phase.failed, errors: phase.errors, elapsedMs: Math.round(phase.elapsedMs) };
}

function machine(etcdVersion: string | null): BenchReport['machine'] {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpuModel;
  } catch {
    // not Linux
  }
  let java = 'unknown';
  try {
    // java -version prints to stderr.
    java = /version "([^"]+)"/.exec(execFileSync('sh', ['-c', 'java -version 2>&1'], { encoding: 'utf8' }))?.[1] ?? java;
  } catch {
    // no java: DynamoDB Local would not have started either
  }
  return {
    cpus: os.availableParallelism?.() ?? os.cpus().length,
    cpuModel,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    java,
    etcd: etcdVersion,
    loadAverageAtStart: os.loadavg().map((value) => round(value, 2)),
  };
}

/** Clients for the benchmark's own reads (heads, progress): not counted in the cost model. */
export function uncountedStores(cloud: LocalCloud): { home: DynamoStore; replicas: Map<string, DynamoReplicaStore>; destroy(): void } {
  const clients: DynamoDBClient[] = [];
  const doc = (region: string) => {
    const client = new DynamoDBClient({ region, endpoint: cloud.dynamoEndpoint, credentials: localCredentials });
    clients.push(client);
    return DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  };
  return {
    home: new DynamoStore(doc(cloud.config.homeRegion), cloud.config.tables, cloud.config.shardCount),
    replicas: new Map(cloud.config.replicaRegions.map((region) => [region, new DynamoReplicaStore(doc(region), cloud.config.tables)])),
    destroy: () => clients.forEach((client) => client.destroy()),
  };
}

async function clusterStatus(http: HttpClient, apiUrl: string): Promise<ClusterStatus> {
  const answer = await http.request('GET', `${apiUrl}/cluster`, { timeoutMs: 5_000 });
  return JSON.parse(answer.body.toString('utf8')) as ClusterStatus;
}

/** How long a write phase's replicas may take to catch up before the sustained rate gives up on them. */
const catchUpWaitMs = 30_000;

/** Waits until every replica has applied every shard up to the home head; ms taken, or null at the deadline. */
export async function waitForConvergence(stores: ReturnType<typeof uncountedStores>, shardCount: number, timeoutMs: number): Promise<number | null> {
  const startedMs = performance.now();
  while (performance.now() - startedMs < timeoutMs) {
    const heads = await Promise.all(Array.from({ length: shardCount }, (_, shard) => stores.home.readHead(shard)));
    let caughtUp = true;
    for (const replica of stores.replicas.values()) {
      const progress = await replica.readAllProgress();
      for (const [shard, head] of heads.entries()) if ((head?.index ?? 0) > (progress.get(shard)?.appliedIndex ?? 0)) caughtUp = false;
    }
    if (caughtUp) return Math.round(performance.now() - startedMs);
    await sleep(50);
  }
  return null;
}

function randomValue(size: number, random: () => number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  for (let index = 0; index < size; index += 1) out += alphabet[Math.floor(random() * alphabet.length)];
  return out;
}

/** A write through the API; the epoch of the answer on success. */
export async function putThroughApi(http: HttpClient, apiUrl: string, key: string, value: string, timeoutMs = 10_000, replication?: ModeCell['mode']): Promise<Outcome> {
  let answer;
  try {
    answer = await http.request('PUT', `${apiUrl}/kv/${encodeURIComponent(key)}${replication === undefined ? '' : `?replication=${replication}`}`, { body: value, headers: { 'content-type': 'application/octet-stream' }, timeoutMs });
  } catch (error) {
    return { ok: false, code: failureCode(undefined, error) };
  }
  if (answer.status !== 200) return { ok: false, code: failureCode(answer) };
  const body = JSON.parse(answer.body.toString('utf8')) as { epoch: number };
  return { ok: true, epoch: body.epoch };
}

/** Keys that hash to `shard`. */
function keysOfShard(shard: number, shardCount: number, count: number, prefix: string): string[] {
  const keys: string[] = [];
  for (let n = 0; keys.length < count; n += 1) {
    const key = `${prefix}${n}`;
    if (shardOf(key, shardCount) === shard) keys.push(key);
  }
  return keys;
}

/**
 * The write path's storage calls per write. `raw` is the phase's requests as counted: in this
 * process only the API commits, reads single leases and ships; head reads are the API's plus the
 * replica heartbeats' (one per shard per tick, and each tick reads all progress once), so those
 * are taken out exactly. `requests` has the idle background subtracted (for the engine's other work).
 */
function breakdown(raw: MeterSnapshot, requests: MeterSnapshot, homeRegion: string, shardCount: number, writes: number, latencyMeanMs: number): WriteBreakdown {
  const role = (name: string, service = 'dynamodb') => totals(filterSnapshot(raw, { role: name, service, region: service === 'sqs' ? undefined : homeRegion }));
  const per = (value: number) => (writes > 0 ? value / writes : 0);
  const mean = (stats: { durationMs: number; count: number }) => (stats.count > 0 ? stats.durationMs / stats.count : 0);
  const commit = role('commit');
  const lease = role('lease-read');
  const heartbeatTicks = totals(filterSnapshot(raw, { role: 'progress-read-all', service: 'dynamodb' })).count;
  const allHeads = role('head-read');
  const apiHeads = Math.max(0, allHeads.count - heartbeatTicks * shardCount);
  // The same query either way: the mean over all of them is the API's mean too.
  const head = { count: apiHeads, durationMs: allHeads.count > 0 ? (allHeads.durationMs / allHeads.count) * apiHeads : 0 };
  const ship = role('ship', 'sqs');
  const regions = new Set(Object.keys(filterSnapshot(raw, { role: 'ship', service: 'sqs' })).map((key) => key.split('|')[2])).size || 1;
  // A write waits for its sends to every region at once (they run in parallel): one send's time per write.
  const storage = per(commit.count) * mean(commit) + per(lease.count) * mean(lease) + per(head.count) * mean(head) + (ship.count > 0 ? mean(ship) : 0);
  const dynamo = totals(filterSnapshot(requests, { service: 'dynamodb' }));
  const apply = totals(filterSnapshot(requests, { service: 'dynamodb', role: 'apply' }));
  return {
    writes,
    applyTransactionsPerWrite: round(per(apply.count), 3),
    otherDynamoRequestsPerWrite: round(per(dynamo.count - commit.count - apply.count), 3),
    commitsPerWrite: round(per(commit.count), 3),
    lostRacesPerWrite: round(per(commit.errors), 3),
    commitMeanMs: round(mean(commit), 2),
    leaseReadsPerWrite: round(per(lease.count), 4),
    leaseReadMeanMs: round(mean(lease), 2),
    headReadsPerWrite: round(per(head.count), 4),
    headReadMeanMs: round(mean(head), 2),
    shipBatchesPerWrite: round(per(ship.count / regions), 3),
    shipMeanMs: round(mean(ship), 2),
    storageMsPerWrite: round(storage, 2),
    latencyMeanMs: round(latencyMeanMs, 2),
    otherMsPerWrite: round(latencyMeanMs - storage, 2),
  };
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const p = { ...plan(options.quick), ...(options.lagSeconds === undefined ? {} : { lagMs: options.lagSeconds * 1000 }) };
  const startedAt = new Date();
  const startedMs = performance.now();
  // Section headers (lines starting with a newline) carry the elapsed time of the run.
  const print = (line: string) => options.print(line.startsWith('\n') ? `\n[${Math.round((performance.now() - startedMs) / 1000)} s] ${line.slice(1)}` : line);
  const runId = `${startedAt.toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(2).toString('hex')}`;
  const etcdFound = options.etcd ? findEtcd() : undefined;
  const machineInfo = machine(etcdFound?.version ?? null);
  const random = mulberry32(Number.parseInt(randomBytes(4).toString('hex'), 16));
  print(`bench: ${options.quick ? 'quick' : 'full'} run ${runId} on ${machineInfo.cpus} CPUs (${machineInfo.cpuModel}), load average ${machineInfo.loadAverageAtStart.join(' ')}`);

  const http = new HttpClient(512);
  const meter = new Meter();
  meter.attach();
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    while (cleanups.length > 0) await cleanups.pop()?.().catch(() => undefined);
  };
  const onSignal = () => {
    print('bench: interrupted; stopping everything it started');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const emulatorsStartedMs = performance.now();
    const [dynamo, sqs] = await Promise.all([startDynamoLocal(), startSqsEmulator()]);
    cleanups.push(() => dynamo.stop(), () => sqs.stop());
    print(`bench: DynamoDB Local (in memory) ${dynamo.endpoint}, SQS emulator ${sqs.endpoint} (${Math.round(performance.now() - emulatorsStartedMs)} ms)`);
    const jvm = dynamo.process.pid as number;
    const cloudLog: string[] = [];
    const sink = (line: string) => {
      cloudLog.push(line);
      if (cloudLog.length > 200) cloudLog.shift();
    };
    const startCloud = async (prefix: string, shardCount: number): Promise<LocalCloud> => {
      const cloud = await startLocalCloud({ basePort: 0, dynamoEndpoint: dynamo.endpoint, sqsEndpoint: sqs.endpoint, tablePrefix: prefix, shardCount, rateLimitPerSecond: 1_000_000, log: sink });
      await cloud.waitForLeaders(30_000);
      return cloud;
    };

    // ---------------------------------------------------------------- main cluster
    const mainPrefix = `bench-${runId}`;
    const cloud = await startCloud(mainPrefix, 8);
    let cloudStopped = false;
    const stopCloud = async () => {
      if (!cloudStopped) {
        cloudStopped = true;
        await cloud.stop();
      }
    };
    cleanups.push(stopCloud);
    const config = cloud.config;
    const stores = uncountedStores(cloud);
    cleanups.push(async () => stores.destroy());
    // HotSpot names its compiler threads "C1 CompilerThread0", "C2 CompilerThread0" (cut to 15 characters by Linux).
    const jitThreads = /^C[12] CompilerThre/;
    const cpuGroups = () => ({ 'dynamodb-local': [jvm], nodes: cloud.nodes().map((node) => node.pid).filter((pid): pid is number => pid !== undefined) });
    print(`bench: cluster ${mainPrefix}: ${config.shardCount} shards led by ${config.nodeIds.join(', ')}; replicas ${config.replicaRegions.join(', ')}`);

    // The in-process background (apply pollers' long polls, replica heartbeats) per second:
    // subtracted from every phase's request counts.
    await sleep(1_000);
    const idleBefore = meter.snapshot();
    const idleStartMs = performance.now();
    await sleep(p.idleMs);
    const idlePerSecond = scaleSnapshot(filterSnapshot(diffSnapshots(meter.snapshot(), idleBefore), { prefix: mainPrefix }), 1000 / (performance.now() - idleStartMs));
    const phaseRequests = (before: MeterSnapshot, after: MeterSnapshot, elapsedMs: number, prefix = mainPrefix) =>
      subtractBackground(filterSnapshot(diffSnapshots(after, before), { prefix }), scaleSnapshot(idlePerSecond, elapsedMs / 1000));

    // ---------------------------------------------------------------- writes vs the limit
    const raw = await RawTransactions.create({ dynamoEndpoint: dynamo.endpoint, region: config.homeRegion, prefix: `bench-raw-${runId}`, shardCount: config.shardCount });
    cleanups.push(async () => raw.destroy());
    const keySpace = 10_000;
    const values = new Map<number, string[]>();
    const valuesOf = (size: number) => {
      if (!values.has(size)) values.set(size, Array.from({ length: 16 }, () => randomValue(size, random)));
      return values.get(size) as string[];
    };
    const written100 = new Set<string>();
    const writeCells: WriteCell[] = [];
    const latencyCdf: Record<string, [number, number][]> = {};
    // DynamoDB Local's JVM runs faster once its code is compiled and its tables are warm: a
    // phase of both workloads first, measured by nobody.
    print(`\nwarmup: ${p.jvmWarmupMs / 1000} s of raw transactions, then of writes through the API (not measured)`);
    await closedLoop({ label: 'warmup limit', concurrency: 8, durationMs: p.jvmWarmupMs, op: (_worker, sequence) => raw.put(`warm-${sequence % 1000}`, Buffer.from(valuesOf(100)[0] as string)) });
    await closedLoop({ label: 'warmup epochkv', concurrency: 32, durationMs: p.jvmWarmupMs, op: (_worker, sequence) => putThroughApi(http, cloud.apiUrl, `warm-${sequence % 1000}`, valuesOf(100)[0] as string) });
    print(`\nwrites: limit ${p.limitMs / 1000} s then epochkv ${p.systemMs / 1000} s at each of ${p.writeCells.length} cells`);
    const systemWrite = (size: number, concurrency: number, label: string, durationMs: number) => {
      const pool = valuesOf(size);
      return closedLoop({
        label,
        concurrency,
        durationMs,
        warmupMs: p.warmupMs,
        progress: print,
        op: async (_worker, sequence) => {
          const key = `w${size}-${Math.floor(random() * keySpace)}`;
          const outcome = await putThroughApi(http, cloud.apiUrl, key, pool[sequence % pool.length] as string);
          if (outcome.ok && size === 100) written100.add(key);
          return outcome;
        },
      });
    };
    for (const { valueBytes, concurrency } of p.writeCells) {
      const pool = valuesOf(valueBytes);
      // The limit is measured just before and just after epochkv's phase (half each), with the
      // replicas caught up each time, so a drift in the machine's load hits both alike.
      const limitHalf = async (label: string) => {
        await waitForConvergence(stores, config.shardCount, 30_000);
        const meterCpu = cpuMeter(cpuGroups);
        const phase = await closedLoop({
          label,
          concurrency,
          durationMs: p.limitMs / 2,
          warmupMs: p.warmupMs,
          progress: print,
          op: (_worker, sequence) => raw.put(`w${valueBytes}-${Math.floor(random() * keySpace)}`, Buffer.from(pool[sequence % pool.length] as string)),
        });
        return { phase, cores: meterCpu.stop() };
      };
      const limitBefore = await limitHalf(`limit ${valueBytes} B c${concurrency} (before)`);
      await waitForConvergence(stores, config.shardCount, 30_000);
      const before = meter.snapshot();
      const systemCpu = cpuMeter(cpuGroups);
      const begunMs = performance.now();
      const system = await systemWrite(valueBytes, concurrency, `epochkv ${valueBytes} B c${concurrency}`, p.systemMs);
      const systemCpuUsed = systemCpu.stop();
      const after = meter.snapshot();
      const requests = phaseRequests(before, after, performance.now() - begunMs);
      const counted = filterSnapshot(diffSnapshots(after, before), { prefix: mainPrefix });
      // What the phase left for the replicas: the sustained rate counts the time they took.
      const catchUpMs = await waitForConvergence(stores, config.shardCount, catchUpWaitMs);
      const sustainedOpsPerSecond = round((system.opsPerSecond * system.elapsedMs) / (system.elapsedMs + (catchUpMs ?? catchUpWaitMs)), 1);
      const limitAfter = await limitHalf(`limit ${valueBytes} B c${concurrency} (after)`);
      const limit = combine(limitBefore.phase, limitAfter.phase);
      const limitCpuUsed = averageCores(limitBefore.cores, limitAfter.cores);
      const ratio = limit.opsPerSecond > 0 ? system.opsPerSecond / limit.opsPerSecond : 0;
      const entry: WriteCell = {
        valueBytes,
        concurrency,
        limit: cell(limit),
        system: cell(system),
        ratio: round(ratio, 3),
        ratioToBestLimit: 0,
        catchUpMs,
        sustainedOpsPerSecond,
        breakdown: breakdown(counted, requests, config.homeRegion, config.shardCount, system.completed, system.latency.meanMs ?? 0),
        cpu: { limit: limitCpuUsed, system: systemCpuUsed },
      };
      writeCells.push(entry);
      if (valueBytes === 100) latencyCdf[`c${concurrency}`] = cdfPoints(system.latencies);
      print(
        `writes ${valueBytes} B c${concurrency}: limit ${limit.opsPerSecond.toFixed(0)}/s p99 ${limit.latency.p99Ms} ms | epochkv ${system.opsPerSecond.toFixed(0)}/s p50 ${system.latency.p50Ms} p99 ${system.latency.p99Ms} ms | ratio ${ratio.toFixed(2)} | replicas caught up ${catchUpMs ?? `> ${catchUpWaitMs}`} ms later: sustained ${sustainedOpsPerSecond}/s | lost races/write ${entry.breakdown.lostRacesPerWrite} | cores ${JSON.stringify(systemCpuUsed)}`,
      );
    }
    for (const entry of writeCells) {
      const best = Math.max(...writeCells.filter((other) => other.valueBytes === entry.valueBytes).map((other) => other.limit.opsPerSecond));
      entry.ratioToBestLimit = best > 0 ? round(entry.system.opsPerSecond / best, 3) : 0;
    }
    const at32 = writeCells.find((entry) => entry.valueBytes === 100 && entry.concurrency === 32);
    // Half load is half of what the cluster sustains with its replicas current, not half of a
    // burst the replicas absorbed by falling behind.
    const maxWrite100 = Math.max(...writeCells.filter((entry) => entry.valueBytes === 100).map((entry) => entry.sustainedOpsPerSecond ?? entry.system.opsPerSecond));

    let profileSummary: ProfileSummary | null = null;
    if (options.profile || !options.quick) {
      mkdirSync(options.resultsDirectory, { recursive: true });
      await waitForConvergence(stores, config.shardCount, 30_000);
      const file = path.join(options.resultsDirectory, `${runId}-writes-c32.cpuprofile`);
      print(`\nprofile: a further ${p.profileMs / 1000} s write phase at concurrency 32 under the CPU profiler`);
      const profiled = await withCpuProfile(file, () => systemWrite(100, 32, 'profiled epochkv 100 B c32', p.profileMs));
      profileSummary = profiled.summary;
      print(`profile: ${file}: ${profiled.summary.categories.slice(0, 6).map((entry) => `${entry.category} ${entry.share}%`).join(', ')}`);
    }

    // ---------------------------------------------------------------- reads
    print(`\nreads: ${p.readMs / 1000} s each at concurrency ${p.readConcurrency}`);
    const converged = await waitForConvergence(stores, config.shardCount, 60_000);
    print(`reads: replicas caught up with the home head (${converged === null ? 'not within 60 s' : `${converged} ms`})`);
    const readKeys = [...written100];
    const heads = await Promise.all(Array.from({ length: config.shardCount }, (_, shard) => stores.home.readHead(shard)));
    const token = encodeToken(Object.fromEntries(heads.map((head, shard) => [shard, head?.index ?? 0])));
    const replicaRegion = config.replicaRegions[0] as string;
    const replicaUrl = cloud.regions.find((region) => region.region === replicaRegion)?.apiUrl as string;
    const readCells: ReadCell[] = [];
    const readPhases: Record<string, MeasuredPhase> = {};
    for (const consistency of ['strong', 'session', 'eventual'] as const) {
      const url = consistency === 'strong' ? cloud.apiUrl : replicaUrl;
      const region = consistency === 'strong' ? config.homeRegion : replicaRegion;
      let servedByReplica = 0;
      const before = meter.snapshot();
      const begunMs = performance.now();
      const phase = await closedLoop({
        label: `read ${consistency}`,
        concurrency: p.readConcurrency,
        durationMs: p.readMs,
        warmupMs: p.warmupMs,
        progress: print,
        op: async () => {
          const key = readKeys[Math.floor(random() * readKeys.length)] as string;
          let answer;
          try {
            answer = await http.request('GET', `${url}/kv/${encodeURIComponent(key)}?consistency=${consistency}`, { headers: consistency === 'session' ? { 'x-epochkv-session': token } : {} });
          } catch (error) {
            return { ok: false, code: failureCode(undefined, error) };
          }
          if (answer.status !== 200) return { ok: false, code: failureCode(answer) };
          if (answer.headers['x-epochkv-served-by'] === 'replica') servedByReplica += 1;
          return { ok: true };
        },
      });
      readPhases[consistency] = {
        ops: phase.completed,
        requests: phaseRequests(before, meter.snapshot(), performance.now() - begunMs),
        homeRegion: config.homeRegion,
        measuredRegions: config.replicaRegions,
        applyBatches: {},
        meanLatencyMs: phase.latency.meanMs ?? 0,
      };
      readCells.push({ consistency, region, concurrency: p.readConcurrency, cell: cell(phase), servedByReplica });
      print(`read ${consistency} at ${region}: ${phase.opsPerSecond.toFixed(0)}/s p50 ${phase.latency.p50Ms} p99 ${phase.latency.p99Ms} ms; served by replica ${servedByReplica}`);
    }

    // ---------------------------------------------------------------- write latency per replication mode
    const modeConcurrency = 8;
    print(`\nreplication modes: writes at concurrency ${modeConcurrency} with ?replication=async|quorum|all, ${p.modeRounds} interleaved round(s) of ${p.modeMs / 1000} s each`);
    const modeRuns = new Map<ModeCell['mode'], PhaseResult[]>();
    for (let round = 0; round < p.modeRounds; round += 1) {
      const order: ModeCell['mode'][] = round % 2 === 0 ? ['async', 'quorum', 'all'] : ['all', 'quorum', 'async'];
      for (const mode of order) {
        const pool = valuesOf(100);
        const phase = await closedLoop({
          label: `write ${mode}`,
          concurrency: modeConcurrency,
          durationMs: p.modeMs,
          warmupMs: p.warmupMs,
          progress: print,
          op: async () => putThroughApi(http, `${cloud.apiUrl}`, `mode/${Math.floor(random() * 400)}`, pool[Math.floor(random() * pool.length)] as string, 10_000, mode),
        });
        modeRuns.set(mode, [...(modeRuns.get(mode) ?? []), phase]);
      }
    }
    const modeCells: ModeCell[] = (['async', 'quorum', 'all'] as const).map((mode) => {
      const runs = modeRuns.get(mode) ?? [];
      const merged = runs.slice(1).reduce((all, next) => combine(all, next), runs[0] as PhaseResult);
      return { mode, concurrency: modeConcurrency, valueBytes: 100, cell: cell(merged) };
    });
    for (const row of modeCells) print(`write ${row.mode} c${modeConcurrency}: ${row.cell.opsPerSecond}/s p50 ${row.cell.p50Ms} p99 ${row.cell.p99Ms} ms, failed ${row.cell.failed}`);

    // ---------------------------------------------------------------- replication lag at half load
    const applyBatches = () => Object.fromEntries(cloud.replicas.map((replica) => [replica.region, replica.eventSource.stats().batches]));
    const pollerStats = () => Object.fromEntries(cloud.replicas.map((replica) => [replica.region, replica.eventSource.stats()]));
    const steadyPhase = async (valueBytes: number, ratePerSecond: number, durationMs: number, label: string) => {
      await waitForConvergence(stores, config.shardCount, 30_000);
      const pool = valuesOf(valueBytes);
      meter.trackEntries(mainPrefix, config.homeRegion);
      const before = meter.snapshot();
      const batchesBefore = applyBatches();
      const pollersBefore = pollerStats();
      const begunMs = performance.now();
      const cores = cpuMeter(cpuGroups, { 'dynamodb-local JIT': { pid: jvm, threads: jitThreads } });
      const loopMeter = eventLoopMeter();
      const phase = await openLoop({
        label,
        ratePerSecond,
        durationMs,
        maxInFlight: 256,
        progress: print,
        op: (sequence) => putThroughApi(http, cloud.apiUrl, `lag${valueBytes}-${Math.floor(random() * keySpace)}`, pool[sequence % pool.length] as string),
      });
      const machine = { cores: cores.stop(), eventLoop: loopMeter.stop() };
      const convergedMs = await waitForConvergence(stores, config.shardCount, 60_000);
      const pollersAfter = pollerStats();
      const pollerSeconds = (performance.now() - begunMs) / 1000;
      const pollers = Object.fromEntries(
        Object.keys(pollersAfter).map((region) => {
          const batches = (pollersAfter[region]?.batches ?? 0) - (pollersBefore[region]?.batches ?? 0);
          const received = (pollersAfter[region]?.received ?? 0) - (pollersBefore[region]?.received ?? 0);
          return [region, { batches, messagesPerBatch: batches > 0 ? round(received / batches, 2) : 0, batchesPerSecond: round(batches / pollerSeconds, 1) }];
        }),
      );
      const requests = phaseRequests(before, meter.snapshot(), performance.now() - begunMs);
      const batchesAfter = applyBatches();
      const entries = meter.entries(phase.startMs, phase.endMs + 60_000);
      meter.trackEntries(undefined, config.homeRegion);
      const measured: MeasuredPhase = {
        ops: phase.ok + phase.failed,
        requests,
        homeRegion: config.homeRegion,
        measuredRegions: config.replicaRegions,
        applyBatches: Object.fromEntries(Object.keys(batchesAfter).map((region) => [region, (batchesAfter[region] ?? 0) - (batchesBefore[region] ?? 0)])),
        meanLatencyMs: phase.latency.meanMs ?? 0,
      };
      return { phase, convergedMs, entries, measured, pollers, machine };
    };
    const halfLoad = Math.max(1, round(maxWrite100 / 2, 1));
    const lagRate = options.lagRatePerSecond ?? halfLoad;
    const why = options.lagRatePerSecond === undefined ? `half of ${maxWrite100.toFixed(0)}/s, the highest sustained write rate` : `set by --lag-rate; half load would be ${halfLoad}/s`;
    print(`\nreplication lag: steady writes at ${lagRate}/s (${why}) for ${p.lagMs / 1000} s`);
    const lag = await steadyPhase(100, lagRate, p.lagMs, 'lag writes 100 B');
    const lagRegions = lagByRegion(lag.entries, config.replicaRegions).map((region) => ({ ...region, poller: lag.pollers[region.region] ?? null }));
    const { samples } = lagSamples(lag.entries, config.replicaRegions);
    const lagCdf = Object.fromEntries(config.replicaRegions.map((region) => [region, cdfPoints(samples.filter((sample) => sample.region === region).map((sample) => Math.max(0.1, sample.lagMs)))]));
    for (const region of lagRegions) {
      print(`lag ${region.region}: p50 ${region.p50Ms} p99 ${region.p99Ms} max ${region.maxMs} ms over ${region.entries} entries (ship ${region.meanShipMs ?? '—'}, queue ${region.meanQueueMs ?? '—'}, apply ${region.meanApplyMs ?? '—'} ms mean; ${region.viaRepair} via repair; ${region.unapplied} applied unseen)`);
    }
    print(`lag phase: cores ${JSON.stringify(lag.machine.cores)}; this process's event loop busy ${lag.machine.eventLoop.utilization}, a 10 ms timer late by ${lag.machine.eventLoop.delayP99Ms} ms at p99`);
    const lightRate = Math.min(10, lagRate);
    print(`\nreplication lag at light load: ${lightRate} writes/s for ${p.lightLagMs / 1000} s`);
    const light = await steadyPhase(100, lightRate, p.lightLagMs, 'light writes 100 B');
    const lightRegions = lagByRegion(light.entries, config.replicaRegions).map((region) => ({ ...region, poller: light.pollers[region.region] ?? null }));
    for (const region of lightRegions) print(`lag at ${lightRate}/s ${region.region}: p50 ${region.p50Ms} p99 ${region.p99Ms} max ${region.maxMs} ms`);
    print(`\ncost: steady 4 KiB writes at ${lagRate}/s for ${p.cost4kMs / 1000} s`);
    const steady4k = await steadyPhase(4096, lagRate, p.cost4kMs, 'steady writes 4 KiB');

    // ---------------------------------------------------------------- failover
    print(`\nfailover: ${p.failovers} × kill a shard's leader while writing to it`);
    const failoverRuns: FailoverRun[] = [];
    const boundMs = config.leaseMs + 2 * config.tickMs;
    for (let run = 0; run < p.failovers; run += 1) {
      await cloud.waitForLeaders(30_000);
      const status = await clusterStatus(http, cloud.apiUrl);
      const candidates = status.shards.filter((shard) => shard.live && shard.leader !== null && cloud.nodes().find((node) => node.id === shard.leader)?.state === 'running');
      const target = candidates[(run * 3) % candidates.length] ?? candidates[0];
      if (target === undefined) throw new Error('failover: no shard with a running leader');
      const keys = keysOfShard(target.shard, config.shardCount, 16, `fo${run}-`);
      const acknowledgements: { doneMs: number; epoch: number }[] = [];
      let failedWrites = 0;
      let stop = false;
      let killMs = Number.POSITIVE_INFINITY;
      const writers = Array.from({ length: 2 }, async (_, worker) => {
        for (let n = worker; !stop; n += 2) {
          const outcome = await putThroughApi(http, cloud.apiUrl, keys[n % keys.length] as string, `v${n}`, 4 * config.leaseMs);
          if (outcome.ok) acknowledgements.push({ doneMs: performance.now(), epoch: outcome.epoch ?? 0 });
          else {
            if (performance.now() > killMs) failedWrites += 1;
            await sleep(10);
          }
        }
      });
      await sleep(500);
      // The leader as of now (a node's next invocation takes its own leases at a higher epoch).
      const current = (await clusterStatus(http, cloud.apiUrl)).shards[target.shard];
      const leader = current?.leader ?? target.leader;
      killMs = performance.now();
      cloud.kill(leader as string);
      // The epoch the writes were committed under when the leader died.
      const oldEpoch = Math.max(current?.epoch ?? target.epoch, ...acknowledgements.filter((ack) => ack.doneMs < killMs).map((ack) => ack.epoch));
      const deadline = killMs + 6 * config.leaseMs;
      while (performance.now() < deadline && !acknowledgements.some((ack) => ack.doneMs > killMs && ack.epoch > oldEpoch)) await sleep(5);
      stop = true;
      await Promise.all(writers);
      const after = acknowledgements.filter((ack) => ack.doneMs > killMs);
      const firstNew = after.find((ack) => ack.epoch > oldEpoch);
      const lastOld = after.filter((ack) => ack.epoch === oldEpoch).at(-1);
      const times = [killMs, ...acknowledgements.filter((ack) => ack.doneMs > killMs - 1_000 && (firstNew === undefined || ack.doneMs <= firstNew.doneMs)).map((ack) => ack.doneMs)].sort((a, b) => a - b);
      let gap = 0;
      for (let index = 1; index < times.length; index += 1) gap = Math.max(gap, (times[index] as number) - (times[index - 1] as number));
      const result: FailoverRun = {
        shard: target.shard,
        killed: leader as string,
        oldEpoch,
        newEpoch: firstNew?.epoch ?? null,
        failoverMs: firstNew === undefined ? null : Math.round(firstNew.doneMs - killMs),
        lastOldEpochWriteMs: lastOld === undefined ? null : Math.round(lastOld.doneMs - killMs),
        longestGapMs: Math.round(gap),
        failedWrites,
      };
      failoverRuns.push(result);
      print(`failover ${run + 1}: shard ${result.shard} ${result.killed}@${result.oldEpoch} killed; first write at epoch ${result.newEpoch ?? '?'} after ${result.failoverMs ?? '—'} ms (bound ${boundMs}); last old-epoch write ${result.lastOldEpochWriteMs ?? '—'} ms; longest gap ${result.longestGapMs} ms`);
      cloud.start(leader as string);
      await sleep(1_000);
    }
    const failoverTimes = failoverRuns.map((run) => run.failoverMs).filter((value): value is number => value !== null);

    const mainStatusNote = `apply pollers and replica heartbeats run in the benchmark process, nodes in ${config.nodeIds.length} child processes, DynamoDB Local in a JVM; the SQS emulator in the benchmark process`;
    await stopCloud();
    stores.destroy();

    // ---------------------------------------------------------------- background of an idle cluster
    print(`\nbackground: the node and replica-heartbeat loops in this process on their own tables`);
    const background: BackgroundMeasurement = await measureBackground({
      meter,
      dynamoEndpoint: dynamo.endpoint,
      sqsEndpoint: sqs.endpoint,
      prefix: `bench-bg-${runId}`,
      homeRegion: config.homeRegion,
      replicaRegions: config.replicaRegions,
      shardCount: config.shardCount,
      nodeIds: config.nodeIds,
      leaseMs: config.leaseMs,
      tickMs: config.tickMs,
      windowMs: p.backgroundWindowMs,
      modelTickMs: 1_000,
      progress: print,
    });
    const nodeRequestsPerSecond = totals(background.nodes);
    print(`background: nodes ${nodeRequestsPerSecond.count.toFixed(1)} requests/s (${nodeRequestsPerSecond.writeUnits.toFixed(1)} WRU/s, ${nodeRequestsPerSecond.readUnits.toFixed(1)} RRU/s) at tickMs ${config.tickMs}; one replica heartbeat ${totals(background.heartbeatPerRegion).count.toFixed(1)} requests/s`);

    // ---------------------------------------------------------------- scaling
    print(`\nscaling: writes at concurrency 32 with ${p.scalingShards.join(', ')} shards, ${p.scalingMs / 1000} s each`);
    const scaling: ScalingRow[] = [];
    for (const shards of p.scalingShards) {
      const prefix = `bench-s${shards}-${runId}`;
      const scaled = await startLocalCloud({ basePort: 0, dynamoEndpoint: dynamo.endpoint, sqsEndpoint: sqs.endpoint, tablePrefix: prefix, shardCount: shards, rateLimitPerSecond: 1_000_000, log: sink });
      try {
        await scaled.waitForLeaders(30_000);
        await sleep(500);
        const before = meter.snapshot();
        const pool = valuesOf(100);
        const cores = cpuMeter(() => ({ 'dynamodb-local': [jvm], nodes: scaled.nodes().map((node) => node.pid).filter((pid): pid is number => pid !== undefined) }));
        const phase = await closedLoop({
          label: `scaling ${shards} shards`,
          concurrency: 32,
          durationMs: p.scalingMs,
          warmupMs: p.warmupMs,
          progress: print,
          op: (_worker, sequence) => putThroughApi(http, scaled.apiUrl, `s-${Math.floor(random() * keySpace)}`, pool[sequence % pool.length] as string),
        });
        const commits = totals(filterSnapshot(diffSnapshots(meter.snapshot(), before), { prefix, role: 'commit' }));
        const row: ScalingRow = { shards, concurrency: 32, cell: cell(phase), lostRacesPerWrite: round(phase.completed > 0 ? commits.errors / phase.completed : 0, 3), cpu: cores.stop() };
        scaling.push(row);
        print(`scaling ${shards} shards: ${phase.opsPerSecond.toFixed(0)}/s p99 ${phase.latency.p99Ms} ms, lost races per write ${row.lostRacesPerWrite}, failed ${phase.failed}; cores ${JSON.stringify(row.cpu)}`);
      } finally {
        await scaled.stop();
      }
    }
    print(`\nhome only: the write phase at concurrency ${p.homeOnlyConcurrency.join(', ')} on a cluster without replica regions (${p.systemMs / 1000} s each)`);
    const homeOnly: HomeOnlyCell[] = [];
    {
      const prefix = `bench-home-${runId}`;
      const alone = await startLocalCloud({ basePort: 0, dynamoEndpoint: dynamo.endpoint, sqsEndpoint: sqs.endpoint, tablePrefix: prefix, shardCount: config.shardCount, replicaRegions: [], rateLimitPerSecond: 1_000_000, log: sink });
      try {
        await alone.waitForLeaders(30_000);
        const nodePids = () => ({ 'dynamodb-local': [jvm], nodes: alone.nodes().map((node) => node.pid).filter((pid): pid is number => pid !== undefined) });
        for (const concurrency of p.homeOnlyConcurrency) {
          const pool = valuesOf(100);
          // The limit again, bracketing the phase, with this cluster's background on the engine.
          const limitHalf = (label: string) =>
            closedLoop({
              label,
              concurrency,
              durationMs: p.limitMs / 2,
              warmupMs: p.warmupMs,
              progress: print,
              op: (_worker, sequence) => raw.put(`w100-${Math.floor(random() * keySpace)}`, Buffer.from(pool[sequence % pool.length] as string)),
            });
          const limitBefore = await limitHalf(`home only limit c${concurrency} (before)`);
          const cores = cpuMeter(nodePids);
          const phase = await closedLoop({
            label: `home only c${concurrency}`,
            concurrency,
            durationMs: p.systemMs,
            warmupMs: p.warmupMs,
            progress: print,
            op: (_worker, sequence) => putThroughApi(http, alone.apiUrl, `h-${Math.floor(random() * keySpace)}`, pool[sequence % pool.length] as string),
          });
          const coresUsed = cores.stop();
          const limit = combine(limitBefore, await limitHalf(`home only limit c${concurrency} (after)`));
          const entry: HomeOnlyCell = {
            concurrency,
            limit: cell(limit),
            cell: cell(phase),
            ratio: limit.opsPerSecond === 0 ? null : round(phase.opsPerSecond / limit.opsPerSecond, 3),
            cpu: coresUsed,
          };
          homeOnly.push(entry);
          print(`home only c${concurrency}: limit ${limit.opsPerSecond.toFixed(0)}/s | epochkv ${phase.opsPerSecond.toFixed(0)}/s p50 ${phase.latency.p50Ms} p99 ${phase.latency.p99Ms} ms | ratio ${entry.ratio ?? '—'} | cores ${JSON.stringify(entry.cpu)}`);
        }
      } finally {
        await alone.stop();
      }
    }
    if (!p.scalingShards.includes(8) && at32 !== undefined) {
      scaling.push({ shards: 8, concurrency: 32, cell: at32.system, lostRacesPerWrite: at32.breakdown.lostRacesPerWrite, cpu: at32.cpu.system });
      scaling.sort((a, b) => a.shards - b.shards);
    }
    await cleanup();

    // ---------------------------------------------------------------- etcd
    const etcd: EtcdReport = await runEtcd(options, p, http, etcdFound, writeCells, print, (stop) => cleanups.push(stop));

    // ---------------------------------------------------------------- cost model
    const cost = costReport(lag.measured, steady4k.measured, readPhases, background, at32?.system.opsPerSecond ?? maxWrite100, config.replicaRegions.length);

    // ---------------------------------------------------------------- targets, notes, report
    const lagP99 = Math.max(...lagRegions.map((region) => region.p99Ms ?? Number.POSITIVE_INFINITY));
    const ratio32 = at32?.ratio ?? 0;
    const failoverMedian = median(failoverTimes);
    const failoverMax = failoverTimes.length === 0 ? null : Math.max(...failoverTimes);
    const withinBound = failoverRuns.filter((run) => run.failoverMs !== null && run.failoverMs <= boundMs).length;
    const targets: Target[] = [
      { name: 'write throughput at concurrency 32 (100 B)', target: '≥ 0.6 × the raw transaction limit', measured: `${ratio32.toFixed(2)} × (${at32?.system.opsPerSecond ?? '?'} of ${at32?.limit.opsPerSecond ?? '?'} ops/s)`, met: ratio32 >= 0.6 },
      {
        name: 'replica lag p99 at half load',
        target: '≤ 250 ms',
        measured: `${Number.isFinite(lagP99) ? lagP99 : '—'} ms (worst region)${lagRate === halfLoad ? '' : ` at ${lagRate} writes/s set by --lag-rate, not half load (${halfLoad}/s): not a measure of the target`}`,
        met: lagRate === halfLoad && lagP99 <= 250,
      },
      { name: 'failover', target: `≤ leaseMs + 2 × tickMs = ${boundMs} ms`, measured: `median ${failoverMedian ?? '—'} ms, max ${failoverMax ?? '—'} ms; ${withinBound} of ${failoverRuns.length} within`, met: failoverRuns.length > 0 && withinBound === failoverRuns.length },
    ];
    const inProcessBackground = totals(filterSnapshot(idlePerSecond, { service: 'dynamodb' })).count;
    const notes = profileNotes(writeCells, lagRegions, profileSummary, scaling, config.shardCount, {
      nodesPerSecond: round(nodeRequestsPerSecond.count, 0),
      inProcessPerSecond: round(inProcessBackground, 0),
      homeOnly: homeOnly.find((entry) => entry.concurrency === 32) ?? null,
    });
    const summaryLine = `bench: write_ratio_to_limit=${ratio32.toFixed(2)} p99_ms=${at32?.system.p99Ms ?? 'NaN'} lag_p99_ms=${Number.isFinite(lagP99) ? lagP99 : 'NaN'} failover_ms=${failoverMedian ?? 'NaN'}`;
    const report: BenchReport = {
      version: 1,
      mode: options.quick ? 'quick' : 'full',
      command: options.command,
      startedAt: startedAt.toISOString(),
      durationS: Math.round((performance.now() - startedMs) / 1000),
      machine: machineInfo,
      cluster: { shards: config.shardCount, nodes: config.nodeIds.length, leaseMs: config.leaseMs, tickMs: config.tickMs, homeRegion: config.homeRegion, replicaRegions: config.replicaRegions, note: mainStatusNote },
      writes: writeCells,
      homeOnly,
      reads: readCells,
      modes: modeCells,
      lag: {
        targetPerSecond: lagRate,
        halfLoadPerSecond: halfLoad,
        achievedPerSecond: round(lag.phase.opsPerSecond, 1),
        writes: cell(lag.phase),
        skipped: lag.phase.skipped,
        regions: lagRegions,
        machine: lag.machine,
        cdf: lagCdf,
        light: { ratePerSecond: lightRate, achievedPerSecond: round(light.phase.opsPerSecond, 1), regions: lightRegions },
      },
      failover: { runs: failoverRuns, leaseMs: config.leaseMs, tickMs: config.tickMs, boundMs, medianMs: failoverMedian, maxMs: failoverMax, withinBound },
      scaling,
      cost,
      etcd,
      profile: { summary: profileSummary, notes },
      targets,
      latencyCdf,
      summaryLine,
    };
    writeReport(report, `${runId}`, options.resultsDirectory, options.latestDirectory, print);
    print(summaryLine);
    return report;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await cleanup();
    meter.detach();
    http.destroy();
  }
}

/**
 * Prints the tables and writes `<name>.json|.md|.svg` (and `latest.*`) under `resultsDirectory`;
 * with `latestDirectory`, the Markdown and the chart the README shows as well.
 */
export function writeReport(report: BenchReport, name: string, resultsDirectory: string, latestDirectory: string | undefined, print: (line: string) => void): void {
  for (const line of formatText(report)) print(line);
  mkdirSync(resultsDirectory, { recursive: true });
  const base = path.join(resultsDirectory, name);
  const svgFile = `${base}.svg`;
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(svgFile, renderChart(chartData(report)));
  writeFileSync(`${base}.md`, formatMarkdown(report, path.basename(svgFile)));
  if (name !== 'latest') {
    for (const extension of ['json', 'svg']) copyFileSync(`${base}.${extension}`, path.join(resultsDirectory, `latest.${extension}`));
    writeFileSync(path.join(resultsDirectory, 'latest.md'), formatMarkdown(report, 'latest.svg'));
  }
  print(`report: ${base}.json, ${base}.md, chart ${svgFile} (also ${path.join(resultsDirectory, 'latest.*')})`);
  if (latestDirectory !== undefined) {
    mkdirSync(latestDirectory, { recursive: true });
    copyFileSync(svgFile, path.join(latestDirectory, 'latest.svg'));
    writeFileSync(path.join(latestDirectory, 'latest.md'), formatMarkdown(report, 'latest.svg'));
    print(`report: README copy in ${path.join(latestDirectory, 'latest.md')} and latest.svg`);
  }
}

async function runEtcd(
  options: BenchOptions,
  p: Plan,
  http: HttpClient,
  found: { binary: string; version: string } | undefined,
  writeCells: WriteCell[],
  print: (line: string) => void,
  onInterrupt: (stop: () => Promise<void>) => void,
): Promise<EtcdReport> {
  if (!options.etcd) return { available: false, skipped: 'not requested (--no-etcd)' };
  if (found === undefined) {
    print(`\netcd: skipped. ${etcdInstallHint}`);
    return { available: false, skipped: etcdInstallHint };
  }
  print(`\netcd ${found.version}: 3 members on loopback`);
  const cluster = await EtcdCluster.start(found.binary, http);
  onInterrupt(() => cluster.stop());
  const random = mulberry32(7);
  try {
    const pids = () => ({ etcd: cluster.members.map((member) => member.child?.pid).filter((pid): pid is number => pid !== undefined) });
    const writes: NonNullable<EtcdReport['writes']> = [];
    const cpu = cpuMeter(pids);
    const levels = [...p.etcdWriteLevels.map((concurrency) => ({ valueBytes: 100, concurrency })), ...(p.etcdWrite4k ? [{ valueBytes: 4096, concurrency: 32 }] : [])];
    for (const { valueBytes, concurrency } of levels) {
      const value = 'x'.repeat(valueBytes);
      const phase = await closedLoop({
        label: `etcd put ${valueBytes} B c${concurrency}`,
        concurrency,
        durationMs: p.etcdMs,
        warmupMs: p.warmupMs,
        progress: print,
        op: (worker) => cluster.put(worker % cluster.members.length, `w${valueBytes}-${Math.floor(random() * 10_000)}`, value),
      });
      const ours = writeCells.find((entry) => entry.valueBytes === valueBytes && entry.concurrency === concurrency);
      writes.push({ valueBytes, concurrency, cell: cell(phase), ratioToEpochkv: ours === undefined || phase.opsPerSecond === 0 ? null : round(ours.system.opsPerSecond / phase.opsPerSecond, 3) });
      print(`etcd put ${valueBytes} B c${concurrency}: ${phase.opsPerSecond.toFixed(0)}/s p50 ${phase.latency.p50Ms} p99 ${phase.latency.p99Ms} ms`);
    }
    const reads: NonNullable<EtcdReport['reads']> = [];
    for (const mode of ['linearizable', 'serializable'] as const) {
      const phase = await closedLoop({
        label: `etcd get ${mode}`,
        concurrency: p.readConcurrency,
        durationMs: p.etcdMs,
        warmupMs: p.warmupMs,
        progress: print,
        op: (worker) => cluster.get(worker % cluster.members.length, `w100-${Math.floor(random() * 10_000)}`, mode === 'serializable'),
      });
      reads.push({ mode, concurrency: p.readConcurrency, cell: cell(phase) });
      print(`etcd get ${mode}: ${phase.opsPerSecond.toFixed(0)}/s p50 ${phase.latency.p50Ms} p99 ${phase.latency.p99Ms} ms`);
    }
    const cpuUsed = cpu.stop();
    const runs: NonNullable<EtcdReport['failover']>['runs'] = [];
    for (let run = 0; run < p.etcdFailovers; run += 1) {
      await cluster.waitHealthy(30_000);
      const leader = await cluster.leader();
      if (leader === undefined) throw new Error('etcd: no leader');
      const survivors = cluster.members.map((_, index) => index).filter((index) => index !== leader);
      const before = await cluster.put(survivors[0] as number, 'fo-term', 'probe');
      const oldTerm = before.ok ? (before.epoch ?? 0) : 0;
      let killMs = Number.POSITIVE_INFINITY;
      let firstMs: number | undefined;
      let failedWrites = 0;
      let stop = false;
      // A put every 25 ms, each waiting as long as etcd holds it: a put sent while there is no
      // leader is held (up to etcd's request timeout), so waiting for earlier ones would measure that.
      const probes = new Set<Promise<void>>();
      const prober = (async () => {
        for (let n = 0; !stop; n += 1) {
          const sentMs = performance.now();
          const probe = cluster.put(survivors[n % survivors.length] as number, `fo-${n % 16}`, `v${n}`, 10_000).then((outcome) => {
            const doneMs = performance.now();
            if (outcome.ok) {
              // Like epochkv's: the first write acknowledged under a new term (etcd's epoch), sent after the kill.
              if (sentMs > killMs && (outcome.epoch ?? 0) > oldTerm && firstMs === undefined) firstMs = doneMs;
            } else if (doneMs > killMs) failedWrites += 1;
          });
          probes.add(probe);
          void probe.finally(() => probes.delete(probe));
          await sleep(25);
        }
      })();
      await sleep(500);
      killMs = performance.now();
      await cluster.kill(leader);
      const deadline = killMs + 20_000;
      while (firstMs === undefined && performance.now() < deadline) await sleep(5);
      stop = true;
      await prober;
      await Promise.all([...probes]);
      const failoverMs = firstMs === undefined ? null : Math.round(firstMs - killMs);
      runs.push({ killed: cluster.members[leader]?.name ?? String(leader), failoverMs, failedWrites });
      print(`etcd failover ${run + 1}: killed leader ${cluster.members[leader]?.name}; first write ${failoverMs ?? '—'} ms later`);
      cluster.startMember(leader);
      await sleep(1_000);
    }
    const times = runs.map((run) => run.failoverMs).filter((value): value is number => value !== null);
    return {
      available: true,
      version: found.version,
      members: cluster.members.length,
      dataDirectory: path.dirname(cluster.dataRoot),
      writes,
      reads,
      failover: { runs, medianMs: median(times), maxMs: times.length === 0 ? null : Math.max(...times), electionTimeoutMs: 1_000 },
      cpu: cpuUsed,
    };
  } finally {
    await cluster.stop();
  }
}

export function lagByRegion(entries: ReturnType<Meter['entries']>, regions: readonly string[]): LagRegion[] {
  const { samples, unapplied } = lagSamples(entries, regions);
  return regions.map((region) => {
    const mine = samples.filter((sample) => sample.region === region);
    const lags = summarize(mine.map((sample) => sample.lagMs));
    const meanOf = (pick: (sample: (typeof mine)[number]) => number | undefined) => {
      const picked = mine.map(pick).filter((value): value is number => value !== undefined);
      return picked.length === 0 ? null : round(picked.reduce((sum, value) => sum + value, 0) / picked.length, 1);
    };
    return {
      region,
      entries: mine.length,
      unapplied: unapplied[region] ?? 0,
      p50Ms: lags.p50Ms,
      p99Ms: lags.p99Ms,
      maxMs: lags.maxMs,
      meanShipMs: meanOf((sample) => sample.shipMs),
      meanQueueMs: meanOf((sample) => sample.queueMs),
      meanApplyMs: meanOf((sample) => sample.applyMs),
      viaRepair: mine.filter((sample) => sample.applyMs === undefined).length,
      appliedPerSecond:
        mine.length < 2 ? null : round((mine.length * 1000) / Math.max(1, Math.max(...mine.map((sample) => sample.appliedMs)) - Math.min(...mine.map((sample) => sample.committedMs))), 1),
      poller: null,
    };
  });
}

function costReport(
  write100: MeasuredPhase,
  write4k: MeasuredPhase,
  reads: Record<string, MeasuredPhase>,
  background: BackgroundMeasurement,
  amortizeAtOpsPerSecond: number,
  measuredRegions: number,
): CostReport {
  const backgroundFor = (regions: number) => {
    const lines = backgroundUsage(background, regions);
    return { replicaRegions: regions, usdPerMonth: round(monthlyUsd(lines), 2), lines: priceLines(lines).lines };
  };
  const backgrounds = [1, 2].map(backgroundFor);
  const scenarios: CostReport['scenarios'] = [];
  for (const regions of [1, 2]) {
    const backgroundMonth = backgrounds.find((entry) => entry.replicaRegions === regions)?.usdPerMonth ?? 0;
    for (const [operation, phase] of [
      ['write 100 B', write100],
      ['write 4 KiB', write4k],
    ] as const) {
      const priced = priceLines(writeUsage(phase, regions));
      scenarios.push({ operation, replicaRegions: regions, lines: priced.lines, usdPerMillion: priced.usdPerMillion, backgroundUsdPerMillion: amortizedPerMillion(backgroundMonth, amortizeAtOpsPerSecond) });
    }
  }
  for (const [consistency, phase] of Object.entries(reads)) {
    const priced = priceLines(readUsage(phase));
    scenarios.push({ operation: `read ${consistency} 100 B`, replicaRegions: consistency === 'strong' ? 0 : 1, lines: priced.lines, usdPerMillion: priced.usdPerMillion, backgroundUsdPerMillion: 0 });
  }
  const kvItem = (valueBytes: number) => itemSizeBytes({ shard: 3, key: 'w100-1234', value: new Uint8Array(valueBytes), version: 12345, epoch: 3, index: 12345 });
  const storageShare = (scenario: CostReport['scenarios'][number]) =>
    scenario.lines.filter((line) => !line.component.startsWith('API ')).reduce((sum, line) => sum + line.usdPerMillion, 0);
  const globalTables: CostReport['globalTables'] = [];
  for (const regions of [1, 2]) {
    for (const valueBytes of [100, 4096]) {
      const scenario = scenarios.find((entry) => entry.replicaRegions === regions && entry.operation === `write ${valueBytes === 100 ? '100 B' : '4 KiB'}`);
      globalTables.push({
        valueBytes,
        itemBytes: kvItem(valueBytes),
        replicaRegions: regions,
        usdPerMillion: round(globalTablesWrite(kvItem(valueBytes), regions).usdPerMillion, 3),
        epochkvStorageAndReplicationUsdPerMillion: scenario === undefined ? 0 : round(storageShare(scenario), 3),
      });
    }
  }
  return {
    priceNote: 'us-east-1 list prices as of 2026, verify; replica regions priced like us-east-1; no free tier',
    prices: Object.entries(priceTable).map(([key, price]) => ({ key, unit: price.unit, usd: price.usd, source: price.source, asOf: price.asOf })),
    scenarios,
    background: backgrounds,
    amortizedAtOpsPerSecond: round(amortizeAtOpsPerSecond, 1),
    globalTables,
    measuredVsModelled: [
      `Measured in this run by an SDK middleware in the benchmark process: every DynamoDB request of the API, the apply pollers and the replica heartbeats, with the capacity units DynamoDB Local reports (floored at AWS's per-request minimum), SQS requests and bytes, apply invocations (event source batches); per operation = the phase's requests minus the idle rate of the same components, over the operations. The ${measuredRegions} replica regions are measured separately; 1 region = their mean.`,
      'Measured on the side: the node fleet and one replica heartbeat, run in this process on their own tables (the local cloud runs the nodes in child processes the middleware cannot see), scaled per tick from the local tickMs to the AWS default of 1000 ms.',
      'Modelled: API Gateway (1 request per operation), the API Lambda (1 invocation, 512 MB for 40 ms per write and 15 ms per read on AWS; the local latencies reflect one saturated DynamoDB Local), apply Lambda duration (256 MB × 100 ms per invocation), one SQS send per write per region (Lambda serves one request per instance, so no shared batches), node and heartbeat Lambda time (70 s and 55 s invocations every minute), the apply mappings\' idle polling (0.25 requests/s per queue).',
    ],
  };
}

export function profileNotes(
  writeCells: WriteCell[],
  lagRegions: LagRegion[],
  profile: ProfileSummary | null,
  scaling: ScalingRow[],
  shardCount: number,
  engine: { nodesPerSecond: number; inProcessPerSecond: number; homeOnly: HomeOnlyCell | null },
): string[] {
  const notes: string[] = [];
  const at32 = writeCells.find((entry) => entry.valueBytes === 100 && entry.concurrency === 32);
  if (at32 !== undefined) {
    const b = at32.breakdown;
    notes.push(
      `Write path at concurrency 32 (100 B): mean ${b.latencyMeanMs} ms = commits ${b.commitsPerWrite} × ${b.commitMeanMs} ms (lost races ${b.lostRacesPerWrite} per write) + lease reads ${b.leaseReadsPerWrite} × ${b.leaseReadMeanMs} ms + head reads ${b.headReadsPerWrite} × ${b.headReadMeanMs} ms + SQS send ${b.shipMeanMs} ms + other ${b.otherMsPerWrite} ms; the limit's transaction took p50 ${at32.limit.p50Ms} ms.`,
    );
    const perShard = at32.concurrency / shardCount;
    const writesPerCommit = b.commitsPerWrite > 0 ? round(1 / b.commitsPerWrite, 2) : 0;
    notes.push(
      `Of the "other" ${b.otherMsPerWrite} ms, up to about ${b.commitMeanMs} ms is waiting for the shard's transaction in flight in the API instance (group commit: of the ${perShard} writers per shard, those that queue meanwhile share the next transaction — ${writesPerCommit} writes per transaction here); the rest is HTTP, the handler and the shared event loop.`,
    );
    notes.push(`CPU cores used during the limit phase: ${JSON.stringify(at32.cpu.limit)}; during epochkv's: ${JSON.stringify(at32.cpu.system)} ("others" = the rest of the machine).`);
    notes.push(
      `DynamoDB Local is the bottleneck (one JVM serving every region's tables): per write it ran home commit transactions ${b.commitsPerWrite}, replica apply transactions ${b.applyTransactionsPerWrite} (both regions) and other requests ${b.otherDynamoRequestsPerWrite} (lease, head and progress reads, replica reports, pull repairs), on top of a background of about ${engine.nodesPerSecond} requests/s from the nodes and ${engine.inProcessPerSecond} requests/s from the replica heartbeats when idle.` +
        (engine.homeOnly === null ? '' : ` Without replica regions the same write path ran at ${engine.homeOnly.cell.opsPerSecond} writes/s, ${engine.homeOnly.ratio ?? '—'} × its limit (${engine.homeOnly.limit.opsPerSecond}/s) measured alongside.`),
    );
  }
  if (profile !== null) notes.push(`Benchmark process CPU profile (load generator, API, SQS emulator, apply pollers, heartbeats): ${profile.categories.slice(0, 6).map((entry) => `${entry.category} ${entry.share}%`).join('; ')}.`);
  for (const region of lagRegions) {
    // Queue and apply times exist only for entries whose message reached the poller before a pull applied them.
    const deliveredCount = region.entries - region.viaRepair;
    const delivered =
      region.meanApplyMs === null
        ? 'no entry reached the poller before a pull applied it'
        : `over the ${deliveredCount} entries the poller delivered, mean → received ${region.meanQueueMs ?? '—'} ms, → applied ${region.meanApplyMs} ms`;
    const poller = region.poller === null ? '' : ` Its poller ran ${region.poller.batchesPerSecond} apply invocations per second with ${region.poller.messagesPerBatch} messages each (the emulator gives one message per shard per receive).`;
    notes.push(
      `Lag ${region.region}: p99 ${region.p99Ms} ms; mean commit → queue accepted ${region.meanShipMs ?? '—'} ms; ${delivered}; ${region.viaRepair} of ${region.entries} entries applied by pull repair; ${region.appliedPerSecond ?? '—'} entries applied per second from the first commit to the last apply.${poller}`,
    );
  }
  const one = scaling.find((row) => row.shards === 1);
  if (one !== undefined) notes.push(`One shard serializes its log: ${one.cell.opsPerSecond} writes/s at concurrency 32 with ${one.lostRacesPerWrite} lost races per write.`);
  return notes;
}
