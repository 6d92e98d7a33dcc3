import type { SQSBatchItemFailure, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { makeDynamoClient } from '../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../lib/adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../lib/adapters/aws/replica-store.ts';
import { decodeEntryMessage } from '../lib/adapters/aws/replication.ts';
import { systemClock } from '../lib/clock.ts';
import { configFromEnv } from '../lib/config.ts';
import type { LogEntry } from '../lib/core/log.ts';
import { DeliveryError, ReplicaApplier } from '../lib/service/replica-applier.ts';
import { applyTelemetry } from './telemetry.ts';

export type ApplyHandler = (event: SQSEvent) => Promise<SQSBatchResponse>;

export interface ApplyHandlerOptions {
  /**
   * A group whose messages waited at least this long in the queue (SQS's first receive minus
   * its send time, both on SQS's clock) means a backlog: the shard is pulled from the home log
   * before the messages are delivered. Default 50: a queue that keeps up hands a message over
   * within about one apply of the one before it in its group. Infinity turns pulling off.
   */
  pullAfterQueuedMs?: number;
  /**
   * At most one pull per shard per this many ms (per handler instance). Default 50: a backlog
   * of already-applied messages still drains one receive at a time, and without a pull every so
   * often the entries behind it would wait for that drain. Locally (one DynamoDB Local for every
   * region, on 2 cores) 50 ms with the factor below at 0 gave a lower replica lag than 100 ms
   * with factor 1 at the same load: p50 about a quarter lower in alternating runs of
   * `npm run bench:lag` (docs/benchmark-notes.md, "Comparing apply settings").
   */
  pullEveryMs?: number;
  /**
   * A pull that took T ms is not repeated for its shards within this factor × T either. Default
   * 0 (off): the next pull of a shard cannot start before its batch is handed back anyway, so a
   * slow pull already spaces the pulls out; keeping them apart by T (or T / 2) as well made the
   * local lag worse (docs/benchmark-notes.md, "Comparing apply settings"). A factor above 0
   * leaves a storage engine shared with the writers more room when pulls are slow.
   */
  pullBackoffFactor?: number;
}

const applyDefaults = { pullAfterQueuedMs: 50, pullEveryMs: 50, pullBackoffFactor: 0 } as const;

/**
 * The replica's `apply` function on its FIFO queue (event source mapping with
 * ReportBatchItemFailures). Records of one message group (shard) are applied in order; at the
 * first failure of a group, that record and every later record of the group are reported, as
 * FIFO ordering requires. A poison message fails every time and so reaches the DLQ.
 *
 * When the queue falls behind (a group's messages waited in it), the handler first pulls the
 * shard from the home log up to its head: one read and one transaction per 49 entries instead
 * of a transaction per message, and the entries behind a backlog of messages need not wait for
 * the backlog to drain. The messages of pulled entries are then skipped without a request.
 * The groups of a batch that continue what the applier knows share one transaction. The
 * applier's conditional progress keeps every entry applied exactly once and in order, whoever
 * applies it first (a message, a pull, the replica heartbeat).
 */
export function createApplyHandler(applier: ReplicaApplier, log: (line: string) => void = console.error, options: ApplyHandlerOptions = {}): ApplyHandler {
  const pullAfterQueuedMs = options.pullAfterQueuedMs ?? applyDefaults.pullAfterQueuedMs;
  const pullEveryMs = options.pullEveryMs ?? applyDefaults.pullEveryMs;
  const pullBackoffFactor = options.pullBackoffFactor ?? applyDefaults.pullBackoffFactor;
  // Per shard: when this instance may pull it next (monotonic ms).
  const nextPullMs = new Map<number, number>();
  return async (event) => {
    const groups = new Map<string, SQSRecord[]>();
    for (const record of event.Records) {
      const group = record.attributes.MessageGroupId ?? 'none';
      groups.set(group, [...(groups.get(group) ?? []), record]);
    }
    const failures: SQSBatchItemFailure[] = [];
    const parsed = new Map<string, { shard: number; records: SQSRecord[]; failedAt: number | undefined }>();
    const deliveries = new Map<number, LogEntry[]>();
    const pulls: number[] = [];
    for (const [group, records] of groups) {
      const entries: LogEntry[] = [];
      let failedAt: number | undefined;
      for (const [position, record] of records.entries()) {
        try {
          const entry = decodeEntryMessage(record.body);
          if (String(entry.shard) !== group) throw new Error(`entry of shard ${entry.shard} in message group ${group}`);
          entries.push(entry);
        } catch (error) {
          log(`apply: poison message ${record.messageId} in group ${group}: ${String(error)}`);
          failedAt = position;
          break;
        }
      }
      const shard = Number(group);
      const nowMs = performance.now();
      // A message group is in one batch at a time, so no other invocation pulls this shard meanwhile.
      if (entries.length > 0 && queuedMsOf(records) >= pullAfterQueuedMs && nowMs >= (nextPullMs.get(shard) ?? Number.NEGATIVE_INFINITY)) pulls.push(shard);
      if (entries.length > 0) deliveries.set(shard, entries);
      parsed.set(group, { shard, records, failedAt });
    }
    if (pulls.length > 0) {
      const pullStartMs = performance.now();
      const pulled = await applier.pullAll(pulls);
      const backoffMs = pullBackoffFactor * (performance.now() - pullStartMs);
      for (const shard of pulls) nextPullMs.set(shard, pullStartMs + Math.max(pullEveryMs, backoffMs));
      for (const [shard, outcome] of pulled) {
        // The delivery below applies the messages themselves (or reports them failed).
        if (outcome instanceof Error) log(`apply: group ${shard}: pull from the home log failed: ${String(outcome)}`);
      }
    }
    // Every group of the batch at once: the groups that continue what the applier knows share
    // one transaction.
    const outcomes = await applier.deliverAll(deliveries);
    for (const [group, { shard, records, failedAt: poisonAt }] of parsed) {
      let failedAt = poisonAt;
      const outcome = deliveries.has(shard) ? outcomes.get(shard) : undefined;
      if (outcome instanceof DeliveryError) {
        log(`apply: group ${group} failed at message ${outcome.failedAt}: ${String(outcome.reason)}`);
        failedAt = Math.min(failedAt ?? outcome.failedAt, outcome.failedAt);
      }
      if (failedAt !== undefined) {
        for (const record of records.slice(failedAt)) failures.push({ itemIdentifier: record.messageId });
      }
    }
    return { batchItemFailures: failures };
  };
}

/** The longest time a record waited in the queue before its first receive; 0 when SQS did not say. */
function queuedMsOf(records: readonly SQSRecord[]): number {
  let queuedMs = 0;
  for (const record of records) {
    const sentMs = Number(record.attributes.SentTimestamp);
    const firstReceivedMs = Number(record.attributes.ApproximateFirstReceiveTimestamp);
    if (Number.isFinite(sentMs) && Number.isFinite(firstReceivedMs) && sentMs > 0 && firstReceivedMs > 0) queuedMs = Math.max(queuedMs, firstReceivedMs - sentMs);
  }
  return queuedMs;
}

let cached: ApplyHandler | undefined;

/** The Lambda entry point. */
export const handler: ApplyHandler = async (event) => {
  if (cached === undefined) {
    const config = configFromEnv();
    const clock = systemClock();
    const home = new DynamoStore(makeDynamoClient({ region: config.homeRegion, endpoint: config.dynamoEndpoint }), config.tables, config.shardCount);
    const replica = new DynamoReplicaStore(makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint }), config.tables);
    // Applied and failed messages per batch (telemetry.ts).
    const telemetry = applyTelemetry(config);
    cached = telemetry.wrap(createApplyHandler(new ReplicaApplier(replica, home, clock), (line) => telemetry.logger.error(line)));
  }
  return cached(event);
};
