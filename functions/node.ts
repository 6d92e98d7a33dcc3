import { randomBytes } from 'node:crypto';
import type { Context, ScheduledEvent } from 'aws-lambda';
import { makeDynamoClient } from '../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../lib/adapters/aws/dynamo-store.ts';
import { sleep, systemClock, type Clock } from '../lib/clock.ts';
import { configFromEnv, env, retentionOf, type ClusterConfig } from '../lib/config.ts';
import { FailureDetector } from '../lib/core/failure-detector.ts';
import { Election, type ActionOutcome, type LeaseAction, type LeaseRecord } from '../lib/core/lease.ts';
import { sealEntry } from '../lib/core/log.ts';
import { HeadConflictError, StaleEpochError, TransactionRaceError } from '../lib/ports/errors.ts';
import type { ReplicaReport, Store } from '../lib/ports/store.ts';
import { limits } from '../lib/core/limits.ts';
import { nextInSync, type InSyncBounds } from '../lib/core/replication.ts';
import { Shipper } from '../lib/adapters/aws/replication.ts';
import { nodeTelemetry } from './telemetry.ts';
import { IntakeCommitter } from '../lib/service/intake.ts';
import { LogCompactor } from '../lib/service/compaction.ts';
import { holdBoundsFor } from '../lib/core/compaction.ts';
import { intakeStickMs, KvService } from '../lib/service/kv-service.ts';
import { CoordinationService } from '../lib/service/coordination.ts';
import { LeaseExpirer } from '../lib/service/lease-expiry.ts';

export interface NodeRunOptions {
  config: ClusterConfig;
  store: Store;
  node: string;
  /** Comparable: a later invocation's incarnation sorts after an earlier one's. */
  incarnation: string;
  /** How long this invocation loops, in ms of local elapsed time. */
  budgetMs: number;
  clock: Clock;
  log: (line: string) => void;
  /** Ends the loop early (process shutdown). */
  signal?: AbortSignal;
  /** Replica queues, for the leader's duty of re-shipping a stuck range. */
  shipper?: Shipper;
}

export interface NodeRunSummary {
  ticks: number;
  acquired: number;
  steppedDown: number;
  errors: number;
  /** Set when the invocation ended because a promotion moved home to this region. */
  moved?: string | undefined;
}

/**
 * A sortable incarnation id: zero-padded start time, then random bits so two invocations
 * started in the same millisecond still differ. Only liveness (which incarnation keeps its
 * node's leases) depends on the ordering; safety rests on the epoch.
 */
export function newIncarnation(clock: Clock): string {
  return `${String(Math.floor(clock.wallMs())).padStart(15, '0')}-${randomBytes(4).toString('hex')}`;
}

/**
 * One invocation of a node: every `tickMs` it writes a heartbeat, reads all leases and
 * heartbeats with consistent reads, lets the core decide, and performs the conditional
 * writes. In the last lease of its budget it drains: it keeps renewing but takes nothing
 * new, so the next (overlapping) invocation of the same node can take over at once.
 */
export async function runNode(options: NodeRunOptions): Promise<NodeRunSummary> {
  const { config, store, node, incarnation, clock, log } = options;
  const holder = { node, incarnation };
  const election = new Election({ node, incarnation, shardCount: config.shardCount, leaseMs: config.leaseMs, tickMs: config.tickMs });
  const detector = new FailureDetector({ tickMs: config.tickMs, knownNodes: config.nodeIds });
  const summary: NodeRunSummary = { ticks: 0, acquired: 0, steppedDown: 0, errors: 0 };
  const startedMs = clock.monotonicMs();
  let observedMs: number | undefined;
  let seq = 0;

  /**
   * The new leader's first entry: the log itself records every epoch boundary. Old-epoch
   * writers are already fenced, so only a commit that landed just before the takeover can
   * move the head under us; a few immediate retries absorb that.
   */
  const appendMarker = async (shard: number, epoch: number, previousEpoch: number): Promise<LeaseRecord> => {
    for (let attempt = 1; ; attempt += 1) {
      const head = await store.readHead(shard);
      const marker = sealEntry(head, {
        shard,
        index: (head?.index ?? 0) + 1,
        epoch,
        ops: [{ type: 'leader', node, epoch, previousEpoch }],
        requestId: `leader:${incarnation}:${shard}:${epoch}`,
        committedAtMs: clock.wallMs(),
      });
      try {
        const stored = await store.appendMarker(shard, holder, marker);
        // Replicas see the epoch boundary in order, like any entry.
        if (options.shipper !== undefined) await options.shipper.ship(marker);
        return stored;
      } catch (error) {
        if (!(error instanceof HeadConflictError) || attempt >= markerAttemptsMax) throw error;
      }
    }
  };

  // A write to the lease between this node's own group commits of the shard, never during one
  // (see IntakeCommitter.exclusive). `committers` is declared below; this runs only after.
  const leaseTurn = <T>(shard: number, work: () => Promise<T>): Promise<T> => {
    const committer = committers.get(shard);
    return committer === undefined ? work() : committer.exclusive(work);
  };

  // Per shard led: when (local monotonic time) the last lease write that was acknowledged was
  // sent. Another node may take the shard over once the lease stood still for leaseMs of its own
  // time, which cannot start before that send.
  const acknowledgedSentMs = new Map<number, number>();
  // A tick before that: commits in flight get a tick to finish or be fenced.
  const stepDownAfterMs = config.leaseMs - config.tickMs;
  const stepDownUnrenewed = (): void => {
    const nowMs = clock.monotonicMs();
    for (const shard of election.leading()) {
      const sentMs = acknowledgedSentMs.get(shard);
      if (sentMs === undefined || nowMs - sentMs < stepDownAfterMs) continue;
      const epoch = election.epochOf(shard);
      election.stepDown(shard);
      summary.steppedDown += 1;
      log(`${node} stepped down from shard ${shard} (epoch ${epoch}): no lease renewal acknowledged for ${Math.round(nowMs - sentMs)} ms (lease ${config.leaseMs} ms)`);
    }
  };

  const perform = async (action: LeaseAction): Promise<{ outcome: ActionOutcome; stored?: LeaseRecord }> => {
    const sentMs = clock.monotonicMs();
    const result = await performWrite(action);
    if (result.outcome === 'ok' && action.type !== 'release') acknowledgedSentMs.set(action.shard, Math.max(sentMs, acknowledgedSentMs.get(action.shard) ?? sentMs));
    return result;
  };

  const performWrite = async (action: LeaseAction): Promise<{ outcome: ActionOutcome; stored?: LeaseRecord }> => {
    try {
      switch (action.type) {
        case 'renew':
          return { outcome: 'ok', stored: await leaseTurn(action.shard, () => store.renewLease(action.shard, holder, action.epoch, clock.wallMs())) };
        case 'release': {
          const stored = await leaseTurn(action.shard, () => store.releaseLease(action.shard, holder, action.epoch, clock.wallMs()));
          log(`${node} released shard ${action.shard} (epoch ${action.epoch}) to spread load`);
          return { outcome: 'ok', stored };
        }
        case 'acquire': {
          const expected =
            action.expectedIncarnation === undefined
              ? { version: action.expectedVersion }
              : { incarnation: action.expectedIncarnation, epoch: action.previousEpoch };
          const taken = await store.acquireLease(action.shard, holder, expected, action.epoch, clock.wallMs());
          summary.acquired += 1;
          // Writers wait until the marker is in; append it now rather than at the next observation.
          const stored = await appendMarker(action.shard, action.epoch, action.previousEpoch).catch((error: unknown) => {
            if (error instanceof StaleEpochError) throw error;
            return taken;
          });
          log(`${node} leads shard ${action.shard} at epoch ${action.epoch} (${action.reason}${stored.markerPending ? ', marker pending' : ''})`);
          return { outcome: 'ok', stored };
        }
        case 'mark':
          return { outcome: 'ok', stored: await appendMarker(action.shard, action.epoch, action.previousEpoch) };
      }
    } catch (error) {
      if (error instanceof StaleEpochError) {
        if (action.type !== 'acquire') {
          summary.steppedDown += 1;
          log(`${node} stepped down from shard ${action.shard}: its lease at epoch ${action.epoch} was taken`);
        }
        return { outcome: 'conflict' };
      }
      // A moved log head or a racing transaction: the lease may still be ours to take next tick.
      if (!(error instanceof HeadConflictError || error instanceof TransactionRaceError)) {
        summary.errors += 1;
        log(`${node} ${action.type} shard ${action.shard} failed: ${String(error)}`);
      }
      return { outcome: 'error' };
    }
  };

  // Leader duty: a replica whose progress on a shard we lead stood still while behind the head
  // gets the missing range again (the apply is idempotent; a lost message is the usual cause).
  const stuck = new Map<string, { appliedIndex: number; sinceMs: number }>();
  let reships = 0;
  let lastReplicaCheckMs = clock.monotonicMs();
  // Leader duty (all mode): the shard's in-sync set, as last written or read per shard.
  const inSync = new Map<number, { epoch: number; regions: string[] }>();
  const updateInSync = async (shard: number, headIndex: number, reports: ReplicaReport[], regions: string[]): Promise<void> => {
    const epoch = election.epochOf(shard);
    if (epoch === undefined) return;
    let current = inSync.get(shard);
    if (current === undefined || current.epoch !== epoch) {
      const stored = await store.readInSync(shard);
      current = { epoch, regions: stored?.regions ?? regions };
      inSync.set(shard, current);
    }
    const wallMs = clock.wallMs();
    const standings = reports
      .filter((report) => report.shard === shard && regions.includes(report.region))
      .map((report) => ({ region: report.region, appliedIndex: report.appliedIndex, reportAgeMs: wallMs - report.reportedAtMs }));
    const next = nextInSync(current.regions, regions, headIndex, standings, inSyncBounds(config));
    if (next.join(',') === current.regions.join(',')) return;
    await store.writeInSync({ shard, regions: next, epoch, updatedAtMs: wallMs }, holder);
    log(`${node} shard ${shard} in-sync replicas: ${current.regions.join(',') || '(none)'} -> ${next.join(',') || '(none)'} (head ${headIndex})`);
    inSync.set(shard, { epoch, regions: next });
  };

  const maybeReship = async (): Promise<void> => {
    const shipper = options.shipper;
    const nowMs = clock.monotonicMs();
    if (shipper === undefined || nowMs - lastReplicaCheckMs < replicaCheckEveryMs(config)) return;
    lastReplicaCheckMs = nowMs;
    const leading = election.leading();
    if (leading.length === 0) return;
    const reports = await store.readReplicaReports();
    await Promise.all(
      leading.map(async (shard) => {
        const head = await store.readHead(shard);
        await updateInSync(shard, head?.index ?? 0, reports, shipper.regions()).catch((error: unknown) => {
          // Lost the lease meanwhile: the next leader maintains the set.
          if (!(error instanceof StaleEpochError || error instanceof TransactionRaceError)) throw error;
        });
        for (const report of reports.filter((candidate) => candidate.shard === shard && shipper.regions().includes(candidate.region))) {
          const key = `${report.region}#${shard}`;
          const seen = stuck.get(key);
          if (head === undefined || report.appliedIndex >= head.index) {
            stuck.delete(key);
            continue;
          }
          if (seen === undefined || seen.appliedIndex !== report.appliedIndex) {
            stuck.set(key, { appliedIndex: report.appliedIndex, sinceMs: nowMs });
            continue;
          }
          if (nowMs - seen.sinceMs < stuckAfterMs(config)) continue;
          const entries = await store.readLog(shard, report.appliedIndex + 1, reshipEntriesMax);
          reships += 1;
          const accepted = await shipper.reship(report.region, entries, `${incarnation}-${reships}`);
          log(`${node} re-shipped shard ${shard} entries ${report.appliedIndex + 1}..${report.appliedIndex + entries.length} to ${report.region} (stuck ${Math.round(nowMs - seen.sinceMs)} ms; ${accepted} accepted)`);
          stuck.set(key, { appliedIndex: report.appliedIndex, sinceMs: nowMs });
        }
      }),
    );
  };

  // Leader duty: the shard's single writer. One intake committer per shard led, for its epoch.
  const committers = new Map<number, IntakeCommitter>();
  const syncCommitters = (): void => {
    for (const [shard, committer] of committers) {
      if (committer.stopped || election.epochOf(shard) !== committer.epoch) {
        committer.stop();
        committers.delete(shard);
      }
    }
    for (const shard of election.leading()) {
      const epoch = election.epochOf(shard);
      if (epoch === undefined || committers.has(shard)) continue;
      const committer = new IntakeCommitter({
        store,
        shard,
        epoch,
        clock,
        log,
        ship: options.shipper === undefined ? undefined : (entry) => void options.shipper?.ship(entry).catch((error: unknown) => log(`${node} shard ${shard}: ship of ${entry.index} failed: ${String(error)}`)),
        idlePollMs: intakeIdlePollMs(config),
        busyPollMs: intakeBusyPollMs,
        // Longer than a writer keeps sending to the intake after its last contention (intakeStickMs).
        busyForMs: 2 * intakeStickMs(config.tickMs),
      });
      committers.set(shard, committer);
      void committer
        .run()
        .catch((error: unknown) => log(`${node} shard ${shard}: intake committer failed: ${String(error)}`))
        .finally(() => {
          committer.stop();
          if (committers.get(shard) === committer) committers.delete(shard);
        });
    }
  };
  // Leader duty: leases of the shards led expire on this node's clock (lib/service/lease-expiry.ts);
  // their keys are deleted through the log, by the same fenced transactions as the API's.
  const coordination = new CoordinationService(new KvService(store, { ...config, writePath: 'direct' }, clock, { ...(options.shipper === undefined ? {} : { shipper: options.shipper }), log }), clock);
  const leaseExpirer = new LeaseExpirer({ store, coordination, clock, log, label: node });
  // Off the tick's path, one run at a time: expiry work must never delay a lease renewal.
  let expiring: Promise<void> | undefined;
  const maybeExpireLeases = (): void => {
    if (expiring !== undefined) return;
    expiring = leaseExpirer.run(election.leading()).finally(() => {
      expiring = undefined;
    });
  };
  let lastSweepMs = clock.monotonicMs();
  const maybeSweepIntake = async (): Promise<void> => {
    if (clock.monotonicMs() - lastSweepMs < intakeSweepEveryMs) return;
    lastSweepMs = clock.monotonicMs();
    await Promise.all(election.leading().map((shard) => store.sweepIntake(shard, clock.wallMs() - intakeSettledKeepMs)));
  };

  // Leader duty: keep each shard's log within the retention (lib/service/compaction.ts).
  const retention = retentionOf(config);
  const compactor = new LogCompactor({ store, policy: retention, hold: holdBoundsFor(config, retention), clock, log, label: node, turn: leaseTurn });
  let lastCompactionMs = clock.monotonicMs();
  let compacting: Promise<void> | undefined;
  const maybeCompact = (): void => {
    if (compacting !== undefined || clock.monotonicMs() - lastCompactionMs < compactionEveryMs(config)) return;
    lastCompactionMs = clock.monotonicMs();
    // Beside the tick, not in it: a trim's deletes must never delay a lease renewal. Its own
    // failure is no reason to fail the tick either: the next run goes on where it stopped.
    compacting = compactor
      .run(election.leading(), options.shipper?.regions() ?? [])
      .then(
        () => undefined,
        (error: unknown) => log(`${node} log compaction failed: ${String(error)}`),
      )
      .finally(() => {
        compacting = undefined;
      });
  };

  // Leases are observed twice per tick but renewed (and heartbeats written) once per tick:
  // a takeover waits for a lease to stand still for leaseMs after it was first seen still,
  // so observing more often than renewing shortens failover by up to half a tick for the
  // price of one more cheap consistent read.
  const observeEveryMs = config.tickMs / 2;
  let lastFullTickMs: number | undefined;
  while (!options.signal?.aborted) {
    const iterationStartMs = clock.monotonicMs();
    if (iterationStartMs - startedMs >= options.budgetMs) break;
    const fullTick = lastFullTickMs === undefined || iterationStartMs - lastFullTickMs >= config.tickMs - observeEveryMs / 2;
    if (fullTick) {
      lastFullTickMs = iterationStartMs;
      summary.ticks += 1;
    }
    let tickFailed = false;
    try {
      const heartbeat = fullTick ? store.putHeartbeat({ node, incarnation, seq: (seq += 1), atMs: clock.wallMs() }) : Promise.resolve();
      const [leases, heartbeats] = await Promise.all([store.readLeases(), store.readHeartbeats(), heartbeat]);
      const moved = leases.find((lease) => lease.movedTo !== undefined);
      if (moved !== undefined) {
        // A promotion fenced this region: nothing here may lead again.
        log(`${node}: ${config.region} is no longer home (promoted: ${moved.movedTo}); this node stops`);
        summary.moved = moved.movedTo;
        break;
      }
      const nowMs = clock.monotonicMs();
      const elapsedMs = observedMs === undefined ? 0 : nowMs - observedMs;
      observedMs = nowMs;
      detector.observe(elapsedMs, heartbeats);
      const actions = election.tick({
        elapsedMs,
        leases,
        aliveNodes: detector.aliveNodes(),
        draining: options.budgetMs - (nowMs - startedMs) < config.leaseMs,
        renewDue: fullTick,
      });
      // Shards in parallel; the actions of one shard (renew, then mark) in order, so they do
      // not race each other on the same lease item.
      const byShard = new Map<number, LeaseAction[]>();
      for (const action of actions) byShard.set(action.shard, [...(byShard.get(action.shard) ?? []), action]);
      await Promise.all(
        [...byShard.values()].map(async (shardActions) => {
          for (const action of shardActions) {
            const { outcome, stored } = await perform(action);
            election.onOutcome(action, outcome, stored);
            if (outcome !== 'ok') break;
          }
        }),
      );
      syncCommitters();
      if (fullTick) await maybeReship();
      if (fullTick) await maybeSweepIntake();
      if (fullTick) maybeExpireLeases();
      if (fullTick) maybeCompact();
    } catch (error) {
      summary.errors += 1;
      tickFailed = true;
      log(`${node} tick failed: ${String(error)}`);
    }
    // Whether the tick's reads answered or not: a leader whose renewals go unanswered for about
    // a lease stops leading (and its intake committers stop) rather than wait for a read. Not
    // between ticks: a shard a read just showed still ours (a renewal that landed unacknowledged)
    // is renewed at the next tick, before it is judged.
    if (fullTick || tickFailed) {
      stepDownUnrenewed();
      syncCommitters();
    }
    // Wake for the next observation, or earlier when a lease would become takeable before it.
    const sinceObservedMs = clock.monotonicMs() - (observedMs ?? iterationStartMs);
    const untilTakeoverMs = election.msUntilTakeover();
    let waitMs = observeEveryMs - (clock.monotonicMs() - iterationStartMs);
    if (untilTakeoverMs !== undefined) waitMs = Math.min(waitMs, untilTakeoverMs - sinceObservedMs);
    waitMs = Math.min(waitMs, options.budgetMs - (clock.monotonicMs() - startedMs));
    if (waitMs > 0) await sleep(waitMs);
  }
  for (const committer of committers.values()) committer.stop();
  await compacting;
  await expiring;
  return summary;
}

/** An idle intake is read twice a tick: a writer that found its shard busy waits at most that long for the leader. */
function intakeIdlePollMs(config: ClusterConfig): number {
  return Math.max(1, Math.floor(config.tickMs / 2));
}

/** A busy intake is read again this soon after a read came back empty. */
const intakeBusyPollMs = 5;
/** Settled intake items whose writer never came back for them are deleted after a minute. */
const intakeSettledKeepMs = 60_000;
const intakeSweepEveryMs = 10_000;

/** The leader compacts the logs it leads every four ticks, and at most once a second (short test timings). */
function compactionEveryMs(config: ClusterConfig): number {
  return Math.max(4 * config.tickMs, 1_000);
}

/** The leader looks at replica progress every four ticks. */
function replicaCheckEveryMs(config: ClusterConfig): number {
  return 4 * config.tickMs;
}

/**
 * A replica heartbeat reports at least every 10 ticks; one whose last report is older than
 * 15 ticks (or two leases) has failed or is cut off.
 */
export function inSyncBounds(config: ClusterConfig): InSyncBounds {
  return {
    lagEntriesMax: limits.inSyncLagEntriesMax,
    rejoinLagEntriesMax: limits.inSyncRejoinLagEntriesMax,
    reportAgeMsMax: Math.max(15 * config.tickMs, 2 * config.leaseMs),
  };
}

/** A replica behind the head with no progress for two leases is stuck: more than a slow apply. */
function stuckAfterMs(config: ClusterConfig): number {
  return 2 * config.leaseMs;
}

/** Entries re-shipped per stuck replica and check: the replica pulls the rest itself. */
const reshipEntriesMax = 10;

/** Immediate retries of a leader marker whose head moved (a commit of the old epoch that landed first). */
const markerAttemptsMax = 3;

/** How long before the Lambda timeout the loop ends, so it always returns cleanly. */
const timeoutMarginMs = 5_000;
/** A little over the one-minute schedule, so consecutive invocations overlap. */
const invocationBudgetMs = 70_000;

/** The Lambda entry point: one scheduled (EventBridge, every minute) invocation of a node. */
export const handler = async (_event: ScheduledEvent, context: Context): Promise<NodeRunSummary> => {
  const config = configFromEnv();
  const node = process.env[env.nodeId];
  if (node === undefined || !config.nodeIds.includes(node)) {
    throw new Error(`${env.nodeId} must be one of ${config.nodeIds.join(', ')}, got ${String(node)}`);
  }
  const clock = systemClock();
  const telemetry = nodeTelemetry(config, node, clock, context);
  const store = telemetry.observe(new DynamoStore(makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint, role: 'node' }), config.tables, config.shardCount));
  const log = telemetry.log;
  const shipper = config.replicaRegions.length === 0 ? undefined : new Shipper({ prefix: config.tablePrefix, regions: config.replicaRegions, endpoint: config.sqsEndpoint, role: 'node', log });
  try {
    const summary = await runNode({
      config,
      store,
      node,
      incarnation: newIncarnation(clock),
      budgetMs: Math.min(invocationBudgetMs, context.getRemainingTimeInMillis() - timeoutMarginMs),
      clock,
      log,
      ...(shipper === undefined ? {} : { shipper }),
    });
    telemetry.finish(summary);
    return summary;
  } finally {
    shipper?.destroy();
  }
};
