import type { LeaseRecord } from '../core/lease.ts';
import type { LogEntry } from '../core/log.ts';
import type { ReplicationMode } from '../core/replication.ts';
import type { EpochKvError } from './errors.ts';

/** A stored key-value item. `version` is the log index of the write that produced it. */
export interface KvItem {
  key: string;
  shard: number;
  value: Uint8Array;
  version: number;
  epoch: number;
  index: number;
  /**
   * Home only: the quorum/all write that made this state is not known durable yet. Readers in
   * any execution environment see the mark, so none shows the state before it is durable
   * (see docs/write-path.md, "Durability of quorum writes across environments").
   */
  pending?: Exclude<ReplicationMode, 'async'>;
  /**
   * A delete that left its item: at home a pending quorum/all delete (the key reads as missing
   * once it is durable); at a replica a transaction's delete (see txnParts). Always a missing key.
   */
  tombstone?: true;
  /** Replica only: the item was written by a multi-shard transaction with these parts. */
  txnParts?: { shard: number; index: number }[];
}

export interface LogHead {
  index: number;
  hash: string;
  /**
   * Set when the shard's leader committed the head entry from its intake, with the leader's
   * commit time: a sign, for a writer about to race for the next index, that the shard is busy.
   */
  leaderCommittedAtMs?: number | undefined;
  /** The head entry's commit time (its writer's wall clock), when read from the log. */
  committedAtMs?: number | undefined;
}

export type KvChange = { type: 'put'; key: string; value: Uint8Array } | { type: 'delete'; key: string };

/** The caller's compare-and-swap condition on the kv item. */
export interface Precondition {
  /** `If-Match`: the item exists at exactly this version. */
  ifVersion?: number | undefined;
  /** `If-None-Match: *`: the item does not exist. */
  ifAbsent?: boolean | undefined;
}

export interface CommitRequest {
  /** The sealed entry at head + 1, under the epoch the lease check asserts. */
  entry: LogEntry;
  kv: { change: KvChange; precondition: Precondition; /** quorum/all: the item (or a tombstone for a delete) carries the mark until confirmDurable. */ pending?: KvItem['pending'] } | undefined;
  /**
   * The intake item the write came from (leader commits): marked committed in the same
   * transaction, on condition that it is still pending, so a write is committed at most once
   * and never after its writer withdrew it.
   */
  intake?: { id: string; /** Other writes were waiting in the intake with it: a sign of a busy shard, passed on to writers. */ contended: boolean } | undefined;
}

/**
 * A write handed to its shard's leader: the API deposits it in the shard's intake and waits
 * for its outcome; the leader commits the intake in groups (see lib/service/intake.ts).
 */
export interface IntakeWrite {
  shard: number;
  /** Its place in the shard's intake: the deposit time, zero-padded, then the request id. */
  id: string;
  requestId: string;
  change: KvChange;
  precondition: Precondition;
  /** The depositor's wall clock: orders the intake (fairness only; nothing depends on it). */
  depositedAtMs: number;
}

/**
 * A write's first answer under its Idempotency-Key: a repeat of the same request gets it again
 * and writes nothing. Written in the same transaction as the commit it answers.
 */
export interface IdempotencyRecord {
  key: string;
  /** SHA-256 of what makes the request the same request (method, path, query, body, conditions). */
  fingerprint: string;
  status: number;
  /** The answer's JSON body. */
  body: string;
  /** Wall-clock ms after which the record no longer counts (and DynamoDB's TTL deletes it). */
  expiresAtMs: number;
  /**
   * quorum/all: the entries the answer promises durable. The first answer came only once they
   * were; a replay must not promise more, so it checks them again (the first answer may have
   * been a 503 ReplicationUnmet the client never received).
   */
  durability?: { mode: 'quorum' | 'all'; parts: { shard: number; index: number }[] } | undefined;
}

/** A multi-key transaction's commit (see lib/core/txn.ts and KvService.txn). */
export interface TxnCommit {
  /** Written with the commit, on condition that no live record holds its key. */
  idempotency?: IdempotencyRecord;
  /** One entry per shard written, each at its shard's head + 1 under the epoch its lease check asserts. */
  entries: LogEntry[];
  /** Every key the transaction read, with the version read (undefined: absent): each is a condition. */
  reads: { shard: number; key: string; version: number | undefined }[];
  /** The writes, each with the index and epoch of its shard's entry. */
  writes: { shard: number; change: KvChange; index: number; epoch: number; pending?: KvItem['pending'] }[];
}

/** What became of an intake write. */
export type IntakeOutcome =
  | { state: 'pending' }
  | { state: 'committed'; index: number; epoch: number; prevHash: string; hash: string; committedAtMs: number; contended: boolean }
  | { state: 'refused'; code: string; message: string; currentVersion: number | undefined };

export type GroupCommitOutcome = { committed: true } | { committed: false; refused: Map<number, EpochKvError> };

export interface HeartbeatItem {
  node: string;
  incarnation: string;
  seq: number;
  atMs: number;
}

/** A replica region's progress on one shard, as its heartbeat reports it to the home region. */
export interface ReplicaReport {
  region: string;
  shard: number;
  appliedIndex: number;
  appliedAtMs: number;
  /** Commit → apply time of the last applied entry. */
  lastLagMs: number;
  reportedAtMs: number;
}

export interface ListPage {
  items: KvItem[];
  /** Pass as `after` to get the next page; undefined on the last page. */
  next: string | undefined;
}

/** A shard's in-sync replica set (`all` mode), written by the shard's leader under its epoch. */
export interface InSyncSet {
  shard: number;
  regions: string[];
  /** The leader epoch that wrote it. */
  epoch: number;
  updatedAtMs: number;
}

/** Which region is home, stored in every region's `control` table; a promotion moves it. */
export interface ClusterState {
  homeRegion: string;
  /** Bumped by every promotion; the high part of every shard epoch (lib/core/replication.ts). */
  clusterEpoch: number;
  /** The replica regions after the move (a lost region is not among them until re-seeded). */
  replicaRegions?: string[] | undefined;
  /** The region that was home before, and when the move happened (its wall clock). */
  previousHome?: string | undefined;
  promotedAtMs?: number | undefined;
}

/** What a takeover is conditional on: the version seen, absence, or our node's older incarnation at an epoch. */
export type LeaseExpectation =
  | { version: number | undefined }
  | { incarnation: string; epoch: number };

/**
 * What the core needs from the home region's tables. Every method states its consistency;
 * every write is conditional and reports a lost condition as a typed error.
 */
export interface Store {
  /** All lease items, strongly consistent. */
  readLeases(): Promise<LeaseRecord[]>;
  readLease(shard: number): Promise<LeaseRecord | undefined>;
  /** Throws StaleEpochError when the lease is not (node, incarnation, epoch) any more. */
  renewLease(shard: number, holder: { node: string; incarnation: string }, epoch: number, nowMs: number): Promise<LeaseRecord>;
  /** Frees the shard; same condition as renew. */
  releaseLease(shard: number, holder: { node: string; incarnation: string }, epoch: number, nowMs: number): Promise<LeaseRecord>;
  /**
   * Takes the lease at `epoch` if it is still as `expected` (same version, or absent, or held by
   * our node's older incarnation at the previous epoch), with `markerPending` set: from this
   * write on, no writer of an older epoch can append. Throws StaleEpochError when it moved.
   */
  acquireLease(shard: number, holder: { node: string; incarnation: string }, expected: LeaseExpectation, epoch: number, nowMs: number): Promise<LeaseRecord>;
  /**
   * Appends the new leader's `leader` marker at head + 1 and clears `markerPending`, in one
   * transaction. Throws StaleEpochError when the lease moved, HeadConflictError when the log did.
   */
  appendMarker(shard: number, holder: { node: string; incarnation: string }, marker: LogEntry): Promise<LeaseRecord>;
  putHeartbeat(heartbeat: HeartbeatItem): Promise<void>;
  /** The shard's in-sync set, strongly consistent; undefined before a leader wrote one. */
  readInSync(shard: number): Promise<InSyncSet | undefined>;
  /** Every shard's in-sync set in one consistent read (status pages). */
  readInSyncSets(): Promise<InSyncSet[]>;
  /** Writes the in-sync set if `holder` still holds the lease at `set.epoch`; else StaleEpochError. */
  writeInSync(set: InSyncSet, holder: { node: string; incarnation: string }): Promise<void>;
  /** One write request for any number of reports (BatchWriteItem, 25 per request). */
  putReplicaReports(reports: readonly ReplicaReport[]): Promise<void>;
  readReplicaReports(): Promise<ReplicaReport[]>;
  readHeartbeats(): Promise<HeartbeatItem[]>;
  /** The last log entry of a shard (strongly consistent), undefined for an empty log. */
  readHead(shard: number): Promise<LogHead | undefined>;
  readLogEntry(shard: number, index: number): Promise<LogEntry | undefined>;
  /** Entries with index >= fromIndex in order, at most `limit`. */
  readLog(shard: number, fromIndex: number, limit: number): Promise<LogEntry[]>;
  /**
   * The fenced write: ONE transaction of lease epoch check + log put at a free index + kv
   * change under the caller's condition. Throws StaleEpochError, HeadConflictError,
   * VersionConflictError, NotFoundError (delete of a missing key) or TransactionRaceError.
   */
  commit(request: CommitRequest): Promise<void>;
  /**
   * Group commit: consecutive entries of one shard under one epoch in ONE transaction (one
   * lease check, then each entry's log put and kv change), all or nothing. Throws
   * StaleEpochError, HeadConflictError or TransactionRaceError for the whole group; when only
   * kv preconditions failed, nothing is committed and the refused requests' positions come
   * back with their error (VersionConflictError, NotFoundError), so the others can be resealed
   * and committed without them.
   */
  commitGroup(requests: CommitRequest[]): Promise<GroupCommitOutcome>;
  /** Puts a write in its shard's intake (pending). */
  depositIntake(write: IntakeWrite): Promise<void>;
  /** The shard's pending intake writes, oldest first, at most `limit` (strongly consistent). */
  readIntake(shard: number, limit: number): Promise<IntakeWrite[]>;
  /**
   * The outcome of one intake write, in one request: a settled write's record is deleted as its
   * outcome is read (a conditional delete that returns the old item); a pending one is left as it
   * is ({state: 'pending'}); undefined when there is no record.
   */
  takeIntakeOutcome(shard: number, id: string): Promise<IntakeOutcome | undefined>;
  /** Marks a pending intake write refused (its condition failed); false when it was not pending. */
  refuseIntake(shard: number, id: string, refusal: { code: string; message: string; currentVersion: number | undefined }, settledAtMs: number): Promise<boolean>;
  /**
   * Takes a write back out of the intake if it is still pending: 'withdrawn' means it never was
   * and never will be committed; otherwise its outcome (undefined when it is gone).
   */
  withdrawIntake(shard: number, id: string): Promise<'withdrawn' | IntakeOutcome | undefined>;
  /** Deletes settled intake writes settled before `settledBeforeMs` (writers that never came back); returns how many. */
  sweepIntake(shard: number, settledBeforeMs: number): Promise<number>;
  /** The live record of an Idempotency-Key (undefined: none, or expired). */
  readIdempotency(key: string, nowMs: number): Promise<IdempotencyRecord | undefined>;
  /** Stores a record unless a live one holds the key; false when one does. */
  putIdempotency(record: IdempotencyRecord, nowMs: number): Promise<boolean>;
  /** One shard's keys starting with `prefix`, in key order, after `after`; consistent. */
  listShard(shard: number, prefix: string, limit: number, after: string | undefined): Promise<ListPage>;
  /** What the shard's last leader carried of its lease clock (lib/core/coordination.ts LeaseClock). */
  readLeaseClock(shard: number): Promise<Map<string, { version: number; remainingMs: number }>>;
  writeLeaseClock(shard: number, carried: ReadonlyMap<string, { version: number; remainingMs: number }>): Promise<void>;
  /** Up to 100 keys' items in one serializable snapshot (TransactGetItems), as stored; undefined: absent. */
  readSnapshot(keys: { shard: number; key: string }[]): Promise<(KvItem | undefined)[]>;
  /**
   * Commits a transaction all or nothing: StaleEpochError or HeadConflictError for a shard's
   * part, SnapshotChangedError when a key read has changed since.
   */
  commitTxn(commit: TxnCommit): Promise<void>;
  /** The item as stored: at home it may carry a pending mark or be a tombstone (see KvItem). */
  getItem(shard: number, key: string, consistent: boolean): Promise<KvItem | undefined>;
  /**
   * Clears the pending mark of the write at `index` on the key, or deletes its tombstone: its
   * entry is durable where its mode needs it. Does nothing when the key has changed since.
   */
  confirmDurable(shard: number, key: string, index: number, tombstone: boolean): Promise<void>;
  /** Keys starting with `prefix` in key order across all shards, after `after` (exclusive). */
  list(prefix: string, limit: number, after: string | undefined, consistent: boolean): Promise<ListPage>;
  /**
   * Log compaction (lib/core/compaction.ts). The shard's compaction point: entries at or below it
   * may be gone from this region's log (0: nothing compacted). Strongly consistent.
   */
  readCompaction(shard: number): Promise<number>;
  /** Every shard's recorded compaction point, in one read. */
  readCompactions(): Promise<Map<number, number>>;
  /** Raises the compaction point (never lowers it) before the trim deletes below it; returns the point stored. */
  recordCompaction(shard: number, compactedThrough: number, atMs: number): Promise<number>;
  /** Index and commit time of the entries from `fromIndex`, oldest first, at most `limit`. */
  readLogTimes(shard: number, fromIndex: number, limit: number): Promise<{ index: number; committedAtMs: number }[]>;
  /** Deletes at most `max` of the oldest entries at or below `through` (BatchWriteItem); returns how many. */
  trimLog(shard: number, through: number, max: number): Promise<number>;
  /** Every kv item of the shard as stored (pending marks and tombstones included), strongly consistent: a snapshot's scan. */
  readShardItems(shard: number): Promise<KvItem[]>;
}
