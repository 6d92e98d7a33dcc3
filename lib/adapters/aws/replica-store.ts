import { TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { GetCommand, TransactWriteCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { assert } from '../../core/assert.ts';
import { chunkRuns, emptyProgress, netEffects, runItemsMax, type ReplicaProgress } from '../../core/apply.ts';
import type { LogEntry } from '../../core/log.ts';
import type { TableNames } from '../../infra/schema.ts';
import { fromLogEntry, queryPartition } from './dynamo-store.ts';

const progressPartition = 'progress';

export interface StoredProgress extends ReplicaProgress {
  /** Wall time of the last apply (replica's clock). */
  appliedAtMs: number;
  /** Commit → apply time of the last applied entry (two clocks: display only). */
  lastLagMs: number;
}

/** Another applier (a repair, a redelivery) advanced the shard first: re-read and go on. */
export class ProgressMovedError extends Error {
  constructor(readonly shard: number) {
    super(`shard ${shard}: replica progress moved under us`);
    this.name = 'ProgressMovedError';
  }
}

function progressKey(shard: number) {
  return { pk: progressPartition, sk: String(shard).padStart(4, '0') };
}

function toProgress(item: Record<string, unknown> | undefined): StoredProgress {
  if (item === undefined) return { ...emptyProgress, appliedAtMs: 0, lastLagMs: 0 };
  return {
    appliedIndex: Number(item.appliedIndex),
    appliedHash: String(item.appliedHash),
    appliedAtMs: Number(item.appliedAtMs ?? 0),
    lastLagMs: Number(item.lastLagMs ?? 0),
  };
}

/**
 * A replica region's tables: the per-shard progress (in `control`), the log copy and the kv
 * copy. Progress, log copies and kv changes of a run of entries move together in one
 * transaction, conditional on the progress the run starts from.
 */
export class DynamoReplicaStore {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tables: TableNames,
  ) {}

  async readProgress(shard: number): Promise<StoredProgress> {
    const result = await this.client.send(new GetCommand({ TableName: this.tables.control, Key: progressKey(shard), ConsistentRead: true }));
    return toProgress(result.Item);
  }

  async readAllProgress(): Promise<Map<number, StoredProgress>> {
    const items = await queryPartition(this.client, this.tables.control, progressPartition);
    return new Map(items.map((item) => [Number(item.shard), toProgress(item)]));
  }

  /**
   * Applies verified consecutive entries continuing `from`; returns the new progress. Throws
   * ProgressMovedError when the progress is no longer `from`.
   */
  async applyRun(shard: number, from: ReplicaProgress, entries: readonly LogEntry[], nowMs: number): Promise<ReplicaProgress> {
    let progress: ReplicaProgress = from;
    for (const run of chunkRuns(entries)) {
      progress = await this.#applyOne(shard, progress, run, nowMs);
    }
    return progress;
  }

  async #applyOne(shard: number, from: ReplicaProgress, run: LogEntry[], nowMs: number): Promise<ReplicaProgress> {
    const last = run.at(-1);
    assert(last !== undefined, 'an apply run is not empty');
    assert(run[0]?.index === from.appliedIndex + 1 && last.index === from.appliedIndex + run.length, 'an apply run continues the progress densely');
    const items: NonNullable<ConstructorParameters<typeof TransactWriteCommand>[0]['TransactItems']> = [
      {
        Put: {
          TableName: this.tables.control,
          Item: { ...progressKey(shard), shard, appliedIndex: last.index, appliedHash: last.hash, appliedAtMs: nowMs, lastLagMs: Math.max(0, nowMs - last.committedAtMs) },
          ...(from.appliedIndex === 0
            ? { ConditionExpression: 'attribute_not_exists(#pk)', ExpressionAttributeNames: { '#pk': 'pk' } }
            : {
                ConditionExpression: '#appliedIndex = :from',
                ExpressionAttributeNames: { '#appliedIndex': 'appliedIndex' },
                ExpressionAttributeValues: { ':from': from.appliedIndex },
              }),
        },
      },
      ...run.map((entry) => ({ Put: { TableName: this.tables.log, Item: fromLogEntry(entry) } })),
      ...netEffects(run).map((effect) =>
        effect.type === 'put'
          ? { Put: { TableName: this.tables.kv, Item: { shard, key: effect.key, value: effect.value, version: effect.index, epoch: effect.epoch, index: effect.index } } }
          : { Delete: { TableName: this.tables.kv, Key: { shard, key: effect.key } } },
      ),
    ];
    assert(items.length <= runItemsMax(run.length), 'a run touches each item once');
    try {
      await this.client.send(new TransactWriteCommand({ TransactItems: items }));
    } catch (error) {
      if (error instanceof TransactionCanceledException) {
        const codes = (error.CancellationReasons ?? []).map((reason) => reason.Code);
        if (codes[0] === 'ConditionalCheckFailed' || codes.includes('TransactionConflict')) throw new ProgressMovedError(shard);
      }
      throw error;
    }
    return { appliedIndex: last.index, appliedHash: last.hash };
  }
}
