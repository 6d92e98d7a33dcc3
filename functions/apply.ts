import type { SQSBatchItemFailure, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { makeDynamoClient } from '../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../lib/adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../lib/adapters/aws/replica-store.ts';
import { decodeEntryMessage } from '../lib/adapters/aws/replication.ts';
import { systemClock } from '../lib/clock.ts';
import { configFromEnv } from '../lib/config.ts';
import type { LogEntry } from '../lib/core/log.ts';
import { DeliveryError, ReplicaApplier } from '../lib/service/replica-applier.ts';
import { lambdaLogger } from './telemetry.ts';

export type ApplyHandler = (event: SQSEvent) => Promise<SQSBatchResponse>;

/**
 * The replica's `apply` function on its FIFO queue (event source mapping with
 * ReportBatchItemFailures). Records of one message group (shard) are applied in order; at the
 * first failure of a group, that record and every later record of the group are reported, as
 * FIFO ordering requires. A poison message fails every time and so reaches the DLQ.
 */
export function createApplyHandler(applier: ReplicaApplier, log: (line: string) => void = console.error): ApplyHandler {
  return async (event) => {
    const groups = new Map<string, SQSRecord[]>();
    for (const record of event.Records) {
      const group = record.attributes.MessageGroupId ?? 'none';
      groups.set(group, [...(groups.get(group) ?? []), record]);
    }
    const failures: SQSBatchItemFailure[] = [];
    await Promise.all(
      [...groups.entries()].map(async ([group, records]) => {
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
        try {
          if (entries.length > 0) await applier.deliver(Number(group), entries);
        } catch (error) {
          const at = error instanceof DeliveryError ? error.failedAt : 0;
          log(`apply: group ${group} failed at message ${at}: ${error instanceof DeliveryError ? String(error.reason) : String(error)}`);
          failedAt = Math.min(failedAt ?? at, at);
        }
        if (failedAt !== undefined) {
          for (const record of records.slice(failedAt)) failures.push({ itemIdentifier: record.messageId });
        }
      }),
    );
    return { batchItemFailures: failures };
  };
}

let cached: ApplyHandler | undefined;

/** The Lambda entry point. */
export const handler: ApplyHandler = async (event) => {
  if (cached === undefined) {
    const config = configFromEnv();
    const clock = systemClock();
    const home = new DynamoStore(makeDynamoClient({ region: config.homeRegion, endpoint: config.dynamoEndpoint }), config.tables, config.shardCount);
    const replica = new DynamoReplicaStore(makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint }), config.tables);
    const logger = lambdaLogger('apply', config);
    cached = createApplyHandler(new ReplicaApplier(replica, home, clock), (line) => logger.error(line));
  }
  return cached(event);
};
