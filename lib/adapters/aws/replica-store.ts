import { ConditionalCheckFailedException, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import type { SnapshotItem } from '../../core/compaction.ts';
import { limits } from '../../core/limits.ts';
import type { KvItem } from '../../ports/store.ts';
import { GetCommand, PutCommand, TransactWriteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { DocumentClient } from './document-client.ts';
import { assert } from '../../core/assert.ts';
import { chunkRuns, emptyProgress, isFencedOff, netEffects, runItemsMax, type ReplicaFence, type ReplicaProgress } from '../../core/apply.ts';
import type { LogEntry } from '../../core/log.ts';
import type { TableNames } from '../../infra/schema.ts';
import { fromLogEntry, queryPartition } from './dynamo-store.ts';
import { compactionPartition, readCompactions, readShardItems, recordCompaction, trimLog } from './log-compaction.ts';

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
    fence: item.fenceClusterEpoch === undefined ? undefined : { clusterEpoch: Number(item.fenceClusterEpoch), index: Number(item.fenceIndex ?? 0) },
  };
}

/**
 * A replica region's tables: the per-shard progress (in `control`), the log copy and the kv
 * copy. Progress, log copies and kv changes of a run of entries move together in one
 * transaction, conditional on the progress the run starts from.
 */
export class DynamoReplicaStore {
  constructor(
    private readonly client: DocumentClient,
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
      progress = (await this.#transact([{ shard, from: progress, entries: run }], nowMs))[0] as ReplicaProgress;
    }
    return progress;
  }

  /**
   * Promotion: from now on this replica refuses entries after `fence.index` (the new home's
   * head) whose cluster epoch is below `fence.clusterEpoch` (the fenced old home's). A fence
   * is never replaced by an older one.
   */
  async fence(shard: number, fence: ReplicaFence): Promise<void> {
    await this.client
      .send(
        new UpdateCommand({
          TableName: this.tables.control,
          Key: progressKey(shard),
          UpdateExpression: 'SET #shard = :shard, #appliedIndex = if_not_exists(#appliedIndex, :zero), #appliedHash = if_not_exists(#appliedHash, :genesis), #fence = :ce, #fenceIndex = :index',
          ConditionExpression: 'attribute_not_exists(#fence) OR #fence < :ce',
          ExpressionAttributeNames: { '#shard': 'shard', '#appliedIndex': 'appliedIndex', '#appliedHash': 'appliedHash', '#fence': 'fenceClusterEpoch', '#fenceIndex': 'fenceIndex' },
          ExpressionAttributeValues: { ':shard': shard, ':zero': 0, ':genesis': emptyProgress.appliedHash, ':ce': fence.clusterEpoch, ':index': fence.index },
        }),
      )
      .catch((error: unknown) => {
        // Already fenced at this cluster epoch or later: nothing to do.
        if (!(error instanceof ConditionalCheckFailedException)) throw error;
      });
  }

  /**
   * A planned switchover turns the old home into a replica: its tables already hold the log up
   * to `head`, so its progress starts there, fenced at the new cluster epoch.
   */
  async seed(shard: number, head: { index: number; hash: string }, clusterEpoch: number, nowMs: number): Promise<void> {
    await this.client.send(
      new PutCommand({
        TableName: this.tables.control,
        Item: { ...progressKey(shard), shard, appliedIndex: head.index, appliedHash: head.hash, appliedAtMs: nowMs, lastLagMs: 0, fenceClusterEpoch: clusterEpoch, fenceIndex: head.index },
      }),
    );
  }

  /**
   * Runs of several shards in ONE transaction (each run conditional on its own progress), as
   * `packRuns` packed them. Throws ProgressMovedError (naming the first shard whose progress
   * moved, or any shard on a conflict) and applies nothing when any condition fails.
   */
  async applyRuns(runs: readonly { shard: number; from: ReplicaProgress; entries: readonly LogEntry[] }[], nowMs: number): Promise<ReplicaProgress[]> {
    return this.#transact(runs, nowMs);
  }

  /** One apply transaction of one or more runs (`applyRun` sends each chunk of a run this way). */
  async #transact(runs: readonly { shard: number; from: ReplicaProgress; entries: readonly LogEntry[] }[], nowMs: number): Promise<ReplicaProgress[]> {
    const built = runs.map(({ shard, from, entries }) => this.#runItems(shard, from, entries, nowMs));
    const items = built.flatMap((run) => run.items);
    assert(items.length <= 100, 'packed apply runs fit one transaction');
    try {
      await this.client.send(new TransactWriteCommand({ TransactItems: items }));
    } catch (error) {
      if (error instanceof TransactionCanceledException) {
        const codes = (error.CancellationReasons ?? []).map((reason) => reason.Code);
        let at = 0;
        for (const [position, run] of built.entries()) {
          // Each run's first item is its progress put.
          if (codes[at] === 'ConditionalCheckFailed') throw new ProgressMovedError(runs[position]?.shard ?? 0);
          at += run.items.length;
        }
        if (codes.includes('TransactionConflict')) throw new ProgressMovedError(runs[0]?.shard ?? 0);
      }
      throw error;
    }
    return built.map((run) => run.progress);
  }

  /** A run's items: the conditional progress put first, then the log copies and the net kv changes. */
  #runItems(shard: number, from: ReplicaProgress, run: readonly LogEntry[], nowMs: number): { items: TransactItems; progress: ReplicaProgress } {
    const first = run[0];
    const last = run.at(-1);
    assert(first !== undefined && last !== undefined, 'an apply run is not empty');
    assert(first.index === from.appliedIndex + 1 && last.index === from.appliedIndex + run.length, 'an apply run continues the progress densely');
    const fence = from.fence;
    assert(!run.some((entry) => isFencedOff(fence, entry)), 'a fenced-off entry is never applied');
    const items: TransactItems = [
      {
        Put: {
          TableName: this.tables.control,
          Item: {
            ...progressKey(shard),
            shard,
            appliedIndex: last.index,
            appliedHash: last.hash,
            appliedAtMs: nowMs,
            lastLagMs: Math.max(0, nowMs - last.committedAtMs),
            ...(fence === undefined ? {} : { fenceClusterEpoch: fence.clusterEpoch, fenceIndex: fence.index }),
          },
          // Conditional on the progress the run starts from and on the fence it was checked
          // against: a promotion that fenced the shard since makes the applier look again.
          ConditionExpression: `${from.appliedIndex === 0 ? '(attribute_not_exists(#appliedIndex) OR #appliedIndex = :from)' : '#appliedIndex = :from'} AND ${fence === undefined ? 'attribute_not_exists(#fence)' : '#fence = :ce'}`,
          ExpressionAttributeNames: { '#appliedIndex': 'appliedIndex', '#fence': 'fenceClusterEpoch' },
          ExpressionAttributeValues: { ':from': from.appliedIndex, ...(fence === undefined ? {} : { ':ce': fence.clusterEpoch }) },
        },
      },
      ...run.map((entry) => ({ Put: { TableName: this.tables.log, Item: fromLogEntry(entry) } })),
      ...netEffects(run).map((effect) =>
        effect.type === 'put'
          ? { Put: { TableName: this.tables.kv, Item: { shard, key: effect.key, value: effect.value, version: effect.index, epoch: effect.epoch, index: effect.index, ...txnPartsOf(effect) } } }
          : effect.txn === undefined
            ? { Delete: { TableName: this.tables.kv, Key: { shard, key: effect.key } } }
            : // A transaction's delete leaves a tombstone naming its parts, so a session read of the
              // missing key still knows the other shards it must wait for.
              { Put: { TableName: this.tables.kv, Item: { shard, key: effect.key, value: new Uint8Array(0), version: effect.index, epoch: effect.epoch, index: effect.index, tombstone: true, ...txnPartsOf(effect) } } },
      ),
    ];
    assert(items.length <= runItemsMax(run.length), 'a run touches each item once');
    return { items, progress: { appliedIndex: last.index, appliedHash: last.hash, fence } };
  }

  // Snapshot seed (lib/service/snapshot.ts): a replica whose next entry was compacted at home
  // takes the shard's items at an index instead. Claim, write the items, finish: every write
  // after the claim is conditional on it, and an apply or a later claim replaces it, so of two
  // seeds (or a seed and an apply) racing on a shard only the last to claim can finish.

  /**
   * Claims the shard's progress for a seed: conditional on the progress (and its fence) being
   * `from`. Throws ProgressMovedError when it is not.
   */
  async claimSeed(shard: number, from: ReplicaProgress, token: string): Promise<void> {
    const fence = from.fence;
    try {
      await this.client.send(
        new UpdateCommand({
          TableName: this.tables.control,
          Key: progressKey(shard),
          UpdateExpression: 'SET #shard = :shard, #appliedIndex = if_not_exists(#appliedIndex, :zero), #appliedHash = if_not_exists(#appliedHash, :genesis), #seedToken = :token',
          ConditionExpression: `${from.appliedIndex === 0 ? '(attribute_not_exists(#appliedIndex) OR #appliedIndex = :from)' : '#appliedIndex = :from'} AND ${fence === undefined ? 'attribute_not_exists(#fence)' : '#fence = :ce'}`,
          ExpressionAttributeNames: { '#shard': 'shard', '#appliedIndex': 'appliedIndex', '#appliedHash': 'appliedHash', '#seedToken': 'seedToken', '#fence': 'fenceClusterEpoch' },
          ExpressionAttributeValues: { ':shard': shard, ':zero': 0, ':genesis': emptyProgress.appliedHash, ':token': token, ':from': from.appliedIndex, ...(fence === undefined ? {} : { ':ce': fence.clusterEpoch }) },
        }),
      );
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) throw new ProgressMovedError(shard);
      throw error;
    }
  }

  /** The shard's kv items in this region, as stored. */
  async readItems(shard: number): Promise<KvItem[]> {
    return readShardItems(this.client, this.tables, shard);
  }

  /**
   * Puts the snapshot's items and deletes the keys it lacks, in transactions that each check the
   * seed's claim (so nothing lands after another seed or an apply took the shard over). Throws
   * ProgressMovedError when the claim is gone.
   */
  async writeSeedItems(shard: number, token: string, puts: readonly SnapshotItem[], deletes: readonly string[]): Promise<void> {
    const writes: { item: TransactItems[number]; bytes: number }[] = [
      ...puts.map((item) => ({
        item: { Put: { TableName: this.tables.kv, Item: { shard, key: item.key, value: item.value, version: item.version, epoch: item.epoch, index: item.index } } },
        bytes: item.value.byteLength + Buffer.byteLength(item.key) + seedItemOverheadBytes,
      })),
      ...deletes.map((key) => ({ item: { Delete: { TableName: this.tables.kv, Key: { shard, key } } }, bytes: Buffer.byteLength(key) + seedItemOverheadBytes })),
    ];
    let chunk: TransactItems = [];
    let bytes = 0;
    const flush = async (): Promise<void> => {
      if (chunk.length === 0) return;
      await this.#seedTransact(shard, [this.#seedCheck(shard, token), ...chunk]);
      chunk = [];
      bytes = 0;
    };
    for (const write of writes) {
      // One item is the claim's check; the rest within TransactWriteItems' 100 items and 4 MB.
      if (chunk.length + 1 >= transactionItemsMaxOfSeed || bytes + write.bytes > limits.transactionBytesMax) await flush();
      chunk.push(write.item);
      bytes += write.bytes;
    }
    await flush();
  }

  /**
   * Ends a seed: the progress moves to the snapshot's entry, the entry goes in the log copy and
   * the region's compaction point says the copy starts after it, in one transaction conditional
   * on the claim and the fence. Throws ProgressMovedError when the claim is gone.
   */
  async finishSeed(shard: number, token: string, entry: LogEntry, fence: ReplicaFence | undefined, nowMs: number): Promise<ReplicaProgress> {
    await this.#seedTransact(shard, [
      {
        Put: {
          TableName: this.tables.control,
          Item: {
            ...progressKey(shard),
            shard,
            appliedIndex: entry.index,
            appliedHash: entry.hash,
            appliedAtMs: nowMs,
            lastLagMs: Math.max(0, nowMs - entry.committedAtMs),
            ...(fence === undefined ? {} : { fenceClusterEpoch: fence.clusterEpoch, fenceIndex: fence.index }),
          },
          ConditionExpression: `#seedToken = :token AND ${fence === undefined ? 'attribute_not_exists(#fence)' : '#fence = :ce'}`,
          ExpressionAttributeNames: { '#seedToken': 'seedToken', '#fence': 'fenceClusterEpoch' },
          ExpressionAttributeValues: { ':token': token, ...(fence === undefined ? {} : { ':ce': fence.clusterEpoch }) },
        },
      },
      { Put: { TableName: this.tables.log, Item: fromLogEntry(entry) } },
      // Entries below the seed's are not in this copy (or are about to be trimmed): a watch there gets 410.
      { Put: { TableName: this.tables.control, Item: { pk: compactionPartition, sk: String(shard).padStart(4, '0'), shard, compactedThrough: entry.index - 1, compactedAtMs: nowMs } } },
    ]);
    return { appliedIndex: entry.index, appliedHash: entry.hash, fence };
  }

  #seedCheck(shard: number, token: string): TransactItems[number] {
    return {
      ConditionCheck: {
        TableName: this.tables.control,
        Key: progressKey(shard),
        ConditionExpression: '#seedToken = :token',
        ExpressionAttributeNames: { '#seedToken': 'seedToken' },
        ExpressionAttributeValues: { ':token': token },
      },
    };
  }

  async #seedTransact(shard: number, items: TransactItems): Promise<void> {
    try {
      await this.client.send(new TransactWriteCommand({ TransactItems: items }));
    } catch (error) {
      if (error instanceof TransactionCanceledException) {
        const codes = (error.CancellationReasons ?? []).map((reason) => reason.Code);
        if (codes.includes('ConditionalCheckFailed') || codes.includes('TransactionConflict')) throw new ProgressMovedError(shard);
      }
      throw error;
    }
  }

  // This region's copy of the log is compacted too (the replica heartbeat): the same record and trim as at home.

  async readCompactions(): Promise<Map<number, number>> {
    return readCompactions(this.client, this.tables);
  }

  async recordCompaction(shard: number, compactedThrough: number, atMs: number): Promise<number> {
    return recordCompaction(this.client, this.tables, shard, compactedThrough, atMs);
  }

  async trimLog(shard: number, through: number, max: number): Promise<number> {
    return trimLog(this.client, this.tables, shard, through, max);
  }
}

/** TransactWriteItems' item limit. */
const transactionItemsMaxOfSeed = 100;
/** Bytes an item takes beyond its key and value (attribute names, numbers), rounded up. */
const seedItemOverheadBytes = 200;

type TransactItems = NonNullable<ConstructorParameters<typeof TransactWriteCommand>[0]['TransactItems']>;

/** A multi-shard transaction's parts on a replica item (see LogEntry.txn and KvService.read). */
function txnPartsOf(effect: { txn?: { parts: { shard: number; index: number }[] } }): { txnParts?: { shard: number; index: number }[] } {
  return effect.txn === undefined ? {} : { txnParts: effect.txn.parts.map((part) => ({ shard: part.shard, index: part.index })) };
}
