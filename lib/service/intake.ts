import { backoffMs, sleep, type Clock } from '../clock.ts';
import { pickGroup } from '../core/group.ts';
import { limits } from '../core/limits.ts';
import { sealEntry, transactionBytesOf, type LogEntry, type Operation } from '../core/log.ts';
import { HeadConflictError, StaleEpochError, TransactionRaceError, VersionConflictError, WithdrawnError } from '../ports/errors.ts';
import type { CommitRequest, IntakeWrite, LogHead, Store } from '../ports/store.ts';

/**
 * The shard leader as the shard's single writer.
 *
 * On Lambda every API execution environment serves one request at a time, so concurrent writers
 * of a shard cannot share an in-process group commit: each would race for the next log index,
 * and most would lose (docs/aws-model.md has the figures). Instead, a writer that finds its
 * shard busy deposits its write in the shard's intake (items of the home `control` table) and
 * waits for the outcome; the shard's leader drains the intake in groups, each ONE fenced
 * transaction (the lease-epoch check, then per write its log entry, kv change and intake mark),
 * so one transaction per shard is in flight at a time however many writers there are.
 *
 * Exactly once: the intake mark is conditional on the write still being pending, in the same
 * transaction as its log entry, so no write is committed twice (by two leaders, or after a
 * timeout) and none after its writer withdrew it.
 */

export interface IntakeCommitterOptions {
  store: Store;
  shard: number;
  /** The leader's epoch: every group is committed under it; a stale one ends the committer. */
  epoch: number;
  clock: Clock;
  log: (line: string) => void;
  /** Sends a committed entry to the replica queues (in log order; not awaited). */
  ship?: ((entry: LogEntry) => void) | undefined;
  /** How often an idle intake is read. */
  idlePollMs: number;
  /** How often a busy intake is read when a read came back empty. */
  busyPollMs: number;
  /** An intake that had writes this recently counts as busy. */
  busyForMs: number;
  random?: () => number;
}

export interface IntakeStats {
  /** Intake reads (consistent Queries). */
  reads: number;
  /** Transactions sent, and how many DynamoDB refused (lost races, refused conditions, withdrawn writes). */
  commits: number;
  failedCommits: number;
  committedWrites: number;
  refusedWrites: number;
  withdrawnWrites: number;
}

/** Intake writes read per drain: enough for the next group and then some. */
const intakeReadMax = 100;

/** The bytes a leader-committed write adds to its transaction: log entry, kv item and the intake mark. */
function intakeBytesOf(write: IntakeWrite): number {
  return transactionBytesOf([operationOf(write)]) + limits.itemOverheadBytesMax + 3 * write.change.key.length;
}

function operationOf(write: IntakeWrite): Operation {
  const { change } = write;
  return change.type === 'put' ? { type: 'put', key: change.key, value: change.value } : { type: 'delete', key: change.key };
}

/** Drains one shard's intake for one leader epoch, until stopped or fenced. */
export class IntakeCommitter {
  readonly stats: IntakeStats = { reads: 0, commits: 0, failedCommits: 0, committedWrites: 0, refusedWrites: 0, withdrawnWrites: 0 };
  readonly #stop = new AbortController();

  constructor(private readonly options: IntakeCommitterOptions) {}

  get epoch(): number {
    return this.options.epoch;
  }

  stop(): void {
    this.#stop.abort();
  }

  /** The work that touches the shard's lease item, one at a time (see exclusive). */
  #turns: Promise<unknown> = Promise.resolve();

  /**
   * Runs `work` when no group commit of this committer is in flight, and holds the next one
   * until it is done. On DynamoDB a write to an item that an in-flight transaction condition-
   * checks fails (TransactionConflictException), and every group commit checks the lease: the
   * leader renews its lease through here, so its own commits never make its renewal fail.
   * (DynamoDB Local runs transactions one at a time and never reports such conflicts.)
   */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const turn = this.#turns.then(work, work);
    this.#turns = turn.catch(() => undefined);
    return turn;
  }

  get stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  /** Runs until stopped ('stopped') or until the lease moved to another epoch ('stale'). */
  async run(): Promise<'stopped' | 'stale'> {
    const { store, shard, epoch, clock } = this.options;
    const random = this.options.random ?? Math.random;
    let head: LogHead | undefined = await store.readHead(shard);
    let busyUntilMs = Number.NEGATIVE_INFINITY;
    let failures = 0;
    let emptyReads = 0;
    // The next read of the intake, sent while a group's transaction is in flight (it overlaps
    // the commit's latency), and the ids of that group, which it may still see as pending.
    let prefetched: Promise<IntakeWrite[]> | undefined;
    let inFlight = new Set<string>();
    const read = (): Promise<IntakeWrite[]> => {
      this.stats.reads += 1;
      return store.readIntake(shard, intakeReadMax);
    };
    while (!this.stopped) {
      let pending: IntakeWrite[];
      try {
        pending = (await (prefetched ?? read())).filter((write) => !inFlight.has(write.id));
      } catch (error) {
        this.options.log(`shard ${shard} epoch ${epoch}: intake read failed: ${String(error)}`);
        prefetched = undefined;
        await sleep(this.options.idlePollMs);
        continue;
      }
      prefetched = undefined;
      inFlight = new Set();
      if (pending.length === 0) {
        // Busy: look again soon, backing off while the intake stays empty (each look is a read).
        const busy = clock.monotonicMs() < busyUntilMs;
        await sleep(busy ? Math.min(this.options.idlePollMs, this.options.busyPollMs * 2 ** Math.min(emptyReads, 10)) : this.options.idlePollMs);
        emptyReads += 1;
        continue;
      }
      emptyReads = 0;
      busyUntilMs = clock.monotonicMs() + this.options.busyForMs;
      const { group } = pickGroup(pending, (write) => ({ key: write.change.key, epoch, bytes: intakeBytesOf(write) }), {
        writesMax: limits.intakeGroupWritesMax,
        bytesMax: limits.transactionBytesMax,
      });
      // More than one write waiting: several writers at the shard. Writers learn it from their
      // outcome and from the head entry, and keep coming to the intake meanwhile.
      const contended = pending.length > 1;
      let previous = head;
      const requests: CommitRequest[] = group.map((write) => {
        const entry = sealEntry(previous, {
          shard,
          index: (previous?.index ?? 0) + 1,
          epoch,
          ops: [operationOf(write)],
          requestId: write.requestId,
          committedAtMs: clock.wallMs(),
        });
        previous = entry;
        return { entry, kv: { change: write.change, precondition: write.precondition }, intake: { id: write.id, contended } };
      });
      try {
        this.stats.commits += 1;
        const committing = this.exclusive(() => store.commitGroup(requests));
        // Writes beyond this group wait for the next; read them now, not after the commit.
        if (pending.length > group.length) {
          inFlight = new Set(group.map((write) => write.id));
          prefetched = read();
          prefetched.catch(() => undefined);
        }
        const outcome = await committing;
        if (!outcome.committed) {
          this.stats.failedCommits += 1;
          // Nothing committed: settle the refused writes; the others go in the next group, at the same head.
          await Promise.all(
            [...outcome.refused.entries()].map(async ([position, refusal]) => {
              const write = group[position]!;
              if (refusal instanceof WithdrawnError) {
                this.stats.withdrawnWrites += 1;
                return;
              }
              this.stats.refusedWrites += 1;
              const currentVersion = refusal instanceof VersionConflictError ? refusal.currentVersion : undefined;
              await store.refuseIntake(shard, write.id, { code: refusal.code, message: refusal.message, currentVersion }, clock.wallMs());
            }),
          );
          // The prefetch may predate the refusals: read again.
          prefetched = undefined;
          inFlight = new Set();
          continue;
        }
        failures = 0;
        head = previous;
        this.stats.committedWrites += requests.length;
        for (const { entry } of requests) this.options.ship?.(entry);
      } catch (error) {
        this.stats.failedCommits += 1;
        // Whatever the prefetch saw, a group that may or may not have landed is re-read (its marks tell).
        prefetched = undefined;
        inFlight = new Set();
        if (error instanceof StaleEpochError) return 'stale';
        failures += 1;
        // IdempotentParameterMismatch: another committer of this epoch (an overlapping invocation) sent the same group first.
        if (!(error instanceof HeadConflictError || error instanceof TransactionRaceError || (error as { name?: string }).name === 'IdempotentParameterMismatchException')) {
          this.options.log(`shard ${shard} epoch ${epoch}: intake commit failed: ${String(error)}`);
        }
        // Another writer moved the head (a direct write), or the outcome is unknown: the log
        // tells where it is now. Any of our writes that landed are marked, so not read again.
        await sleep(backoffMs(failures, limits.retryBackoffMsBase, limits.retryBackoffMsMax, random));
        head = await store.readHead(shard).catch(() => head);
      }
    }
    return 'stopped';
  }
}
