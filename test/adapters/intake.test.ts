import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DynamoStore } from '../../lib/adapters/aws/dynamo-store.ts';
import { observeAwsRequests, type AwsRequestRecord } from '../../lib/adapters/aws/clients.ts';
import { systemClock } from '../../lib/clock.ts';
import { sealEntry, verifyChain } from '../../lib/core/log.ts';
import { RetriesExhaustedError, VersionConflictError } from '../../lib/ports/errors.ts';
import { IntakeCommitter } from '../../lib/service/intake.ts';
import { KvService, type WriteResult } from '../../lib/service/kv-service.ts';
import { createStore, keyInShard, uniquePrefix, waitUntil } from '../support.ts';

const shardCount = 4;
const leaseMs = 1_000;
const tickMs = 100;
const text = (value: string) => new TextEncoder().encode(value);
const clock = systemClock();

/** Takes the shard's lease the way a node does (lease write, then the leader marker). */
async function lead(store: DynamoStore, shard: number, node: string): Promise<{ epoch: number; holder: { node: string; incarnation: string } }> {
  const holder = { node, incarnation: `000000000000001-${node}` };
  const lease = await store.readLease(shard);
  const head = await store.readHead(shard);
  const epoch = (lease?.epoch ?? 0) + 1;
  await store.acquireLease(shard, holder, { version: lease?.version }, epoch, Date.now());
  const marker = sealEntry(head, { shard, index: (head?.index ?? 0) + 1, epoch, ops: [{ type: 'leader', node, epoch, previousEpoch: lease?.epoch ?? 0 }], requestId: `leader-${node}-${epoch}`, committedAtMs: Date.now() });
  await store.appendMarker(shard, holder, marker);
  return { epoch, holder };
}

/** Keeps a lease renewed (the node's duty) until stopped, so the API's liveness gate lets writes through. */
function keepRenewing(store: DynamoStore, shard: number, holder: { node: string; incarnation: string }, epoch: number): () => void {
  const timer = setInterval(() => void store.renewLease(shard, holder, epoch, Date.now()).catch(() => undefined), tickMs);
  return () => clearInterval(timer);
}

function committer(store: DynamoStore, shard: number, epoch: number): IntakeCommitter {
  return new IntakeCommitter({ store, shard, epoch, clock, log: (line) => console.log(line), idlePollMs: 20, busyPollMs: 2, busyForMs: 2_000 });
}

/** Lambda's model: one service (one execution environment) per writer, each serving one write at a time. */
function environments(store: DynamoStore, count: number): KvService[] {
  return Array.from({ length: count }, () => new KvService(store, { shardCount, leaseMs, tickMs }, clock));
}

describe('The shard leader as single writer (intake)', () => {
  let store: DynamoStore;
  const cleanups: (() => void)[] = [];

  beforeAll(async () => {
    ({ store } = await createStore(uniquePrefix('intake'), shardCount));
  });

  afterEach(() => {
    for (const cleanup of cleanups.splice(0)) cleanup();
  });

  it('commits 16 racing environments\' writes to one shard exactly once each, in a dense chained log, with few failed transactions', async () => {
    // Prepare: a leader with its committer; 16 environments, each writing 6 times in a row.
    const shard = 0;
    const { epoch, holder } = await lead(store, shard, 'node-a');
    cleanups.push(keepRenewing(store, shard, holder, epoch));
    const drain = committer(store, shard, epoch);
    const running = drain.run();
    cleanups.push(() => drain.stop());
    const transactions: AwsRequestRecord[] = [];
    cleanups.push(observeAwsRequests((record) => record.operation === 'TransactWriteItems' && transactions.push(record)));
    const before = (await store.readHead(shard))?.index ?? 0;

    // Act
    const results: WriteResult[] = [];
    await Promise.all(
      environments(store, 16).map(async (service, writer) => {
        for (let round = 0; round < 6; round += 1) {
          results.push(await service.write({ type: 'put', key: keyInShard(shard, shardCount, `w${writer}-${round}`), value: text(`v${writer}-${round}`) }, {}));
        }
      }),
    );
    drain.stop();
    expect(await running).toBe('stopped');

    // Assess: every write acknowledged once, at a distinct index; the log is dense and chained.
    expect(results).toHaveLength(96);
    const indexes = results.map((result) => result.index);
    expect(new Set(indexes).size).toBe(96);
    const log = await store.readLog(shard, before + 1, 1_000);
    expect(log.map((entry) => entry.index)).toEqual(Array.from({ length: log.length }, (_, position) => before + 1 + position));
    expect(log).toHaveLength(96);
    expect(verifyChain(await store.readLog(shard, 1, 10_000)).ok).toBe(true);
    for (const result of results) {
      const item = await store.getItem(shard, result.key, true);
      expect(item?.version).toBe(result.index);
    }
    // Most writes went through the leader in groups: far fewer transactions than writes, few failed.
    const failed = transactions.filter((record) => record.error !== undefined).length;
    expect(drain.stats.committedWrites).toBeGreaterThan(48);
    expect(failed / 96).toBeLessThan(1);
    expect(await store.readIntake(shard, 100)).toEqual([]);
  });

  it('refuses a compare-and-swap with the current version through the intake, writing nothing', async () => {
    const shard = 1;
    const { epoch, holder } = await lead(store, shard, 'node-a');
    cleanups.push(keepRenewing(store, shard, holder, epoch));
    const drain = committer(store, shard, epoch);
    void drain.run();
    cleanups.push(() => drain.stop());
    const key = keyInShard(shard, shardCount, 'cas');
    const service = new KvService(store, { shardCount, leaseMs, tickMs, writePath: 'leader' }, clock);
    const first = await service.write({ type: 'put', key, value: text('one') }, {});
    expect(first.replication.acceptedBy).toEqual([]);
    const headBefore = await store.readHead(shard);

    const refusal = await service.write({ type: 'put', key, value: text('late') }, { ifVersion: first.version - 1 }).catch((error: unknown) => error);

    expect(refusal).toBeInstanceOf(VersionConflictError);
    expect((refusal as VersionConflictError).currentVersion).toBe(first.version);
    expect(await store.readHead(shard)).toEqual(headBefore);
    expect(Buffer.from((await store.getItem(shard, key, true))!.value).toString()).toBe('one');
  });

  it('withdraws a write no leader takes within the wait: a definite "not applied", nothing left behind', async () => {
    // Prepare: a live lease but no committer running (a leader that stopped draining).
    const shard = 2;
    const { epoch, holder } = await lead(store, shard, 'node-a');
    cleanups.push(keepRenewing(store, shard, holder, epoch));
    const service = new KvService(store, { shardCount, leaseMs, tickMs, writePath: 'leader' }, clock);
    const headBefore = await store.readHead(shard);
    const key = keyInShard(shard, shardCount, 'orphan');

    // Act
    const failure = await service.write({ type: 'put', key, value: text('never') }, {}).catch((error: unknown) => error);

    // Assess
    expect(failure).toBeInstanceOf(RetriesExhaustedError);
    expect((failure as Error).message).toMatch(/withdrawn and not applied/);
    expect(await store.readIntake(shard, 100)).toEqual([]);
    expect(await store.readHead(shard)).toEqual(headBefore);
    expect(await store.getItem(shard, key, true)).toBeUndefined();
  });

  it('keeps pending writes across a failover: the old epoch\'s committer is fenced, the new leader commits them', async () => {
    const shard = 3;
    const old = await lead(store, shard, 'node-a');
    const key = keyInShard(shard, shardCount, 'failover');
    // A write deposited while nobody drains.
    await store.depositIntake({ shard, id: `${String(Date.now()).padStart(15, '0')}#r-failover`, requestId: 'r-failover', change: { type: 'put', key, value: text('kept') }, precondition: {}, depositedAtMs: Date.now() });
    const usurper = await lead(store, shard, 'node-b');

    // The deposed leader's committer is fenced by the epoch check and commits nothing.
    expect(await committer(store, shard, old.epoch).run()).toBe('stale');
    expect(await store.getItem(shard, key, true)).toBeUndefined();

    // The new leader's committer commits it, exactly once.
    const drain = committer(store, shard, usurper.epoch);
    void drain.run();
    cleanups.push(() => drain.stop());
    const item = await waitUntil('the new leader to commit the pending write', () => store.getItem(shard, key, true), 5_000);
    expect(item.epoch).toBe(usurper.epoch);
    const log = await store.readLog(shard, 1, 1_000);
    expect(log.filter((entry) => entry.requestId === 'r-failover')).toHaveLength(1);
    expect(verifyChain(log).ok).toBe(true);
  });

  it('never commits a write twice when two committers of one epoch drain the same intake (overlapping invocations)', async () => {
    const shard = 0;
    const { epoch, holder } = await lead(store, shard, 'node-c');
    cleanups.push(keepRenewing(store, shard, holder, epoch));
    const before = (await store.readHead(shard))?.index ?? 0;
    for (let position = 0; position < 40; position += 1) {
      await store.depositIntake({ shard, id: `${String(Date.now()).padStart(15, '0')}#dup-${position}`, requestId: `dup-${position}`, change: { type: 'put', key: keyInShard(shard, shardCount, `dup${position}`), value: text('x') }, precondition: {}, depositedAtMs: Date.now() });
    }
    const first = committer(store, shard, epoch);
    const second = committer(store, shard, epoch);
    void first.run();
    void second.run();
    cleanups.push(() => first.stop(), () => second.stop());

    await waitUntil('the intake to drain', async () => ((await store.readIntake(shard, 100)).length === 0 ? true : undefined), 10_000);
    const log = await store.readLog(shard, before + 1, 1_000);
    const ids = log.map((entry) => entry.requestId).filter((id) => id.startsWith('dup-'));
    expect(ids).toHaveLength(40);
    expect(new Set(ids).size).toBe(40);
    expect(verifyChain(await store.readLog(shard, 1, 10_000)).ok).toBe(true);
  });
});
