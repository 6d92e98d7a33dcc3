import { createHash } from 'node:crypto';
import { ConditionalCheckFailedException, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import {
  BatchWriteCommand,
  DeleteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  TransactGetCommand,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import type { DocumentClient } from './document-client.ts';
import { logFloorCheck, readCompaction, readCompactions, readLogTimes, readShardItems, recordCompaction, trimLog } from './log-compaction.ts';
import { backoffMs, sleep } from '../../clock.ts';
import { assert } from '../../core/assert.ts';
import { limits } from '../../core/limits.ts';
import type { LeaseRecord } from '../../core/lease.ts';
import type { LogEntry, Operation } from '../../core/log.ts';
import { replicaReportPartition, type TableNames } from '../../infra/schema.ts';
import {
  HeadConflictError,
  NotFoundError,
  type EpochKvError,
  IdempotencyRaceError,
  SnapshotChangedError,
  StaleEpochError,
  TransactionRaceError,
  VersionConflictError,
  WithdrawnError,
} from '../../ports/errors.ts';
import type { ClusterState, CommitRequest, GroupCommitOutcome, HeartbeatItem, InSyncSet, IntakeOutcome, IntakeWrite, KvItem, LeaseExpectation, IdempotencyRecord, ListPage, LogHead, ReplicaReport, Store, TxnCommit } from '../../ports/store.ts';

/** BatchWriteItem takes at most 25 items per request. */
const batchWriteItemsMax = 25;
const batchWriteAttemptsMax = 8;

const leasePartition = 'lease';
/** Each shard leader's lease clock, carried to its successor (lib/core/coordination.ts LeaseClock). */
const leaseClockPartition = 'leaseclock';
/** Idempotency-Key records (see IdempotencyRecord). */
const idempotencyPartition = 'idempotency';

function idempotencyItem(record: IdempotencyRecord): Item {
  // DynamoDB's TTL takes epoch seconds.
  return {
    pk: idempotencyPartition,
    sk: record.key,
    fingerprint: record.fingerprint,
    status: record.status,
    body: record.body,
    expiresAtMs: record.expiresAtMs,
    expiresAt: Math.ceil(record.expiresAtMs / 1000),
    ...(record.durability === undefined ? {} : { durability: record.durability }),
  };
}

/** Only where no live record holds the key: TTL deletes lazily, so an expired one may still be there. */
const idempotencyAbsent = {
  ConditionExpression: 'attribute_not_exists(#pk) OR #expiresAtMs < :nowMs',
  ExpressionAttributeNames: { '#pk': 'pk', '#expiresAtMs': 'expiresAtMs' },
};
const nodePartition = 'node';
const replicaPartition = replicaReportPartition;
const inSyncPartition = 'insync';
const clusterKey = { pk: 'cluster', sk: 'home' };

/** One control partition per shard's intake: the leader reads it with one consistent Query. */
function intakePartition(shard: number): string {
  return `intake#${leaseSortKey(shard)}`;
}

/** Pages of the intake a leader reads per drain at most (settled items not yet deleted come first). */
const intakePagesMax = 4;

const intakeNames = { '#state': 'state' };

function toIntakeWrite(item: Item): IntakeWrite {
  const key = String(item.key);
  return {
    shard: Number(item.shard),
    id: String(item.sk),
    requestId: String(item.requestId),
    change: item.type === 'delete' ? { type: 'delete', key } : { type: 'put', key, value: toBytes(item.value) },
    precondition: {
      ifVersion: typeof item.ifVersion === 'number' ? item.ifVersion : undefined,
      ifAbsent: item.ifAbsent === true,
    },
    depositedAtMs: Number(item.depositedAtMs),
  };
}

function toIntakeOutcome(item: Item): IntakeOutcome {
  if (item.state === 'committed') {
    return {
      state: 'committed',
      index: Number(item.index),
      epoch: Number(item.epoch),
      prevHash: String(item.prevHash),
      hash: String(item.hash),
      committedAtMs: Number(item.committedAtMs),
      contended: item.contended === true,
    };
  }
  if (item.state === 'refused') {
    return { state: 'refused', code: String(item.code), message: String(item.message), currentVersion: typeof item.currentVersion === 'number' ? item.currentVersion : undefined };
  }
  return { state: 'pending' };
}

/** Sort keys of leases are zero-padded so the one Query returns them in shard order. */
function leaseSortKey(shard: number): string {
  return String(shard).padStart(4, '0');
}

type Item = Record<string, unknown>;

function toLease(item: Item): LeaseRecord {
  return {
    shard: Number(item.shard),
    holder: typeof item.holder === 'string' ? item.holder : undefined,
    incarnation: typeof item.incarnation === 'string' ? item.incarnation : undefined,
    epoch: Number(item.epoch ?? 0),
    version: Number(item.version ?? 0),
    renewedAtMs: Number(item.renewedAtMs ?? 0),
    markerPending: item.markerPending === true,
    previousEpoch: Number(item.previousEpoch ?? 0),
    ...(typeof item.movedTo === 'string' ? { movedTo: item.movedTo } : {}),
  };
}

function toInSyncSet(item: Item): InSyncSet {
  return { shard: Number(item.shard), regions: (item.regions as string[] | undefined) ?? [], epoch: Number(item.epoch), updatedAtMs: Number(item.updatedAtMs) };
}

function toBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (value === undefined || value === null) return new Uint8Array();
  throw new Error(`expected binary attribute, got ${typeof value}`);
}

function toOperation(raw: Item): Operation {
  switch (raw.type) {
    case 'put':
      return { type: 'put', key: String(raw.key), value: toBytes(raw.value) };
    case 'delete':
      return { type: 'delete', key: String(raw.key) };
    case 'leader':
      return { type: 'leader', node: String(raw.node), epoch: Number(raw.epoch), previousEpoch: Number(raw.previousEpoch) };
    default:
      throw new Error(`unknown operation type ${String(raw.type)} in log`);
  }
}

export function toLogEntry(item: Item): LogEntry {
  return {
    shard: Number(item.shard),
    index: Number(item.index),
    epoch: Number(item.epoch),
    ops: (item.ops as Item[]).map(toOperation),
    prevHash: String(item.prevHash),
    hash: String(item.hash),
    requestId: String(item.requestId),
    committedAtMs: Number(item.committedAtMs),
    ...(item.txn === undefined ? {} : { txn: { id: String((item.txn as Item).id), parts: ((item.txn as Item).parts as Item[]).map((part) => ({ shard: Number(part.shard), index: Number(part.index) })) } }),
  };
}

export function fromLogEntry(entry: LogEntry): Item {
  return { ...entry, ops: entry.ops.map((op) => ({ ...op })) };
}

function toKvItem(item: Item): KvItem {
  return {
    key: String(item.key),
    shard: Number(item.shard),
    value: toBytes(item.value),
    version: Number(item.version),
    epoch: Number(item.epoch),
    index: Number(item.index),
    ...(item.pending === 'quorum' || item.pending === 'all' ? { pending: item.pending } : {}),
    ...(item.tombstone === true ? { tombstone: true as const } : {}),
    ...(Array.isArray(item.txnParts) ? { txnParts: (item.txnParts as Item[]).map((part) => ({ shard: Number(part.shard), index: Number(part.index) })) } : {}),
  };
}

function attemptToken(entries: LogEntry[]): string {
  const hash = createHash('sha256');
  for (const entry of entries) hash.update(`${entry.requestId}:${entry.shard}:${entry.index};`);
  return hash.digest('hex').slice(0, 36);
}

type TransactItems = NonNullable<ConstructorParameters<typeof TransactWriteCommand>[0]['TransactItems']>;

/** Why DynamoDB refused a kv change's condition, in the caller's terms. */
function kvRefusal({ change, precondition }: NonNullable<CommitRequest['kv']>, current: number | undefined): EpochKvError {
  if (current === undefined && change.type === 'delete' && precondition.ifVersion === undefined) {
    return new NotFoundError(`key "${change.key}" does not exist`);
  }
  const expected = precondition.ifVersion !== undefined ? `version ${precondition.ifVersion}` : 'no existing item';
  const actual = current === undefined ? 'the key does not exist' : `the current version is ${current}`;
  return new VersionConflictError(`version conflict on "${change.key}": expected ${expected}, but ${actual}`, current);
}

/**
 * Every item of one partition of the `control` table (all leases, all heartbeats, ...), with a
 * consistent read, page by page.
 */
export async function queryPartition(client: DocumentClient, table: string, partition: string): Promise<Item[]> {
  const items: Item[] = [];
  let startKey: Item | undefined;
  do {
    const page = await client.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: { '#pk': 'pk' },
        ExpressionAttributeValues: { ':pk': partition },
        ConsistentRead: true,
        ExclusiveStartKey: startKey,
      }),
    );
    items.push(...(page.Items ?? []));
    startKey = page.LastEvaluatedKey;
  } while (startKey !== undefined);
  return items;
}

/** Every attribute name goes through an alias: `shard`, `key`, `index` and `hash` are reserved words. */
const acquireNames = {
  '#shard': 'shard',
  '#holder': 'holder',
  '#incarnation': 'incarnation',
  '#epoch': 'epoch',
  '#previousEpoch': 'previousEpoch',
  '#renewedAtMs': 'renewedAtMs',
  '#markerPending': 'markerPending',
  '#version': 'version',
  '#movedTo': 'movedTo',
};
const leaseNames = { '#holder': 'holder', '#incarnation': 'incarnation', '#epoch': 'epoch', '#version': 'version', '#renewedAtMs': 'renewedAtMs' };

/** Cancellation reason codes in TransactItems order. */
function reasonCodes(error: TransactionCanceledException): string[] {
  return (error.CancellationReasons ?? []).map((reason) => reason.Code ?? 'None');
}

function oldVersion(error: TransactionCanceledException, position: number): number | undefined {
  const item = error.CancellationReasons?.[position]?.Item;
  // A pending delete's tombstone is a missing key to every condition.
  if (item?.tombstone?.BOOL === true) return undefined;
  const version = item?.version;
  return version?.N === undefined ? undefined : Number(version.N);
}

/** The home region's `control`, `log` and `kv` tables on DynamoDB (or DynamoDB Local). */
export class DynamoStore implements Store {
  constructor(
    private readonly client: DocumentClient,
    private readonly tables: TableNames,
    private readonly shardCount: number,
    /**
     * TEST ONLY: leaves the epoch ConditionCheck out of the fenced write, to prove the fault
     * suite catches what fencing prevents. Never set outside the chaos suite.
     */
    private readonly options: { unsafeDisableFencing?: boolean } = {},
  ) {}

  async readLeases(): Promise<LeaseRecord[]> {
    return (await queryPartition(this.client, this.tables.control, leasePartition)).map(toLease);
  }

  async readLease(shard: number): Promise<LeaseRecord | undefined> {
    const result = await this.client.send(
      new GetCommand({ TableName: this.tables.control, Key: { pk: leasePartition, sk: leaseSortKey(shard) }, ConsistentRead: true }),
    );
    return result.Item === undefined ? undefined : toLease(result.Item);
  }

  async renewLease(shard: number, holder: { node: string; incarnation: string }, epoch: number, nowMs: number): Promise<LeaseRecord> {
    return this.#updateHeld(shard, holder, epoch, 'SET #renewedAtMs = :now, #version = #version + :one', nowMs);
  }

  async releaseLease(shard: number, holder: { node: string; incarnation: string }, epoch: number, nowMs: number): Promise<LeaseRecord> {
    return this.#updateHeld(shard, holder, epoch, 'SET #renewedAtMs = :now, #version = #version + :one REMOVE #holder, #incarnation', nowMs);
  }

  async #updateHeld(
    shard: number,
    holder: { node: string; incarnation: string },
    epoch: number,
    update: string,
    nowMs: number,
  ): Promise<LeaseRecord> {
    return this.#updateLease(
        new UpdateCommand({
          TableName: this.tables.control,
          Key: { pk: leasePartition, sk: leaseSortKey(shard) },
          UpdateExpression: update,
          ConditionExpression: '#holder = :node AND #incarnation = :incarnation AND #epoch = :epoch',
          ExpressionAttributeNames: leaseNames,
          ExpressionAttributeValues: { ':node': holder.node, ':incarnation': holder.incarnation, ':epoch': epoch, ':now': nowMs, ':one': 1 },
        }),
        shard,
        epoch,
      );
  }

  async acquireLease(
    shard: number,
    holder: { node: string; incarnation: string },
    expected: LeaseExpectation,
    epoch: number,
    nowMs: number,
  ): Promise<LeaseRecord> {
    const condition: { ConditionExpression: string; ExpressionAttributeNames: Record<string, string>; ExpressionAttributeValues?: Record<string, unknown> } =
      'incarnation' in expected
        ? {
            ConditionExpression: '#holder = :node AND #incarnation = :incarnation AND #epoch = :epoch',
            ExpressionAttributeNames: { '#holder': 'holder', '#incarnation': 'incarnation', '#epoch': 'epoch' },
            ExpressionAttributeValues: { ':incarnation': expected.incarnation, ':epoch': expected.epoch },
          }
        : expected.version === undefined
          ? { ConditionExpression: 'attribute_not_exists(#pk)', ExpressionAttributeNames: { '#pk': 'pk' } }
          : {
              ConditionExpression: '#version = :version',
              ExpressionAttributeNames: { '#version': 'version' },
              ExpressionAttributeValues: { ':version': expected.version },
            };
    // One conditional write fences every writer of the old epoch at once; the marker entry
    // follows (appendMarker) and writers wait for it, so it is still the epoch's first entry.
    return this.#updateLease(
        new UpdateCommand({
          TableName: this.tables.control,
          Key: { pk: leasePartition, sk: leaseSortKey(shard) },
          UpdateExpression:
            'SET #shard = :shard, #holder = :node, #incarnation = :self, #previousEpoch = if_not_exists(#epoch, :zero), #epoch = :newEpoch, #renewedAtMs = :now, #markerPending = :true, #version = if_not_exists(#version, :zero) + :one',
          // A lease fenced by a promotion is nobody's to take: this region is not home any more.
          ConditionExpression: `(${condition.ConditionExpression}) AND attribute_not_exists(#movedTo)`,
          ExpressionAttributeNames: { ...condition.ExpressionAttributeNames, ...acquireNames },
          ExpressionAttributeValues: {
            ...condition.ExpressionAttributeValues,
            ':shard': shard,
            ':node': holder.node,
            ':self': holder.incarnation,
            ':newEpoch': epoch,
            ':now': nowMs,
            ':true': true,
            ':zero': 0,
            ':one': 1,
          },
        }),
        shard,
        epoch,
      );
  }

  /** A conditional write of a lease returning what it stored; a lost condition is a StaleEpochError. */
  async #updateLease(command: UpdateCommand, shard: number, epoch: number): Promise<LeaseRecord> {
    command.input.ReturnValues = 'ALL_NEW';
    try {
      const result = await this.client.send(command);
      assert(result.Attributes !== undefined, 'UpdateItem with ALL_NEW returned no attributes');
      return toLease(result.Attributes);
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) throw new StaleEpochError(shard, epoch);
      throw error;
    }
  }

  async appendMarker(shard: number, holder: { node: string; incarnation: string }, marker: LogEntry): Promise<LeaseRecord> {
    const epoch = marker.epoch;
    assert(marker.shard === shard, 'the leader marker must be of its shard');
    try {
      await this.client.send(
        new TransactWriteCommand({
          TransactItems: [
            {
              Update: {
                TableName: this.tables.control,
                Key: { pk: leasePartition, sk: leaseSortKey(shard) },
                UpdateExpression: 'REMOVE #markerPending',
                ConditionExpression: '#holder = :node AND #incarnation = :incarnation AND #epoch = :epoch AND #markerPending = :true',
                ExpressionAttributeNames: { '#holder': 'holder', '#incarnation': 'incarnation', '#epoch': 'epoch', '#markerPending': 'markerPending' },
                ExpressionAttributeValues: { ':node': holder.node, ':incarnation': holder.incarnation, ':epoch': epoch, ':true': true },
              },
            },
            {
              Put: {
                TableName: this.tables.log,
                Item: fromLogEntry(marker),
                ConditionExpression: 'attribute_not_exists(#index)',
                ExpressionAttributeNames: { '#index': 'index' },
              },
            },
            logFloorCheck(this.tables, shard, marker.index),
          ],
        }),
      );
    } catch (error) {
      if (error instanceof TransactionCanceledException) {
        const [leaseCode, logCode, floorCode] = reasonCodes(error);
        if (leaseCode === 'ConditionalCheckFailed') throw new StaleEpochError(shard, epoch);
        if (logCode === 'ConditionalCheckFailed' || floorCode === 'ConditionalCheckFailed') throw new HeadConflictError(shard, marker.index);
        throw new TransactionRaceError(`shard ${shard}: leader marker raced another transaction`);
      }
      throw error;
    }
    const stored = await this.readLease(shard);
    assert(stored !== undefined, 'a lease whose marker was appended must exist');
    return stored;
  }

  async readInSync(shard: number): Promise<InSyncSet | undefined> {
    const result = await this.client.send(new GetCommand({ TableName: this.tables.control, Key: { pk: inSyncPartition, sk: leaseSortKey(shard) }, ConsistentRead: true }));
    return result.Item === undefined ? undefined : toInSyncSet(result.Item);
  }

  async readInSyncSets(): Promise<InSyncSet[]> {
    return (await queryPartition(this.client, this.tables.control, inSyncPartition)).map(toInSyncSet);
  }

  async writeInSync(set: InSyncSet, holder: { node: string; incarnation: string }): Promise<void> {
    try {
      await this.client.send(
        new TransactWriteCommand({
          TransactItems: [
            {
              // Fenced like a log append: only the shard's current leader changes the set.
              ConditionCheck: {
                TableName: this.tables.control,
                Key: { pk: leasePartition, sk: leaseSortKey(set.shard) },
                ConditionExpression: '#holder = :node AND #incarnation = :incarnation AND #epoch = :epoch',
                ExpressionAttributeNames: { '#holder': 'holder', '#incarnation': 'incarnation', '#epoch': 'epoch' },
                ExpressionAttributeValues: { ':node': holder.node, ':incarnation': holder.incarnation, ':epoch': set.epoch },
              },
            },
            { Put: { TableName: this.tables.control, Item: { pk: inSyncPartition, sk: leaseSortKey(set.shard), ...set } } },
          ],
        }),
      );
    } catch (error) {
      if (error instanceof TransactionCanceledException) {
        if (reasonCodes(error)[0] === 'ConditionalCheckFailed') throw new StaleEpochError(set.shard, set.epoch);
        throw new TransactionRaceError(`shard ${set.shard}: in-sync set write raced another transaction`);
      }
      throw error;
    }
  }

  /** Which region is home, as this region's `control` table records it (undefined: never promoted). */
  async readClusterState(): Promise<ClusterState | undefined> {
    const result = await this.client.send(new GetCommand({ TableName: this.tables.control, Key: clusterKey, ConsistentRead: true }));
    const item = result.Item;
    if (item === undefined) return undefined;
    return {
      homeRegion: String(item.homeRegion),
      clusterEpoch: Number(item.clusterEpoch),
      replicaRegions: Array.isArray(item.replicaRegions) ? (item.replicaRegions as string[]) : undefined,
      previousHome: typeof item.previousHome === 'string' ? item.previousHome : undefined,
      promotedAtMs: typeof item.promotedAtMs === 'number' ? item.promotedAtMs : undefined,
    };
  }

  /** Records a promotion; never moves the cluster epoch back (false when a later one is there). */
  async writeClusterState(state: ClusterState): Promise<boolean> {
    try {
      await this.client.send(
        new PutCommand({
          TableName: this.tables.control,
          Item: { ...clusterKey, ...state },
          ConditionExpression: 'attribute_not_exists(#pk) OR #clusterEpoch <= :ce',
          ExpressionAttributeNames: { '#pk': 'pk', '#clusterEpoch': 'clusterEpoch' },
          ExpressionAttributeValues: { ':ce': state.clusterEpoch },
        }),
      );
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  /**
   * Promotion, in the old home: every lease loses its holder and moves to `epoch` (the new
   * cluster epoch's base) with `movedTo` set. From this write on, no writer of this region
   * can append (the ConditionCheck wants its own epoch and a holder) and no node can take
   * the lease again (acquire wants no `movedTo`).
   */
  async fenceLeases(epoch: number, movedTo: string): Promise<void> {
    await Promise.all(
      Array.from({ length: this.shardCount }, (_, shard) =>
        this.client.send(
          new UpdateCommand({
            TableName: this.tables.control,
            Key: { pk: leasePartition, sk: leaseSortKey(shard) },
            UpdateExpression: 'SET #shard = :shard, #epoch = :epoch, #movedTo = :to, #version = if_not_exists(#version, :zero) + :one REMOVE #holder, #incarnation, #markerPending',
            ExpressionAttributeNames: { '#shard': 'shard', '#epoch': 'epoch', '#movedTo': 'movedTo', '#version': 'version', '#holder': 'holder', '#incarnation': 'incarnation', '#markerPending': 'markerPending' },
            ExpressionAttributeValues: { ':shard': shard, ':epoch': epoch, ':to': movedTo, ':zero': 0, ':one': 1 },
          }),
        ),
      ),
    );
  }

  /**
   * Promotion, in the new home: free leases at `epoch` (the new cluster epoch's base), so the
   * first leader of every shard takes epoch + 1. Any lease left from an earlier time as home
   * is replaced; one of a later cluster epoch is kept.
   */
  async seedLeases(epoch: number): Promise<void> {
    await Promise.all(
      Array.from({ length: this.shardCount }, (_, shard) =>
        this.client
          .send(
            new PutCommand({
              TableName: this.tables.control,
              Item: { pk: leasePartition, sk: leaseSortKey(shard), shard, epoch, previousEpoch: epoch, version: 0, renewedAtMs: 0 },
              ConditionExpression: 'attribute_not_exists(#pk) OR #epoch < :epoch',
              ExpressionAttributeNames: { '#pk': 'pk', '#epoch': 'epoch' },
              ExpressionAttributeValues: { ':epoch': epoch },
            }),
          )
          .catch((error: unknown) => {
            if (!(error instanceof ConditionalCheckFailedException)) throw error;
          }),
      ),
    );
  }

  async putHeartbeat(heartbeat: HeartbeatItem): Promise<void> {
    await this.client.send(new PutCommand({ TableName: this.tables.control, Item: { pk: nodePartition, sk: heartbeat.node, ...heartbeat } }));
  }

  async readHeartbeats(): Promise<HeartbeatItem[]> {
    return (await queryPartition(this.client, this.tables.control, nodePartition)).map((item) => ({
      node: String(item.node),
      incarnation: String(item.incarnation),
      seq: Number(item.seq),
      atMs: Number(item.atMs),
    }));
  }

  async putReplicaReports(reports: readonly ReplicaReport[]): Promise<void> {
    for (let start = 0; start < reports.length; start += batchWriteItemsMax) {
      let requests = reports.slice(start, start + batchWriteItemsMax).map((report) => ({
        PutRequest: { Item: { pk: replicaPartition, sk: `${report.region}#${String(report.shard).padStart(4, '0')}`, ...report } },
      }));
      // BatchWriteItem may leave items unprocessed under throttling: send those again, with backoff.
      for (let attempt = 0; requests.length > 0; attempt += 1) {
        if (attempt >= batchWriteAttemptsMax) throw new Error(`replica reports: ${requests.length} items still unprocessed after ${batchWriteAttemptsMax} attempts`);
        if (attempt > 0) await sleep(backoffMs(attempt, limits.retryBackoffMsBase, limits.retryBackoffMsMax));
        const result = await this.client.send(new BatchWriteCommand({ RequestItems: { [this.tables.control]: requests } }));
        requests = (result.UnprocessedItems?.[this.tables.control] ?? []) as typeof requests;
      }
    }
  }

  async readReplicaReports(): Promise<ReplicaReport[]> {
    return (await queryPartition(this.client, this.tables.control, replicaPartition)).map((item) => ({
      region: String(item.region),
      shard: Number(item.shard),
      appliedIndex: Number(item.appliedIndex),
      appliedAtMs: Number(item.appliedAtMs),
      lastLagMs: Number(item.lastLagMs),
      reportedAtMs: Number(item.reportedAtMs),
    }));
  }

  async readHead(shard: number): Promise<LogHead | undefined> {
    const result = await this.client.send(
      new QueryCommand({
        TableName: this.tables.log,
        KeyConditionExpression: '#shard = :shard',
        ExpressionAttributeValues: { ':shard': shard },
        ProjectionExpression: '#index, #hash, #committedAtMs, #leaderCommittedAtMs',
        ExpressionAttributeNames: { '#shard': 'shard', '#index': 'index', '#hash': 'hash', '#committedAtMs': 'committedAtMs', '#leaderCommittedAtMs': 'leaderCommittedAtMs' },
        ScanIndexForward: false,
        Limit: 1,
        ConsistentRead: true,
      }),
    );
    const item = result.Items?.[0];
    if (item === undefined) return undefined;
    return {
      index: Number(item.index),
      hash: String(item.hash),
      ...(typeof item.committedAtMs === 'number' ? { committedAtMs: item.committedAtMs } : {}),
      ...(typeof item.leaderCommittedAtMs === 'number' ? { leaderCommittedAtMs: item.leaderCommittedAtMs } : {}),
    };
  }

  async readLogEntry(shard: number, index: number): Promise<LogEntry | undefined> {
    const result = await this.client.send(new GetCommand({ TableName: this.tables.log, Key: { shard, index }, ConsistentRead: true }));
    return result.Item === undefined ? undefined : toLogEntry(result.Item);
  }

  async readLog(shard: number, fromIndex: number, limit: number): Promise<LogEntry[]> {
    const entries: LogEntry[] = [];
    let startKey: Item | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.tables.log,
          KeyConditionExpression: '#shard = :shard AND #index >= :from',
          ExpressionAttributeNames: { '#shard': 'shard', '#index': 'index' },
          ExpressionAttributeValues: { ':shard': shard, ':from': fromIndex },
          ConsistentRead: true,
          Limit: Math.min(limit - entries.length, 1000),
          ExclusiveStartKey: startKey,
        }),
      );
      entries.push(...(page.Items ?? []).map(toLogEntry));
      startKey = page.LastEvaluatedKey;
    } while (startKey !== undefined && entries.length < limit);
    return entries;
  }

  async commit(request: CommitRequest): Promise<void> {
    const outcome = await this.commitGroup([request]);
    if (!outcome.committed) {
      const refusal = outcome.refused.get(0);
      if (refusal !== undefined) throw refusal;
    }
  }

  async commitGroup(requests: CommitRequest[]): Promise<GroupCommitOutcome> {
    const first = requests[0];
    if (first === undefined) return { committed: true };
    const { shard, epoch } = first.entry;
    for (const [position, { entry }] of requests.entries()) {
      // One lease check covers the group only if every entry is of its shard and epoch, and
      // the indexes are consecutive (the log stays dense).
      assert(entry.shard === shard && entry.epoch === epoch && entry.index === first.entry.index + position, `group commit: entry ${position} is not shard ${shard} epoch ${epoch} index ${first.entry.index + position}`);
    }
    const fencing = this.options.unsafeDisableFencing === true ? [] : [0];
    const items: TransactItems = fencing.map(() => ({
      // The fencing token: a writer whose epoch is not the lease's can never append.
      ConditionCheck: {
        TableName: this.tables.control,
        Key: { pk: leasePartition, sk: leaseSortKey(shard) },
        // A lease whose leader marker is not in the log yet takes no writes: the marker is
        // the first entry of every epoch.
        ConditionExpression: '#epoch = :epoch AND attribute_exists(#holder) AND attribute_not_exists(#markerPending)',
        ExpressionAttributeNames: { '#epoch': 'epoch', '#holder': 'holder', '#markerPending': 'markerPending' },
        ExpressionAttributeValues: { ':epoch': epoch },
      },
    }));
    // The first index above the compaction point (the others follow it): see logFloorCheck.
    const floorAt = items.length;
    items.push(logFloorCheck(this.tables, shard, first.entry.index));
    /** Where each request's log put, kv change and intake mark sit in the transaction. */
    const positions: { log: number; kv: number | undefined; intake: number | undefined }[] = [];
    for (const { entry, kv, intake } of requests) {
      const log = items.length;
      items.push({
        // The log index is the compare-and-swap that serializes writers of one shard. A leader's
        // commit is marked (outside the entry and its hash) so writers reading the head see a busy shard.
        Put: {
          TableName: this.tables.log,
          Item: { ...fromLogEntry(entry), ...(intake?.contended === true ? { leaderCommittedAtMs: entry.committedAtMs } : {}) },
          ConditionExpression: 'attribute_not_exists(#index)',
          ExpressionAttributeNames: { '#index': 'index' },
        },
      });
      const kvAt = kv === undefined ? undefined : items.length;
      if (kv !== undefined) items.push(this.#kvChange(entry, kv));
      const intakeAt = intake === undefined ? undefined : items.length;
      if (intake !== undefined) items.push(this.#intakeCommitted(entry, intake.id, intake.contended));
      positions.push({ log, kv: kvAt, intake: intakeAt });
    }
    try {
      // The token makes the SDK's own retry of a timed-out commit idempotent: DynamoDB then
      // applies the transaction at most once. It names this attempt (requests and indexes).
      await this.client.send(new TransactWriteCommand({ TransactItems: items, ClientRequestToken: attemptToken(requests.map((request) => request.entry)) }));
      return { committed: true };
    } catch (error) {
      if (!(error instanceof TransactionCanceledException)) throw error;
      const codes = reasonCodes(error);
      const failed = (position: number | undefined) => position !== undefined && codes[position] === 'ConditionalCheckFailed';
      // Order matters: a stale epoch or a stale head makes the kv conditions meaningless.
      if (fencing.length > 0 && failed(0)) throw new StaleEpochError(shard, epoch);
      if (failed(floorAt)) throw new HeadConflictError(shard, first.entry.index);
      const stale = positions.findIndex((position) => failed(position.log));
      if (stale >= 0) throw new HeadConflictError(shard, requests[stale]?.entry.index ?? first.entry.index);
      const refused = new Map<number, EpochKvError>();
      for (const [position, { kv, intake }] of requests.entries()) {
        const at = positions[position]?.kv;
        // A write taken back by its writer is not committed; its kv condition means nothing then.
        const intakeAt = positions[position]?.intake;
        if (intake !== undefined && failed(intakeAt)) refused.set(position, new WithdrawnError(shard, intake.id));
        else if (kv !== undefined && at !== undefined && failed(at)) refused.set(position, kvRefusal(kv, oldVersion(error, at)));
      }
      if (refused.size > 0) return { committed: false, refused };
      throw new TransactionRaceError(`shard ${shard}: write raced another transaction (${codes.join(', ')})`);
    }
  }

  /** The intake item of a leader-committed write: committed at the entry, if it is still pending. */
  #intakeCommitted(entry: LogEntry, id: string, contended: boolean): TransactItems[number] {
    return {
      Update: {
        TableName: this.tables.control,
        Key: { pk: intakePartition(entry.shard), sk: id },
        // The value is in the log and the kv item now; the outcome is all the writer needs.
        UpdateExpression: 'SET #state = :committed, #index = :index, #epoch = :epoch, #prevHash = :prevHash, #hash = :hash, #committedAtMs = :at, #settledAtMs = :at, #contended = :contended REMOVE #value',
        ConditionExpression: '#state = :pending',
        ExpressionAttributeNames: { ...intakeNames, '#index': 'index', '#epoch': 'epoch', '#prevHash': 'prevHash', '#hash': 'hash', '#committedAtMs': 'committedAtMs', '#settledAtMs': 'settledAtMs', '#value': 'value', '#contended': 'contended' },
        ExpressionAttributeValues: { ':committed': 'committed', ':pending': 'pending', ':index': entry.index, ':epoch': entry.epoch, ':prevHash': entry.prevHash, ':hash': entry.hash, ':at': entry.committedAtMs, ':contended': contended },
      },
    };
  }

  async depositIntake(write: IntakeWrite): Promise<void> {
    const { change, precondition } = write;
    await this.client.send(
      new PutCommand({
        TableName: this.tables.control,
        Item: {
          pk: intakePartition(write.shard),
          sk: write.id,
          shard: write.shard,
          requestId: write.requestId,
          type: change.type,
          key: change.key,
          ...(change.type === 'put' ? { value: change.value } : {}),
          ...(precondition.ifVersion === undefined ? {} : { ifVersion: precondition.ifVersion }),
          ...(precondition.ifAbsent === true ? { ifAbsent: true } : {}),
          depositedAtMs: write.depositedAtMs,
          state: 'pending',
        },
        // An id names one deposit: never overwrite another's (or a settled one).
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: { '#pk': 'pk' },
      }),
    );
  }

  async readIntake(shard: number, limit: number): Promise<IntakeWrite[]> {
    const writes: IntakeWrite[] = [];
    let startKey: Item | undefined;
    for (let page = 0; page < intakePagesMax; page += 1) {
      const result = await this.client.send(
        new QueryCommand({
          TableName: this.tables.control,
          KeyConditionExpression: '#pk = :pk',
          FilterExpression: '#state = :pending',
          ExpressionAttributeNames: { '#pk': 'pk', ...intakeNames },
          ExpressionAttributeValues: { ':pk': intakePartition(shard), ':pending': 'pending' },
          ConsistentRead: true,
          // The filter applies after the page is read: settled items not yet deleted count against it.
          Limit: 100,
          ExclusiveStartKey: startKey,
        }),
      );
      writes.push(...(result.Items ?? []).map(toIntakeWrite));
      startKey = result.LastEvaluatedKey;
      if (startKey === undefined || writes.length >= limit) break;
    }
    return writes.slice(0, limit);
  }

  async takeIntakeOutcome(shard: number, id: string): Promise<IntakeOutcome | undefined> {
    try {
      const result = await this.client.send(
        new DeleteCommand({
          TableName: this.tables.control,
          Key: { pk: intakePartition(shard), sk: id },
          // Settled only: a pending write stays for its leader. A failed condition is a write
          // unit on AWS, like the read it replaces, and saves the writer a separate delete.
          ConditionExpression: 'attribute_exists(#state) AND #state <> :pending',
          ExpressionAttributeNames: intakeNames,
          ExpressionAttributeValues: { ':pending': 'pending' },
          ReturnValues: 'ALL_OLD',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return result.Attributes === undefined ? undefined : toIntakeOutcome(result.Attributes);
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      return error.Item === undefined ? undefined : { state: 'pending' };
    }
  }

  async refuseIntake(shard: number, id: string, refusal: { code: string; message: string; currentVersion: number | undefined }, settledAtMs: number): Promise<boolean> {
    try {
      await this.client.send(
        new UpdateCommand({
          TableName: this.tables.control,
          Key: { pk: intakePartition(shard), sk: id },
          UpdateExpression: `SET #state = :refused, #code = :code, #message = :message, #settledAtMs = :now${refusal.currentVersion === undefined ? '' : ', #currentVersion = :current'} REMOVE #value`,
          ConditionExpression: '#state = :pending',
          ExpressionAttributeNames: { ...intakeNames, '#code': 'code', '#message': 'message', '#settledAtMs': 'settledAtMs', '#value': 'value', ...(refusal.currentVersion === undefined ? {} : { '#currentVersion': 'currentVersion' }) },
          ExpressionAttributeValues: {
            ':refused': 'refused',
            ':pending': 'pending',
            ':code': refusal.code,
            ':message': refusal.message,
            ':now': settledAtMs,
            ...(refusal.currentVersion === undefined ? {} : { ':current': refusal.currentVersion }),
          },
        }),
      );
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  async withdrawIntake(shard: number, id: string): Promise<'withdrawn' | IntakeOutcome | undefined> {
    try {
      await this.client.send(
        new DeleteCommand({
          TableName: this.tables.control,
          Key: { pk: intakePartition(shard), sk: id },
          ConditionExpression: '#state = :pending',
          ExpressionAttributeNames: intakeNames,
          ExpressionAttributeValues: { ':pending': 'pending' },
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return 'withdrawn';
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const old = error.Item;
      if (old === undefined) return undefined;
      return toIntakeOutcome(unmarshall(old));
    }
  }

  async sweepIntake(shard: number, settledBeforeMs: number): Promise<number> {
    const result = await this.client.send(
      new QueryCommand({
        TableName: this.tables.control,
        KeyConditionExpression: '#pk = :pk',
        FilterExpression: '#state <> :pending AND #settledAtMs < :before',
        ProjectionExpression: '#pk, #sk',
        ExpressionAttributeNames: { '#pk': 'pk', '#sk': 'sk', ...intakeNames, '#settledAtMs': 'settledAtMs' },
        ExpressionAttributeValues: { ':pk': intakePartition(shard), ':pending': 'pending', ':before': settledBeforeMs },
        Limit: 100,
      }),
    );
    const stale = result.Items ?? [];
    await Promise.all(stale.map((item) => this.client.send(new DeleteCommand({ TableName: this.tables.control, Key: { pk: item.pk, sk: item.sk } }))));
    return stale.length;
  }

  /**
   * The kv item's put or delete at the entry's index, under the caller's condition. A
   * quorum/all write marks its item pending, and its delete leaves a pending tombstone, until
   * confirmDurable: a tombstone counts as a missing key to every condition.
   */
  #kvChange(entry: LogEntry, { change, precondition, pending }: NonNullable<CommitRequest['kv']>): TransactItems[number] {
    const conditions: string[] = [];
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    if (precondition.ifAbsent) {
      conditions.push('(attribute_not_exists(#key) OR attribute_exists(#tombstone))');
      names['#key'] = 'key';
      names['#tombstone'] = 'tombstone';
    }
    if (precondition.ifVersion !== undefined) {
      conditions.push('#version = :expected AND attribute_not_exists(#tombstone)');
      names['#version'] = 'version';
      names['#tombstone'] = 'tombstone';
      values[':expected'] = precondition.ifVersion;
    }
    if (change.type === 'delete' && precondition.ifVersion === undefined) {
      conditions.push('attribute_exists(#key) AND attribute_not_exists(#tombstone)');
      names['#key'] = 'key';
      names['#tombstone'] = 'tombstone';
    }
    const condition =
      conditions.length === 0
        ? {}
        : {
            ConditionExpression: conditions.join(' AND '),
            ExpressionAttributeNames: names,
            ...(Object.keys(values).length === 0 ? {} : { ExpressionAttributeValues: values }),
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const,
          };
    const { shard, epoch, index } = entry;
    const mark = pending === undefined ? {} : { pending };
    if (change.type === 'put') {
      return { Put: { TableName: this.tables.kv, Item: { shard, key: change.key, value: change.value, version: index, epoch, index, ...mark }, ...condition } };
    }
    if (pending !== undefined) {
      return { Put: { TableName: this.tables.kv, Item: { shard, key: change.key, value: new Uint8Array(0), version: index, epoch, index, tombstone: true, ...mark }, ...condition } };
    }
    return { Delete: { TableName: this.tables.kv, Key: { shard, key: change.key }, ...condition } };
  }

  async confirmDurable(shard: number, key: string, index: number, tombstone: boolean): Promise<void> {
    // Only while the key is still at `index`: a later write has its own mark, or none.
    const condition = {
      ConditionExpression: `#index = :index AND ${tombstone ? 'attribute_exists(#tombstone)' : 'attribute_exists(#pending) AND attribute_not_exists(#tombstone)'}`,
      ExpressionAttributeNames: { '#index': 'index', ...(tombstone ? { '#tombstone': 'tombstone' } : { '#pending': 'pending', '#tombstone': 'tombstone' }) },
      ExpressionAttributeValues: { ':index': index },
    };
    try {
      await this.client.send(
        tombstone
          ? new DeleteCommand({ TableName: this.tables.kv, Key: { shard, key }, ...condition })
          : new UpdateCommand({ TableName: this.tables.kv, Key: { shard, key }, UpdateExpression: 'REMOVE #pending', ...condition }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
    }
  }

  async readIdempotency(key: string, nowMs: number): Promise<IdempotencyRecord | undefined> {
    const result = await this.client.send(new GetCommand({ TableName: this.tables.control, Key: { pk: idempotencyPartition, sk: key }, ConsistentRead: true }));
    const item = result.Item;
    if (item === undefined || Number(item.expiresAtMs) < nowMs) return undefined;
    const durability = item.durability as { mode?: unknown; parts?: Item[] } | undefined;
    return {
      key,
      fingerprint: String(item.fingerprint),
      status: Number(item.status),
      body: String(item.body),
      expiresAtMs: Number(item.expiresAtMs),
      ...(durability?.mode === 'quorum' || durability?.mode === 'all' ? { durability: { mode: durability.mode, parts: (durability.parts ?? []).map((part) => ({ shard: Number(part.shard), index: Number(part.index) })) } } : {}),
    };
  }

  async putIdempotency(record: IdempotencyRecord, nowMs: number): Promise<boolean> {
    try {
      await this.client.send(new PutCommand({ TableName: this.tables.control, Item: idempotencyItem(record), ...idempotencyAbsent, ExpressionAttributeValues: { ':nowMs': nowMs } }));
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  async listShard(shard: number, prefix: string, limit: number, after: string | undefined): Promise<ListPage> {
    const page = await this.#listShard(shard, prefix, limit, after, true);
    const last = page.items.at(-1);
    return { items: page.items, next: page.more && last !== undefined ? last.key : undefined };
  }

  async readLeaseClock(shard: number): Promise<Map<string, { version: number; remainingMs: number }>> {
    const result = await this.client.send(new GetCommand({ TableName: this.tables.control, Key: { pk: leaseClockPartition, sk: leaseSortKey(shard) }, ConsistentRead: true }));
    const leases = (result.Item?.leases ?? {}) as Record<string, { version: number; remainingMs: number }>;
    return new Map(Object.entries(leases).map(([id, { version, remainingMs }]) => [id, { version: Number(version), remainingMs: Number(remainingMs) }]));
  }

  async writeLeaseClock(shard: number, carried: ReadonlyMap<string, { version: number; remainingMs: number }>): Promise<void> {
    await this.client.send(new PutCommand({ TableName: this.tables.control, Item: { pk: leaseClockPartition, sk: leaseSortKey(shard), shard, leases: Object.fromEntries(carried) } }));
  }

  async readSnapshot(keys: { shard: number; key: string }[]): Promise<(KvItem | undefined)[]> {
    if (keys.length === 0) return [];
    const result = await this.client.send(new TransactGetCommand({ TransactItems: keys.map(({ shard, key }) => ({ Get: { TableName: this.tables.kv, Key: { shard, key } } })) }));
    return keys.map((_, position) => {
      const item = result.Responses?.[position]?.Item;
      return item === undefined ? undefined : toKvItem(item);
    });
  }

  async commitTxn(commit: TxnCommit): Promise<void> {
    const items: TransactItems = [];
    const leaseAt = new Map<number, { position: number; epoch: number }>();
    // Per shard: where its log put and its log-floor check sit, and its index.
    const logAt = new Map<number, { position: number; floorPosition: number; index: number }>();
    for (const entry of commit.entries) {
      if (this.options.unsafeDisableFencing !== true) {
        leaseAt.set(entry.shard, { position: items.length, epoch: entry.epoch });
        items.push({
          // Each shard's part is fenced by its own lease epoch, as a single write is.
          ConditionCheck: {
            TableName: this.tables.control,
            Key: { pk: leasePartition, sk: leaseSortKey(entry.shard) },
            ConditionExpression: '#epoch = :epoch AND attribute_exists(#holder) AND attribute_not_exists(#markerPending)',
            ExpressionAttributeNames: { '#epoch': 'epoch', '#holder': 'holder', '#markerPending': 'markerPending' },
            ExpressionAttributeValues: { ':epoch': entry.epoch },
          },
        });
      }
      logAt.set(entry.shard, { position: items.length, floorPosition: items.length + 1, index: entry.index });
      items.push({ Put: { TableName: this.tables.log, Item: fromLogEntry(entry), ConditionExpression: 'attribute_not_exists(#index)', ExpressionAttributeNames: { '#index': 'index' } } });
      items.push(logFloorCheck(this.tables, entry.shard, entry.index));
    }
    const readsFrom = items.length;
    for (const read of commit.reads) {
      // What the snapshot showed must still hold: a tombstone is a missing key.
      const condition: { ConditionExpression: string; ExpressionAttributeNames: Record<string, string>; ExpressionAttributeValues?: Record<string, unknown> } =
        read.version === undefined
          ? { ConditionExpression: 'attribute_not_exists(#key) OR attribute_exists(#tombstone)', ExpressionAttributeNames: { '#key': 'key', '#tombstone': 'tombstone' } }
          : { ConditionExpression: '#version = :version AND attribute_not_exists(#tombstone)', ExpressionAttributeNames: { '#version': 'version', '#tombstone': 'tombstone' }, ExpressionAttributeValues: { ':version': read.version } };
      const write = commit.writes.find((candidate) => candidate.shard === read.shard && candidate.change.key === read.key);
      const Key = { shard: read.shard, key: read.key };
      if (write === undefined) {
        items.push({ ConditionCheck: { TableName: this.tables.kv, Key, ...condition } });
      } else if (write.change.type === 'put' || write.pending !== undefined) {
        const { index, epoch, pending } = write;
        const body = write.change.type === 'put' ? { value: write.change.value } : { value: new Uint8Array(0), tombstone: true };
        items.push({ Put: { TableName: this.tables.kv, Item: { ...Key, ...body, version: index, epoch, index, ...(pending === undefined ? {} : { pending }) }, ...condition } });
      } else {
        items.push({ Delete: { TableName: this.tables.kv, Key, ...condition } });
      }
    }
    assert(commit.writes.every((write) => commit.reads.some((read) => read.shard === write.shard && read.key === write.change.key)), 'a transaction writes only keys it read');
    const idempotencyAt = commit.idempotency === undefined ? undefined : items.length;
    if (commit.idempotency !== undefined) {
      // The answer is stored by the commit itself: a retry after an unknown outcome finds it, or finds nothing committed.
      items.push({ Put: { TableName: this.tables.control, Item: idempotencyItem(commit.idempotency), ...idempotencyAbsent, ExpressionAttributeValues: { ':nowMs': commit.entries[0]?.committedAtMs ?? 0 } } });
    }
    try {
      await this.client.send(new TransactWriteCommand({ TransactItems: items, ClientRequestToken: attemptToken(commit.entries) }));
    } catch (error) {
      if (!(error instanceof TransactionCanceledException)) throw error;
      const codes = reasonCodes(error);
      for (const [shard, { position, epoch }] of leaseAt) if (codes[position] === 'ConditionalCheckFailed') throw new StaleEpochError(shard, epoch);
      for (const [shard, { position, floorPosition, index }] of logAt) {
        if (codes[position] === 'ConditionalCheckFailed' || codes[floorPosition] === 'ConditionalCheckFailed') throw new HeadConflictError(shard, index);
      }
      if (idempotencyAt !== undefined && codes[idempotencyAt] === 'ConditionalCheckFailed') throw new IdempotencyRaceError(commit.idempotency!.key);
      const changed = commit.reads.findIndex((_, position) => codes[readsFrom + position] === 'ConditionalCheckFailed');
      if (changed >= 0) throw new SnapshotChangedError(`"${commit.reads[changed]?.key ?? ''}" changed after the transaction read it`);
      throw new TransactionRaceError(`the transaction raced another (${codes.join(', ')})`);
    }
  }

  async getItem(shard: number, key: string, consistent: boolean): Promise<KvItem | undefined> {
    const result = await this.client.send(new GetCommand({ TableName: this.tables.kv, Key: { shard, key }, ConsistentRead: consistent }));
    return result.Item === undefined ? undefined : toKvItem(result.Item);
  }

  async list(prefix: string, limit: number, after: string | undefined, consistent: boolean): Promise<ListPage> {
    // One ordered Query per shard, merged: each shard returns at most `limit` keys, so the
    // first `limit` of the merge are the first `limit` overall.
    const perShard = await Promise.all(
      Array.from({ length: this.shardCount }, (_, shard) => this.#listShard(shard, prefix, limit, after, consistent)),
    );
    const merged = perShard.flatMap((page) => page.items).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const items = merged.slice(0, limit);
    const more = merged.length > limit || perShard.some((page) => page.more);
    const last = items.at(-1);
    return { items, next: more && last !== undefined ? last.key : undefined };
  }

  async #listShard(shard: number, prefix: string, limit: number, after: string | undefined, consistent: boolean): Promise<{ items: KvItem[]; more: boolean }> {
    const conditions = ['#shard = :shard'];
    const values: Record<string, unknown> = { ':shard': shard };
    if (after !== undefined && after >= prefix) {
      conditions.push('#key > :after');
      values[':after'] = after;
    } else if (prefix !== '') {
      conditions.push('begins_with(#key, :prefix)');
      values[':prefix'] = prefix;
    }
    const items: KvItem[] = [];
    let startKey: Item | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.tables.kv,
          KeyConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: conditions.length > 1 ? { '#shard': 'shard', '#key': 'key' } : { '#shard': 'shard' },
          ExpressionAttributeValues: values,
          ConsistentRead: consistent,
          Limit: limit + 1,
          ExclusiveStartKey: startKey,
        }),
      );
      for (const raw of page.Items ?? []) {
        const item = toKvItem(raw);
        // With `after` the key condition is a range, so keys past the prefix end the scan.
        if (!item.key.startsWith(prefix)) return { items, more: false };
        items.push(item);
      }
      startKey = page.LastEvaluatedKey;
    } while (startKey !== undefined && items.length <= limit);
    return { items: items.slice(0, limit), more: items.length > limit || startKey !== undefined };
  }

  // Log compaction (lib/adapters/aws/log-compaction.ts; the decision is lib/core/compaction.ts).

  async readCompaction(shard: number): Promise<number> {
    return readCompaction(this.client, this.tables, shard);
  }

  async readCompactions(): Promise<Map<number, number>> {
    return readCompactions(this.client, this.tables);
  }

  async recordCompaction(shard: number, compactedThrough: number, atMs: number): Promise<number> {
    return recordCompaction(this.client, this.tables, shard, compactedThrough, atMs);
  }

  async readLogTimes(shard: number, fromIndex: number, limit: number): Promise<{ index: number; committedAtMs: number }[]> {
    return readLogTimes(this.client, this.tables, shard, fromIndex, limit);
  }

  async trimLog(shard: number, through: number, max: number): Promise<number> {
    return trimLog(this.client, this.tables, shard, through, max);
  }

  async readShardItems(shard: number): Promise<KvItem[]> {
    return readShardItems(this.client, this.tables, shard);
  }
}
