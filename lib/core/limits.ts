import { assert } from './assert.ts';

/**
 * Every bound of the system in one place. The relations between them are checked when the
 * module loads (and again by `checkTimings` for configured values), so an impossible
 * configuration fails at start instead of misbehaving under load.
 */
export const limits = {
  /** Shards a cluster may have; a shard is a lease, a log and a FIFO message group. */
  shardsMax: 256,
  shardsDefault: 8,
  /** Node identities a cluster may have. */
  nodesMax: 16,

  /** Keys are UTF-8, 1..1024 bytes: the DynamoDB sort-key limit is 1024 bytes. */
  keyBytesMin: 1,
  keyBytesMax: 1024,
  /**
   * Values up to 256 KiB. The value is stored twice in one transaction (log entry and kv item,
   * each a DynamoDB item of at most 400 KB with the key and metadata), and a replication
   * message carries it base64-encoded (4/3 larger, ~342 KiB) within the 1 MiB SQS message limit.
   */
  valueBytesMax: 256 * 1024,
  /** DynamoDB's own limits that the two above must stay under. */
  dynamoItemBytesMax: 400 * 1000,
  sqsMessageBytesMax: 1024 * 1024,
  /** Bytes reserved in an item for attribute names, key and metadata. */
  itemOverheadBytesMax: 8 * 1024,

  /** Watches one API instance keeps waiting at once; each polls the log every 100 ms. */
  watchConcurrentMax: 64,
  /** Longest a watch waits for new entries before answering empty. */
  watchWaitMsMax: 20_000,
  watchWaitMsDefault: 10_000,

  /** Prefix listing page size. */
  listLimitDefault: 100,
  listLimitMax: 1000,
  /**
   * Lambda's synchronous response cap: the function's whole answer (API Gateway's proxy result,
   * its body a JSON string inside it) may not exceed 6,291,556 bytes ("Response payload size
   * exceeded maximum allowed payload size (6291556 bytes)", Function.ResponseSizeTooLarge);
   * API Gateway then answers 502. The local cloud enforces it (lib/local/lambda-pool.ts).
   */
  lambdaResponseBytesMax: 6_291_556,
  /** Lambda's synchronous invocation request cap (the event API Gateway sends): 6 MiB. */
  lambdaRequestBytesMax: 6 * 1024 * 1024,
  /**
   * A list or watch page is cut to this many bytes of its items (as serialized in the proxy
   * result) and answers `next`: room under lambdaResponseBytesMax for the envelope and headers.
   */
  pageBytesMax: 6_000_000,
  /** How long a write's first answer is kept for its Idempotency-Key. */
  idempotencyKeepMs: 24 * 60 * 60 * 1000,
  /** Idempotency-Key: 1 to 128 printable ASCII characters. */
  idempotencyKeyCharsMax: 128,
  /** Leases: the ttl a client may ask for (1 s to a day). */
  leaseTtlMsMin: 1_000,
  leaseTtlMsMax: 86_400_000,
  /** How long POST /locks and /elections/campaign may wait for the lock (within API Gateway's 29 s). */
  lockWaitMsMax: 20_000,
  /** POST /txn: compares, and ops per branch. */
  txnComparesMax: 64,
  txnOpsMax: 64,
  /** Distinct keys one transaction names: one TransactGetItems snapshot reads them all (100 items). */
  txnKeysMax: 100,
  /** Items of one TransactWriteItems. */
  txnItemsMax: 100,

  /** Lease and tick timing defaults (AWS); the local cloud uses shorter ones. */
  leaseMsDefault: 6000,
  tickMsDefault: 1000,
  leaseMsLocal: 2000,
  tickMsLocal: 250,
  /** A lease shorter than this cannot be renewed reliably over a network. */
  leaseMsMin: 200,
  tickMsMin: 20,

  /** Failure detector: suspect after this many missed ticks, dead after that many. */
  suspectAfterTicks: 3,
  deadAfterTicks: 8,

  /**
   * Group commit: writes of one shard queued while its previous commit is in flight share the
   * next transaction — one lease check and one log-floor check (the compaction point) plus a
   * log put and a kv change each, within
   * TransactWriteItems' 100 items and 4 MB.
   */
  commitGroupWritesMax: 49,
  /**
   * The shard leader's group commit of its intake: one lease check and one log-floor check
   * plus, per write, a log put, a kv change and the intake item's mark.
   */
  intakeGroupWritesMax: 32,
  /** Longest an intake write waits for its leader before it is withdrawn (under API Gateway's 29 s). */
  intakeWaitMsMax: 20_000,
  /** Bytes one transaction of ours may carry (a group commit, a replica apply): TransactWriteItems takes 4 MB. */
  transactionBytesMax: 3 * 1000 * 1000,

  /** Lost races (stale head, stale lease) are retried this many times with jittered backoff. */
  writeAttemptsMax: 8,
  retryBackoffMsBase: 5,
  retryBackoffMsMax: 200,
  /** The API trusts a lease this much past its renewal time to absorb clock skew. */
  leaseSkewToleranceMs: 500,
  /** Seconds a client should wait before retrying a 503 for a leaderless shard. */
  retryAfterSeconds: 1,

  /**
   * AWS SDK calls (lib/adapters/aws/clients.ts). Attempts per call: the SDK retries throttling
   * and transient errors, a timed-out attempt included (its error is named TimeoutError).
   */
  awsAttemptsMax: 3,
  /**
   * The SDK's standard retry waits a jittered 0..50 ms, then 0..100 ms, between the attempts of a
   * transient error (base 50 ms, doubled per retry: @smithy/core util-retry): at most this in all.
   */
  awsRetryBackoffMsMax: 150,
  /**
   * Per attempt: the TCP connection must be up within this (a few ms in a region; a refused or
   * silent endpoint fails here instead of hanging).
   */
  awsConnectionTimeoutMs: 300,
  /**
   * Per attempt, connection to last byte of the answer (NodeHttpHandler `requestTimeout` with
   * `throwOnRequestTimeout`), by role. A node's call, retries included, must end within a lease,
   * so a leader whose store hangs learns it and steps down before another node may take over.
   */
  nodeRequestTimeoutMs: 500,
  /**
   * The API's: a write that waited its whole intake time, then withdrew its intake item and
   * made one more call, still answers before API Gateway's 29 s integration timeout.
   */
  apiRequestTimeoutMs: 1_000,
  /** Everything else (the apply function, the replica heartbeat, tools): batches of up to 100 items. */
  workerRequestTimeoutMs: 2_000,
  /** SQS long polls (ReceiveMessage waits up to 20 s by itself): the wait plus a margin. */
  longPollRequestTimeoutMs: 25_000,
  sqsReceiveWaitMsMax: 20_000,
  /** API Gateway REST's integration timeout. */
  apiGatewayTimeoutMs: 29_000,

  /** quorum/all: how long a write waits for the replica queues to accept its entry. */
  replicationAckMs: 2000,

  /** In-sync set: a replica this many entries behind the head leaves it; it rejoins within the second bound. */
  inSyncLagEntriesMax: 1000,
  inSyncRejoinLagEntriesMax: 16,
} as const;

export interface Timings {
  leaseMs: number;
  tickMs: number;
}

/** Checks the relations a lease/tick pair must satisfy; throws with what to fix. */
export function checkTimings({ leaseMs, tickMs }: Timings): void {
  assert(Number.isInteger(leaseMs) && leaseMs >= limits.leaseMsMin, `leaseMs must be an integer >= ${limits.leaseMsMin}, got ${leaseMs}`);
  assert(Number.isInteger(tickMs) && tickMs >= limits.tickMsMin, `tickMs must be an integer >= ${limits.tickMsMin}, got ${tickMs}`);
  // A leader renews every tick; three ticks per lease lets two renewals fail in a row
  // (a slow write, a GC pause) before the lease can be taken over.
  assert(tickMs * 3 <= leaseMs, `tickMs * 3 must be <= leaseMs (tickMs=${tickMs}, leaseMs=${leaseMs})`);
}

/** The longest one SDK call can take with every attempt timing out: attempts, each bounded, and the waits between them. */
export function awsCallMsMax(requestTimeoutMs: number): number {
  return limits.awsAttemptsMax * requestTimeoutMs + limits.awsRetryBackoffMsMax;
}

// Relations checked at load.
assert(limits.keyBytesMin >= 1 && limits.keyBytesMin <= limits.keyBytesMax, 'key byte bounds are inverted');
assert(
  2 * (limits.valueBytesMax + limits.keyBytesMax + limits.itemOverheadBytesMax) <= 4 * 1000 * 1000,
  'a write transaction (log entry + kv item) must stay under the 4 MB TransactWriteItems limit',
);
assert(
  limits.valueBytesMax + limits.keyBytesMax + limits.itemOverheadBytesMax <= limits.dynamoItemBytesMax,
  'a log entry or kv item must fit in a 400 KB DynamoDB item',
);
assert(
  Math.ceil((limits.valueBytesMax + limits.keyBytesMax + limits.itemOverheadBytesMax) / 3) * 4 <= limits.sqsMessageBytesMax,
  'a base64-encoded log entry must fit in one 1 MiB SQS message',
);
assert(2 + 2 * limits.commitGroupWritesMax <= 100, 'a group commit must stay within the 100 items of one TransactWriteItems');
assert(2 + 3 * limits.intakeGroupWritesMax <= 100, 'an intake group commit must stay within the 100 items of one TransactWriteItems');
assert(
  2 * (limits.valueBytesMax + 3 * limits.keyBytesMax + limits.itemOverheadBytesMax) <= limits.transactionBytesMax && limits.transactionBytesMax <= 4 * 1000 * 1000,
  'a transaction must hold the largest write and stay under the 4 MB TransactWriteItems limit',
);
assert(limits.shardsDefault <= limits.shardsMax, 'shardsDefault exceeds shardsMax');
assert(limits.suspectAfterTicks < limits.deadAfterTicks, 'a node must be suspected before it is declared dead');
assert(limits.listLimitDefault <= limits.listLimitMax, 'listLimitDefault exceeds listLimitMax');
assert(
  limits.pageBytesMax + 64 * 1024 <= limits.lambdaResponseBytesMax && 2 * Math.ceil((limits.valueBytesMax + limits.keyBytesMax) / 3) * 4 + 64 * 1024 <= limits.pageBytesMax,
  'a page must leave room for its envelope under Lambda\'s response cap and hold at least the largest item, escaped',
);
assert(limits.retryBackoffMsBase <= limits.retryBackoffMsMax, 'retry backoff bounds are inverted');
checkTimings({ leaseMs: limits.leaseMsDefault, tickMs: limits.tickMsDefault });
for (const requestTimeoutMs of [limits.nodeRequestTimeoutMs, limits.apiRequestTimeoutMs, limits.workerRequestTimeoutMs, limits.longPollRequestTimeoutMs]) {
  assert(limits.awsConnectionTimeoutMs < requestTimeoutMs, 'a request timeout must leave time after the connection is up');
}
// A node's call ends (answered or failed) within a lease and a tick to spare, on the shortest
// lease the project runs with (the local cloud's), and on AWS's.
assert(
  awsCallMsMax(limits.nodeRequestTimeoutMs) + limits.tickMsLocal <= limits.leaseMsLocal && awsCallMsMax(limits.nodeRequestTimeoutMs) + limits.tickMsDefault <= limits.leaseMsDefault,
  'a node\'s AWS call, every attempt timing out, must end a tick before its lease could expire',
);
assert(
  limits.intakeWaitMsMax + 2 * awsCallMsMax(limits.apiRequestTimeoutMs) < limits.apiGatewayTimeoutMs,
  'an API write that waits its whole intake time and then makes two more calls must answer before API Gateway\'s 29 s',
);
assert(limits.watchWaitMsMax + awsCallMsMax(limits.apiRequestTimeoutMs) < limits.apiGatewayTimeoutMs, 'a watch that waits its longest must answer before API Gateway\'s 29 s');
assert(limits.longPollRequestTimeoutMs > limits.sqsReceiveWaitMsMax, 'a long poll must be allowed to wait its whole wait time');
checkTimings({ leaseMs: limits.leaseMsLocal, tickMs: limits.tickMsLocal });
