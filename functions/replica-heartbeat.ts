import type { Context, ScheduledEvent } from 'aws-lambda';
import { makeDynamoClient } from '../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../lib/adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../lib/adapters/aws/replica-store.ts';
import { sleep, systemClock, type Clock } from '../lib/clock.ts';
import { configFromEnv, type ClusterConfig } from '../lib/config.ts';
import type { ReplicaReport, Store } from '../lib/ports/store.ts';
import { ReplicaApplier } from '../lib/service/replica-applier.ts';
import { ReplicaLogCompactor } from '../lib/service/compaction.ts';
import { replicaHeartbeatTelemetry } from './telemetry.ts';

export interface ReplicaHeartbeatOptions {
  config: ClusterConfig;
  replica: DynamoReplicaStore;
  home: Store;
  applier: ReplicaApplier;
  budgetMs: number;
  clock: Clock;
  log: (line: string) => void;
  signal?: AbortSignal;
}

/** Whether a shard's progress stood still at `appliedIndex` for at least idleMs. */
function isIdle(seen: { appliedIndex: number; sinceMs: number } | undefined, appliedIndex: number, nowMs: number, idleMs: number): boolean {
  return seen !== undefined && seen.appliedIndex === appliedIndex && nowMs - seen.sinceMs >= idleMs;
}

/**
 * The shards whose home head a tick reads: every shard that stood still for idleMs (it may have
 * lost its last message, which no later message would reveal), and a moving one — being fed by
 * its messages and the apply handler's pulls — only every movingEveryMs (the lag metric, the
 * catch-up of a shard far behind). Pure: the heartbeat's memory and the time in, shards out.
 */
export function shardsToReadHead(
  appliedNow: ReadonlyMap<number, number>,
  lastApplied: ReadonlyMap<number, { appliedIndex: number; sinceMs: number }>,
  lastHeadReadMs: ReadonlyMap<number, number>,
  nowMs: number,
  bounds: { idleMs: number; movingEveryMs: number },
): number[] {
  return [...appliedNow]
    .filter(([shard, appliedIndex]) => isIdle(lastApplied.get(shard), appliedIndex, nowMs, bounds.idleMs) || nowMs - (lastHeadReadMs.get(shard) ?? Number.NEGATIVE_INFINITY) >= bounds.movingEveryMs)
    .map(([shard]) => shard);
}

/**
 * The replica region's heartbeat: every tick it reports `appliedIndex` per shard to the home
 * `control` table (the lag the dashboard, metrics and alarms show), and pulls from the home
 * log any shard that made no progress for a while and is behind the home head — the case of a
 * lost last message, which no later message would reveal.
 */
export async function runReplicaHeartbeat(options: ReplicaHeartbeatOptions): Promise<{ ticks: number; repaired: number }> {
  const { config, replica, home, applier, clock, log } = options;
  const startedMs = clock.monotonicMs();
  // Per shard: the applied index last seen and since when (local elapsed time) it stood still.
  const lastApplied = new Map<number, { appliedIndex: number; sinceMs: number }>();
  const idleMs = Math.max(4 * config.tickMs, 1_000);
  const lastReported = new Map<number, { appliedIndex: number; atMs: number }>();
  const reportEveryMs = 10 * config.tickMs;
  const lastHeadReadMs = new Map<number, number>();
  const pullBehindEntries = 64;
  const summary = { ticks: 0, repaired: 0 };
  // This region's copy of the log follows the home's compaction point, as often as reports go out.
  const compactor = new ReplicaLogCompactor(home, replica, clock);
  let lastCompactionMs = Number.NEGATIVE_INFINITY;
  while (!options.signal?.aborted && clock.monotonicMs() - startedMs < options.budgetMs) {
    const tickStartMs = clock.monotonicMs();
    summary.ticks += 1;
    try {
      const progress = await replica.readAllProgress();
      // A shard whose progress moved is being fed (by its messages, and by the apply handler's
      // pulls when they queue up); one that stood still for idleMs may have lost its last
      // message, which no later message would reveal: that one reads the home head every tick.
      // A moving shard reads it every reportEveryMs, for the lag metric and the catch-up of a
      // shard far behind — under load that spares the home table most of a read per shard per tick.
      const nowMs = clock.monotonicMs();
      const appliedNow = new Map(Array.from({ length: config.shardCount }, (_, shard) => [shard, progress.get(shard)?.appliedIndex ?? 0]));
      const headShards = shardsToReadHead(appliedNow, lastApplied, lastHeadReadMs, nowMs, { idleMs, movingEveryMs: reportEveryMs });
      const heads = new Map(await Promise.all(headShards.map(async (shard) => [shard, await home.readHead(shard)] as const)));
      for (const shard of headShards) lastHeadReadMs.set(shard, nowMs);
      const reports: ReplicaReport[] = [];
      await Promise.all(
        Array.from({ length: config.shardCount }, async (_, shard) => {
          let appliedIndex = appliedNow.get(shard) ?? 0;
          const seen = lastApplied.get(shard);
          // 0 when the head was not read this tick: nothing to pull then.
          const headIndex = heads.get(shard)?.index ?? 0;
          const stoodStill = isIdle(seen, appliedIndex, nowMs, idleMs);
          let repaired = 0;
          // Pull when the last message may be lost (idle behind the head), and also when far
          // behind: one read of the home log and one transaction per 49 entries catch up faster
          // than one message per shard per receive.
          if (appliedIndex < headIndex && (stoodStill || headIndex - appliedIndex >= pullBehindEntries)) {
            repaired = await applier.repair(shard, headIndex);
            if (repaired > 0) log(`replica ${config.region}: shard ${shard} at ${appliedIndex} behind home head ${headIndex}${stoodStill ? ` for ${idleMs} ms` : ''}; pulled ${repaired} entries`);
            summary.repaired += repaired;
          }
          // The progress read at the top of the tick is current unless this tick repaired.
          const current = repaired > 0 ? await replica.readProgress(shard) : (progress.get(shard) ?? (await replica.readProgress(shard)));
          appliedIndex = current.appliedIndex;
          if (seen === undefined || seen.appliedIndex !== appliedIndex) lastApplied.set(shard, { appliedIndex, sinceMs: clock.monotonicMs() });
          // A report is a write to the home region: send it when the shard moved, else only as a
          // keepalive, so an idle cluster does not pay for a write per shard per tick.
          const reported = lastReported.get(shard);
          const reportMs = clock.monotonicMs();
          if (reported === undefined || reported.appliedIndex !== appliedIndex || reportMs - reported.atMs >= reportEveryMs) {
            reports.push({ region: config.region, shard, appliedIndex, appliedAtMs: current.appliedAtMs, lastLagMs: current.lastLagMs, reportedAtMs: clock.wallMs() });
          }
        }),
      );
      // One request for every shard that moved this tick, not one per shard.
      await home.putReplicaReports(reports.sort((a, b) => a.shard - b.shard));
      const reportedAtMs = clock.monotonicMs();
      for (const report of reports) lastReported.set(report.shard, { appliedIndex: report.appliedIndex, atMs: reportedAtMs });
      if (reportedAtMs - lastCompactionMs >= reportEveryMs) {
        lastCompactionMs = reportedAtMs;
        await compactor.run(appliedNow).catch((error: unknown) => log(`replica ${config.region}: log compaction failed: ${String(error)}`));
      }
    } catch (error) {
      log(`replica ${config.region}: heartbeat failed: ${String(error)}`);
    }
    const waitMs = config.tickMs - (clock.monotonicMs() - tickStartMs);
    if (waitMs > 0) await sleep(Math.min(waitMs, Math.max(0, options.budgetMs - (clock.monotonicMs() - startedMs))));
  }
  return summary;
}

const timeoutMarginMs = 5_000;
const invocationBudgetMs = 55_000;

/** The Lambda entry point: scheduled every minute in each replica region. */
export const handler = async (_event: ScheduledEvent, context: Context) => {
  const config = configFromEnv();
  const clock = systemClock();
  const telemetry = replicaHeartbeatTelemetry(config, clock, context);
  const home = telemetry.observeHome(new DynamoStore(makeDynamoClient({ region: config.homeRegion, endpoint: config.dynamoEndpoint }), config.tables, config.shardCount));
  const replica = new DynamoReplicaStore(makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint }), config.tables);
  const summary = await runReplicaHeartbeat({
    config,
    replica,
    home,
    applier: new ReplicaApplier(replica, home, clock),
    budgetMs: Math.min(invocationBudgetMs, context.getRemainingTimeInMillis() - timeoutMarginMs),
    clock,
    log: telemetry.log,
  });
  telemetry.finish();
  return summary;
};
