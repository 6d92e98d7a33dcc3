/**
 * Typed errors of the store. Handlers map them to HTTP statuses; nothing else inspects
 * messages.
 */
export class EpochKvError extends Error {
  /** Fields the answer carries beside `error` and `message` (an error that has more to say than its message). */
  details: Record<string, unknown> | undefined;

  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad input: says which field and what to fix. Nothing was changed. */
export class ValidationError extends EpochKvError {
  constructor(
    readonly field: string,
    message: string,
    status = 400,
  ) {
    super(message, status, status === 413 ? 'TooLarge' : 'BadRequest');
  }
}

export class NotFoundError extends EpochKvError {
  constructor(message: string) {
    super(message, 404, 'NotFound');
  }
}

/** A compare-and-swap condition did not hold. Nothing was changed. */
export class VersionConflictError extends EpochKvError {
  constructor(
    message: string,
    readonly currentVersion: number | undefined,
  ) {
    super(message, 412, 'VersionConflict');
  }
}

/** The transaction's lease check failed: the writer's epoch is not the shard's epoch any more. */
export class StaleEpochError extends EpochKvError {
  constructor(
    readonly shard: number,
    readonly epoch: number,
  ) {
    super(`shard ${shard}: epoch ${epoch} is no longer the shard's epoch`, 503, 'StaleEpoch');
  }
}

/** The log already has an entry at the index the writer tried: its head was stale. */
export class HeadConflictError extends EpochKvError {
  constructor(
    readonly shard: number,
    readonly index: number,
  ) {
    super(`shard ${shard}: log index ${index} is taken`, 503, 'HeadConflict');
  }
}

/** Two transactions touched the same item at once; DynamoDB refused one. Safe to retry. */
export class TransactionRaceError extends EpochKvError {
  constructor(message: string) {
    super(message, 503, 'TransactionConflict');
  }
}

/** A transaction beyond what one DynamoDB transaction holds: the message says the counts. */
export class TxnTooLargeError extends EpochKvError {
  constructor(readonly field: string, message: string) {
    super(message, 400, 'TxnTooLarge');
  }
}

/** The lease is expired, revoked or was never granted. */
export class LeaseNotFoundError extends EpochKvError {
  constructor(id: string) {
    super(`lease ${id} is not found: it expired, was revoked, or never existed; grant a new one with POST /leases`, 404, 'LeaseNotFound');
  }
}

/** The lock (or election) is held by someone else; `token` is the holder's. */
export class LockHeldError extends EpochKvError {
  constructor(
    message: string,
    readonly token: number,
  ) {
    super(message, 409, 'LockHeld');
  }
}

/** A fenced write or a release whose token is not the lock's current one: nothing was written. */
export class FenceRejectedError extends EpochKvError {
  constructor(
    message: string,
    readonly token: number | undefined,
  ) {
    super(message, 409, 'FenceRejected');
  }
}

/** Another request with the same Idempotency-Key committed first: read its record and answer with it. */
export class IdempotencyRaceError extends EpochKvError {
  constructor(readonly key: string) {
    super(`another request with Idempotency-Key "${key.slice(0, 40)}" committed first`, 409, 'IdempotencyRace');
  }
}

/** The Idempotency-Key was used for a different request within 24 h. */
export class IdempotencyKeyReusedError extends EpochKvError {
  constructor(key: string) {
    super(`Idempotency-Key "${key.slice(0, 40)}" was used for a different request in the last 24 h; use a new key for a new request`, 422, 'IdempotencyKeyReused');
  }
}

/** A transaction's snapshot changed before its commit (a key it read was written since): read again. */
export class SnapshotChangedError extends EpochKvError {
  constructor(message: string) {
    super(message, 503, 'TransactionConflict');
  }
}

/** No live leader for the shard: writes wait for failover. Retry after a short while. */
export class NoLeaderError extends EpochKvError {
  constructor(
    readonly shard: number,
    readonly retryAfterSeconds: number,
  ) {
    super(`shard ${shard} has no live leader (failover in progress); retry after ${retryAfterSeconds} s`, 503, 'NoLeader');
  }
}

/** The store was reached but the outcome of a write is not known (timeout mid-commit). */
export class OutcomeUnknownError extends EpochKvError {
  constructor(message: string) {
    super(message, 503, 'OutcomeUnknown');
  }
}

/** Lost races kept happening; the write was not applied. */
export class RetriesExhaustedError extends EpochKvError {
  constructor(message: string) {
    super(message, 503, 'Busy');
  }
}

/** A bounded resource of this instance is in use (concurrent watches); retry shortly. */
export class TooManyRequestsError extends EpochKvError {
  constructor(message: string) {
    super(message, 429, 'TooManyRequests');
  }
}

/**
 * quorum/all: the entry is committed at home but not enough replica regions accepted it in
 * time. The outcome is unknown in the sense that matters: the write may survive, or be lost
 * with the home region.
 */
export class ReplicationUnmetError extends EpochKvError {
  constructor(
    message: string,
    readonly index: number,
  ) {
    super(message, 503, 'ReplicationUnmet');
  }
}

/** An intake write its writer took back before the leader committed it (leader side only). */
export class WithdrawnError extends EpochKvError {
  constructor(readonly shard: number, readonly id: string) {
    super(`shard ${shard}: intake write ${id} was withdrawn`, 409, 'Withdrawn');
  }
}

/**
 * A watch asked for entries the log no longer holds: they were compacted. The caller re-reads
 * the state (a list, or reads of its keys) and watches again from `compactedThrough + 1`.
 */
export class CompactedError extends EpochKvError {
  constructor(
    readonly shard: number,
    readonly fromIndex: number,
    readonly compactedThrough: number,
  ) {
    super(
      `shard ${shard}: the log is compacted through index ${compactedThrough}; entries from ${fromIndex} are gone. Read the current state, then watch from ${compactedThrough + 1}`,
      410,
      'Compacted',
    );
    this.details = { compactedThrough };
  }
}
