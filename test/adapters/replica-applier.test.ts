import { PutCommand } from '@aws-sdk/lib-dynamodb';
import type { DocumentClient } from '../../lib/adapters/aws/document-client.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeDynamoClient } from '../../lib/adapters/aws/clients.ts';
import { DynamoStore, fromLogEntry } from '../../lib/adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../../lib/adapters/aws/replica-store.ts';
import { PoisonMessageError, decodeEntryMessage, encodeEntryMessage } from '../../lib/adapters/aws/replication.ts';
import { systemClock } from '../../lib/clock.ts';
import { chunkRuns, runEntriesMax } from '../../lib/core/apply.ts';
import { sealEntry, verifyChain, type LogEntry, type Operation } from '../../lib/core/log.ts';
import { tableNames, type TableNames } from '../../lib/infra/schema.ts';
import { DeliveryError, ReplicaApplier } from '../../lib/service/replica-applier.ts';
import { createReplicaRegion, createStore, uniquePrefix } from '../support.ts';

const homeRegion = 'us-east-1';
const replicaRegion = 'eu-west-1';
/** The replica view lists this many shards; every test below uses its own shard under it. */
const shardCount = 16;
const textEncoder = new TextEncoder();
const text = (value: string): Uint8Array => textEncoder.encode(value);
/** Every byte value once, so a value that survives the trip proves the encoding is binary-safe. */
const everyByte = Uint8Array.from({ length: 256 }, (_, byte) => byte);

/**
 * Seals one entry per element of `opsByEntry` into a chain from index 1. The epoch starts at 1
 * and follows the leader markers, as a real log's does.
 */
function sealChain(shard: number, opsByEntry: readonly Operation[][]): LogEntry[] {
  const chain: LogEntry[] = [];
  let epoch = 1;
  for (const [position, ops] of opsByEntry.entries()) {
    for (const op of ops) if (op.type === 'leader') epoch = op.epoch;
    const index = position + 1;
    chain.push(sealEntry(chain.at(-1), { shard, index, epoch, ops, requestId: `request-${shard}-${index}`, committedAtMs: 1_700_000_000_000 + index }));
  }
  return chain;
}

/** `count` entries cycling over `keys`: mostly puts, every fourth a delete, a marker every 25. */
function workload(count: number, keys: readonly string[]): Operation[][] {
  return Array.from({ length: count }, (_, position): Operation[] => {
    const key = keys[position % keys.length] ?? 'key';
    if (position % 25 === 0) return [{ type: 'leader', node: 'node-a', epoch: 1 + position / 25, previousEpoch: position / 25 }];
    if (position % 4 === 3) return [{ type: 'delete', key }];
    return [{ type: 'put', key, value: text(`${key}@${position + 1}`) }];
  });
}

function at<T>(items: readonly T[], position: number): T {
  const item = items[position];
  if (item === undefined) throw new Error(`nothing at position ${position}`);
  return item;
}

interface ExpectedItem {
  value: Uint8Array;
  version: number;
  epoch: number;
}

/** The kv state after applying `entries` one by one: what a replica must end up holding. */
function expectedState(entries: readonly LogEntry[]): Map<string, ExpectedItem> {
  const state = new Map<string, ExpectedItem>();
  for (const entry of entries) {
    for (const op of entry.ops) {
      if (op.type === 'put') state.set(op.key, { value: op.value, version: entry.index, epoch: entry.epoch });
      else if (op.type === 'delete') state.delete(op.key);
    }
  }
  return state;
}

function keysOf(entries: readonly LogEntry[]): string[] {
  return [...new Set(entries.flatMap((entry) => entry.ops.flatMap((op) => (op.type === 'leader' ? [] : [op.key]))))].sort();
}

let prefix: string;
let tables: TableNames;
let endpoint: string;
let homeStore: DynamoStore;
let homeClient: DocumentClient;
let replicaClient: DocumentClient;
let replicaStore: DynamoReplicaStore;
/** The replica's tables read through the home store's adapter: same schema in every region. */
let replicaView: DynamoStore;
let applier: ReplicaApplier;

/** Commits entries to the home log the way the write path stores them. */
async function putHomeLog(entries: readonly LogEntry[]): Promise<void> {
  for (const entry of entries) {
    await homeClient.send(new PutCommand({ TableName: tables.log, Item: fromLogEntry(entry) }));
  }
}

/** The replica's kv items for `keys` of a shard, as strongly consistent reads. */
async function replicaState(shard: number, keys: readonly string[]): Promise<Map<string, ExpectedItem>> {
  const state = new Map<string, ExpectedItem>();
  for (const key of keys) {
    const item = await replicaView.getItem(shard, key, true);
    if (item !== undefined) state.set(key, { value: item.value, version: item.version, epoch: item.epoch });
  }
  return state;
}

async function replicaLog(shard: number): Promise<LogEntry[]> {
  return replicaView.readLog(shard, 1, 10_000);
}

beforeAll(async () => {
  prefix = uniquePrefix('replica');
  ({ store: homeStore, tables, endpoint } = await createStore(prefix, shardCount));
  homeClient = makeDynamoClient({ region: homeRegion, endpoint });
  ({ client: replicaClient } = await createReplicaRegion(prefix, replicaRegion));
  replicaStore = new DynamoReplicaStore(replicaClient, tableNames(prefix));
  replicaView = new DynamoStore(replicaClient, tableNames(prefix), shardCount);
  applier = new ReplicaApplier(replicaStore, homeStore, systemClock());
});

afterAll(() => {
  homeClient?.destroy();
  replicaClient?.destroy();
});

describe('Function: encodeEntryMessage / decodeEntryMessage', () => {
  const chain = sealChain(0, [
    [{ type: 'leader', node: 'node-a', epoch: 1, previousEpoch: 0 }],
    [{ type: 'put', key: 'binary', value: everyByte }],
    [{ type: 'put', key: 'empty', value: new Uint8Array() }],
    [{ type: 'delete', key: 'binary' }],
    [
      { type: 'put', key: 'ключ/🔑', value: text('ünïcödé') },
      { type: 'delete', key: 'gone' },
      { type: 'put', key: 'high', value: Uint8Array.from([0xff, 0xfe, 0x00, 0x80]) },
    ],
    [],
  ]);

  it.each(chain.map((entry) => [entry.index, entry.ops.map((op) => op.type).join('+') || 'no operations', entry] as const))(
    'round-trips entry %i (%s) exactly, so its hash still verifies',
    (_, __, entry) => {
      // Act
      const decoded = decodeEntryMessage(encodeEntryMessage(entry));

      // Assess
      expect(decoded).toEqual(entry);
      const previous = entry.index === 1 ? undefined : { index: entry.index - 1, hash: at(chain, entry.index - 2).hash };
      expect(verifyChain([decoded], previous)).toEqual({ ok: true });
    },
  );

  it('carries all 256 byte values of a value unchanged', () => {
    // Act
    const decoded = decodeEntryMessage(encodeEntryMessage(at(chain, 1)));

    // Assess
    const op = at(decoded.ops, 0);
    expect(op.type === 'put' && Array.from(op.value)).toEqual(Array.from(everyByte));
  });

  it('writes a text body that is version-1 JSON', () => {
    // Act
    const body = encodeEntryMessage(at(chain, 1));

    // Assess
    expect(JSON.parse(body)).toMatchObject({ v: 1, entry: { shard: 0, index: 2 } });
  });

  const valid = JSON.parse(encodeEntryMessage(at(chain, 1))) as { v: number; entry: Record<string, unknown> };
  const withEntry = (changes: Record<string, unknown>): string => JSON.stringify({ ...valid, entry: { ...valid.entry, ...changes } });

  it.each<[string, string]>([
    ['an empty body', ''],
    ['a body that is not JSON', '{"v":1,'],
    ['a JSON string', '"entry"'],
    ['a JSON number', '42'],
    ['a JSON array', '[]'],
    ['JSON null', 'null'],
    ['version 2', JSON.stringify({ ...valid, v: 2 })],
    ['no entry', JSON.stringify({ v: 1 })],
    ['an entry without ops', withEntry({ ops: undefined })],
    ['ops that are not an array', withEntry({ ops: { type: 'put' } })],
    ['an operation of unknown type', withEntry({ ops: [{ type: 'increment', key: 'k' }] })],
    ['a put without a value', withEntry({ ops: [{ type: 'put', key: 'k' }] })],
    ['a delete without a key', withEntry({ ops: [{ type: 'delete' }] })],
    ['a leader marker with a text epoch', withEntry({ ops: [{ type: 'leader', node: 'n', epoch: '2', previousEpoch: 1 }] })],
    ['an operation that is null', withEntry({ ops: [null] })],
    ['an index as text', withEntry({ index: '2' })],
    ['a fractional index', withEntry({ index: 2.5 })],
    ['no shard', withEntry({ shard: undefined })],
    ['no hash', withEntry({ hash: undefined })],
    ['a numeric requestId', withEntry({ requestId: 7 })],
  ])('refuses %s with PoisonMessageError', (_, body) => {
    // Act
    const act = () => decodeEntryMessage(body);

    // Assess
    expect(act).toThrow(PoisonMessageError);
  });
});

describe('Class: ReplicaApplier', () => {
  describe('Method: deliver', () => {
    it('applies in-order entries: progress, log copy and kv match the home log', async () => {
      // Prepare
      const shard = 1;
      const entries = sealChain(shard, [
        [{ type: 'leader', node: 'node-a', epoch: 1, previousEpoch: 0 }],
        [{ type: 'put', key: 'binary', value: everyByte }],
        [{ type: 'put', key: 'plain', value: text('one') }],
        [{ type: 'put', key: 'empty', value: new Uint8Array() }],
        [{ type: 'delete', key: 'plain' }],
        [{ type: 'leader', node: 'node-b', epoch: 2, previousEpoch: 1 }],
        [
          { type: 'put', key: 'plain', value: text('two') },
          { type: 'put', key: 'other', value: text('x') },
          { type: 'delete', key: 'never-written' },
        ],
        [{ type: 'put', key: 'binary', value: everyByte.slice().reverse() }],
      ]);
      await putHomeLog(entries);
      const last = at(entries, entries.length - 1);

      // Act
      const result = await applier.deliver(shard, entries);

      // Assess
      expect(result).toEqual({ applied: entries.length, skipped: 0, repaired: 0, refused: 0 });
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: last.index, appliedHash: last.hash });
      expect((await replicaStore.readAllProgress()).get(shard)).toMatchObject({ appliedIndex: last.index, appliedHash: last.hash });
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaLog(shard)).toEqual(await homeStore.readLog(shard, 1, 1000));
      expect(keysOf(entries)).toContain('never-written');
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
      const listed = await replicaView.list('', 100, undefined, true);
      expect(listed.items.filter((item) => item.shard === shard).map((item) => item.key)).toEqual(['binary', 'empty', 'other', 'plain']);
    });

    it('applies duplicates once and skips a whole re-delivery, changing nothing', async () => {
      // Prepare
      const shard = 2;
      const entries = sealChain(shard, workload(6, ['a', 'b']));
      await putHomeLog(entries);
      const [e1, e2, e3] = [at(entries, 0), at(entries, 1), at(entries, 2)];

      // Act
      const first = await applier.deliver(shard, [e1, e2, e2, e3, e1, e3]);
      const progressAfterFirst = await replicaStore.readProgress(shard);
      const stateAfterFirst = await replicaState(shard, keysOf(entries));
      const second = await applier.deliver(shard, [e1, e2, e3]);

      // Assess
      expect(first).toEqual({ applied: 3, skipped: 3, repaired: 0, refused: 0 });
      expect(second).toEqual({ applied: 0, skipped: 3, repaired: 0, refused: 0 });
      expect(progressAfterFirst).toMatchObject({ appliedIndex: 3, appliedHash: e3.hash });
      // Not even the apply time moves: a skipped entry writes nothing.
      expect(await replicaStore.readProgress(shard)).toEqual(progressAfterFirst);
      expect(await replicaState(shard, keysOf(entries))).toEqual(stateAfterFirst);
      expect(stateAfterFirst).toEqual(expectedState([e1, e2, e3]));
      expect(await replicaLog(shard)).toEqual([e1, e2, e3]);
    });

    it('repairs a gap from the home log: entry 5 after 2 brings 3..5', async () => {
      // Prepare
      const shard = 3;
      const entries = sealChain(shard, workload(6, ['a', 'b', 'c']));
      await putHomeLog(entries);
      await applier.deliver(shard, entries.slice(0, 2));

      // Act
      const result = await applier.deliver(shard, [at(entries, 4)]);

      // Assess
      expect(result).toEqual({ applied: 0, skipped: 0, repaired: 3, refused: 0 });
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 5, appliedHash: at(entries, 4).hash });
      expect(await replicaLog(shard)).toEqual(entries.slice(0, 5));
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries.slice(0, 5)));

      // Act: the next entry in order is applied as usual, the late 3 and 4 are skipped.
      const after = await applier.deliver(shard, [at(entries, 2), at(entries, 3), at(entries, 5)]);

      // Assess
      expect(after).toEqual({ applied: 1, skipped: 2, repaired: 0, refused: 0 });
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
    });

    it('replaces a corrupt entry (tampered value under the original hash) with the home entry', async () => {
      // Prepare
      const shard = 4;
      const entries = sealChain(shard, [
        [{ type: 'put', key: 'a', value: text('a1') }],
        [{ type: 'put', key: 'b', value: text('home value') }],
        [{ type: 'put', key: 'a', value: text('a3') }],
      ]);
      await putHomeLog(entries);
      const original = at(entries, 1);
      const tampered: LogEntry = { ...original, ops: [{ type: 'put', key: 'b', value: text('forged value') }] };

      // Act
      const result = await applier.deliver(shard, [at(entries, 0), tampered, at(entries, 2)]);

      // Assess
      expect(result).toEqual({ applied: 2, skipped: 0, repaired: 1, refused: 0 });
      const item = await replicaView.getItem(shard, 'b', true);
      expect(item === undefined ? undefined : new TextDecoder().decode(item.value)).toBe('home value');
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 3, appliedHash: at(entries, 2).hash });
    });

    it('replaces a corrupt first entry and an entry with a forged hash', async () => {
      // Prepare
      const shard = 5;
      const entries = sealChain(shard, workload(4, ['a']));
      await putHomeLog(entries);
      const forgedFirst: LogEntry = { ...at(entries, 0), ops: [{ type: 'put', key: 'a', value: text('forged') }] };
      const forgedHash: LogEntry = { ...at(entries, 2), hash: 'e'.repeat(64) };

      // Act
      const result = await applier.deliver(shard, [forgedFirst, at(entries, 1), forgedHash, at(entries, 3)]);

      // Assess
      expect(result).toEqual({ applied: 2, skipped: 0, repaired: 2, refused: 0 });
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
    });

    it('converges to the in-order state when entries arrive shuffled, duplicated and in several batches', async () => {
      // Prepare: the same operations on two shards; one is delivered in order, one shuffled.
      const inOrderShard = 6;
      const shuffledShard = 7;
      const operations = workload(20, ['a', 'b', 'c', 'd']);
      const inOrder = sealChain(inOrderShard, operations);
      const shuffled = sealChain(shuffledShard, operations);
      await putHomeLog([...inOrder, ...shuffled]);
      // Batches as a queue with faults might hand them over: late, early, twice.
      const batches = [
        [2, 1, 3, 4],
        [6, 5, 5, 7],
        [8, 12, 9, 10],
        [11, 13, 1, 15, 14],
        [16, 20, 17, 18, 19, 20],
      ].map((indexes) => indexes.map((index) => at(shuffled, index - 1)));

      // Act
      await applier.deliver(inOrderShard, inOrder);
      const results = [];
      for (const batch of batches) results.push(await applier.deliver(shuffledShard, batch));

      // Assess
      const keys = keysOf(inOrder);
      expect(await replicaState(shuffledShard, keys)).toEqual(await replicaState(inOrderShard, keys));
      expect(await replicaState(shuffledShard, keys)).toEqual(expectedState(shuffled));
      expect(await replicaLog(shuffledShard)).toEqual(shuffled);
      expect(await replicaStore.readProgress(shuffledShard)).toMatchObject({ appliedIndex: 20, appliedHash: at(shuffled, 19).hash });
      expect(results.reduce((sum, result) => sum + result.applied + result.repaired, 0)).toBe(20);
      expect(results.some((result) => result.repaired > 0)).toBe(true);
      expect(results.some((result) => result.applied > 0)).toBe(true);
    });

    it('applies a run longer than runEntriesMax in several transactions and ends correct', async () => {
      // Prepare: 120 entries, many writes to each of 5 keys (one transaction may touch an item once).
      const shard = 8;
      const entries = sealChain(shard, workload(120, ['a', 'b', 'c', 'd', 'e']));
      await putHomeLog(entries);
      expect(entries.length).toBeGreaterThan(2 * runEntriesMax);
      expect(chunkRuns(entries).length).toBe(3);

      // Act
      const result = await applier.deliver(shard, entries);

      // Assess
      expect(result).toEqual({ applied: 120, skipped: 0, repaired: 0, refused: 0 });
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 120, appliedHash: at(entries, 119).hash });
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
    });

    it('fails at the first unapplied message when the home log lacks the gap, applying nothing past the verified prefix', async () => {
      // Prepare: the home has committed 1..3; entries 4..6 exist only in the queue (not yet visible at home).
      const shard = 9;
      const entries = sealChain(shard, workload(6, ['a', 'b']));
      await putHomeLog(entries.slice(0, 3));
      const delivery = [at(entries, 0), at(entries, 1), at(entries, 4), at(entries, 3), at(entries, 5)];

      // Act
      const failure = await applier.deliver(shard, delivery).catch((error: unknown) => error);

      // Assess: 1, 2 applied from the batch and 3 pulled from home; entry 5 (position 2) failed.
      expect(failure).toBeInstanceOf(DeliveryError);
      expect((failure as DeliveryError).failedAt).toBe(2);
      expect(String((failure as DeliveryError).reason)).toContain('does not have index 5');
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 3, appliedHash: at(entries, 2).hash });
      expect(await replicaLog(shard)).toEqual(entries.slice(0, 3));
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries.slice(0, 3)));

      // Act: the home log catches up and the queue retries the failed messages.
      await putHomeLog(entries.slice(3));
      const retry = await applier.deliver(shard, delivery.slice((failure as DeliveryError).failedAt));

      // Assess
      expect(retry).toEqual({ applied: 1, skipped: 1, repaired: 2, refused: 0 });
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
    });

    it('fails at message 0 and applies nothing when the gap is at the start and the home log is empty', async () => {
      // Prepare
      const shard = 10;
      const entries = sealChain(shard, workload(3, ['a']));

      // Act
      const failure = await applier.deliver(shard, [at(entries, 1), at(entries, 0), at(entries, 2)]).catch((error: unknown) => error);

      // Assess
      expect(failure).toBeInstanceOf(DeliveryError);
      expect((failure as DeliveryError).failedAt).toBe(0);
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 0 });
      expect(await replicaLog(shard)).toEqual([]);
      expect(await replicaState(shard, keysOf(entries))).toEqual(new Map());
    });

    it('lets two appliers deliver the same entries concurrently: both succeed, each entry applied once', async () => {
      // Prepare: two appliers with their own connections, as two concurrent Lambda invocations.
      const shard = 11;
      const entries = sealChain(shard, workload(120, ['a', 'b', 'c']));
      await putHomeLog(entries);
      const otherClient = makeDynamoClient({ region: replicaRegion, endpoint });
      const other = new ReplicaApplier(new DynamoReplicaStore(otherClient, tableNames(prefix)), homeStore, systemClock());

      try {
        // Act
        const [first, second] = await Promise.all([applier.deliver(shard, entries), other.deliver(shard, entries)]);

        // Assess: no entry is counted as applied by both.
        expect(first.applied + second.applied).toBeLessThanOrEqual(entries.length);
        expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 120, appliedHash: at(entries, 119).hash });
        const log = await replicaLog(shard);
        expect(log.map((entry) => entry.index)).toEqual(entries.map((entry) => entry.index));
        expect(log).toEqual(entries);
        expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
      } finally {
        otherClient.destroy();
      }
    });
  });

  describe('Method: deliver (progress moved under it)', () => {
    /**
     * A real replica store whose first progress read returns only after `interleave` has run:
     * another applier then commits between this applier's read and its write, deterministically.
     */
    class InterleavedReplicaStore extends DynamoReplicaStore {
      #interleave: (() => Promise<unknown>) | undefined;

      constructor(client: DocumentClient, names: TableNames, interleave: () => Promise<unknown>) {
        super(client, names);
        this.#interleave = interleave;
      }

      override async readProgress(shard: number) {
        const progress = await super.readProgress(shard);
        const interleave = this.#interleave;
        this.#interleave = undefined;
        if (interleave !== undefined) await interleave();
        return progress;
      }
    }

    it('re-reads the progress another applier moved, skips what it applied and counts each message once', async () => {
      // Prepare: 1..2 applied; the slow applier reads progress 2, then the fast one applies 3..10.
      const shard = 13;
      const entries = sealChain(shard, workload(10, ['a', 'b']));
      await putHomeLog(entries);
      await applier.deliver(shard, entries.slice(0, 2));
      const slow = new ReplicaApplier(
        new InterleavedReplicaStore(replicaClient, tableNames(prefix), () => applier.deliver(shard, entries.slice(2))),
        homeStore,
        systemClock(),
      );

      // Act: its run 3..10 fails on the moved progress, so it re-reads (10) and skips all.
      const result = await slow.deliver(shard, entries);

      // Assess
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 10, appliedHash: at(entries, 9).hash });
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
      expect(result.applied).toBe(0);
      // Ten messages, each acknowledged as skipped exactly once.
      expect(result).toEqual({ applied: 0, skipped: entries.length, repaired: 0, refused: 0 });
    });
  });

  describe('Method: repair', () => {
    it('pulls an idle replica up to the requested index, then up to the home head', async () => {
      // Prepare
      const shard = 12;
      const entries = sealChain(shard, workload(30, ['a', 'b', 'c']));
      await putHomeLog(entries);
      await applier.deliver(shard, entries.slice(0, 5));

      // Act
      const toTen = await applier.repair(shard, 10);
      const toHead = await applier.repair(shard);
      const again = await applier.repair(shard);

      // Assess
      expect([toTen, toHead, again]).toEqual([5, 20, 0]);
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 30, appliedHash: at(entries, 29).hash });
      expect(await replicaLog(shard)).toEqual(entries);
      expect(await replicaState(shard, keysOf(entries))).toEqual(expectedState(entries));
    });
  });

  describe('Methods: deliverAll / pullAll (several shards in shared transactions)', () => {
    /** A real replica store that counts its apply transactions. */
    class CountingReplicaStore extends DynamoReplicaStore {
      shared: number[][] = [];
      single = 0;

      override async applyRuns(...args: Parameters<DynamoReplicaStore['applyRuns']>) {
        this.shared.push(args[0].map((run) => run.shard));
        return super.applyRuns(...args);
      }

      override async applyRun(...args: Parameters<DynamoReplicaStore['applyRun']>) {
        this.single += 1;
        return super.applyRun(...args);
      }
    }

    /** Its own tables, so every shard is free: home, a replica region, a counting applier on it. */
    async function freshPair() {
      const pairPrefix = uniquePrefix('shared');
      const { store: home } = await createStore(pairPrefix, shardCount);
      const { client, tables: pairTables } = await createReplicaRegion(pairPrefix, replicaRegion);
      const replica = new CountingReplicaStore(client, pairTables);
      const view = new DynamoStore(client, pairTables, shardCount);
      const homeWriter = makeDynamoClient({ region: homeRegion, endpoint });
      const putHome = async (entries: readonly LogEntry[]) => {
        for (const entry of entries) await homeWriter.send(new PutCommand({ TableName: pairTables.log, Item: fromLogEntry(entry) }));
      };
      const destroy = () => {
        homeWriter.destroy();
        client.destroy();
      };
      return { home, replica, view, putHome, applier: new ReplicaApplier(replica, home, systemClock()), destroy };
    }

    it('spreads a pull over transactions of at most packItemsMax items, all of them applied', async () => {
      // Prepare: shards 10..13, each 5 entries (11 items) behind the home head; packs of 25 items hold two runs.
      const pair = await freshPair();
      const applier = new ReplicaApplier(pair.replica, pair.home, systemClock(), { packItemsMax: 25 });
      const chains = new Map([10, 11, 12, 13].map((shard) => [shard, sealChain(shard, workload(5, ['m', 'n']))]));
      for (const chain of chains.values()) await pair.putHome(chain);

      // Act
      const outcomes = await applier.pullAll([13, 11, 12, 10]);

      // Assess
      expect(outcomes).toEqual(new Map([[10, 5], [11, 5], [12, 5], [13, 5]]));
      expect(pair.replica.shared.sort((a, b) => (a[0] ?? 0) - (b[0] ?? 0))).toEqual([[10, 11], [12, 13]]);
      for (const [shard, chain] of chains) {
        expect(await pair.view.readLog(shard, 1, 100)).toEqual(chain);
        expect(await pair.replica.readProgress(shard)).toMatchObject({ appliedIndex: 5, appliedHash: at(chain, 4).hash });
      }
      pair.destroy();
    });

    it('refuses a packItemsMax that cannot hold a run of one entry or exceeds a transaction', async () => {
      // Prepare
      const pair = await freshPair();

      // Assess
      for (const packItemsMax of [2, 101, 40.5]) {
        expect(() => new ReplicaApplier(pair.replica, pair.home, systemClock(), { packItemsMax })).toThrow(/packItemsMax must be an integer in 3\.\.100/);
      }
      pair.destroy();
    });

    it('applies the shards that continue what it knows in one transaction, and a shard with a gap on its own', async () => {
      // Prepare: shards 1..4 applied up to 2; then 3..5 arrive for 1..3, and 5 alone for shard 4.
      const pair = await freshPair();
      const chains = new Map([1, 2, 3, 4].map((shard) => [shard, sealChain(shard, workload(5, ['a', 'b']))]));
      for (const [shard, chain] of chains) {
        await pair.putHome(chain);
        await pair.applier.deliver(shard, chain.slice(0, 2));
      }
      pair.replica.shared = [];
      pair.replica.single = 0;
      const batch = new Map([1, 2, 3].map((shard) => [shard, chains.get(shard)!.slice(2)]));
      batch.set(4, chains.get(4)!.slice(4));

      // Act
      const outcomes = await pair.applier.deliverAll(batch);

      // Assess: one shared transaction for 1..3; shard 4 repaired 3..4 and applied 5 alone.
      expect(pair.replica.shared).toEqual([[1, 2, 3]]);
      for (const shard of [1, 2, 3]) expect(outcomes.get(shard)).toEqual({ applied: 3, skipped: 0, repaired: 0, refused: 0 });
      expect(outcomes.get(4)).toMatchObject({ repaired: 3 });
      for (const [shard, chain] of chains) {
        expect(await pair.view.readLog(shard, 1, 100)).toEqual(chain);
        expect(await pair.replica.readProgress(shard)).toMatchObject({ appliedIndex: 5, appliedHash: at(chain, 4).hash });
      }
      pair.destroy();
    });

    it('falls back to one shard at a time when another applier moved a progress, each entry applied once', async () => {
      // Prepare: shards 5 and 6 applied up to 2; a second applier applies 3..5 of shard 6, so
      // the first one's knowledge of shard 6 is stale.
      const pair = await freshPair();
      const chains = new Map([5, 6].map((shard) => [shard, sealChain(shard, workload(5, ['c']))]));
      for (const [shard, chain] of chains) {
        await pair.putHome(chain);
        await pair.applier.deliver(shard, chain.slice(0, 2));
      }
      await new ReplicaApplier(pair.replica, pair.home, systemClock()).deliver(6, chains.get(6)!.slice(2));

      // Act
      const outcomes = await pair.applier.deliverAll(new Map([...chains].map(([shard, chain]) => [shard, chain.slice(2)])));

      // Assess
      expect(outcomes.get(5)).toEqual({ applied: 3, skipped: 0, repaired: 0, refused: 0 });
      expect(outcomes.get(6)).toEqual({ applied: 0, skipped: 3, repaired: 0, refused: 0 });
      for (const [shard, chain] of chains) {
        expect(await pair.view.readLog(shard, 1, 100)).toEqual(chain);
        expect(await pair.view.getItem(shard, 'c', true)).toMatchObject({ version: 5 });
      }
      pair.destroy();
    });

    it('pulls several shards with one log read each and one shared transaction; a shard far behind is pulled on its own', async () => {
      // Prepare: shards 7, 8 are 4 and 6 entries behind the home head; shard 9 is 120 behind.
      const pair = await freshPair();
      const chains = new Map([
        [7, sealChain(7, workload(4, ['x']))],
        [8, sealChain(8, workload(6, ['y', 'z']))],
        [9, sealChain(9, workload(120, ['p', 'q', 'r']))],
      ]);
      for (const chain of chains.values()) await pair.putHome(chain);

      // Act
      const outcomes = await pair.applier.pullAll([7, 8, 9]);

      // Assess
      expect(outcomes).toEqual(new Map([[7, 4], [8, 6], [9, 120]]));
      expect(pair.replica.shared).toEqual([[7, 8]]);
      expect(pair.replica.single).toBeGreaterThan(0);
      for (const [shard, chain] of chains) {
        expect(await pair.view.readLog(shard, 1, 1000)).toEqual(chain);
        expect(await pair.replica.readProgress(shard)).toMatchObject({ appliedIndex: chain.length });
      }
      expect(await pair.applier.pullAll([7, 8, 9])).toEqual(new Map([[7, 0], [8, 0], [9, 0]]));
      pair.destroy();
    });
  });

  describe('Promotion fence', () => {
    /** A chain of `count` puts whose epochs are `epochOf(index)`; shard-local keys. */
    function epochChain(shard: number, count: number, epochOf: (index: number) => number, label: string): LogEntry[] {
      const chain: LogEntry[] = [];
      for (let index = 1; index <= count; index += 1) {
        chain.push(sealEntry(chain.at(-1), { shard, index, epoch: epochOf(index), ops: [{ type: 'put', key: `${label}-${index % 3}`, value: text(`${label}@${index}`) }], requestId: `${label}-${index}`, committedAtMs: 1_700_000_000_000 + index }));
      }
      return chain;
    }

    it('refuses the fenced old home\'s entries after the fence index and keeps applying the new home\'s', async () => {
      // Prepare: both homes share entries 1..4 (cluster epoch 0); then the old home wrote 5..6
      // under epoch 3 and the new home 5..7 under cluster epoch 1.
      const shard = 15;
      const shared = epochChain(shard, 4, () => 3, 'shared');
      const zombie = [sealEntry(at(shared, 3), { shard, index: 5, epoch: 3, ops: [{ type: 'put', key: 'zombie', value: text('old@5') }], requestId: 'old-5', committedAtMs: 1 })];
      zombie.push(sealEntry(at(zombie, 0), { shard, index: 6, epoch: 4, ops: [{ type: 'put', key: 'zombie', value: text('old@6') }], requestId: 'old-6', committedAtMs: 2 }));
      const newTail: LogEntry[] = [];
      for (let index = 5; index <= 7; index += 1) {
        newTail.push(sealEntry(newTail.at(-1) ?? at(shared, 3), { shard, index, epoch: 1_000_000_001, ops: [{ type: 'put', key: 'fresh', value: text(`new@${index}`) }], requestId: `new-${index}`, committedAtMs: 3 }));
      }
      await putHomeLog([...shared, ...newTail]);
      await applier.deliver(shard, shared.slice(0, 2));

      // Act: the promotion fences at the new home's head (4); then the old home's entries and
      // the shared history arrive, then the new home's.
      await replicaStore.fence(shard, { clusterEpoch: 1, index: 4 });
      const mixed = await applier.deliver(shard, [...shared.slice(2), ...zombie]);
      const fresh = await applier.deliver(shard, newTail);
      const zombieAgain = await applier.deliver(shard, zombie);

      // Assess
      expect(mixed).toEqual({ applied: 2, skipped: 2, repaired: 0, refused: 2 });
      expect(fresh).toEqual({ applied: 3, skipped: 0, repaired: 0, refused: 0 });
      expect(zombieAgain).toEqual({ applied: 0, skipped: 2, repaired: 0, refused: 2 });
      expect(await replicaStore.readProgress(shard)).toMatchObject({ appliedIndex: 7, appliedHash: at(newTail, 2).hash, fence: { clusterEpoch: 1, index: 4 } });
      expect(await replicaLog(shard)).toEqual([...shared, ...newTail]);
      expect(await replicaView.getItem(shard, 'zombie', true)).toBeUndefined();
      expect(Buffer.from((await replicaView.getItem(shard, 'fresh', true))?.value ?? []).toString()).toBe('new@7');
    });

    it('never lowers a fence, and a repair from a fenced home stops with a clear error', async () => {
      // Prepare
      const shard = 14;
      const entries = epochChain(shard, 3, () => 2, 'r');
      await putHomeLog(entries);
      await replicaStore.fence(shard, { clusterEpoch: 2, index: 0 });

      // Act
      await replicaStore.fence(shard, { clusterEpoch: 1, index: 99 });
      const failure = await applier.repair(shard).catch((error: unknown) => error);

      // Assess
      expect((await replicaStore.readProgress(shard)).fence).toEqual({ clusterEpoch: 2, index: 0 });
      expect(String(failure)).toMatch(/wrote index 1 under a fenced cluster epoch; it is not home any more/);
      expect((await replicaStore.readProgress(shard)).appliedIndex).toBe(0);
    });
  });
});

describe('Snapshot seed (the home log compacted past a replica)', () => {
  // Its own tables: the shards of the shared ones are taken by the tests above.
  let seedTables: TableNames;
  let seedHome: DynamoStore;
  let seedHomeClient: DocumentClient;
  let seedReplica: DynamoReplicaStore;
  let seedView: DynamoStore;
  let seedReplicaClient: DocumentClient;

  beforeAll(async () => {
    const seedPrefix = uniquePrefix('seed');
    ({ store: seedHome, tables: seedTables } = await createStore(seedPrefix, shardCount));
    seedHomeClient = makeDynamoClient({ region: homeRegion, endpoint });
    ({ client: seedReplicaClient } = await createReplicaRegion(seedPrefix, replicaRegion));
    seedReplica = new DynamoReplicaStore(seedReplicaClient, seedTables);
    seedView = new DynamoStore(seedReplicaClient, seedTables, shardCount);
  });

  afterAll(() => {
    seedHomeClient?.destroy();
    seedReplicaClient?.destroy();
  });

  /** Commits `added` to the home log and the kv state of the whole log `all`, as the write path stores them. */
  async function putHome(shard: number, added: readonly LogEntry[], all: readonly LogEntry[] = added): Promise<void> {
    for (const entry of added) await seedHomeClient.send(new PutCommand({ TableName: seedTables.log, Item: fromLogEntry(entry) }));
    for (const [key, item] of expectedState(all)) {
      await seedHomeClient.send(new PutCommand({ TableName: seedTables.kv, Item: { shard, key, value: item.value, version: item.version, epoch: item.epoch, index: item.version } }));
    }
  }

  async function seededState(shard: number, keys: readonly string[]): Promise<Map<string, ExpectedItem>> {
    const state = new Map<string, ExpectedItem>();
    for (const key of keys) {
      const item = await seedView.getItem(shard, key, true);
      if (item !== undefined) state.set(key, { value: item.value, version: item.version, epoch: item.epoch });
    }
    return state;
  }

  it('seeds a replica whose next entry is compacted from a snapshot at the home head, then follows the log', async () => {
    // Prepare: the replica applied 1..5 (it holds keys the home deleted since); home is at 60
    // and compacted through 40.
    const shard = 6;
    const entries = sealChain(shard, workload(60, ['a', 'b', 'c', 'd', 'e']));
    await putHome(shard, entries);
    const seeding = new ReplicaApplier(seedReplica, seedHome, systemClock());
    await seeding.deliver(shard, entries.slice(0, 5));
    await seedHome.recordCompaction(shard, 40, Date.now());
    expect(await seedHome.trimLog(shard, 40, 200)).toBe(40);

    // Act
    const pulled = await seeding.repair(shard);
    const next = sealChain(shard, workload(61, ['a', 'b', 'c', 'd', 'e'])).slice(60);
    await putHome(shard, next, [...entries, ...next]);
    const followed = await seeding.deliver(shard, next);

    // Assess
    expect(seeding.seeds).toBe(1);
    expect(pulled).toBe(55);
    expect(followed).toMatchObject({ applied: 1 });
    expect(await seedReplica.readProgress(shard)).toMatchObject({ appliedIndex: 61, appliedHash: at(next, 0).hash });
    expect(await seededState(shard, keysOf([...entries, ...next]))).toEqual(expectedState([...entries, ...next]));
    // The copy holds what it applied before, then the seed's entry and what followed; its point says where the gap ends.
    expect((await seedView.readLog(shard, 1, 10_000)).map((entry) => entry.index)).toEqual([1, 2, 3, 4, 5, 60, 61]);
    expect((await seedReplica.readCompactions()).get(shard)).toBe(59);
  });

  it('lets only the last claim of two racing seeds write or finish', async () => {
    // Prepare
    const shard = 7;
    const entries = sealChain(shard, workload(10, ['a', 'b']));
    const from = await seedReplica.readProgress(shard);
    await seedReplica.claimSeed(shard, from, 'first');
    await seedReplica.claimSeed(shard, from, 'second');

    // Act and assess: the first claim's writes and finish are refused, the second's land.
    await expect(seedReplica.writeSeedItems(shard, 'first', [{ key: 'a', value: text('stale'), version: 3, epoch: 1, index: 3 }], [])).rejects.toMatchObject({ name: 'ProgressMovedError' });
    await expect(seedReplica.finishSeed(shard, 'first', at(entries, 9), undefined, Date.now())).rejects.toMatchObject({ name: 'ProgressMovedError' });
    await seedReplica.writeSeedItems(shard, 'second', [{ key: 'a', value: text('fresh'), version: 9, epoch: 1, index: 9 }], []);
    const progress = await seedReplica.finishSeed(shard, 'second', at(entries, 9), undefined, Date.now());
    // The finish replaced the progress item: the claim ends with it.
    await expect(seedReplica.writeSeedItems(shard, 'second', [{ key: 'b', value: text('late'), version: 2, epoch: 1, index: 2 }], [])).rejects.toMatchObject({ name: 'ProgressMovedError' });
    expect(progress).toEqual({ appliedIndex: 10, appliedHash: at(entries, 9).hash, fence: undefined });
    expect(await seededState(shard, ['a', 'b'])).toEqual(new Map([['a', { value: text('fresh'), version: 9, epoch: 1 }]]));
  });
});
