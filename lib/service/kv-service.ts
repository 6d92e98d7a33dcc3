import { randomUUID } from 'node:crypto';
import { backoffMs, sleep, within, type Clock } from '../clock.ts';
import type { WritePath } from '../config.ts';
import { pickGroup } from '../core/group.ts';
import { limits } from '../core/limits.ts';
import type { LeaseRecord } from '../core/lease.ts';
import { sealEntry, transactionBytesOf, type LogEntry, type Operation } from '../core/log.ts';
import { mergeToken, type SessionToken } from '../core/session.ts';
import type { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import type { Shipper, ShipOutcome } from '../adapters/aws/replication.ts';
import { ackMet, ackRequirement, modeStrength, replicationModes, type AckRequirement, type ReplicationMode } from '../core/replication.ts';
import { shardOf } from '../core/shard.ts';
import { checkTxnFits, comparesHold, txnKeys, type TxnRequest } from '../core/txn.ts';
import {
  EpochKvError,
  HeadConflictError,
  NoLeaderError,
  CompactedError,
  NotFoundError,
  OutcomeUnknownError,
  ReplicationUnmetError,
  FenceRejectedError,
  IdempotencyRaceError,
  RetriesExhaustedError,
  SnapshotChangedError,
  StaleEpochError,
  TooManyRequestsError,
  TransactionRaceError,
  TxnTooLargeError,
  ValidationError,
  VersionConflictError,
} from '../ports/errors.ts';
import type { IdempotencyRecord, IntakeOutcome, KvChange, KvItem, ListPage, LogHead, Precondition, Store, TxnCommit } from '../ports/store.ts';

/** How often a watch re-reads the log while there is nothing new. */
const watchPollMs = 100;
/** A prefix watch across shards reads every shard's log each round: less often. */
const prefixWatchPollMs = 250;

/** How often a write waiting for a live leader re-reads the lease. */
const leaderPollMs = 25;

export interface WriteResult {
  key: string;
  shard: number;
  version: number;
  epoch: number;
  index: number;
  /** The mode the write was acknowledged under and the replica regions whose queue has the entry. */
  replication: { mode: ReplicationMode; acceptedBy: string[] };
}

export type TxnOpResult =
  | { op: 'put' | 'delete'; key: string; version: number }
  | { op: 'get'; key: string; found: true; value: Uint8Array; version: number }
  | { op: 'get'; key: string; found: false };

export interface TxnResult {
  succeeded: boolean;
  results: TxnOpResult[];
  token: SessionToken;
  /** Each shard's entry the commit wrote (none for a branch without writes). */
  parts?: { shard: number; index: number; epoch: number }[];
  acceptedBy?: string[];
}

/** A request's Idempotency-Key: its first answer is stored with the commit (see IdempotencyRecord). */
export interface Idempotency {
  key: string;
  fingerprint: string;
  /** The answer the caller will give for this result: stored, so a repeat gets exactly it. */
  answer(result: TxnResult): { status: number; body: string };
}

/** A write's fence: the lock key must be at exactly this version (its token) at the commit. */
export interface Fence {
  key: string;
  token: number;
  /** For messages: `lock "cron"`. */
  what: string;
}

export interface ServiceOptions {
  shardCount: number;
  leaseMs: number;
  tickMs: number;
  /** The cluster's mode; default async. */
  replication?: ReplicationMode;
  /** Every replica region (quorum counts them all); default: the shipper's. */
  replicaRegions?: string[];
  /**
   * 'intake' (default): a write commits itself while its shard is quiet and is handed to the
   * shard's leader once the shard is busy (lib/service/intake.ts); 'leader': every async write
   * goes to the leader; 'direct': every write races for the next index itself, as before.
   * The last two are kept for comparisons and tests.
   */
  writePath?: WritePath;
}


export interface WriteOptions {
  /** Stronger than the cluster's mode for this write; a weaker one is refused (400). */
  replication?: ReplicationMode | undefined;
}

export type Consistency = 'strong' | 'session' | 'eventual';
export const consistencies: readonly Consistency[] = ['strong', 'session', 'eventual'];

/** This region's copy, when the service runs in a replica region. */
export interface LocalReplica {
  /** The replica region's log and kv tables (read side only). */
  store: Store;
  progress: DynamoReplicaStore;
}

export interface ReadResult {
  item: KvItem | undefined;
  token: SessionToken;
  /** Which copy answered: the home table or this region's replica. */
  servedBy: 'home' | 'replica';
}

/** How long a shard counts as busy for an API instance after its last sign of other writers (the leader polls fast twice as long). */
export function intakeStickMs(tickMs: number): number {
  return Math.max(1_000, 4 * tickMs);
}

/**
 * Lost direct races before a write goes to its shard's leader instead. One: the head a direct
 * write uses was read or written within a tick, so losing the race means another writer wrote
 * in that tick.
 */
const directRacesBeforeIntake = 1;
/** Bounds of the wait between looks at an intake write's outcome; the first look comes after the leader's recent commit delay. */
const intakePollMsMin = 3;
const intakePollMsMax = 100;
const intakeCommitDelayMsInitial = 20;
const intakeWaitFirstMsMax = 1_000;

/** How long a session read waits for the local replica to reach the token, polling every 20 ms. */
const sessionWaitMs = 500;
const sessionPollMs = 20;

/**
 * How long a strong answer waits for a pending quorum/all write to become durable: its writer
 * waits up to replicationAckMs for the replica queues, then clears the mark.
 */
const pendingWaitMs = limits.replicationAckMs + 500;
const pendingPollMs = 25;

/** A write waiting for its shard's next group commit. */
interface PendingWrite {
  change: KvChange;
  precondition: Precondition;
  operation: Operation;
  requestId: string;
  /** The lease epoch the writer read: a group shares one. */
  epoch: number;
  mode: ReplicationMode;
  /** The entry of its last commit attempt: after a timeout, the log tells whether it committed. */
  entry: LogEntry | undefined;
}

interface Committed {
  entry: LogEntry;
  replicated: Promise<string[]>;
}

interface Queued {
  write: PendingWrite;
  resolve: (committed: Committed) => void;
  reject: (error: unknown) => void;
}

/** Takes the next group off the front of a shard's queue (see pickGroup); the rest keep their places. */
function takeGroup(queue: Queued[]): Queued[] {
  const { group, left } = pickGroup(
    queue,
    ({ write }) => ({ key: write.change.key, epoch: write.epoch, bytes: transactionBytesOf([write.operation]) }),
    { writesMax: limits.commitGroupWritesMax, bytesMax: limits.transactionBytesMax },
  );
  queue.splice(0, queue.length, ...left);
  return group;
}

interface CachedHead {
  head: LogHead | undefined;
  readAtMs: number;
  /** This instance wrote the head entry itself. */
  own: boolean;
}

interface CachedLease {
  record: LeaseRecord | undefined;
  readAtMs: number;
}

/**
 * The write and read paths of the stateless API. The lease and the head index are cached
 * per instance to save reads; the transaction's conditions are what make a write safe, so a
 * stale cache costs a retry, never correctness.
 */
export class KvService {
  readonly #leases = new Map<number, CachedLease>();
  /** A lease re-read in flight per shard: concurrent writers of a shard share it. */
  readonly #leaseReads = new Map<number, Promise<CachedLease>>();
  /** The head this instance last read or wrote per shard; trusted for a tick (others write too). */
  readonly #heads = new Map<number, CachedHead>();
  /** Until when (monotonic ms) a shard counts as busy here: its writes go through the leader's intake. */
  readonly #busyUntilMs = new Map<number, number>();
  /** How long the leader recently took to seal an intake write after its deposit, per shard (ms, smoothed): when to look for the outcome. */
  readonly #intakeCommitDelayMs = new Map<number, number>();
  /** Writes waiting for their shard's committer in this instance; a shard has a queue while its committer runs (see #enqueue). */
  readonly #pendingWrites = new Map<number, Queued[]>();
  readonly #inSyncSets = new Map<number, { regions: string[]; readAtMs: number }>();
  #watching = 0;

  constructor(
    readonly store: Store,
    readonly options: ServiceOptions,
    private readonly clock: Clock,
    private readonly replication: { shipper?: Shipper | undefined; local?: LocalReplica | undefined; log?: (line: string) => void } = {},
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * Fault injection (chaos suite, local cloud only): awaited after the lease is read and before
   * the head is read and the entry committed, so a test can freeze a writer holding an epoch
   * while leadership moves.
   */
  beforeCommit: ((shard: number, epoch: number) => Promise<void>) | undefined;

  /** True when this service runs in a replica region. */
  isReplica(): boolean {
    return this.replication.local !== undefined;
  }

  /**
   * strong: the home table with ConsistentRead (linearizable, from any region). eventual: this
   * region's table. session: this region's replica once it has applied the token's index for
   * the key's shard (bounded wait), else strong. The returned token records what was observed.
   */
  async read(key: string, consistency: Consistency, token: SessionToken): Promise<ReadResult> {
    const shard = this.shardOf(key);
    const local = this.replication.local;
    if (consistency === 'eventual') {
      const found = await (local?.store ?? this.store).getItem(shard, key, false);
      // eventual promises nothing of durability; a tombstone is a missing key to every reader.
      const item = found?.tombstone === true ? undefined : found;
      return { item, token: mergeToken(token, shard, item?.index ?? 0), servedBy: local === undefined ? 'home' : 'replica' };
    }
    if (consistency === 'session' && local !== undefined) {
      const needed = token[shard] ?? 0;
      const waitStartMs = this.clock.monotonicMs();
      let progress = await local.progress.readProgress(shard);
      while (progress.appliedIndex < needed && this.clock.monotonicMs() - waitStartMs < sessionWaitMs) {
        await sleep(sessionPollMs);
        progress = await local.progress.readProgress(shard);
      }
      if (progress.appliedIndex >= needed) {
        // Progress and kv change move in one transaction: a consistent read of the item now
        // sees at least the state at appliedIndex.
        const found = await local.store.getItem(shard, key, true);
        // A multi-shard transaction's item is shown only once this replica holds every part:
        // a session never sees half a transaction (else the home table answers).
        if (found?.txnParts === undefined || (await this.#replicaHolds(found.txnParts, waitStartMs))) {
          let observed = mergeToken(token, shard, Math.max(progress.appliedIndex, found?.index ?? 0));
          for (const part of found?.txnParts ?? []) observed = mergeToken(observed, part.shard, part.index);
          return { item: found?.tombstone === true ? undefined : found, token: observed, servedBy: 'replica' };
        }
      }
    }
    const item = await this.#durableState(shard, key, await this.store.getItem(shard, key, true), 'read');
    // A missing key says nothing about the index observed: take the head, so a later session
    // read cannot see the key come back from an older state.
    const observed = item?.index ?? (await this.store.readHead(shard))?.index ?? 0;
    return { item, token: mergeToken(token, shard, observed), servedBy: 'home' };
  }

  shardOf(key: string): number {
    return shardOf(key, this.options.shardCount);
  }

  /** Whether this region's replica has applied every part, waiting within the session read's bound. */
  async #replicaHolds(parts: { shard: number; index: number }[], waitStartMs: number): Promise<boolean> {
    const local = this.replication.local;
    if (local === undefined) return false;
    for (;;) {
      const progress = await Promise.all(parts.map((part) => local.progress.readProgress(part.shard)));
      if (parts.every((part, position) => (progress[position]?.appliedIndex ?? 0) >= part.index)) return true;
      if (this.clock.monotonicMs() - waitStartMs >= sessionWaitMs) return false;
      await sleep(sessionPollMs);
    }
  }

  /** The mode a write runs under: the cluster's, or a stronger one the caller asked for. */
  replicationFor(requested: ReplicationMode | undefined): ReplicationMode {
    const cluster = this.options.replication ?? 'async';
    if (requested === undefined) return cluster;
    if (modeStrength(requested) < modeStrength(cluster)) {
      throw new ValidationError('replication', `this cluster replicates in ${cluster} mode; a write may ask for a stronger mode (${replicationModes.filter((mode) => modeStrength(mode) >= modeStrength(cluster)).join(' or ')}), not ${requested}`);
    }
    return requested;
  }

  async write(change: KvChange, precondition: Precondition, writeOptions: WriteOptions = {}): Promise<WriteResult> {
    const mode = this.replicationFor(writeOptions.replication);
    const shard = this.shardOf(change.key);
    const requestId = randomUUID();
    const operation: Operation = change.type === 'put' ? { type: 'put', key: change.key, value: change.value } : { type: 'delete', key: change.key };
    // quorum/all writes stay on the direct path: they wait for their replica queues themselves.
    const writePath = this.options.writePath ?? 'intake';
    const intake = mode === 'async' && writePath !== 'direct';
    if (intake && (writePath === 'leader' || this.#isBusy(shard) || (await this.#leaderIsCommitting(shard)))) return this.#writeThroughIntake(shard, change, precondition, requestId);
    let lastRace: EpochKvError | undefined;
    let races = 0;
    for (let attempt = 0; attempt < limits.writeAttemptsMax; attempt += 1) {
      if (attempt > 0) await sleep(backoffMs(attempt, limits.retryBackoffMsBase, limits.retryBackoffMsMax, this.random));
      const lease = await this.#liveLease(shard);
      if (this.beforeCommit !== undefined) await this.beforeCommit(shard, lease.epoch);
      const pending: PendingWrite = { change, precondition, operation, requestId, epoch: lease.epoch, mode, entry: undefined };
      try {
        const shipped = await this.#enqueue(shard, pending);
        const committed = shipped.entry;
        const acceptedBy = await shipped.replicated;
        return { key: change.key, shard, version: committed.index, epoch: committed.epoch, index: committed.index, replication: { mode, acceptedBy } };
      } catch (error) {
        if (error instanceof StaleEpochError) {
          this.#leases.delete(shard);
          lastRace = error;
        } else if (error instanceof HeadConflictError || error instanceof TransactionRaceError) {
          lastRace = error;
          races += 1;
          // Other writers are at the shard: hand the write to its leader rather than race again.
          if (intake && races >= directRacesBeforeIntake) {
            this.#markBusy(shard);
            return this.#writeThroughIntake(shard, change, precondition, requestId);
          }
        } else if (error instanceof EpochKvError) {
          if (error instanceof VersionConflictError || error instanceof NotFoundError) await this.#refusalIsDurable(shard, change.key);
          throw error;
        } else {
          // Not a refusal: a timeout or a dropped connection. The transaction may have
          // committed; the log tells, because the entry carries our request id.
          const entry = pending.entry;
          // No entry: the head read failed before anything was sent.
          if (entry === undefined) throw error;
          const stored = await this.store.readLogEntry(shard, entry.index).catch(() => undefined);
          if (stored?.requestId === requestId) {
            // Committed, but never shipped by us: ship it now, so quorum/all still hold.
            const acceptedBy = await this.#confirmed(stored, change, mode, this.#awaitReplication(stored, mode, this.#ship(stored)));
            return { key: change.key, shard, version: entry.index, epoch: entry.epoch, index: entry.index, replication: { mode, acceptedBy } };
          }
          // Not in the log now, but a timed-out transaction might still land (with its pending mark).
          if (stored === undefined) throw new OutcomeUnknownError(`the write to "${change.key}" may or may not have been applied: ${String(error)}`);
          lastRace = new HeadConflictError(shard, entry.index);
        }
      }
    }
    throw new RetriesExhaustedError(
      `the write to "${change.key}" lost ${limits.writeAttemptsMax} races in a row (${lastRace?.code ?? 'unknown'}) and was not applied; retry`,
    );
  }

  /**
   * A multi-key transaction (POST /txn). Every key it names is read in one serializable snapshot
   * (TransactGetItems); the compares pick the branch. A branch of gets only is answered from the
   * snapshot: a linearizable snapshot of its keys. A branch that writes commits in one
   * TransactWriteItems holding, per shard written, the lease-epoch check and that shard's next
   * log entry (multi-shard: each names every part), the writes, and a condition on every key read
   * that it still is as read: so the answer is linearizable at the commit. A lost race (a head
   * taken, a key changed) reads again; bounded like a single write.
   */
  async txn(request: TxnRequest, token: SessionToken, writeOptions: WriteOptions & { fence?: Fence | undefined; idempotency?: Idempotency | undefined } = {}): Promise<TxnResult> {
    const idempotency = writeOptions.idempotency;
    const recordOf = (result: TxnResult): IdempotencyRecord | undefined => {
      if (idempotency === undefined) return undefined;
      const mode = this.replicationFor(writeOptions.replication);
      const parts = (result.parts ?? []).map(({ shard, index }) => ({ shard, index }));
      return {
        key: idempotency.key,
        fingerprint: idempotency.fingerprint,
        ...idempotency.answer(result),
        expiresAtMs: this.clock.wallMs() + limits.idempotencyKeepMs,
        ...(mode !== 'async' && parts.length > 0 ? { durability: { mode, parts } } : {}),
      };
    };
    const fence = writeOptions.fence;
    const tooLarge = checkTxnFits(request, (key) => this.shardOf(key), fence === undefined ? 0 : 1);
    if (tooLarge !== undefined) throw new TxnTooLargeError(tooLarge.field, tooLarge.message);
    const mode = this.replicationFor(writeOptions.replication);
    const keys = [...new Set([...txnKeys(request), ...(fence === undefined ? [] : [fence.key])])].map((key) => ({ shard: this.shardOf(key), key }));
    let lastRace: EpochKvError | undefined;
    for (let attempt = 0; attempt < limits.writeAttemptsMax; attempt += 1) {
      if (attempt > 0) await sleep(backoffMs(attempt, limits.retryBackoffMsBase, limits.retryBackoffMsMax, this.random));
      const found = await this.store.readSnapshot(keys);
      const state = new Map<string, KvItem | undefined>();
      for (const [position, { shard, key }] of keys.entries()) {
        const item = found[position];
        // A pending quorum write in the snapshot is shown only once durable (else 503), as a read would.
        if (item?.pending !== undefined) await this.#durableState(shard, key, item, 'read');
        state.set(key, item?.tombstone === true ? undefined : item);
      }
      if (fence !== undefined && state.get(fence.key)?.version !== fence.token) {
        const current = state.get(fence.key)?.version;
        throw new FenceRejectedError(`${fence.what} is ${current === undefined ? 'not held' : `held with token ${current}`}, not ${fence.token}; nothing was written`, current);
      }
      const succeeded = comparesHold(request.compare, state);
      const branch = succeeded ? request.success : request.failure;
      let observed = token;
      for (const item of state.values()) if (item !== undefined) observed = mergeToken(observed, item.shard, item.index);
      const writes = branch.filter((op) => op.op !== 'get');
      if (writes.length === 0) {
        const result: TxnResult = { succeeded, token: observed, results: branch.map((op) => this.#getResult(op.key, state)) };
        // Nothing to commit: the answer is stored on its own (a read changes nothing to repeat).
        const record = recordOf(result);
        if (record !== undefined && !(await this.store.putIdempotency(record, this.clock.wallMs()))) throw new IdempotencyRaceError(record.key);
        return result;
      }
      const shards = [...new Set(writes.map((op) => this.shardOf(op.key)))].sort((a, b) => a - b);
      const txnId = randomUUID();
      try {
        const leases = await Promise.all(shards.map((shard) => this.#liveLease(shard)));
        if (this.beforeCommit !== undefined) for (const [position, shard] of shards.entries()) await this.beforeCommit(shard, leases[position]!.epoch);
        const heads = await Promise.all(shards.map((shard) => this.store.readHead(shard)));
        const parts = shards.map((shard, position) => ({ shard, index: (heads[position]?.index ?? 0) + 1 }));
        const committedAtMs = this.clock.wallMs();
        const entries = shards.map((shard, position) =>
          sealEntry(heads[position], {
            shard,
            index: parts[position]!.index,
            epoch: leases[position]!.epoch,
            ops: writes.filter((op) => this.shardOf(op.key) === shard).map((op): Operation => (op.op === 'put' ? { type: 'put', key: op.key, value: op.value } : { type: 'delete', key: op.key })),
            requestId: txnId,
            committedAtMs,
            ...(shards.length > 1 ? { txn: { id: txnId, parts } } : {}),
          }),
        );
        const entryOf = (key: string) => entries[shards.indexOf(this.shardOf(key))]!;
        // The fence is a read like the others: the lock must still be at its token at the commit.
        const readKeys = new Set([...request.compare.map((compare) => compare.key), ...branch.map((op) => op.key), ...(fence === undefined ? [] : [fence.key])]);
        let committed = observed;
        for (const entry of entries) committed = mergeToken(committed, entry.shard, entry.index);
        // The answer is known before the commit (versions are the entries' indexes): the
        // idempotency record goes into the same transaction.
        const result: TxnResult = {
          succeeded,
          token: committed,
          results: branch.map((op): TxnOpResult => (op.op === 'get' ? this.#getResult(op.key, state) : { op: op.op, key: op.key, version: entryOf(op.key).index })),
          parts: entries.map((entry) => ({ shard: entry.shard, index: entry.index, epoch: entry.epoch })),
          acceptedBy: [],
        };
        const record = recordOf(result);
        await this.#commitTxnOnce(
          {
            ...(record === undefined ? {} : { idempotency: record }),
            entries,
            reads: [...readKeys].map((key) => ({ shard: this.shardOf(key), key, version: state.get(key)?.version })),
            writes: writes.map((op) => ({
              shard: this.shardOf(op.key),
              change: op.op === 'put' ? { type: 'put' as const, key: op.key, value: op.value } : { type: 'delete' as const, key: op.key },
              index: entryOf(op.key).index,
              epoch: entryOf(op.key).epoch,
              ...(mode === 'async' ? {} : { pending: mode }),
            })),
          },
          txnId,
        );
        for (const entry of entries) this.#heads.set(entry.shard, { head: { index: entry.index, hash: entry.hash }, readAtMs: this.clock.monotonicMs(), own: true });
        await Promise.all(
          entries.map((entry) => {
            const replicated = this.#awaitReplication(entry, mode, this.#ship(entry));
            const confirmations = writes.filter((op) => this.shardOf(op.key) === entry.shard).map((op) => this.#confirmed(entry, op.op === 'put' ? { type: 'put', key: op.key, value: op.value } : { type: 'delete', key: op.key }, mode, replicated));
            return Promise.all(confirmations);
          }),
        );
        return result;
      } catch (error) {
        if (error instanceof StaleEpochError) {
          this.#leases.delete(error.shard);
          lastRace = error;
        } else if (error instanceof HeadConflictError || error instanceof TransactionRaceError || error instanceof SnapshotChangedError) {
          for (const shard of shards) this.#heads.delete(shard);
          lastRace = error;
        } else {
          throw error;
        }
      }
    }
    throw new RetriesExhaustedError(`the transaction lost ${limits.writeAttemptsMax} races in a row (${lastRace?.code ?? 'unknown'}) and was not applied; retry`);
  }

  #getResult(key: string, state: Map<string, KvItem | undefined>): TxnOpResult {
    const item = state.get(key);
    return item === undefined ? { op: 'get', key, found: false } : { op: 'get', key, found: true, value: item.value, version: item.version };
  }

  /**
   * One commit attempt. A timeout or a dropped connection may hide a commit: the first part's
   * log index tells (its entry carries the transaction's id), as for a single write.
   */
  async #commitTxnOnce(commit: TxnCommit, txnId: string): Promise<void> {
    try {
      await this.store.commitTxn(commit);
    } catch (error) {
      if (error instanceof EpochKvError) throw error;
      const first = commit.entries[0]!;
      const stored = await this.store.readLogEntry(first.shard, first.index).catch(() => undefined);
      if (stored?.requestId === txnId) return;
      if (stored === undefined) throw new OutcomeUnknownError(`the transaction may or may not have been applied: ${String(error)}`);
      throw new HeadConflictError(first.shard, first.index);
    }
  }

  /**
   * Whether the shard's leader committed the head entry from its intake lately: the shard is
   * busy and a direct write would race the leader. Reads the head only when this instance's copy
   * is older than a tick — the read a direct write makes anyway, cached for it.
   */
  async #leaderIsCommitting(shard: number): Promise<boolean> {
    let cached = this.#heads.get(shard);
    if (cached === undefined || this.clock.monotonicMs() - cached.readAtMs > this.options.tickMs) {
      cached = { head: await this.store.readHead(shard), readAtMs: this.clock.monotonicMs(), own: false };
      this.#heads.set(shard, cached);
    }
    const head = cached.head;
    if (head === undefined || cached.own) return false;
    // Wall clocks of two machines: a skew only makes this guess early or late (liveness, never safety).
    const nowMs = this.clock.wallMs();
    // The leader committed a contended group lately, or another writer wrote within the tick:
    // racing for the next index now would likely lose.
    const busy =
      (head.leaderCommittedAtMs !== undefined && nowMs - head.leaderCommittedAtMs <= intakeStickMs(this.options.tickMs)) ||
      (head.committedAtMs !== undefined && nowMs - head.committedAtMs <= this.options.tickMs);
    if (busy) this.#markBusy(shard);
    return busy;
  }

  #isBusy(shard: number): boolean {
    return this.clock.monotonicMs() < (this.#busyUntilMs.get(shard) ?? Number.NEGATIVE_INFINITY);
  }

  /**
   * The shard stays busy for this instance a while past its last sign of other writers: long
   * against an intake round trip, so a writer under contention does not probe the direct path
   * (and lose a race) on every write; short enough that a shard gone quiet is written directly again.
   */
  #markBusy(shard: number): void {
    this.#busyUntilMs.set(shard, this.clock.monotonicMs() + intakeStickMs(this.options.tickMs));
  }

  /**
   * The write as the shard's leader commits it: deposit it in the shard's intake, then look for
   * its outcome until it is committed or refused. Past the wait (a failover that takes too
   * long) the write is withdrawn — a conditional delete that wins only while it is still
   * pending — so the answer is definite: committed, refused, or not applied.
   */
  async #writeThroughIntake(shard: number, change: KvChange, precondition: Precondition, requestId: string): Promise<WriteResult> {
    // No leader known: answer 503 NoLeader as a direct write would (after the same short wait).
    await this.#liveLease(shard);
    const depositedAtMs = this.clock.wallMs();
    const id = `${String(Math.floor(depositedAtMs)).padStart(15, '0')}#${requestId}`;
    const startMs = this.clock.monotonicMs();
    try {
      await this.store.depositIntake({ shard, id, requestId, change, precondition, depositedAtMs });
    } catch (error) {
      // The deposit may have landed: take it back, or learn its outcome.
      return this.#settleIntake(shard, change, await this.store.withdrawIntake(shard, id).catch(() => { throw new OutcomeUnknownError(`the write to "${change.key}" may or may not have been applied: ${String(error)}`); }));
    }
    const commitDelayMs = this.#intakeCommitDelayMs.get(shard) ?? intakeCommitDelayMsInitial;
    const deadlineMs = startMs + this.#intakeWaitMs();
    // The first look when the write is likely committed, then a few looks per recent delay.
    let waitMs = Math.min(intakeWaitFirstMsMax, Math.max(intakePollMsMin, Math.round(commitDelayMs + intakePollMsMin)));
    for (;;) {
      await sleep(waitMs);
      const outcome = await this.store.takeIntakeOutcome(shard, id);
      if (outcome === undefined || outcome.state !== 'pending') {
        if (outcome?.state === 'committed') {
          // How long the leader took, from its seal time: not from when we looked (that would
          // feed our own waits back into the next ones). Two clocks, so bounded by what we saw.
          const tookMs = this.clock.monotonicMs() - startMs;
          const sampleMs = Math.min(tookMs, Math.max(0, outcome.committedAtMs - depositedAtMs));
          this.#intakeCommitDelayMs.set(shard, 0.8 * commitDelayMs + 0.2 * sampleMs);
        }
        // Busy from the last sign of contention (not from the deposit: a write that waited long
        // must not make the next probe the direct path; a lone writer must not stay here).
        if (outcome?.state === 'committed' && outcome.contended) this.#markBusy(shard);
        return this.#settleIntake(shard, change, outcome);
      }
      if (this.clock.monotonicMs() >= deadlineMs) return this.#settleIntake(shard, change, await this.store.withdrawIntake(shard, id));
      waitMs = Math.min(intakePollMsMax, Math.max(intakePollMsMin, Math.round(commitDelayMs / 4)));
    }
  }

  /** The answer to an intake write, from its settled outcome (or its withdrawal). */
  async #settleIntake(shard: number, change: KvChange, outcome: IntakeOutcome | 'withdrawn' | undefined): Promise<WriteResult> {
    if (outcome === 'withdrawn') {
      throw new RetriesExhaustedError(`the leader of shard ${shard} did not take the write to "${change.key}" within ${this.#intakeWaitMs()} ms; it was withdrawn and not applied; retry`);
    }
    if (outcome === undefined) throw new OutcomeUnknownError(`the write to "${change.key}" may or may not have been applied: its intake record is gone`);
    if (outcome.state === 'pending') throw new OutcomeUnknownError(`the write to "${change.key}" is still pending at its shard's leader`);
    if (outcome.state === 'refused') {
      await this.#refusalIsDurable(shard, change.key);
      if (outcome.code === 'NotFound') throw new NotFoundError(outcome.message);
      throw new VersionConflictError(outcome.message, outcome.currentVersion);
    }
    this.#heads.set(shard, { head: { index: outcome.index, hash: outcome.hash }, readAtMs: this.clock.monotonicMs(), own: true });
    // The leader ships what it commits, in log order: this writer sent nothing itself.
    return { key: change.key, shard, version: outcome.index, epoch: outcome.epoch, index: outcome.index, replication: { mode: 'async', acceptedBy: [] } };
  }

  /** How long an intake write waits for its leader: through a failover (a lease and a few ticks), within API Gateway's 29 s. */
  #intakeWaitMs(): number {
    return Math.min(limits.intakeWaitMsMax, 2 * this.options.leaseMs + 4 * this.options.tickMs);
  }

  /**
   * Queues a write for its shard's committer. One commit per shard at a time in this instance
   * (concurrent writers of a shard would all take the same next index, and all but one would
   * lose the race); the writes that queue while a commit is in flight share the next one — a
   * group commit, so a busy shard sends fewer, larger transactions. Only the order of this
   * instance's own commits changes: the transaction's conditions still decide every race,
   * with other instances too.
   */
  #enqueue(shard: number, write: PendingWrite): Promise<Committed> {
    return new Promise<Committed>((resolve, reject) => {
      const queue = this.#pendingWrites.get(shard);
      if (queue !== undefined) {
        queue.push({ write, resolve, reject });
        return;
      }
      const started: Queued[] = [{ write, resolve, reject }];
      this.#pendingWrites.set(shard, started);
      void this.#drain(shard, started);
    });
  }

  /** The shard's committer: runs until its queue is empty, then drops the queue (the next write starts a new one). */
  async #drain(shard: number, queue: Queued[]): Promise<void> {
    try {
      while (queue.length > 0) await this.#commitGroup(shard, takeGroup(queue), queue);
    } finally {
      this.#pendingWrites.delete(shard);
    }
  }

  /** Commits one group; settles each of its writes, or puts them back at the queue's front. Never throws. */
  async #commitGroup(shard: number, group: Queued[], queue: Queued[]): Promise<void> {
    let head: LogHead | undefined;
    try {
      const cached = this.#heads.get(shard);
      head = cached !== undefined && this.clock.monotonicMs() - cached.readAtMs <= this.options.tickMs ? cached.head : await this.store.readHead(shard);
    } catch (error) {
      for (const queued of group) queued.reject(error);
      return;
    }
    let previous = head;
    const requests = group.map(({ write }) => {
      const entry = sealEntry(previous, {
        shard,
        index: (previous?.index ?? 0) + 1,
        epoch: write.epoch,
        ops: [write.operation],
        requestId: write.requestId,
        committedAtMs: this.clock.wallMs(),
      });
      previous = entry;
      write.entry = entry;
      // The mark is visible with the item the moment DynamoDB applies the transaction, to every reader.
      return { entry, kv: { change: write.change, precondition: write.precondition, ...(write.mode === 'async' ? {} : { pending: write.mode }) } };
    });
    try {
      const outcome = await this.store.commitGroup(requests);
      if (!outcome.committed) {
        // Nothing committed: the refused writes get their answer, the others go first in the
        // next group (resealed at the same head, which is still current).
        const kept: Queued[] = [];
        for (const [position, queued] of group.entries()) {
          const refusal = outcome.refused.get(position);
          if (refusal === undefined) kept.push(queued);
          else queued.reject(refusal);
        }
        queue.unshift(...kept);
        return;
      }
    } catch (error) {
      // Forget a head that proved stale (or may be) before the next group uses it.
      if (error instanceof HeadConflictError || !(error instanceof EpochKvError)) this.#heads.delete(shard);
      for (const queued of group) queued.reject(error);
      return;
    }
    if (previous !== undefined) this.#heads.set(shard, { head: { index: previous.index, hash: previous.hash }, readAtMs: this.clock.monotonicMs(), own: true });
    for (const [position, queued] of group.entries()) {
      const { entry } = requests[position]!;
      // Queued for sending in log order before the shard's next group commits, so sends keep log order.
      const replicated = this.#confirmed(entry, queued.write.change, queued.write.mode, this.#awaitReplication(entry, queued.write.mode, this.#ship(entry)));
      queued.resolve({ entry, replicated });
    }
  }

  /**
   * Sends the entry to every replica queue. In async mode a failure is only logged: the
   * replica repairs any gap from the home log.
   */
  async #ship(entry: LogEntry): Promise<ShipOutcome> {
    const shipper = this.replication.shipper;
    if (shipper === undefined) return { accepted: [], missed: [] };
    const outcome = await shipper.ship(entry);
    if (outcome.missed.length > 0) this.replication.log?.(`shard ${entry.shard} index ${entry.index}: not shipped to ${outcome.missed.join(', ')}; replicas will repair`);
    return outcome;
  }

  /**
   * async: the send is awaited (a Lambda may be frozen right after it answers) and that is
   * all. quorum/all: the queues that must hold the entry have to accept it within
   * `replicationAckMs`, else ReplicationUnmetError — the entry is committed at home, but the
   * caller cannot count on it surviving the loss of the home region.
   */
  async #awaitReplication(entry: LogEntry, mode: ReplicationMode, sending: Promise<ShipOutcome>): Promise<string[]> {
    if (mode === 'async') return (await sending).accepted;
    const requirement = await this.#requirement(entry.shard, mode);
    const outcome = await within(sending, limits.replicationAckMs);
    const accepted = outcome === 'timeout' ? [] : outcome.accepted;
    const verdict = ackMet(requirement, accepted);
    if (verdict.met) return accepted;
    const missed = outcome === 'timeout' ? `no queue answered within ${limits.replicationAckMs} ms` : `not accepted by ${outcome.missed.join(', ') || 'any region'}`;
    throw new ReplicationUnmetError(
      `the write to shard ${entry.shard} (index ${entry.index}) is committed at home, but ${mode} replication needs ${verdict.missing} and it reached ${accepted.join(', ') || 'none'} (${missed}); its outcome is unknown: it may survive, or be lost if the home region is lost. Read the key to see it; retry later`,
      entry.index,
    );
  }

  /**
   * quorum/all: once the replica queues accepted the entry, clears the pending mark of its item
   * (or its tombstone) before the writer answers, so readers elsewhere need not wait for the
   * replicas' reports. A failed clear leaves the mark: readers then ask the reports (safe, slower).
   */
  async #confirmed(entry: LogEntry, change: KvChange, mode: ReplicationMode, replicated: Promise<string[]>): Promise<string[]> {
    const acceptedBy = await replicated;
    if (mode !== 'async') {
      await this.store.confirmDurable(entry.shard, change.key, entry.index, change.type === 'delete').catch((error: unknown) => {
        this.replication.log?.(`shard ${entry.shard} index ${entry.index}: durable, but its pending mark stays (${String(error)}); readers will ask the replicas' reports`);
      });
    }
    return acceptedBy;
  }

  /**
   * The state a strong answer may show. A quorum/all write's item is visible at home before the
   * write is durable, to every API environment; an answer built on it could be taken back by the
   * loss of the home region. So a marked item is shown only once it is durable: its writer
   * cleared the mark, or the replicas report its index applied where its mode needs. Meanwhile
   * this waits (the writer's replication wait, bounded), then answers 503 ReplicationUnmet.
   * A durable tombstone is a missing key.
   */
  async #durableState(shard: number, key: string, found: KvItem | undefined, answer: 'read' | 'refusal'): Promise<KvItem | undefined> {
    let item = found;
    const startMs = this.clock.monotonicMs();
    while (item?.pending !== undefined) {
      if (await this.#appliedByReplicas(shard, item.index, item.pending)) {
        void this.store.confirmDurable(shard, key, item.index, item.tombstone === true).catch(() => undefined);
        break;
      }
      if (this.clock.monotonicMs() - startMs >= pendingWaitMs) {
        const change = item.tombstone === true ? 'delete' : 'write';
        throw new ReplicationUnmetError(
          answer === 'read'
            ? `the latest ${change} of "${key}" (index ${item.index}) has not reached the replica regions ${item.pending} replication needs, so its outcome is unknown and it is not shown; retry shortly`
            : `"${key}" was last changed by a ${change} (index ${item.index}) that has not reached the replica regions ${item.pending} replication needs, so whether this write's condition holds is unknown; nothing was written; retry shortly`,
          item.index,
        );
      }
      await sleep(pendingPollMs);
      item = await this.store.getItem(shard, key, true);
    }
    return item?.tombstone === true ? undefined : item;
  }

  /** A refused condition tells the key's current state as surely as a read does: only a durable one. */
  async #refusalIsDurable(shard: number, key: string): Promise<void> {
    await this.#durableState(shard, key, await this.store.getItem(shard, key, true), 'refusal');
  }

  /**
   * A replayed quorum/all answer: waits (bounded, as a strong read does) until the replica
   * regions report every entry applied where the mode needs it, else 503 ReplicationUnmet.
   */
  async awaitDurable(durability: NonNullable<IdempotencyRecord['durability']>): Promise<void> {
    const startMs = this.clock.monotonicMs();
    for (const part of durability.parts) {
      while (!(await this.#appliedByReplicas(part.shard, part.index, durability.mode))) {
        if (this.clock.monotonicMs() - startMs >= pendingWaitMs) {
          throw new ReplicationUnmetError(`the write this request made (shard ${part.shard}, index ${part.index}) is committed at home, but the replica regions ${durability.mode} replication needs do not report it yet; its outcome is unknown; retry shortly`, part.index);
        }
        await sleep(pendingPollMs * 4);
      }
    }
  }

  /** Whether the replica regions' reports show the index applied where the mode needs it. */
  async #appliedByReplicas(shard: number, index: number, mode: ReplicationMode): Promise<boolean> {
    const [requirement, reports] = await Promise.all([this.#requirement(shard, mode), this.store.readReplicaReports()]);
    const applied = reports.filter((report) => report.shard === shard && report.appliedIndex >= index).map((report) => report.region);
    return ackMet(requirement, applied).met;
  }

  /** The replica regions a write of `mode` on the shard needs (all: the shard's in-sync set). */
  async #requirement(shard: number, mode: ReplicationMode): Promise<AckRequirement> {
    const replicaRegions = this.options.replicaRegions ?? this.replication.shipper?.regions() ?? [];
    const inSync = mode === 'all' ? await this.#inSync(shard, replicaRegions) : replicaRegions;
    return ackRequirement(mode, replicaRegions, inSync);
  }

  /** The shard's in-sync set (`all` mode), cached for a tick; every replica region until a leader wrote one. */
  async #inSync(shard: number, replicaRegions: string[]): Promise<string[]> {
    const cached = this.#inSyncSets.get(shard);
    const nowMs = this.clock.monotonicMs();
    if (cached !== undefined && nowMs - cached.readAtMs <= this.options.tickMs) return cached.regions;
    const stored = await this.store.readInSync(shard);
    const regions = stored?.regions ?? replicaRegions;
    this.#inSyncSets.set(shard, { regions, readAtMs: nowMs });
    return regions;
  }

  async list(prefix: string, limit: number, after: string | undefined, consistency: Consistency): Promise<ListPage> {
    const local = this.replication.local;
    if (consistency === 'eventual' && local !== undefined) {
      const page = await local.store.list(prefix, limit, after, false);
      return { items: page.items.filter((item) => item.tombstone !== true), next: page.next };
    }
    const page = await this.store.list(prefix, limit, after, consistency !== 'eventual');
    const items: KvItem[] = [];
    for (const found of page.items) {
      // eventual promises nothing of durability; a tombstone is a missing key to every reader.
      const item = consistency === 'eventual' ? (found.tombstone === true ? undefined : found) : await this.#durableState(found.shard, found.key, found, 'read');
      if (item !== undefined) items.push(item);
    }
    return { items, next: page.next };
  }

  /** Entries of this region's copy of a shard's log from `fromIndex`, waiting up to `waitMs` for some. */
  async watch(shard: number, fromIndex: number, limit: number, waitMs: number, signal?: AbortSignal): Promise<LogEntry[]> {
    // Each waiting watch polls the log: bound how many one instance holds open.
    if (this.#watching >= limits.watchConcurrentMax) {
      throw new TooManyRequestsError(`${limits.watchConcurrentMax} watches are already waiting on this instance; retry shortly or watch with a shorter waitMs`);
    }
    this.#watching += 1;
    try {
      const log = this.replication.local?.store ?? this.store;
      const startMs = this.clock.monotonicMs();
      for (;;) {
        const entries = await log.readLog(shard, fromIndex, limit);
        const first = entries[0];
        if (first !== undefined) {
          // Below the compaction point entries are gone or going (the log is dense above it): the
          // watch cannot promise them, so it says where the log starts instead.
          const compactedThrough = await log.readCompaction(shard);
          if (fromIndex <= compactedThrough || first.index > fromIndex) throw new CompactedError(shard, fromIndex, Math.max(compactedThrough, first.index - 1));
        }
        if (entries.length > 0 || this.clock.monotonicMs() - startMs >= waitMs || signal?.aborted) return entries;
        await sleep(Math.min(watchPollMs, Math.max(1, waitMs - (this.clock.monotonicMs() - startMs))));
      }
    } finally {
      this.#watching -= 1;
    }
  }

  /**
   * Every shard's log from its own next index (a prefix watch across shards), waiting up to
   * `waitMs` for any entry. Polls all shards each round: an idle prefix watch costs a log read
   * per shard per prefixWatchPollMs.
   */
  async watchShards(nextIndexes: readonly number[], limit: number, waitMs: number, signal?: AbortSignal): Promise<{ shard: number; entries: LogEntry[] }[]> {
    const startMs = this.clock.monotonicMs();
    for (;;) {
      const pages = await Promise.all(nextIndexes.map(async (fromIndex, shard) => ({ shard, entries: await this.watch(shard, fromIndex, limit, 0, signal) })));
      if (pages.some((page) => page.entries.length > 0) || this.clock.monotonicMs() - startMs >= waitMs || signal?.aborted) return pages;
      await sleep(Math.min(prefixWatchPollMs, Math.max(1, waitMs - (this.clock.monotonicMs() - startMs))));
    }
  }

  /** A lease with a holder whose renewal is recent enough, re-read when the cached one is old. */
  async #liveLease(shard: number): Promise<LeaseRecord & { holder: string }> {
    let cached = this.#leases.get(shard);
    const now = this.clock.monotonicMs();
    if (cached === undefined || now - cached.readAtMs > this.options.tickMs || !this.#isLive(cached.record)) {
      // Concurrent writers of the shard wait for the same read rather than each sending one.
      let reading = this.#leaseReads.get(shard);
      if (reading === undefined) {
        reading = this.#readLiveLease(shard).finally(() => this.#leaseReads.delete(shard));
        this.#leaseReads.set(shard, reading);
      }
      cached = await reading;
    }
    const record = cached.record;
    if (record === undefined || record.holder === undefined || !this.#isLive(record)) {
      this.#leases.delete(shard);
      throw new NoLeaderError(shard, limits.retryAfterSeconds);
    }
    return { ...record, holder: record.holder };
  }

  async #readLiveLease(shard: number): Promise<CachedLease> {
    let cached: CachedLease = { record: await this.store.readLease(shard), readAtMs: this.clock.monotonicMs() };
    // Handoffs (a new leader's marker, a shard given back to spread load, a node's next
    // invocation) finish within a tick or two: wait that long, bounded, rather than answer 503.
    const waitStartMs = this.clock.monotonicMs();
    while (!this.#isLive(cached.record) && this.clock.monotonicMs() - waitStartMs < this.#leaderWaitMs()) {
      await sleep(leaderPollMs);
      cached = { record: await this.store.readLease(shard), readAtMs: this.clock.monotonicMs() };
    }
    this.#leases.set(shard, cached);
    return cached;
  }

  /** Two ticks: a handoff's length, and short against a failover (a lease). */
  #leaderWaitMs(): number {
    return 2 * this.options.tickMs;
  }

  /**
   * The liveness gate: compares the holder's renewal stamp with this process's clock, with a
   * tolerance. Skew only makes it refuse or accept a little early or late; safety rests on
   * the epoch check in the transaction.
   */
  #isLive(record: LeaseRecord | undefined): boolean {
    if (record === undefined || record.holder === undefined || record.markerPending === true) return false;
    return this.clock.wallMs() - record.renewedAtMs <= this.options.leaseMs + limits.leaseSkewToleranceMs;
  }
}
