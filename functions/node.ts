import { randomBytes } from 'node:crypto';
import type { Context, ScheduledEvent } from 'aws-lambda';
import { makeDynamoClient } from '../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../lib/adapters/aws/dynamo-store.ts';
import { sleep, systemClock, type Clock } from '../lib/clock.ts';
import { configFromEnv, env, type ClusterConfig } from '../lib/config.ts';
import { FailureDetector } from '../lib/core/failure-detector.ts';
import { Election, type ActionOutcome, type LeaseAction, type LeaseRecord } from '../lib/core/lease.ts';
import { sealEntry } from '../lib/core/log.ts';
import { HeadConflictError, StaleEpochError, TransactionRaceError } from '../lib/ports/errors.ts';
import type { Store } from '../lib/ports/store.ts';

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
}

export interface NodeRunSummary {
  ticks: number;
  acquired: number;
  steppedDown: number;
  errors: number;
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

  const perform = async (action: LeaseAction): Promise<{ outcome: ActionOutcome; stored?: LeaseRecord }> => {
    try {
      switch (action.type) {
        case 'renew':
          return { outcome: 'ok', stored: await store.renewLease(action.shard, holder, action.epoch, clock.wallMs()) };
        case 'release': {
          const stored = await store.releaseLease(action.shard, holder, action.epoch, clock.wallMs());
          log(`${node} released shard ${action.shard} (epoch ${action.epoch}) to spread load`);
          return { outcome: 'ok', stored };
        }
        case 'acquire': {
          const head = await store.readHead(action.shard);
          // The new leader's first entry, in the same transaction as the takeover: the log
          // itself records every epoch boundary.
          const marker = sealEntry(head, {
            shard: action.shard,
            index: (head?.index ?? 0) + 1,
            epoch: action.epoch,
            ops: [{ type: 'leader', node, epoch: action.epoch, previousEpoch: action.previousEpoch }],
            requestId: `leader:${incarnation}:${action.shard}:${action.epoch}`,
            committedAtMs: clock.wallMs(),
          });
          const expected =
            action.expectedIncarnation === undefined
              ? { version: action.expectedVersion }
              : { incarnation: action.expectedIncarnation, epoch: action.previousEpoch };
          const stored = await store.acquireLease(action.shard, holder, expected, action.epoch, clock.wallMs(), marker);
          summary.acquired += 1;
          log(`${node} leads shard ${action.shard} at epoch ${action.epoch} (${action.reason}, log index ${marker.index})`);
          return { outcome: 'ok', stored };
        }
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

  while (!options.signal?.aborted) {
    const tickStartMs = clock.monotonicMs();
    const elapsedInRunMs = tickStartMs - startedMs;
    if (elapsedInRunMs >= options.budgetMs) break;
    summary.ticks += 1;
    try {
      seq += 1;
      await store.putHeartbeat({ node, incarnation, seq, atMs: clock.wallMs() });
      const [leases, heartbeats] = await Promise.all([store.readLeases(), store.readHeartbeats()]);
      const nowMs = clock.monotonicMs();
      const elapsedMs = observedMs === undefined ? 0 : nowMs - observedMs;
      observedMs = nowMs;
      detector.observe(elapsedMs, heartbeats);
      const actions = election.tick({
        elapsedMs,
        leases,
        aliveNodes: detector.aliveNodes(),
        draining: options.budgetMs - (nowMs - startedMs) < config.leaseMs,
      });
      // Renewals first and in parallel: they are what keeps leadership.
      const results = await Promise.all(actions.map(async (action) => ({ action, ...(await perform(action)) })));
      for (const { action, outcome, stored } of results) election.onOutcome(action, outcome, stored);
    } catch (error) {
      summary.errors += 1;
      log(`${node} tick failed: ${String(error)}`);
    }
    const untilTakeoverMs = election.msUntilTakeover();
    const tickRemainingMs = config.tickMs - (clock.monotonicMs() - tickStartMs);
    const waitMs = untilTakeoverMs === undefined ? tickRemainingMs : Math.min(tickRemainingMs, untilTakeoverMs - (clock.monotonicMs() - (observedMs ?? tickStartMs)));
    if (waitMs > 0) await sleep(Math.min(waitMs, Math.max(0, options.budgetMs - (clock.monotonicMs() - startedMs))));
  }
  return summary;
}

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
  const store = new DynamoStore(makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint }), config.tables, config.shardCount);
  return runNode({
    config,
    store,
    node,
    incarnation: newIncarnation(clock),
    budgetMs: Math.min(invocationBudgetMs, context.getRemainingTimeInMillis() - timeoutMarginMs),
    clock,
    log: (line) => console.log(line),
  });
};
