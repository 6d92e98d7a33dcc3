import { beforeAll, describe, expect, inject, it } from 'vitest';
import { makeSqsClient } from '../../lib/adapters/aws/clients.ts';
import type { DynamoStore } from '../../lib/adapters/aws/dynamo-store.ts';
import { Shipper } from '../../lib/adapters/aws/replication.ts';
import { systemClock } from '../../lib/clock.ts';
import { sealEntry, verifyChain, type LogEntry } from '../../lib/core/log.ts';
import { ensureReplicationQueue } from '../../lib/local/queues.ts';
import { HeadConflictError, NoLeaderError, NotFoundError, ReplicationUnmetError, StaleEpochError, VersionConflictError } from '../../lib/ports/errors.ts';
import { KvService } from '../../lib/service/kv-service.ts';
import { CoordinationService } from '../../lib/service/coordination.ts';
import { leaseAttachmentPrefix, lockKey } from '../../lib/core/coordination.ts';
import { createStore, keyInShard, uniquePrefix, waitUntil } from '../support.ts';

const shardCount = 8;
const holder = { node: 'node-a', incarnation: '000000000000001-aaaa' };
const usurper = { node: 'node-b', incarnation: '000000000000001-bbbb' };
const text = (value: string) => new TextEncoder().encode(value);

/** Takes shard's lease for `who` the way a node does: lease write and leader marker in one transaction. */
async function acquire(store: DynamoStore, shard: number, who: { node: string; incarnation: string }): Promise<number> {
  const lease = await store.readLease(shard);
  const head = await store.readHead(shard);
  const epoch = (lease?.epoch ?? 0) + 1;
  const marker = sealEntry(head, {
    shard,
    index: (head?.index ?? 0) + 1,
    epoch,
    ops: [{ type: 'leader', node: who.node, epoch, previousEpoch: lease?.epoch ?? 0 }],
    requestId: `leader-${who.node}-${epoch}`,
    committedAtMs: Date.now(),
  });
  await store.acquireLease(shard, who, { version: lease?.version }, epoch, Date.now());
  await store.appendMarker(shard, who, marker);
  return epoch;
}

async function putEntry(store: DynamoStore, shard: number, epoch: number, key: string, value: string, requestId: string): Promise<LogEntry> {
  const head = await store.readHead(shard);
  return sealEntry(head, { shard, index: (head?.index ?? 0) + 1, epoch, ops: [{ type: 'put', key, value: text(value) }], requestId, committedAtMs: Date.now() });
}

describe('Class: DynamoStore', () => {
  let store: DynamoStore;

  beforeAll(async () => {
    ({ store } = await createStore(uniquePrefix('store'), shardCount));
  });

  describe('Method: commit (the fenced write)', () => {
    it('refuses a writer holding a stale epoch in the transaction itself, changing nothing', async () => {
      // Prepare: node-a leads at epoch e, writes once; node-b takes over at e + 1.
      const shard = 1;
      const key = keyInShard(shard, shardCount, 'fenced');
      const staleEpoch = await acquire(store, shard, holder);
      const first = await putEntry(store, shard, staleEpoch, key, 'v1', 'r1');
      await store.commit({ entry: first, kv: { change: { type: 'put', key, value: text('v1') }, precondition: {} } });
      const newEpoch = await acquire(store, shard, usurper);
      expect(newEpoch).toBe(staleEpoch + 1);
      const headBefore = await store.readHead(shard);

      // Act: the old leader's writer still believes in its epoch.
      const zombie = await putEntry(store, shard, staleEpoch, key, 'zombie', 'r2');
      const attempt = store.commit({ entry: zombie, kv: { change: { type: 'put', key, value: text('zombie') }, precondition: {} } });

      // Assess
      await expect(attempt).rejects.toBeInstanceOf(StaleEpochError);
      expect(await store.readHead(shard)).toEqual(headBefore);
      const item = await store.getItem(shard, key, true);
      expect(new TextDecoder().decode(item?.value)).toBe('v1');
      expect(item?.epoch).toBe(staleEpoch);
    });

    it('refuses an entry at an index that is taken (the log index is the CAS)', async () => {
      // Prepare
      const shard = 2;
      const key = keyInShard(shard, shardCount, 'head');
      const epoch = await acquire(store, shard, holder);
      const entry = await putEntry(store, shard, epoch, key, 'a', 'h1');
      const racer = await putEntry(store, shard, epoch, key, 'b', 'h2');
      await store.commit({ entry, kv: { change: { type: 'put', key, value: text('a') }, precondition: {} } });

      // Act
      const attempt = store.commit({ entry: racer, kv: { change: { type: 'put', key, value: text('b') }, precondition: {} } });

      // Assess
      await expect(attempt).rejects.toBeInstanceOf(HeadConflictError);
      expect((await store.getItem(shard, key, true))?.version).toBe(entry.index);
    });

    it('refuses an entry, a group and a transaction part at a trimmed index below the head: a stale head cannot fork a compacted log', async () => {
      // Prepare: entries 1..10 (a marker and nine puts), compacted through 7 and trimmed. A
      // writer that read the head at 5 still holds the lease's epoch; index 6 is empty again.
      const { store: compacted } = await createStore(uniquePrefix('floor'), shardCount);
      const shard = 5;
      const key = keyInShard(shard, shardCount, 'floor');
      const epoch = await acquire(compacted, shard, holder);
      for (let value = 2; value <= 10; value += 1) {
        const entry = await putEntry(compacted, shard, epoch, key, `v${value}`, `f${value}`);
        await compacted.commit({ entry, kv: { change: { type: 'put', key, value: text(`v${value}`) }, precondition: {} } });
      }
      const staleHead = (await compacted.readLog(shard, 5, 1))[0];
      await compacted.recordCompaction(shard, 7, Date.now());
      expect(await compacted.trimLog(shard, 7, 200)).toBe(7);
      const stale = sealEntry(staleHead, { shard, index: 6, epoch, ops: [{ type: 'put', key, value: text('stale') }], requestId: 'stale', committedAtMs: Date.now() });
      const staleGroup = [stale, sealEntry(stale, { shard, index: 7, epoch, ops: [{ type: 'put', key: keyInShard(shard, shardCount, 'floor-other'), value: text('stale') }], requestId: 'stale-2', committedAtMs: Date.now() })];

      // Act, one after another (each settled before the next is sent): the single write, the group and the transaction part.
      const otherKey = keyInShard(shard, shardCount, 'floor-other');
      const refusals = [
        await compacted.commit({ entry: stale, kv: { change: { type: 'put', key, value: text('stale') }, precondition: {} } }).catch((error: unknown) => error),
        await compacted.commitGroup(staleGroup.map((entry, position) => ({ entry, kv: { change: { type: 'put', key: position === 0 ? key : otherKey, value: text('stale') }, precondition: {} } }))).catch((error: unknown) => error),
        await compacted.commitTxn({ entries: [stale], reads: [{ shard, key, version: 10 }], writes: [{ shard, change: { type: 'put', key, value: text('stale') }, index: 6, epoch }] }).catch((error: unknown) => error),
      ];

      // Assess: each is a head conflict (the writer reads the head again), and nothing changed.
      for (const refusal of refusals) expect(refusal).toBeInstanceOf(HeadConflictError);
      expect((await compacted.readLog(shard, 1, 100)).map((entry) => entry.index)).toEqual([8, 9, 10]);
      const item = await compacted.getItem(shard, key, true);
      expect([new TextDecoder().decode(item?.value), item?.version]).toEqual(['v10', 10]);
      expect(await compacted.getItem(shard, otherKey, true)).toBeUndefined();
      // Above the point the log goes on as before.
      const next = await putEntry(compacted, shard, epoch, key, 'v11', 'f11');
      await compacted.commit({ entry: next, kv: { change: { type: 'put', key, value: text('v11') }, precondition: {} } });
      expect((await compacted.readHead(shard))?.index).toBe(11);
    });

    it('reports a failed If-Match with the current version and appends nothing', async () => {
      // Prepare
      const shard = 3;
      const key = keyInShard(shard, shardCount, 'cas');
      const epoch = await acquire(store, shard, holder);
      const created = await putEntry(store, shard, epoch, key, 'a', 'c1');
      await store.commit({ entry: created, kv: { change: { type: 'put', key, value: text('a') }, precondition: { ifAbsent: true } } });
      const next = await putEntry(store, shard, epoch, key, 'b', 'c2');

      // Act
      const attempt = store.commit({ entry: next, kv: { change: { type: 'put', key, value: text('b') }, precondition: { ifVersion: created.index + 7 } } });

      // Assess
      await expect(attempt).rejects.toSatisfy((error) => error instanceof VersionConflictError && error.currentVersion === created.index);
      expect((await store.readHead(shard))?.index).toBe(created.index);
    });

    it('refuses a create-only put of an existing key and a delete of a missing key', async () => {
      // Prepare
      const shard = 4;
      const key = keyInShard(shard, shardCount, 'create');
      const epoch = await acquire(store, shard, holder);
      const created = await putEntry(store, shard, epoch, key, 'a', 'k1');
      await store.commit({ entry: created, kv: { change: { type: 'put', key, value: text('a') }, precondition: { ifAbsent: true } } });

      // Act
      const again = await putEntry(store, shard, epoch, key, 'b', 'k2');
      const createTwice = await store.commit({ entry: again, kv: { change: { type: 'put', key, value: text('b') }, precondition: { ifAbsent: true } } }).catch((error: unknown) => error);
      const missing = keyInShard(shard, shardCount, 'missing');
      const deleteEntry = sealEntry(await store.readHead(shard), { shard, index: created.index + 1, epoch, ops: [{ type: 'delete', key: missing }], requestId: 'k3', committedAtMs: 1 });
      const deleteMissing = await store.commit({ entry: deleteEntry, kv: { change: { type: 'delete', key: missing }, precondition: {} } }).catch((error: unknown) => error);

      // Assess
      expect(createTwice).toBeInstanceOf(VersionConflictError);
      expect(deleteMissing).toBeInstanceOf(NotFoundError);
      expect((await store.readHead(shard))?.index).toBe(created.index);
    });
  });

  describe('Method: commitGroup (group commit)', () => {
    /** Consecutive sealed entries after the shard's head, one put each. */
    async function group(shard: number, epoch: number, keys: string[], tag: string): Promise<LogEntry[]> {
      let previous = await store.readHead(shard);
      return keys.map((key, position) => {
        const entry = sealEntry(previous, { shard, index: (previous?.index ?? 0) + 1, epoch, ops: [{ type: 'put', key, value: text(key) }], requestId: `${tag}-${position}`, committedAtMs: Date.now() });
        previous = entry;
        return entry;
      });
    }

    it('commits consecutive entries under one lease check, all or nothing', async () => {
      // Prepare
      const shard = 2;
      const epoch = await acquire(store, shard, holder);
      const keys = [0, 1, 2, 3].map((n) => keyInShard(shard, shardCount, `group-${n}`));
      const entries = await group(shard, epoch, keys, 'g1');

      // Act
      const outcome = await store.commitGroup(entries.map((entry, position) => ({ entry, kv: { change: { type: 'put', key: keys[position]!, value: text('v') }, precondition: {} } })));

      // Assess
      expect(outcome).toEqual({ committed: true });
      const log = await store.readLog(shard, 1, 100);
      expect(log.slice(-4).map((entry) => entry.requestId)).toEqual(['g1-0', 'g1-1', 'g1-2', 'g1-3']);
      expect(verifyChain(log)).toEqual({ ok: true });
      const items = await Promise.all(keys.map((key) => store.getItem(shard, key, true)));
      expect(items.map((item) => item?.version)).toEqual(entries.map((entry) => entry.index));
    });

    it('returns the refused preconditions with their error and commits none of the group', async () => {
      // Prepare: one key exists, so a create-only put of it is refused.
      const shard = 3;
      const epoch = await acquire(store, shard, holder);
      const taken = keyInShard(shard, shardCount, 'group-taken');
      const [created] = await group(shard, epoch, [taken], 'seed');
      await store.commit({ entry: created!, kv: { change: { type: 'put', key: taken, value: text('x') }, precondition: {} } });
      const headBefore = await store.readHead(shard);
      const keys = [keyInShard(shard, shardCount, 'group-a'), taken, keyInShard(shard, shardCount, 'group-b')];
      const entries = await group(shard, epoch, keys, 'g2');

      // Act
      const outcome = await store.commitGroup(entries.map((entry, position) => ({ entry, kv: { change: { type: 'put', key: keys[position]!, value: text('y') }, precondition: { ifAbsent: position === 1 } } })));

      // Assess
      expect(outcome.committed).toBe(false);
      const refused = outcome.committed ? new Map() : outcome.refused;
      expect([...refused.keys()]).toEqual([1]);
      expect(refused.get(1)).toBeInstanceOf(VersionConflictError);
      expect(await store.readHead(shard)).toEqual(headBefore);
      expect(await store.getItem(shard, keys[0]!, true)).toBeUndefined();
    });

    it('refuses a whole group at a stale epoch', async () => {
      // Prepare
      const shard = 4;
      const staleEpoch = await acquire(store, shard, holder);
      await acquire(store, shard, usurper);
      const keys = [keyInShard(shard, shardCount, 'stale-a'), keyInShard(shard, shardCount, 'stale-b')];
      const entries = await group(shard, staleEpoch, keys, 'g3');

      // Act
      const attempt = store.commitGroup(entries.map((entry, position) => ({ entry, kv: { change: { type: 'put', key: keys[position]!, value: text('z') }, precondition: {} } })));

      // Assess
      await expect(attempt).rejects.toBeInstanceOf(StaleEpochError);
      expect(await store.getItem(shard, keys[0]!, true)).toBeUndefined();
    });
  });

  describe('Method: acquireLease / renewLease', () => {
    it('lets only one of two contenders take a lease at the version they both saw', async () => {
      // Prepare
      const shard = 5;
      const head = await store.readHead(shard);
      const marker = (node: string) =>
        sealEntry(head, { shard, index: (head?.index ?? 0) + 1, epoch: 1, ops: [{ type: 'leader', node, epoch: 1, previousEpoch: 0 }], requestId: node, committedAtMs: 1 });

      // Act
      const results = await Promise.allSettled([
        store.acquireLease(shard, holder, { version: undefined }, 1, Date.now()),
        store.acquireLease(shard, usurper, { version: undefined }, 1, Date.now()),
      ]);

      // Assess: one winner, whose lease takes no writes until its marker is in.
      expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
      expect(results.filter((result) => result.status === 'rejected').map((result) => (result as PromiseRejectedResult).reason)).toEqual([expect.any(StaleEpochError)]);
      const lease = await store.readLease(shard);
      expect(lease?.markerPending).toBe(true);
      const early = sealEntry(head, { shard, index: (head?.index ?? 0) + 1, epoch: 1, ops: [{ type: 'put', key: 'early', value: text('x') }], requestId: 'early', committedAtMs: 1 });
      await expect(store.commit({ entry: early, kv: { change: { type: 'put', key: 'early', value: text('x') }, precondition: {} } })).rejects.toBeInstanceOf(StaleEpochError);
      const loser = lease?.holder === holder.node ? usurper : holder;
      await expect(store.appendMarker(shard, loser, marker(loser.node))).rejects.toBeInstanceOf(StaleEpochError);
      const winner = lease?.holder === holder.node ? holder : usurper;
      expect((await store.appendMarker(shard, winner, marker(winner.node))).markerPending).toBe(false);
      const log = await store.readLog(shard, 1, 10);
      expect(log).toHaveLength(1);
      expect(log[0]?.ops[0]).toMatchObject({ type: 'leader', node: lease?.holder, epoch: 1 });
    });

    it('refuses a renewal by another incarnation of the holder and by the holder at an old epoch', async () => {
      // Prepare
      const shard = 6;
      const epoch = await acquire(store, shard, holder);

      // Act / Assess
      const renewed = await store.renewLease(shard, holder, epoch, Date.now());
      expect(renewed.version).toBe(2);
      await expect(store.renewLease(shard, { node: holder.node, incarnation: 'other' }, epoch, Date.now())).rejects.toBeInstanceOf(StaleEpochError);
      await expect(store.renewLease(shard, holder, epoch - 1, Date.now())).rejects.toBeInstanceOf(StaleEpochError);
      const released = await store.releaseLease(shard, holder, epoch, Date.now());
      expect(released.holder).toBeUndefined();
      expect(released.epoch).toBe(epoch);
    });
  });

  describe('Method: putReplicaReports', () => {
    it('stores any number of reports (more than one BatchWriteItem of 25) and keeps the latest per region and shard', async () => {
      // Prepare
      const { store: reports } = await createStore(uniquePrefix('reports'), shardCount);
      const regions = ['eu-west-1', 'ap-southeast-2', 'sa-east-1', 'ca-central-1'];
      const first = regions.flatMap((region) => Array.from({ length: shardCount }, (_, shard) => ({ region, shard, appliedIndex: shard, appliedAtMs: 1, lastLagMs: 2, reportedAtMs: 3 })));

      // Act: 32 reports, then newer ones for one region.
      await reports.putReplicaReports(first);
      await reports.putReplicaReports(first.filter((report) => report.region === 'sa-east-1').map((report) => ({ ...report, appliedIndex: report.appliedIndex + 100 })));
      await reports.putReplicaReports([]);

      // Assess
      const stored = await reports.readReplicaReports();
      expect(stored).toHaveLength(regions.length * shardCount);
      expect(stored.filter((report) => report.region === 'sa-east-1').map((report) => report.appliedIndex).sort((a, b) => a - b)).toEqual(Array.from({ length: shardCount }, (_, shard) => shard + 100));
      expect(stored.find((report) => report.region === 'eu-west-1' && report.shard === 3)).toMatchObject({ appliedIndex: 3, lastLagMs: 2 });
    });
  });

  describe('Method: list', () => {
    it('lists keys with a prefix in key order across shards, page by page', async () => {
      // Prepare: keys of one prefix spread over every shard.
      const { store: listing } = await createStore(uniquePrefix('list'), shardCount);
      const service = new KvService(listing, { shardCount, leaseMs: 2000, tickMs: 250, writePath: 'direct' }, systemClock());
      for (let shard = 0; shard < shardCount; shard += 1) await acquire(listing, shard, holder);
      const keys = Array.from({ length: 25 }, (_, index) => `user/${String(index).padStart(3, '0')}`);
      for (const key of keys) await service.write({ type: 'put', key, value: text(key) }, {});
      await service.write({ type: 'put', key: 'other', value: text('x') }, {});

      // Act
      const seen: string[] = [];
      let after: string | undefined;
      let pages = 0;
      do {
        const page = await listing.list('user/', 10, after, true);
        seen.push(...page.items.map((item) => item.key));
        after = page.next;
        pages += 1;
      } while (after !== undefined && pages < 10);

      // Assess
      expect(seen).toEqual(keys);
      expect(pages).toBe(3);
    });
  });
});

describe('Class: KvService', () => {
  it('lets exactly one of many concurrent If-Match writers win per version, with a dense, intact log', async () => {
    // Prepare
    const { store } = await createStore(uniquePrefix('service'), shardCount);
    const service = new KvService(store, { shardCount, leaseMs: 2000, tickMs: 250, writePath: 'direct' }, systemClock());
    const key = 'counter';
    const shard = service.shardOf(key);
    await acquire(store, shard, holder);
    let version = (await service.write({ type: 'put', key, value: text('0') }, {})).version;
    const writers = 12;
    const rounds = 5;

    // Act: every round, all writers try to move the same version forward.
    const winnersPerRound: number[] = [];
    for (let round = 0; round < rounds; round += 1) {
      const results = await Promise.allSettled(
        Array.from({ length: writers }, (_, writer) => service.write({ type: 'put', key, value: text(`${round}:${writer}`) }, { ifVersion: version })),
      );
      const winners = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
      const losers = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
      winnersPerRound.push(winners.length);
      expect(losers.every((error) => error instanceof VersionConflictError)).toBe(true);
      version = winners[0]?.version ?? version;
    }

    // Assess
    expect(winnersPerRound).toEqual(Array.from({ length: rounds }, () => 1));
    const log = await store.readLog(shard, 1, 1000);
    expect(log.map((entry) => entry.index)).toEqual(log.map((_, position) => position + 1));
    expect(verifyChain(log)).toEqual({ ok: true });
    expect((await service.read(key, 'strong', {})).item?.version).toBe(version);
  });

  it('commits the writes a shard queues meanwhile in shared transactions (group commit), each with its own entry', async () => {
    // Prepare: count the transactions the service sends and their sizes.
    const { store } = await createStore(uniquePrefix('group'), shardCount);
    const groupSizes: number[] = [];
    const commitGroup = store.commitGroup.bind(store);
    store.commitGroup = async (requests) => {
      groupSizes.push(requests.length);
      return commitGroup(requests);
    };
    const service = new KvService(store, { shardCount, leaseMs: 2000, tickMs: 250, writePath: 'direct' }, systemClock());
    const shard = 5;
    await acquire(store, shard, holder);
    const taken = keyInShard(shard, shardCount, 'taken');
    await service.write({ type: 'put', key: taken, value: text('first') }, {});
    const keys = Array.from({ length: 40 }, (_, n) => keyInShard(shard, shardCount, `w${n}`));

    // Act: 40 writes of distinct keys, one create-only put of an existing key, and two
    // create-only puts of one new key, all at once.
    const contested = keyInShard(shard, shardCount, 'contested');
    const [plain, refused, contests] = await Promise.all([
      Promise.all(keys.map((key) => service.write({ type: 'put', key, value: text(key) }, {}))),
      service.write({ type: 'put', key: taken, value: text('again') }, { ifAbsent: true }).catch((error: unknown) => error),
      Promise.allSettled([0, 1].map((n) => service.write({ type: 'put', key: contested, value: text(String(n)) }, { ifAbsent: true }))),
    ]);

    // Assess: fewer transactions than writes, every acknowledged write is its own entry at its
    // own index, the refused one changed nothing, and exactly one create of the contested key won.
    expect(Math.max(...groupSizes)).toBeGreaterThan(1);
    expect(refused).toBeInstanceOf(VersionConflictError);
    expect(contests.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
    const log = await store.readLog(shard, 1, 1000);
    expect(log.map((entry) => entry.index)).toEqual(log.map((_, position) => position + 1));
    expect(verifyChain(log)).toEqual({ ok: true });
    for (const result of plain) expect(log[result.index - 1]?.ops[0]).toMatchObject({ type: 'put', key: result.key });
    expect(new Set(plain.map((result) => result.index)).size).toBe(keys.length);
    // The marker, the first write, 40 writes, one create of the contested key.
    expect(log).toHaveLength(1 + 1 + keys.length + 1);
    expect(new TextDecoder().decode((await service.read(taken, 'strong', {})).item?.value)).toBe('first');
  });

  describe('quorum writes and strong reads (the pending mark)', () => {
    const replicaRegion = 'eu-west-1';

    /**
     * A service in quorum mode with one replica region whose commit answers wait for `gate`
     * after DynamoDB applied them: the window in which the item is visible but the writer has
     * not heard back. `queue`: whether the replica region's queue exists (else every ship misses).
     */
    async function quorumService(label: string, queue: boolean) {
      const prefix = uniquePrefix(label);
      const { store } = await createStore(prefix, shardCount);
      if (queue) await ensureReplicationQueue(makeSqsClient({ region: replicaRegion, endpoint: inject('sqsEndpoint') }), prefix);
      let opened: () => void = () => undefined;
      const gate = new Promise<void>((resolve) => {
        opened = resolve;
      });
      const applied: number[] = [];
      const readsDone: string[] = [];
      const commitGroup = store.commitGroup.bind(store);
      store.commitGroup = async (requests) => {
        const outcome = await commitGroup(requests);
        applied.push(requests.length);
        await gate;
        return outcome;
      };
      const getItem = store.getItem.bind(store);
      store.getItem = async (shard, key, consistent) => {
        const item = await getItem(shard, key, consistent);
        readsDone.push(key);
        return item;
      };
      const shipper = new Shipper({ prefix, regions: [replicaRegion], endpoint: inject('sqsEndpoint') });
      // A long lease: the held lease is never renewed here, and the refusals below wait out the writer's replication wait.
      const options = { shardCount, leaseMs: 60_000, tickMs: 250, replication: 'quorum' as const, writePath: 'direct' as const };
      const service = new KvService(store, options, systemClock(), { shipper });
      // Another API execution environment: it shares the tables, never the writer's memory.
      const elsewhere = new KvService(store, options, systemClock(), { shipper });
      return { store, service, elsewhere, open: () => opened(), applied, readsDone };
    }

    it('holds a strong read in another environment that finds a write whose commit answer is still on its way until a replica queue has the entry', async () => {
      // Prepare
      const { store, service, elsewhere, open, applied, readsDone } = await quorumService('guard', true);
      const key = 'in-flight';
      await acquire(store, service.shardOf(key), holder);

      // Act: the transaction is applied, its answer held; a strong read finds the item meanwhile.
      const writing = service.write({ type: 'put', key, value: text('v1') }, {});
      await waitUntil('the commit applied in DynamoDB', async () => (applied.length > 0 ? true : undefined), 5000);
      const events: string[] = [];
      const marked = await store.getItem(service.shardOf(key), key, true);
      const reading = elsewhere.read(key, 'strong', {}).then((result) => {
        events.push('read answered');
        return result;
      });
      await waitUntil('the read found the item', async () => (readsDone.includes(key) ? true : undefined), 5000);
      events.push('commit answer released');
      open();
      const [written, read] = await Promise.all([writing, reading]);

      // Assess: the item carried the mark while the write was not durable; the writer cleared it;
      // the read answered only after the write became durable, and shows it.
      expect(marked?.pending).toBe('quorum');
      expect((await store.getItem(service.shardOf(key), key, true))?.pending).toBeUndefined();
      expect(events).toEqual(['commit answer released', 'read answered']);
      expect(written.replication).toEqual({ mode: 'quorum', acceptedBy: [replicaRegion] });
      expect(new TextDecoder().decode(read.item?.value)).toBe('v1');
      expect(read.item?.index).toBe(written.index);
    });

    it('answers 503 ReplicationUnmet to whatever shows a write or delete no replica queue took — strong reads, lists, refused conditions — until the replicas report it applied', async () => {
      // Prepare: no queue in the replica region; "gone" written earlier by an async writer.
      const { store, service, elsewhere, open, applied } = await quorumService('unmet', false);
      const key = 'unconfirmed';
      const gone = keyInShard(service.shardOf(key), shardCount, 'gone');
      const shard = service.shardOf(key);
      await acquire(store, shard, holder);
      open();
      const earlier = await new KvService(store, { shardCount, leaseMs: 2000, tickMs: 250, writePath: 'direct' }, systemClock()).write({ type: 'put', key: gone, value: text('x') }, {});
      const deleted = await service.write({ type: 'delete', key: gone }, {}).catch((error: unknown) => error);

      // Act: a put no queue takes, read before the writer has its answer, then after it failed.
      applied.length = 0;
      const writing = service.write({ type: 'put', key, value: text('maybe') }, {}).catch((error: unknown) => error);
      await waitUntil('the commit applied in DynamoDB', async () => (applied.length > 0 ? true : undefined), 5000);
      const beforeAnswer = await service.read(key, 'strong', {}).catch((error: unknown) => error);
      const written = await writing;
      // From the writer's environment and from another one alike.
      const refusals = {
        read: await elsewhere.read(key, 'strong', {}).catch((error: unknown) => error),
        list: await service.list('uncon', 10, undefined, 'strong').catch((error: unknown) => error),
        readDeleted: await elsewhere.read(gone, 'strong', {}).catch((error: unknown) => error),
        staleCas: await elsewhere.write({ type: 'put', key, value: text('cas') }, { ifVersion: 1 }).catch((error: unknown) => error),
        deleteAgain: await service.write({ type: 'delete', key: gone }, {}).catch((error: unknown) => error),
      };
      const eventual = await service.read(key, 'eventual', {});
      const head = (await store.readHead(shard))?.index ?? 0;
      await store.putReplicaReports([{ region: replicaRegion, shard, appliedIndex: head, appliedAtMs: Date.now(), lastLagMs: 5, reportedAtMs: Date.now() }]);
      const afterRepair = await elsewhere.read(key, 'strong', {});
      const deletedAfterRepair = await elsewhere.read(gone, 'strong', {});
      const listAfterRepair = await service.list('', 10, undefined, 'strong');

      // Assess: committed at home, never shown until a replica has it; nothing more written.
      expect([deleted, written, beforeAnswer]).toEqual([expect.any(ReplicationUnmetError), expect.any(ReplicationUnmetError), expect.any(ReplicationUnmetError)]);
      expect((beforeAnswer as Error).message).toMatch(/latest write of "unconfirmed" \(index \d+\) has not reached the replica regions quorum replication needs.*not shown; retry shortly/);
      expect((refusals.read as Error).message).toBe((beforeAnswer as Error).message);
      expect((refusals.list as Error).message).toBe((beforeAnswer as Error).message);
      expect((refusals.readDeleted as Error).message).toMatch(new RegExp(`latest delete of "${gone}" \\(index ${earlier.index + 1}\\) has not reached`));
      expect((refusals.staleCas as Error).message).toMatch(/"unconfirmed" was last changed by a write \(index \d+\) that has not reached .* whether this write's condition holds is unknown; nothing was written/);
      expect((refusals.deleteAgain as Error).message).toMatch(new RegExp(`"${gone}" was last changed by a delete .* nothing was written`));
      for (const refusal of Object.values(refusals)) expect(refusal).toBeInstanceOf(ReplicationUnmetError);
      expect(head).toBe(earlier.index + 2);
      expect(new TextDecoder().decode(eventual.item?.value)).toBe('maybe');
      expect(new TextDecoder().decode(afterRepair.item?.value)).toBe('maybe');
      expect(deletedAfterRepair.item).toBeUndefined();
      expect(listAfterRepair.items.map((item) => item.key)).toEqual([key]);
      // The reader that saw them durable cleared the mark and the tombstone.
      await waitUntil('the marks cleared', async () => ((await store.getItem(shard, key, true))?.pending === undefined && (await store.getItem(shard, gone, true)) === undefined ? true : undefined), 5000);
    });
  });

  it('stores a quorum write\'s answer with its commit, and a replay of it promises durability only once the replicas report the entry', async () => {
    // Prepare: quorum mode, one replica region whose queue does not exist (every ship misses).
    const prefix = uniquePrefix('idem-quorum');
    const { store } = await createStore(prefix, shardCount);
    const shipper = new Shipper({ prefix, regions: ['eu-west-1'], endpoint: inject('sqsEndpoint') });
    const service = new KvService(store, { shardCount, leaseMs: 60_000, tickMs: 250, replication: 'quorum', writePath: 'direct' }, systemClock(), { shipper });
    const key = 'paid';
    const shard = service.shardOf(key);
    await acquire(store, shard, holder);
    const idempotency = { key: 'pay-1', fingerprint: 'f', answer: () => ({ status: 200, body: '{"ok":true}' }) };

    // Act: the commit lands with its record; its replication fails.
    const first = await service.txn({ compare: [], success: [{ op: 'put', key, value: text('once') }], failure: [] }, {}, { idempotency }).catch((error: unknown) => error);
    const record = await store.readIdempotency('pay-1', Date.now());
    const replayBeforeRepair = await service.awaitDurable(record!.durability!).catch((error: unknown) => error);
    const head = (await store.readHead(shard))?.index ?? 0;
    await store.putReplicaReports([{ region: 'eu-west-1', shard, appliedIndex: head, appliedAtMs: Date.now(), lastLagMs: 5, reportedAtMs: Date.now() }]);
    const replayAfterRepair = await service.awaitDurable(record!.durability!).catch((error: unknown) => error);

    // Assess
    expect(first).toBeInstanceOf(ReplicationUnmetError);
    expect(record).toMatchObject({ status: 200, durability: { mode: 'quorum', parts: [{ shard, index: head }] } });
    expect(replayBeforeRepair).toBeInstanceOf(ReplicationUnmetError);
    expect(replayAfterRepair).toBeUndefined();
  }, 30_000);

  it('ends a lease without taking a lock it no longer holds: a lock released and taken by another lease stays with its new holder', async () => {
    // Prepare: every shard led; two leases; the lock held by the second.
    const { store } = await createStore(uniquePrefix('lease-race'), shardCount);
    for (let shard = 0; shard < shardCount; shard += 1) await acquire(store, shard, holder);
    const kv = new KvService(store, { shardCount, leaseMs: 60_000, tickMs: 250, writePath: 'direct' }, systemClock());
    const coordination = new CoordinationService(kv, systemClock());
    const first = await coordination.grantLease(60_000);
    const second = await coordination.grantLease(60_000);
    const held = await coordination.acquireLock('race', { leaseId: second.id }, 0);
    // The state a release racing the first lease's end leaves: the first lease's attachment to the lock.
    await kv.txn({ compare: [], success: [{ op: 'put', key: `${leaseAttachmentPrefix(first.id)}${lockKey('race')}`, value: new Uint8Array(0) }], failure: [] }, {});

    // Act
    const revoked = await coordination.revokeLease(first.id);

    // Assess: the lock keeps its holder and token; the stale attachment is gone.
    expect(revoked).toEqual({ keysDeleted: 0 });
    expect(await coordination.lockHolder('race')).toEqual({ token: held.token, leaseId: second.id });
    expect((await coordination.leaseInfo(second.id)).keys).toEqual([lockKey('race')]);
    expect((await kv.list(leaseAttachmentPrefix(first.id), 10, undefined, 'strong')).items).toEqual([]);
  }, 60_000);

  it('refuses writes to a shard without a live leader with a NoLeaderError', async () => {
    // Prepare: a lease whose holder stopped renewing long ago.
    const { store } = await createStore(uniquePrefix('noleader'), shardCount);
    const service = new KvService(store, { shardCount, leaseMs: 2000, tickMs: 250, writePath: 'direct' }, { wallMs: () => Date.now() + 60_000, monotonicMs: () => performance.now() });
    const key = 'orphan';
    await acquire(store, service.shardOf(key), holder);

    // Act
    const attempt = service.write({ type: 'put', key, value: text('x') }, {});

    // Assess
    await expect(attempt).rejects.toBeInstanceOf(NoLeaderError);
    expect((await store.readHead(service.shardOf(key)))?.index).toBe(1);
  });
});
