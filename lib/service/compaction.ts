import type { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import type { Clock } from '../clock.ts';
import { decideCompaction, replicaCompactionPoint, type HoldBounds, type RetentionPolicy } from '../core/compaction.ts';
import type { Store } from '../ports/store.ts';

/**
 * Carries out log compaction (decided in lib/core/compaction.ts): the shard leader trims the
 * home log, and each replica region's heartbeat trims its own copy behind the home's point.
 * Both record the point before deleting below it, and delete a bounded number of entries per
 * run: a run that dies part way leaves a log that the next run goes on trimming.
 */

/** Entries deleted per shard per run at most: 8 BatchWriteItem requests of 25. */
export const trimEntriesPerRunMax = 200;
/** Oldest entries read per shard per run for the age bound. */
const ageSampleEntriesMax = 100;

export interface CompactionRunSummary {
  /** Shards whose compaction point moved. */
  advanced: number;
  /** Entries deleted. */
  trimmed: number;
}

/** The shard leader's duty: keep each shard it leads within the retention. */
export class LogCompactor {
  /** Per shard: every entry at or below this is known deleted (by this compactor), so no trim is sent. */
  readonly #cleanThrough = new Map<number, number>();

  constructor(
    private readonly options: {
      store: Store;
      policy: RetentionPolicy;
      hold: HoldBounds;
      clock: Clock;
      log: (line: string) => void;
      /** Names the caller in log lines. */
      label: string;
      /**
       * Runs a write to the shard's compaction point between the leader's own group commits of
       * the shard: each commit condition-checks that item (the log floor), and on DynamoDB a
       * write to an item an in-flight transaction checks fails (TransactionConflictException).
       */
      turn?: <T>(shard: number, work: () => Promise<T>) => Promise<T>;
    },
  ) {}

  /** One run over the shards this leader leads; `replicaRegions` are the cluster's. */
  async run(shards: readonly number[], replicaRegions: readonly string[]): Promise<CompactionRunSummary> {
    const summary: CompactionRunSummary = { advanced: 0, trimmed: 0 };
    if (shards.length === 0) return summary;
    const { store, policy, hold, clock, log, label } = this.options;
    const [points, heads] = await Promise.all([store.readCompactions(), Promise.all(shards.map(async (shard) => ({ shard, head: await store.readHead(shard) })))]);
    // Only a shard with more than its head above its point, or deletes left below it, has anything
    // to do: the others cost no more reads.
    const candidates = heads.flatMap(({ shard, head }) => {
      const recorded = points.get(shard) ?? 0;
      return head !== undefined && (head.index - 1 > recorded || (this.#cleanThrough.get(shard) ?? 0) < recorded) ? [{ shard, head }] : [];
    });
    if (candidates.length === 0) return summary;
    const [reports, inSyncSets] = await Promise.all([
      replicaRegions.length === 0 ? Promise.resolve([]) : store.readReplicaReports(),
      replicaRegions.length === 0 ? Promise.resolve([]) : store.readInSyncSets(),
    ]);
    await Promise.all(
      candidates.map(async ({ shard, head }) => {
        const recorded = points.get(shard) ?? 0;
        const nowMs = clock.wallMs();
        const oldest = head.index - recorded > 1 ? await store.readLogTimes(shard, recorded + 1, ageSampleEntriesMax) : [];
        const decision = decideCompaction(
          {
            headIndex: head.index,
            compactedThrough: recorded,
            oldest,
            replicaRegions,
            standings: reports.filter((report) => report.shard === shard).map((report) => ({ region: report.region, appliedIndex: report.appliedIndex, reportAgeMs: nowMs - report.reportedAtMs })),
            inSyncRegions: inSyncSets.find((set) => set.shard === shard)?.regions ?? [],
            nowMs,
          },
          policy,
          hold,
        );
        let through = recorded;
        if (decision.compactedThrough > recorded) {
          const record = () => store.recordCompaction(shard, decision.compactedThrough, nowMs);
          through = await (this.options.turn === undefined ? record() : this.options.turn(shard, record));
          summary.advanced += 1;
          if (decision.leftBehind.length > 0) log(`${label} shard ${shard}: compacted through ${through} (head ${head.index}); ${decision.leftBehind.join(', ')} left behind: seeded from a snapshot when it returns`);
        }
        summary.trimmed += await this.#trim(shard, through);
      }),
    );
    return summary;
  }

  async #trim(shard: number, through: number): Promise<number> {
    if ((this.#cleanThrough.get(shard) ?? 0) >= through) return 0;
    const trimmed = await this.options.store.trimLog(shard, through, trimEntriesPerRunMax);
    // Fewer than asked: nothing at or below `through` is left.
    if (trimmed < trimEntriesPerRunMax) this.#cleanThrough.set(shard, through);
    return trimmed;
  }
}

/**
 * A replica region's duty: its copy of each shard's log follows the home's compaction point,
 * keeping its own head (replicaCompactionPoint).
 */
export class ReplicaLogCompactor {
  readonly #cleanThrough = new Map<number, number>();

  constructor(
    private readonly home: Store,
    private readonly replica: DynamoReplicaStore,
    private readonly clock: Clock,
  ) {}

  /** One run: `applied` is each shard's applied index in this region. */
  async run(applied: ReadonlyMap<number, number>): Promise<CompactionRunSummary> {
    const summary: CompactionRunSummary = { advanced: 0, trimmed: 0 };
    // Read every run, not remembered: a snapshot seed (in the apply function) moves the region's point too.
    const [homePoints, ownPoints] = await Promise.all([this.home.readCompactions(), this.replica.readCompactions()]);
    await Promise.all(
      [...applied].map(async ([shard, appliedIndex]) => {
        let own = ownPoints.get(shard) ?? 0;
        const target = replicaCompactionPoint(homePoints.get(shard) ?? 0, appliedIndex, own);
        if (target > own) {
          own = await this.replica.recordCompaction(shard, target, this.clock.wallMs());
          summary.advanced += 1;
        }
        if ((this.#cleanThrough.get(shard) ?? 0) >= own) return;
        const trimmed = await this.replica.trimLog(shard, own, trimEntriesPerRunMax);
        if (trimmed < trimEntriesPerRunMax) this.#cleanThrough.set(shard, own);
        summary.trimmed += trimmed;
      }),
    );
    return summary;
  }
}
