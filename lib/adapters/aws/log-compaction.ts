import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { backoffMs, sleep } from '../../clock.ts';
import { limits } from '../../core/limits.ts';
import { compactionPartition, type TableNames } from '../../infra/schema.ts';
import type { KvItem } from '../../ports/store.ts';
import type { DocumentClient } from './document-client.ts';
import { queryPartition } from './dynamo-store.ts';

/**
 * A region's log compaction on DynamoDB: the compaction point per shard (a `control` item, the
 * same in every region so a promoted replica's record stays right), the trim (BatchWriteItem
 * deletes, 25 a request) and the reads a trim decision and a snapshot need. Shared by the home
 * store (DynamoStore) and a replica region's (DynamoReplicaStore).
 */

/** One control partition holds every shard's compaction point: one Query reads them all (schema.ts names it for IAM). */
export { compactionPartition };

/** BatchWriteItem takes at most 25 items per request. */
const batchWriteItemsMax = 25;
const batchWriteAttemptsMax = 8;

function compactionKey(shard: number): { pk: string; sk: string } {
  return { pk: compactionPartition, sk: String(shard).padStart(4, '0') };
}

/** The shard's compaction point (0: nothing compacted), strongly consistent. */
export async function readCompaction(client: DocumentClient, tables: TableNames, shard: number): Promise<number> {
  const result = await client.send(new GetCommand({ TableName: tables.control, Key: compactionKey(shard), ConsistentRead: true }));
  return Number(result.Item?.compactedThrough ?? 0);
}

/**
 * A transaction item that holds only while `index` is above the shard's compaction point. The
 * log is dense above the point and entries there are never deleted, so with the entry's own
 * `attribute_not_exists(index)` it proves `index` was never written: without it, a writer whose
 * head is stale could write into a trimmed slot below the head (a fork of the chain that the
 * put's own condition cannot see, since the slot is empty again).
 */
export function logFloorCheck(tables: TableNames, shard: number, index: number) {
  return {
    ConditionCheck: {
      TableName: tables.control,
      Key: compactionKey(shard),
      ConditionExpression: 'attribute_not_exists(#through) OR #through < :index',
      ExpressionAttributeNames: { '#through': 'compactedThrough' },
      ExpressionAttributeValues: { ':index': index },
    },
  };
}

/** Every shard's compaction point that was ever recorded, in one consistent Query. */
export async function readCompactions(client: DocumentClient, tables: TableNames): Promise<Map<number, number>> {
  const items = await queryPartition(client, tables.control, compactionPartition);
  return new Map(items.map((item) => [Number(item.shard), Number(item.compactedThrough ?? 0)]));
}

/**
 * Records the compaction point before anything below it is deleted, so a reader that finds an
 * entry missing finds the point too. It only moves up (a stale leader's lower point is
 * refused); returns the point stored after the call.
 */
export async function recordCompaction(client: DocumentClient, tables: TableNames, shard: number, compactedThrough: number, atMs: number): Promise<number> {
  try {
    await client.send(
      new UpdateCommand({
        TableName: tables.control,
        Key: compactionKey(shard),
        UpdateExpression: 'SET #shard = :shard, #through = :through, #atMs = :atMs',
        ConditionExpression: 'attribute_not_exists(#through) OR #through < :through',
        ExpressionAttributeNames: { '#shard': 'shard', '#through': 'compactedThrough', '#atMs': 'compactedAtMs' },
        ExpressionAttributeValues: { ':shard': shard, ':through': compactedThrough, ':atMs': atMs },
      }),
    );
    return compactedThrough;
  } catch (error) {
    if (!(error instanceof ConditionalCheckFailedException)) throw error;
    return readCompaction(client, tables, shard);
  }
}

/** A snapshot seed's point: set outright (a region's log copy then starts after it), whatever was there. */
export async function putCompaction(client: DocumentClient, tables: TableNames, shard: number, compactedThrough: number, atMs: number): Promise<void> {
  await client.send(new PutCommand({ TableName: tables.control, Item: { ...compactionKey(shard), shard, compactedThrough, compactedAtMs: atMs } }));
}

/** The oldest entries from `fromIndex` on: index and commit time only (the age bound's input). */
export async function readLogTimes(client: DocumentClient, tables: TableNames, shard: number, fromIndex: number, limit: number): Promise<{ index: number; committedAtMs: number }[]> {
  const result = await client.send(
    new QueryCommand({
      TableName: tables.log,
      KeyConditionExpression: '#shard = :shard AND #index >= :from',
      ProjectionExpression: '#index, #committedAtMs',
      ExpressionAttributeNames: { '#shard': 'shard', '#index': 'index', '#committedAtMs': 'committedAtMs' },
      ExpressionAttributeValues: { ':shard': shard, ':from': fromIndex },
      ConsistentRead: true,
      Limit: limit,
    }),
  );
  return (result.Items ?? []).map((item) => ({ index: Number(item.index), committedAtMs: Number(item.committedAtMs) }));
}

/**
 * Deletes the oldest entries at or below `through`, at most `max` of them (a trim is bounded per
 * call; the next call goes on where this one stopped, whatever crashed in between). Returns how
 * many were deleted.
 */
export async function trimLog(client: DocumentClient, tables: TableNames, shard: number, through: number, max: number): Promise<number> {
  if (through < 1 || max < 1) return 0;
  const found = await client.send(
    new QueryCommand({
      TableName: tables.log,
      KeyConditionExpression: '#shard = :shard AND #index <= :through',
      ProjectionExpression: '#shard, #index',
      ExpressionAttributeNames: { '#shard': 'shard', '#index': 'index' },
      ExpressionAttributeValues: { ':shard': shard, ':through': through },
      Limit: max,
    }),
  );
  const keys = (found.Items ?? []).map((item) => ({ shard: Number(item.shard), index: Number(item.index) }));
  for (let start = 0; start < keys.length; start += batchWriteItemsMax) {
    let requests = keys.slice(start, start + batchWriteItemsMax).map((key) => ({ DeleteRequest: { Key: key } }));
    // BatchWriteItem may leave items unprocessed under throttling: send those again, with backoff.
    for (let attempt = 0; requests.length > 0; attempt += 1) {
      if (attempt >= batchWriteAttemptsMax) throw new Error(`log trim of shard ${shard}: ${requests.length} deletes still unprocessed after ${batchWriteAttemptsMax} attempts`);
      if (attempt > 0) await sleep(backoffMs(attempt, limits.retryBackoffMsBase, limits.retryBackoffMsMax));
      const result = await client.send(new BatchWriteCommand({ RequestItems: { [tables.log]: requests } }));
      requests = (result.UnprocessedItems?.[tables.log] ?? []) as typeof requests;
    }
  }
  return keys.length;
}

/** Every kv item of one shard as stored (marks and tombstones included), with consistent reads, page by page. */
export async function readShardItems(client: DocumentClient, tables: TableNames, shard: number): Promise<KvItem[]> {
  const items: KvItem[] = [];
  let startKey: Record<string, unknown> | undefined;
  do {
    const page = await client.send(
      new QueryCommand({
        TableName: tables.kv,
        KeyConditionExpression: '#shard = :shard',
        ExpressionAttributeNames: { '#shard': 'shard' },
        ExpressionAttributeValues: { ':shard': shard },
        ConsistentRead: true,
        ExclusiveStartKey: startKey,
      }),
    );
    for (const raw of page.Items ?? []) {
      items.push({
        key: String(raw.key),
        shard: Number(raw.shard),
        value: raw.value instanceof Uint8Array ? raw.value : new Uint8Array(),
        version: Number(raw.version),
        epoch: Number(raw.epoch),
        index: Number(raw.index),
        ...(raw.pending === 'quorum' || raw.pending === 'all' ? { pending: raw.pending } : {}),
        ...(raw.tombstone === true ? { tombstone: true as const } : {}),
      });
    }
    startKey = page.LastEvaluatedKey;
  } while (startKey !== undefined);
  return items;
}
