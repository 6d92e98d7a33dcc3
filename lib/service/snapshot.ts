import { randomUUID } from 'node:crypto';
import type { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import type { Clock } from '../clock.ts';
import { AssertionError } from '../core/assert.ts';
import { isFencedOff, type ReplicaProgress } from '../core/apply.ts';
import { mergeSnapshot, type SnapshotItem } from '../core/compaction.ts';
import { verifyChain, type LogEntry } from '../core/log.ts';
import type { KvItem, Store } from '../ports/store.ts';

/**
 * Seeding a region from a consistent snapshot of a shard's items at an index: for a replica
 * whose next entry was compacted away at home, a new region, or a promotion target behind
 * every log copy it could gather from.
 */

/** Where a snapshot is read from: a region whose kv table and log agree at a known index. */
export interface SnapshotSource {
  readonly name: string;
  /** The index (and its hash) the source's items reflect now, read consistently; undefined for an empty shard. */
  position(shard: number): Promise<{ index: number; hash: string } | undefined>;
  items(shard: number): Promise<KvItem[]>;
  readLog(shard: number, fromIndex: number, limit: number): Promise<LogEntry[]>;
}

/** The home region: its items reflect its log head (each commit writes both in one transaction). */
export function homeSource(store: Store, name = 'home'): SnapshotSource {
  return {
    name,
    position: async (shard) => store.readHead(shard),
    items: (shard) => store.readShardItems(shard),
    readLog: (shard, fromIndex, limit) => store.readLog(shard, fromIndex, limit),
  };
}

/** A replica region: its items reflect its progress (an apply moves both in one transaction). */
export function replicaSource(name: string, store: Store, replica: DynamoReplicaStore): SnapshotSource {
  return {
    name,
    position: async (shard) => {
      const progress = await replica.readProgress(shard);
      return progress.appliedIndex === 0 ? undefined : { index: progress.appliedIndex, hash: progress.appliedHash };
    },
    items: (shard) => store.readShardItems(shard),
    readLog: (shard, fromIndex, limit) => store.readLog(shard, fromIndex, limit),
  };
}

export interface Snapshot {
  /** The entry the snapshot is at: the seeded copy's log starts with it. */
  entry: LogEntry;
  items: SnapshotItem[];
}

/** Snapshot attempts before giving up (each one fails only when the log moved by more than its retention during the scan). */
const snapshotAttemptsMax = 5;

/**
 * A consistent snapshot of one shard: the position before the scan, the scan, the position
 * after it, and the log between the two replayed over the scan (lib/core/compaction.ts,
 * mergeSnapshot). The log between the two positions must still be there: when the source
 * compacted it meanwhile, the snapshot is taken again. Undefined for a shard with no entries.
 */
export async function takeSnapshot(source: SnapshotSource, shard: number): Promise<Snapshot | undefined> {
  let lastProblem = '';
  for (let attempt = 1; attempt <= snapshotAttemptsMax; attempt += 1) {
    const before = await source.position(shard);
    if (before === undefined) return undefined;
    // A pending delete's tombstone is a committed delete: the key is absent at its index.
    const scanned = (await source.items(shard)).filter((item) => item.tombstone !== true);
    const after = await source.position(shard);
    if (after === undefined || after.index < before.index) throw new AssertionError(`shard ${shard}: ${source.name}'s position went back from ${before.index} to ${after?.index ?? 0} during a snapshot`);
    // From the entry at `before` (it anchors the chain) to the one at `after`.
    const entries = await source.readLog(shard, before.index, after.index - before.index + 1);
    const first = entries[0];
    const last = entries.at(-1);
    if (first === undefined || first.index !== before.index || first.hash !== before.hash || last?.index !== after.index || last.hash !== after.hash) {
      lastProblem = `${source.name}'s log no longer holds ${before.index}..${after.index} with the hashes its position named (compacted during the scan?)`;
      continue;
    }
    const check = verifyChain(entries.slice(1), { index: first.index, hash: first.hash });
    if (!check.ok) throw new AssertionError(`shard ${shard}: ${source.name}'s log between ${before.index} and ${after.index} is not one chain: ${check.reason}`);
    const snapshotItems = scanned.map(({ key, value, version, epoch, index }) => ({ key, value, version, epoch, index }));
    return { entry: last, items: mergeSnapshot(snapshotItems, before.index, entries.slice(1)) };
  }
  throw new Error(`shard ${shard}: no consistent snapshot after ${snapshotAttemptsMax} attempts: ${lastProblem}`);
}

export interface SeedResult {
  progress: ReplicaProgress;
  /** Items put and keys deleted in the seeded region. */
  put: number;
  deleted: number;
}

/**
 * Seeds a replica region's copy of a shard from a snapshot of `source`, replacing its progress
 * `from`. Items the region already holds at the same write are left alone. Throws
 * ProgressMovedError when an apply or another seed moved the shard meanwhile (look again).
 */
export async function seedReplica(replica: DynamoReplicaStore, source: SnapshotSource, shard: number, from: ReplicaProgress, clock: Clock): Promise<SeedResult> {
  const snapshot = await takeSnapshot(source, shard);
  if (snapshot === undefined || snapshot.entry.index <= from.appliedIndex) return { progress: from, put: 0, deleted: 0 };
  if (isFencedOff(from.fence, snapshot.entry)) {
    throw new AssertionError(`shard ${shard}: ${source.name} wrote index ${snapshot.entry.index} under a fenced cluster epoch; it is not home any more (deploy with the promoted home)`);
  }
  const token = randomUUID();
  await replica.claimSeed(shard, from, token);
  const held = new Map((await replica.readItems(shard)).map((item) => [item.key, item]));
  const puts = snapshot.items.filter((item) => {
    const current = held.get(item.key);
    return current === undefined || current.index !== item.index || current.version !== item.version;
  });
  const wanted = new Set(snapshot.items.map((item) => item.key));
  const deletes = [...held.keys()].filter((key) => !wanted.has(key));
  await replica.writeSeedItems(shard, token, puts, deletes);
  const progress = await replica.finishSeed(shard, token, snapshot.entry, from.fence, clock.wallMs());
  return { progress, put: puts.length, deleted: deletes.length };
}

/** The home log does not hold the next entry a replica needs: it was compacted, and the replica is seeded instead. */
export class SnapshotNeededError extends Error {
  constructor(
    readonly shard: number,
    readonly appliedIndex: number,
    readonly firstIndex: number,
  ) {
    super(`shard ${shard}: the next entry this replica needs (${appliedIndex + 1}) is compacted at home (its log starts at ${firstIndex})`);
    this.name = 'SnapshotNeededError';
  }
}
