import { assert } from './assert.ts';
import { limits } from './limits.ts';
import { genesisHash, transactionBytesOf, verifyChain, type LogEntry, type Operation, type TxnParts } from './log.ts';
import { clusterEpochOf } from './replication.ts';

/** How far a replica has applied one shard's log: an unbroken, verified prefix. */
export interface ReplicaProgress {
  appliedIndex: number;
  /** Hash of the entry at appliedIndex (genesisHash when nothing is applied). */
  appliedHash: string;
  /**
   * Set by a promotion: entries after `index` (the new home's head then) must be of cluster
   * epoch `clusterEpoch` or later. The fenced old home's later entries are refused; its
   * earlier ones are the new home's history too.
   */
  fence?: ReplicaFence | undefined;
}

export interface ReplicaFence {
  clusterEpoch: number;
  index: number;
}

export const emptyProgress: ReplicaProgress = { appliedIndex: 0, appliedHash: genesisHash };

export type ApplyDecision =
  /** Applied before (a duplicate or a re-ship): acknowledge and skip. */
  | { type: 'skip' }
  /** Written by a home region that was fenced by a promotion: acknowledge and never apply. */
  | { type: 'refuse'; reason: string }
  /** The next entry, and it continues the chain. */
  | { type: 'apply' }
  /** Entries are missing before this one: read [fromIndex, toIndex] from the home log. */
  | { type: 'repair'; fromIndex: number; toIndex: number; reason: string };

/**
 * What a replica does with one delivered entry, given its progress. Apply strictly in index
 * order; anything out of order or not matching the chain is fetched from the home log, so
 * lost, duplicated, reordered or corrupted messages do no harm.
 */
export function decideApply(progress: ReplicaProgress, entry: LogEntry): ApplyDecision {
  if (isFencedOff(progress.fence, entry)) {
    return { type: 'refuse', reason: `entry ${entry.shard}:${entry.index} has epoch ${entry.epoch} (cluster epoch ${clusterEpochOf(entry.epoch)}), but a promotion fenced every entry after ${progress.fence?.index} below cluster epoch ${progress.fence?.clusterEpoch}` };
  }
  if (entry.index <= progress.appliedIndex) return { type: 'skip' };
  if (entry.index > progress.appliedIndex + 1) {
    return { type: 'repair', fromIndex: progress.appliedIndex + 1, toIndex: entry.index, reason: `gap: applied ${progress.appliedIndex}, got ${entry.index}` };
  }
  const check = verifyChain([entry], { index: progress.appliedIndex, hash: progress.appliedHash });
  if (!check.ok) return { type: 'repair', fromIndex: entry.index, toIndex: entry.index, reason: `corrupt entry: ${check.reason}` };
  return { type: 'apply' };
}

/** True when a promotion's fence refuses the entry: written by a fenced old home after the promotion point. */
export function isFencedOff(fence: ReplicaFence | undefined, entry: LogEntry): boolean {
  return fence !== undefined && entry.index > fence.index && clusterEpochOf(entry.epoch) < fence.clusterEpoch;
}

/**
 * The net change a run of consecutive entries makes to the kv table: one action per key (a
 * DynamoDB transaction may touch an item only once), the last write to a key winning, as
 * applying the entries one by one would leave it.
 */
export type KvEffect =
  | { type: 'put'; key: string; value: Uint8Array; index: number; epoch: number; txn?: TxnParts }
  | { type: 'delete'; key: string; index: number; epoch: number; txn?: TxnParts };

export function netEffects(entries: readonly LogEntry[]): KvEffect[] {
  const byKey = new Map<string, KvEffect>();
  for (const entry of entries) {
    for (const op of entry.ops) {
      const effect = effectOf(op, entry);
      if (effect !== undefined) {
        // Re-insert so the map's order follows the last write.
        byKey.delete(effect.key);
        byKey.set(effect.key, effect);
      }
    }
  }
  return [...byKey.values()];
}

function effectOf(op: Operation, entry: LogEntry): KvEffect | undefined {
  switch (op.type) {
    case 'put':
      return { type: 'put', key: op.key, value: op.value, index: entry.index, epoch: entry.epoch, ...(entry.txn === undefined ? {} : { txn: entry.txn }) };
    case 'delete':
      return { type: 'delete', key: op.key, index: entry.index, epoch: entry.epoch, ...(entry.txn === undefined ? {} : { txn: entry.txn }) };
    case 'leader':
      return undefined;
  }
}

/** Items a run of `entryCount` entries touches at most: progress + a log copy and a kv change each. */
export function runItemsMax(entryCount: number): number {
  return 1 + 2 * entryCount;
}

/** Items one TransactWriteItems takes. */
export const transactionItemsMax = 100;

/** Largest run that fits one TransactWriteItems. */
export const runEntriesMax = 49;
assert(runItemsMax(runEntriesMax) <= transactionItemsMax, 'a replica apply run must fit one transaction');

/** Splits verified consecutive entries into runs that each fit one transaction (items and bytes). */
export function chunkRuns(entries: readonly LogEntry[]): LogEntry[][] {
  const runs: LogEntry[][] = [];
  let run: LogEntry[] = [];
  let bytes = 0;
  for (const entry of entries) {
    const entryBytes = transactionBytesOf(entry.ops);
    if (run.length > 0 && (run.length >= runEntriesMax || bytes + entryBytes > limits.transactionBytesMax)) {
      runs.push(run);
      run = [];
      bytes = 0;
    }
    run.push(entry);
    bytes += entryBytes;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/**
 * Packs runs of several shards into as few transactions as their items (≤ `itemsMax`, at most
 * the 100 of one transaction) and bytes allow, in the given order; a run is never split
 * (`chunkRuns` already made each fit alone), so a run bigger than `itemsMax` gets a pack of its own.
 */
export function packRuns<T extends { entries: readonly LogEntry[] }>(runs: readonly T[], itemsMax = transactionItemsMax): T[][] {
  const packs: T[][] = [];
  let pack: T[] = [];
  let items = 0;
  let bytes = 0;
  for (const run of runs) {
    const runItems = runItemsMax(run.entries.length);
    const runBytes = run.entries.reduce((sum, entry) => sum + transactionBytesOf(entry.ops), 0);
    if (pack.length > 0 && (items + runItems > itemsMax || bytes + runBytes > limits.transactionBytesMax)) {
      packs.push(pack);
      pack = [];
      items = 0;
      bytes = 0;
    }
    pack.push(run);
    items += runItems;
    bytes += runBytes;
  }
  if (pack.length > 0) packs.push(pack);
  return packs;
}
