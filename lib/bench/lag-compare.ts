/**
 * `npm run bench:lag -- …`: replication lag of several apply settings at one write rate, in
 * alternating runs in one process on one pair of emulators. A single lag phase's p99 varies threefold
 * from run to run on a busy 2-core machine; alternating the variants and comparing medians is
 * what tells two settings apart (it is how the defaults of functions/apply.ts were chosen).
 */
import { startLocalCloud, type LocalApplyOptions } from '../local/cloud.ts';
import { startDynamoLocal, startSqsEmulator, type Emulator } from '../local/emulators.ts';
import { packItemsBounds } from '../service/replica-applier.ts';
import { eventLoopMeter, type EventLoopLoad } from './cpu.ts';
import { HttpClient } from './http.ts';
import { closedLoop, openLoop } from './load.ts';
import { Meter } from './meter.ts';
import type { LagRegion } from './report.ts';
import { lagByRegion, putThroughApi, uncountedStores, waitForConvergence } from './run.ts';
import { median, round } from './stats.ts';

/** What a variant may set: the apply function's options and its local event source's. */
export type LagVariant = LocalApplyOptions;

const variantBounds: Record<keyof LagVariant, { min: number; max: number; integer: boolean }> = {
  pullAfterQueuedMs: { min: 0, max: Number.POSITIVE_INFINITY, integer: false },
  pullEveryMs: { min: 0, max: 60_000, integer: false },
  pullBackoffFactor: { min: 0, max: 100, integer: false },
  pollers: { min: 1, max: 10, integer: true },
  batchSize: { min: 1, max: 10, integer: true },
  packItemsMax: { ...packItemsBounds, integer: true },
};

/** Parses one variant argument (a JSON object, `{}` = the defaults); throws a message that says what to fix. */
export function parseVariant(text: string): LagVariant {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`variant ${text} is not JSON: write an object such as '{"pullEveryMs":100}' ('{}' = the defaults)`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error(`variant ${text} must be a JSON object such as '{"pullEveryMs":100}'`);
  const variant: LagVariant = {};
  for (const [name, value] of Object.entries(parsed)) {
    const bounds = variantBounds[name as keyof LagVariant];
    if (bounds === undefined) throw new Error(`variant ${text}: unknown setting "${name}"; known: ${Object.keys(variantBounds).join(', ')}`);
    // JSON has no Infinity: "Infinity" (a string) turns pulling off.
    const number = value === 'Infinity' ? Number.POSITIVE_INFINITY : value;
    if (typeof number !== 'number' || Number.isNaN(number) || number < bounds.min || number > bounds.max || (bounds.integer && !Number.isInteger(number))) {
      throw new Error(`variant ${text}: ${name} must be ${bounds.integer ? 'an integer' : 'a number'} from ${bounds.min} to ${bounds.max}, got ${JSON.stringify(value)}`);
    }
    variant[name as keyof LagVariant] = number;
  }
  return variant;
}

export interface LagCompareOptions {
  ratePerSecond: number;
  seconds: number;
  rounds: number;
  variants: LagVariant[];
  print: (line: string) => void;
  /** Running emulators to use (tests); by default the run starts and stops its own. */
  emulators?: { dynamoEndpoint: string; sqsEndpoint: string };
  /** Warm-up at concurrency 32 before the first run and before each later one (default 40 s and 5 s). */
  warmupMs?: { first: number; later: number };
}

export interface LagRun {
  round: number;
  variant: number;
  /** Where the run came in its round: 1 = first (`roundOrder`). */
  position: number;
  achievedPerSecond: number;
  /** Per replica region, as the full benchmark reports it. */
  regions: LagRegion[];
  worstP99Ms: number | null;
  /** This process's event loop during the phase (the API, the SQS emulator, the apply pollers, the load). */
  loop: EventLoopLoad;
}

/**
 * The order in which round `roundIndex` (from 0) runs `variantCount` variants: rotated by one
 * each round (A B C, B C A, C A B, …; for two variants A B, B A). Runs on one pair of emulators
 * do not cost the same over time (the first after a fresh engine is the slowest, and the machine
 * drifts), and in a fixed order the variant that always runs later gets the drift: in earlier
 * comparisons the variant that ran second won nearly every round, whichever it was
 * (docs/benchmark-notes.md, "Comparing apply settings"). Over a multiple of `variantCount`
 * rounds each variant runs in each place equally often.
 */
export function roundOrder(variantCount: number, roundIndex: number): number[] {
  return Array.from({ length: variantCount }, (_, place) => (place + roundIndex) % variantCount);
}

/** Runs every variant once per round, each on a fresh cluster, in the order `roundOrder` gives; resolves with every run and prints a summary. */
export async function runLagCompare(options: LagCompareOptions): Promise<LagRun[]> {
  const { print } = options;
  const http = new HttpClient(256);
  const meter = new Meter();
  meter.attach();
  let own: Emulator[] = [];
  let endpoints = options.emulators;
  if (endpoints === undefined) {
    const [dynamo, sqs] = await Promise.all([startDynamoLocal(), startSqsEmulator()]);
    own = [dynamo, sqs];
    endpoints = { dynamoEndpoint: dynamo.endpoint, sqsEndpoint: sqs.endpoint };
  }
  const warmupMs = options.warmupMs ?? { first: 40_000, later: 5_000 };
  const runs: LagRun[] = [];
  const value = 'v'.repeat(100);
  try {
    for (let roundIndex = 0; roundIndex < options.rounds; roundIndex += 1) {
      for (const [position, variantIndex] of roundOrder(options.variants.length, roundIndex).entries()) {
        const variant = options.variants[variantIndex] as LagVariant;
        const prefix = `lagcmp-${runs.length + 1}-${Date.now().toString(36)}`;
        const cloud = await startLocalCloud({ basePort: 0, dynamoEndpoint: endpoints.dynamoEndpoint, sqsEndpoint: endpoints.sqsEndpoint, tablePrefix: prefix, shardCount: 8, rateLimitPerSecond: 1_000_000, log: () => {}, apply: variant });
        const stores = uncountedStores(cloud);
        try {
          await cloud.waitForLeaders(30_000);
          const put = (key: string) => putThroughApi(http, cloud.apiUrl, key, value);
          // DynamoDB Local's JVM compiles its hot code in the first tens of seconds: warm it longer on the first run.
          await closedLoop({ label: 'warm-up', concurrency: 32, durationMs: runs.length === 0 ? warmupMs.first : warmupMs.later, op: (_worker, sequence) => put(`warm-${sequence % 1000}`) });
          await waitForConvergence(stores, cloud.config.shardCount, 60_000);
          await openLoop({ label: 'settle', ratePerSecond: options.ratePerSecond, durationMs: 3_000, maxInFlight: 256, op: (sequence) => put(`settle-${sequence % 1000}`) });
          meter.trackEntries(prefix, cloud.config.homeRegion);
          const loopMeter = eventLoopMeter();
          const phase = await openLoop({ label: 'lag', ratePerSecond: options.ratePerSecond, durationMs: options.seconds * 1000, maxInFlight: 256, op: (sequence) => put(`lag-${(sequence * 7919) % 10_000}`) });
          const loop = loopMeter.stop();
          await waitForConvergence(stores, cloud.config.shardCount, 60_000);
          const regions = lagByRegion(meter.entries(phase.startMs, phase.endMs), cloud.config.replicaRegions);
          meter.trackEntries(undefined, cloud.config.homeRegion);
          const p99s = regions.map((region) => region.p99Ms);
          const run: LagRun = {
            round: roundIndex + 1,
            variant: variantIndex,
            position: position + 1,
            achievedPerSecond: round(phase.opsPerSecond, 1),
            regions,
            worstP99Ms: p99s.some((p99) => p99 === null) ? null : Math.max(...(p99s as number[])),
            loop,
          };
          runs.push(run);
          print(
            `round ${run.round} variant ${variantIndex} ${JSON.stringify(variant)} (run ${run.position} of the round) at ${run.achievedPerSecond}/s: ${regions.map((region) => `${region.region} p50 ${region.p50Ms} p99 ${region.p99Ms} max ${region.maxMs} ms (${region.viaRepair} of ${region.entries} via pull, ship ${region.meanShipMs ?? '—'} ms mean)${region.unapplied > 0 ? ` (${region.unapplied} applied where the meter saw no apply request: no lag figure)` : ''}`).join('; ')}; event loop busy ${loop.utilization}, late p99 ${loop.delayP99Ms} ms`,
          );
        } finally {
          stores.destroy();
          await cloud.stop();
        }
      }
    }
  } finally {
    meter.detach();
    http.destroy();
    await Promise.all(own.map((emulator) => emulator.stop()));
  }
  print(`\nlag at ${options.ratePerSecond} writes/s, ${options.seconds} s per run, ${options.rounds} round(s): median over runs (worst region's p99; mean of the regions' p50)`);
  for (const [variantIndex, variant] of options.variants.entries()) {
    const mine = runs.filter((run) => run.variant === variantIndex);
    const p99s = mine.map((run) => run.worstP99Ms).filter((p99): p99 is number => p99 !== null);
    const p50s = mine.map((run) => run.regions.reduce((sum, region) => sum + (region.p50Ms ?? 0), 0) / run.regions.length);
    const p99Median = median(p99s);
    print(`variant ${variantIndex} ${JSON.stringify(variant)}: p99 median ${p99Median === null ? '—' : round(p99Median, 1)} ms (runs: ${p99s.join(', ')}), p50 median ${round(median(p50s) ?? Number.NaN, 1)} ms`);
  }
  if (options.variants.length > 1 && options.rounds > 1) {
    // The drift the rotating order cancels: what running earlier or later in a round was worth in this run.
    const byPosition = options.variants.map((_, index) => {
      const p99s = runs.filter((run) => run.position === index + 1 && run.worstP99Ms !== null).map((run) => run.worstP99Ms as number);
      return `run ${index + 1} of a round ${round(median(p99s) ?? Number.NaN, 1)} ms (${p99s.length} runs)`;
    });
    print(`by position, every variant together (p99 median): ${byPosition.join(', ')}`);
    if (options.rounds % options.variants.length !== 0) print(`${options.rounds} rounds of ${options.variants.length} variants: the order rotates each round, so some variants ran early more often than others; a multiple of ${options.variants.length} rounds balances it`);
  }
  return runs;
}
