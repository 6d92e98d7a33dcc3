import { assert } from './assert.ts';
import { netEffects } from './apply.ts';
import type { LogEntry } from './log.ts';

/**
 * Log compaction, decided here and carried out by the shard leader (lib/service/compaction.ts).
 * A shard's log keeps a retention (entries and age); entries below the compaction point are
 * deleted. The point only moves up, never past the head (the head entry is what the next write
 * chains onto and what `readHead` finds), and never past what a replica that still follows the
 * log has applied: a replica that no longer does (silent too long, or too far behind) is seeded
 * from a snapshot of the shard's items when it needs entries that are gone.
 */

/** How much of a shard's log is kept. Either bound trims: the log holds at most `retainEntries` entries and none older than `retainAgeMs`. */
export interface RetentionPolicy {
  retainEntries: number;
  retainAgeMs: number;
}

/**
 * Defaults: 100,000 entries (a few hours of a busy shard; a watch or a replica that far behind
 * re-reads a snapshot instead) and 7 days (an idle shard's history stays watchable for a week).
 */
export const retentionDefaults: RetentionPolicy = { retainEntries: 100_000, retainAgeMs: 7 * 24 * 60 * 60 * 1000 };

/** Smallest retention: one entry, the head, is always kept anyway. */
export const retainEntriesMin = 1;

/** When a replica stops holding the log back (beyond either bound it is seeded from a snapshot when it comes back). */
export interface HoldBounds {
  /** A replica whose last report is older than this has failed or is cut off. */
  reportAgeMsMax: number;
  /** A replica this many entries behind the head is not catching up from the log any more. */
  lagEntriesMax: number;
}

/** How far behind a reporting replica may fall before it stops holding the log: a multiple of the retention, so the log stays within (1 + this) × retainEntries entries. */
export const holdLagRetentionMultiple = 4;

export interface ReplicaStandingForCompaction {
  region: string;
  appliedIndex: number;
  /** Age of its last report, on the leader's clock against the report's stamp (liveness only). */
  reportAgeMs: number;
}

export interface CompactionInput {
  headIndex: number;
  /** The shard's compaction point as recorded: entries at or below it may be gone. */
  compactedThrough: number;
  /** The oldest entries above `compactedThrough`, in index order, with their commit times (writer clocks). */
  oldest: readonly { index: number; committedAtMs: number }[];
  /** The cluster's replica regions. */
  replicaRegions: readonly string[];
  /** Their last reports on this shard (a region may have none yet). */
  standings: readonly ReplicaStandingForCompaction[];
  /** The shard's in-sync set (`all` mode): these hold the log back whatever their report's age. */
  inSyncRegions: readonly string[];
  /** The leader's wall clock; only the age bound uses it (liveness of trimming, never safety). */
  nowMs: number;
}

export interface CompactionDecision {
  /** The new compaction point (>= the recorded one). */
  compactedThrough: number;
  /** What the retention alone would trim through. */
  wanted: number;
  /** The replica regions that kept the point below `wanted`. */
  heldBy: string[];
  /** Replica regions left behind: they need a snapshot to follow again. */
  leftBehind: string[];
}

/**
 * The compaction point a leader should record for one shard. Pure: what was observed in, the
 * decision out.
 */
export function decideCompaction(input: CompactionInput, policy: RetentionPolicy, hold: HoldBounds): CompactionDecision {
  assert(Number.isInteger(policy.retainEntries) && policy.retainEntries >= retainEntriesMin, `retainEntries must be an integer >= ${retainEntriesMin}, got ${policy.retainEntries}`);
  assert(policy.retainAgeMs > 0, `retainAgeMs must be positive, got ${policy.retainAgeMs}`);
  const { headIndex, compactedThrough } = input;
  // The head stays: the next write chains onto it, and an empty log would read as a new shard.
  const ceiling = headIndex - 1;
  const byCount = headIndex - policy.retainEntries;
  // Entries older than the age bound, counted from the oldest while they stay older (commit
  // times come from several writers' clocks; the first young one ends the run).
  let byAge = compactedThrough;
  const cutoffMs = input.nowMs - policy.retainAgeMs;
  for (const entry of input.oldest) {
    if (entry.committedAtMs >= cutoffMs || entry.index !== byAge + 1) break;
    byAge = entry.index;
  }
  const wanted = Math.min(ceiling, Math.max(byCount, byAge));
  const heldBy: string[] = [];
  const leftBehind: string[] = [];
  let floor = Number.POSITIVE_INFINITY;
  for (const region of input.replicaRegions) {
    const standing = input.standings.find((candidate) => candidate.region === region);
    const inSync = input.inSyncRegions.includes(region);
    // In-sync: `all` writes count on this region; it holds until the leader drops it from the set.
    const follows =
      inSync ||
      (standing !== undefined && standing.reportAgeMs <= hold.reportAgeMsMax && headIndex - standing.appliedIndex <= hold.lagEntriesMax);
    const appliedIndex = standing?.appliedIndex ?? compactedThrough;
    if (follows) {
      floor = Math.min(floor, appliedIndex);
      if (appliedIndex < wanted) heldBy.push(region);
    } else if (appliedIndex < wanted) {
      leftBehind.push(region);
    }
  }
  const next = Math.max(compactedThrough, Math.min(wanted, floor));
  return { compactedThrough: next, wanted, heldBy, leftBehind };
}

/**
 * A replica region's own copy of the log: trimmed through the home's compaction point, but
 * never its own head (the entry at its applied index: what the region's log would start from
 * were it promoted).
 */
export function replicaCompactionPoint(homeCompactedThrough: number, appliedIndex: number, ownCompactedThrough: number): number {
  return Math.max(ownCompactedThrough, Math.min(homeCompactedThrough, appliedIndex - 1));
}

/** The hold bounds from the cluster's timing and retention: two minutes' worth of ticks or ten leases of silence, and a multiple of the retention behind. */
export function holdBoundsFor(timings: { tickMs: number; leaseMs: number }, policy: RetentionPolicy): HoldBounds {
  return {
    reportAgeMsMax: Math.max(60 * timings.tickMs, 10 * timings.leaseMs),
    lagEntriesMax: holdLagRetentionMultiple * policy.retainEntries,
  };
}

/** A key's state in a snapshot: as the kv table holds it (version = index of the write that made it). */
export interface SnapshotItem {
  key: string;
  value: Uint8Array;
  version: number;
  epoch: number;
  index: number;
}

/**
 * A consistent snapshot of one shard's items at `entries`' last index, from a scan that ran
 * while the log moved from `baseIndex` to there: a key the entries do not touch kept one state
 * through the whole scan, so the scan has it right; a key they touch takes their net effect.
 * `entries` must be the dense range (baseIndex, top].
 */
export function mergeSnapshot(scanned: readonly SnapshotItem[], baseIndex: number, entries: readonly LogEntry[]): SnapshotItem[] {
  entries.forEach((entry, position) => assert(entry.index === baseIndex + 1 + position, `snapshot entries must be dense from ${baseIndex + 1}; found ${entry.index} at position ${position}`));
  const byKey = new Map(scanned.map((item) => [item.key, item]));
  for (const effect of netEffects(entries)) {
    if (effect.type === 'put') byKey.set(effect.key, { key: effect.key, value: effect.value, version: effect.index, epoch: effect.epoch, index: effect.index });
    else byKey.delete(effect.key);
  }
  return [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
