import { ProgressMovedError, type DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import type { Clock } from '../clock.ts';
import { AssertionError } from '../core/assert.ts';
import { chunkRuns, decideApply, isFencedOff, packRuns, runEntriesMax, runItemsMax, transactionItemsMax, type ReplicaProgress } from '../core/apply.ts';
import { verifyChain, type LogEntry } from '../core/log.ts';
import type { Store } from '../ports/store.ts';
import { homeSource, seedReplica, SnapshotNeededError } from './snapshot.ts';

/** Entries pulled from the home log per repair read. */
const repairEntriesMax = 500;
/** Re-reads of progress after another applier moved it, per delivery. */
const movedAttemptsMax = 5;
/**
 * Items per shared apply transaction (of the 100 one may hold): the runs of a batch or a pull
 * beyond that go in further transactions, sent in parallel. Locally (one DynamoDB Local for every
 * region, on 2 cores) packs of at most 40 items gave a lower replica lag than packs of 100 in
 * every round of an alternating comparison at 200 writes/s, and packs of 20 a higher one
 * (docs/benchmark-notes.md, "Comparing apply settings"). Items cost the same on AWS however they are packed.
 */
export const packItemsMaxDefault = 40;
/** What `packItemsMax` may be: a run of one entry, up to a whole transaction. */
export const packItemsBounds = { min: runItemsMax(1), max: transactionItemsMax } as const;

export interface ReplicaApplierOptions {
  /** Items per shared apply transaction, within `packItemsBounds`; default `packItemsMaxDefault`. */
  packItemsMax?: number;
}

export interface DeliveryResult {
  applied: number;
  skipped: number;
  repaired: number;
  /** Of the skipped: entries of a cluster epoch a promotion fenced. */
  refused: number;
}

/** Delivery of `entries[failedAt]` and everything after it failed; those are retried. */
export class DeliveryError extends Error {
  constructor(
    readonly failedAt: number,
    readonly reason: unknown,
  ) {
    super(`delivery failed at message ${failedAt}: ${String(reason)}`);
    this.name = 'DeliveryError';
  }
}

interface RunPlan {
  /** The entries from `start` that continue the progress: one transaction. */
  run: LogEntry[];
  skipped: number;
  /** Of the skipped: entries of a cluster epoch a promotion fenced (acknowledged, so they leave the queue, and dropped). */
  refused: number;
  /** Where the plan stopped: the entry that needs a repair first, an entry of another shard, or the end. */
  next: number;
  repair: { fromIndex: number; toIndex: number } | undefined;
  /** The entry at `next` is of another shard: a delivery error. */
  foreign: boolean;
}

/**
 * Reads a shard's delivery from `start` against `progress`: the run of entries that continue
 * it, the entries skipped (applied already) or refused (fenced off), up to the first entry that
 * needs a repair (a gap, a corrupt entry) or the first entry of another shard.
 */
function planRun(progress: ReplicaProgress, shard: number, entries: readonly LogEntry[], start: number): RunPlan {
  const plan: RunPlan = { run: [], skipped: 0, refused: 0, next: start, repair: undefined, foreign: false };
  let tip = progress;
  for (; plan.next < entries.length; plan.next += 1) {
    const entry = entries[plan.next] as LogEntry;
    if (entry.shard !== shard) {
      plan.foreign = true;
      break;
    }
    const decision = decideApply(tip, entry);
    if (decision.type === 'repair') {
      plan.repair = decision;
      break;
    }
    if (decision.type === 'skip' || decision.type === 'refuse') {
      plan.skipped += 1;
      if (decision.type === 'refuse') plan.refused += 1;
      continue;
    }
    plan.run.push(entry);
    tip = { appliedIndex: entry.index, appliedHash: entry.hash, fence: tip.fence };
  }
  return plan;
}

/**
 * Applies a replica region's copy of each shard's log: strictly in index order, exactly once
 * per (shard, index), verifying the hash chain. A gap or a corrupt entry is repaired by
 * reading the missing range from the home log, so queue faults cannot break the copy.
 */
export class ReplicaApplier {
  /**
   * Per shard, the progress this applier last read or wrote. A delivery that continues it
   * starts there instead of reading: the apply transaction is conditional on that progress, so
   * a stale one costs a re-read, never a wrong apply. A message skipped because a stale value
   * said it was applied is no worse than a lost message: the replica heartbeat pulls any shard
   * whose progress stays behind the home head.
   */
  readonly #known = new Map<number, ReplicaProgress>();
  readonly #packItemsMax: number;

  constructor(
    private readonly replica: DynamoReplicaStore,
    private readonly home: Store,
    private readonly clock: Clock,
    options: ReplicaApplierOptions = {},
  ) {
    const packItemsMax = options.packItemsMax ?? packItemsMaxDefault;
    const { min, max } = packItemsBounds;
    if (!Number.isInteger(packItemsMax) || packItemsMax < min || packItemsMax > max) {
      throw new RangeError(`packItemsMax must be an integer in ${min}..${max} (a run of one entry is ${min} items; a transaction holds ${max}), got ${packItemsMax}`);
    }
    this.#packItemsMax = packItemsMax;
  }

  /**
   * Delivers the messages of several shards (one queue batch): the shards whose messages
   * continue the progress this applier knows go in shared transactions — one for the whole
   * batch when it fits in `packItemsMax` items, else several in parallel — instead of one each;
   * the others, and any whose shared transaction failed, go through `deliver` one shard at a
   * time. Each shard gets its result or its error.
   */
  async deliverAll(groups: ReadonlyMap<number, readonly LogEntry[]>): Promise<Map<number, DeliveryResult | DeliveryError>> {
    const outcomes = new Map<number, DeliveryResult | DeliveryError>();
    const shared: { shard: number; from: ReplicaProgress; entries: LogEntry[]; plan: RunPlan }[] = [];
    const alone: number[] = [];
    for (const [shard, entries] of groups) {
      const known = this.#known.get(shard);
      const plan = known === undefined ? undefined : planRun(known, shard, entries, 0);
      // Unknown progress, a gap, a wrong shard or a run too big for one transaction: `deliver` handles it.
      if (known === undefined || plan === undefined || plan.repair !== undefined || plan.foreign || chunkRuns(plan.run).length > 1) alone.push(shard);
      else if (plan.run.length === 0) outcomes.set(shard, { applied: 0, skipped: plan.skipped, repaired: 0, refused: plan.refused });
      else shared.push({ shard, from: known, entries: plan.run, plan });
    }
    const { applied, failed } = await this.#applyShared(shared);
    for (const run of applied) outcomes.set(run.shard, { applied: run.entries.length, skipped: run.plan.skipped, repaired: 0, refused: run.plan.refused });
    alone.push(...failed);
    await Promise.all(
      alone.map(async (shard) => {
        try {
          outcomes.set(shard, await this.deliver(shard, groups.get(shard) ?? []));
        } catch (error) {
          outcomes.set(shard, error instanceof DeliveryError ? error : new DeliveryError(0, error));
        }
      }),
    );
    return outcomes;
  }

  /**
   * Applies runs of several shards, packed into as few transactions as fit (in shard order, so
   * the same runs pack the same way). The shards of a transaction that failed — a progress moved
   * meanwhile, or the outcome is unknown — come back to be handled one by one, looking first.
   */
  async #applyShared<T extends { shard: number; from: ReplicaProgress; entries: readonly LogEntry[] }>(runs: T[]): Promise<{ applied: T[]; failed: number[] }> {
    const applied: T[] = [];
    const failed: number[] = [];
    await Promise.all(
      packRuns([...runs].sort((a, b) => a.shard - b.shard), this.#packItemsMax).map(async (pack) => {
        try {
          const progress = await this.replica.applyRuns(pack, this.clock.wallMs());
          for (const [position, run] of pack.entries()) {
            this.#known.set(run.shard, progress[position] as ReplicaProgress);
            applied.push(run);
          }
        } catch {
          for (const run of pack) {
            this.#known.delete(run.shard);
            failed.push(run.shard);
          }
        }
      }),
    );
    return { applied, failed };
  }

  /** Delivers messages of one shard, in the order the queue handed them over. */
  async deliver(shard: number, entries: readonly LogEntry[]): Promise<DeliveryResult> {
    const result: DeliveryResult = { applied: 0, skipped: 0, repaired: 0, refused: 0 };
    const first = entries[0];
    const known = this.#known.get(shard);
    // Entries past what we know mean another applier moved on meanwhile (or a gap): look before pulling.
    let progress: ReplicaProgress = known !== undefined && (first === undefined || decideApply(known, first).type !== 'repair') ? known : await this.#read(shard);
    let position = 0;
    let moved = 0;
    while (position < entries.length) {
      const skippedBefore = result.skipped;
      const refusedBefore = result.refused;
      // A run of entries that each continue the chain: one transaction.
      const plan = planRun(progress, shard, entries, position);
      if (plan.foreign) throw new DeliveryError(plan.next, new AssertionError(`entry of shard ${(entries[plan.next] as LogEntry).shard} delivered in group ${shard}`));
      const { run, repair } = plan;
      result.skipped += plan.skipped;
      result.refused += plan.refused;
      try {
        if (run.length > 0) {
          progress = await this.#applyRun(shard, progress, run);
          result.applied += run.length;
        }
        if (repair !== undefined) {
          const before = progress.appliedIndex;
          progress = await this.#repair(shard, progress, repair.toIndex);
          result.repaired += progress.appliedIndex - before;
          if (progress.appliedIndex < repair.toIndex) {
            throw new Error(`shard ${shard}: the home log does not have index ${repair.toIndex} yet`);
          }
        }
        // Past the run, and past the repaired entry.
        position = plan.next + (repair === undefined ? 0 : 1);
      } catch (error) {
        if (error instanceof ProgressMovedError && moved < movedAttemptsMax) {
          moved += 1;
          // The rescan from `position` counts those skips again.
          result.skipped = skippedBefore;
          result.refused = refusedBefore;
          progress = await this.#read(shard);
          continue;
        }
        // Everything from the first entry not yet applied is reported as failed.
        const failedAt = entries.findIndex((entry, index) => index >= position && entry.index > progress.appliedIndex);
        throw new DeliveryError(failedAt === -1 ? position : failedAt, error);
      }
    }
    return result;
  }

  /**
   * Pulls several shards up to the home head at once: one log read per shard, and the runs
   * that fit share transactions (one for all, when they fit). A shard whose shared transaction
   * failed, or that is further behind than one run, is pulled on its own. Resolves with the
   * entries pulled per shard, or the shard's error.
   */
  async pullAll(shards: readonly number[]): Promise<Map<number, number | Error>> {
    const outcomes = new Map<number, number | Error>();
    const shared: { shard: number; from: ReplicaProgress; entries: LogEntry[] }[] = [];
    const alone: number[] = [];
    await Promise.all(
      shards.map(async (shard) => {
        try {
          const from = this.#known.get(shard) ?? (await this.#read(shard));
          const entries = await this.#readHome(shard, from, runEntriesMax + 1);
          if (entries.length === 0) outcomes.set(shard, 0);
          else if (entries.length > runEntriesMax || chunkRuns(entries).length > 1) alone.push(shard);
          else shared.push({ shard, from, entries });
        } catch (error) {
          // Behind the home's compaction point: the repair seeds it from a snapshot.
          if (error instanceof SnapshotNeededError) alone.push(shard);
          else outcomes.set(shard, error instanceof Error ? error : new Error(String(error)));
        }
      }),
    );
    const { applied, failed } = await this.#applyShared(shared);
    for (const run of applied) outcomes.set(run.shard, run.entries.length);
    alone.push(...failed);
    await Promise.all(
      alone.map(async (shard) => {
        try {
          outcomes.set(shard, await this.repair(shard));
        } catch (error) {
          outcomes.set(shard, error instanceof Error ? error : new Error(String(error)));
        }
      }),
    );
    return outcomes;
  }

  /** Pulls the shard's missing entries from the home log up to `toIndex` (or its head). */
  async repair(shard: number, toIndex?: number): Promise<number> {
    for (let attempt = 0; ; attempt += 1) {
      const progress = (attempt === 0 ? this.#known.get(shard) : undefined) ?? (await this.#read(shard));
      try {
        const after = await this.#repair(shard, progress, toIndex);
        return after.appliedIndex - progress.appliedIndex;
      } catch (error) {
        if (!(error instanceof ProgressMovedError) || attempt >= movedAttemptsMax) throw error;
      }
    }
  }

  async #repair(shard: number, from: ReplicaProgress, toIndex: number | undefined): Promise<ReplicaProgress> {
    let progress = from;
    while (toIndex === undefined || progress.appliedIndex < toIndex) {
      const limit = toIndex === undefined ? repairEntriesMax : Math.min(repairEntriesMax, toIndex - progress.appliedIndex);
      let entries: LogEntry[];
      try {
        entries = await this.#readHome(shard, progress, limit);
      } catch (error) {
        if (!(error instanceof SnapshotNeededError)) throw error;
        // The entries it needs are compacted at home: take the shard's items at an index instead, then follow the log.
        const seeded = await this.#seed(shard, progress);
        if (seeded.appliedIndex <= progress.appliedIndex) throw new Error(`shard ${shard}: a snapshot seed did not move the replica past ${progress.appliedIndex}`, { cause: error });
        progress = seeded;
        continue;
      }
      if (entries.length === 0) break;
      progress = await this.#applyRun(shard, progress, entries);
      if (entries.length < limit) break;
    }
    return progress;
  }

  /** The home log's entries after `progress`, at most `limit`, verified to continue its chain. */
  async #readHome(shard: number, progress: ReplicaProgress, limit: number): Promise<LogEntry[]> {
    const entries = await this.home.readLog(shard, progress.appliedIndex + 1, limit);
    // The log is dense above its compaction point: a first entry past the one asked for means the rest is compacted.
    const first = entries[0];
    if (first !== undefined && first.index > progress.appliedIndex + 1) throw new SnapshotNeededError(shard, progress.appliedIndex, first.index);
    const fenced = entries.find((entry) => isFencedOff(progress.fence, entry));
    if (fenced !== undefined) throw new AssertionError(`shard ${shard}: the home region this replica pulls from wrote index ${fenced.index} under a fenced cluster epoch; it is not home any more (deploy with the promoted home)`);
    const check = verifyChain(entries, { index: progress.appliedIndex, hash: progress.appliedHash });
    // The home log is the source of truth: if it does not continue our verified prefix,
    // something is corrupt and applying more would spread it.
    if (!check.ok) throw new AssertionError(`shard ${shard}: the home log does not continue the replica's chain: ${check.reason}`);
    return entries;
  }

  /** Shards seeded from a snapshot by this applier (a replica or region that fell behind the home's compaction point). */
  seeds = 0;

  async #seed(shard: number, from: ReplicaProgress): Promise<ReplicaProgress> {
    try {
      const seeded = await seedReplica(this.replica, homeSource(this.home), shard, from, this.clock);
      this.seeds += 1;
      this.#known.set(shard, seeded.progress);
      return seeded.progress;
    } catch (error) {
      // Moved by someone else, or the outcome is unknown: look next time.
      this.#known.delete(shard);
      throw error;
    }
  }

  async #read(shard: number): Promise<ReplicaProgress> {
    const progress = await this.replica.readProgress(shard);
    this.#known.set(shard, progress);
    return progress;
  }

  async #applyRun(shard: number, from: ReplicaProgress, entries: readonly LogEntry[]): Promise<ReplicaProgress> {
    try {
      const progress = await this.replica.applyRun(shard, from, entries, this.clock.wallMs());
      this.#known.set(shard, progress);
      return progress;
    } catch (error) {
      // Moved by someone else, or the outcome is unknown: look next time.
      this.#known.delete(shard);
      throw error;
    }
  }
}
