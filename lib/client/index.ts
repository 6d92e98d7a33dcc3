import { randomUUID } from 'node:crypto';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

/** The local cloud's home API: the default endpoint. */
export const localEndpoint = 'http://127.0.0.1:8080';

export type Consistency = 'strong' | 'session' | 'eventual';

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface EpochKvOptions {
  /** Base URL of a region's API (API Gateway stage URL on AWS). Default: the local cloud. */
  endpoint?: string;
  /** Region to sign for. When set (or when credentials are given), requests are signed with SigV4 for `execute-api`. */
  region?: string;
  /** Static credentials, or a provider such as `fromNodeProviderChain()`; default: the standard chain when signing. */
  credentials?: Credentials | (() => Promise<Credentials>);
  /** Attempts for a request answered 429/503 or not answered; default 6. */
  attemptsMax?: number;
  /**
   * How long one attempt waits for an answer; default 10 s. A watch's long poll waits this much
   * beyond its `waitMs`, so an idle watch is answered (empty) rather than timed out.
   */
  timeoutMs?: number;
  /** Starting session token (from another client). */
  sessionToken?: string;
  /** The local cloud's EPOCHKV_TOKEN, sent as `Authorization: Bearer`. */
  bearerToken?: string;
  /**
   * Send an `Idempotency-Key` (a random UUID per call) on every write and repeat a write whose
   * outcome is unknown with that same key, which the server answers at most once; default true.
   * false: no key, and an unknown outcome rejects at once with OutcomeUnknownError.
   */
  idempotentWrites?: boolean;
}

/** Options every call takes. */
export interface CallOptions {
  /** Aborts the call (its retries too); the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * A deadline for the whole call, retries included. Past it a read rejects with
   * UnavailableError and a write with OutcomeUnknownError (code `Timeout`).
   */
  timeoutMs?: number;
}

/** Options of every call that writes. */
export interface WriteCallOptions extends CallOptions {
  /**
   * The write's `Idempotency-Key`: by default a random UUID per call (when the client's
   * `idempotentWrites` is on); a string of 1–128 printable ASCII characters to choose it (to
   * repeat a write safely across processes, within 24 h); false to send none, and then an
   * unknown outcome is not retried.
   */
  idempotencyKey?: string | false;
}

/** `X-Epochkv-Fence`: `<lock name>:<token>`, or a held lock (its `fence`). */
export type FenceOption = string | { readonly fence: string };

export interface Item {
  key: string;
  value: Uint8Array;
  version: number;
  epoch: number;
  index: number;
  /** Which copy answered. */
  servedBy: 'home' | 'replica' | null;
  text(): string;
}

export interface WriteResult {
  key: string;
  version: number;
  epoch: number;
  index: number;
  /** The mode the write was acknowledged under and the replica regions whose queue had it. */
  replication?: { mode: 'async' | 'quorum' | 'all'; acceptedBy: string[] };
}

export interface ListedItem {
  key: string;
  value: string;
  encoding: 'utf8' | 'base64';
  version: number;
  epoch: number;
  index: number;
}

export interface WatchEntry {
  index: number;
  epoch: number;
  committedAtMs: number;
  hash: string;
  ops: ({ type: 'put'; key: string; value: string; encoding: 'base64' } | { type: 'delete'; key: string } | { type: 'leader'; node: string; epoch: number; previousEpoch: number })[];
}

/**
 * A compare of `kv.txn`: the key's current version (`0`: the key is absent), its absence, or
 * its exact bytes (a string is compared as its UTF-8 bytes).
 */
export type TxnCompare = { key: string; version: number } | { key: string; absent: true } | { key: string; value: string | Uint8Array };

/** An op of a `kv.txn` branch; a key may appear once per branch. */
export type TxnOp = { op: 'put'; key: string; value: string | Uint8Array } | { op: 'delete'; key: string } | { op: 'get'; key: string };

/** `POST /txn`: when every compare holds the `success` ops run, else the `failure` ops, atomically. */
export interface TxnRequest {
  compare?: TxnCompare[];
  success?: TxnOp[];
  failure?: TxnOp[];
}

/** One op's answer, in the order of the branch that ran; a found get carries bytes and `text()` as `get` does. */
export type TxnOpResult =
  | { op: 'put' | 'delete'; key: string; version: number }
  | { op: 'get'; key: string; found: true; value: Uint8Array; version: number; text(): string }
  | { op: 'get'; key: string; found: false };

export interface TxnResult {
  /** Whether every compare held (the `success` branch ran) or not (the `failure` branch ran). */
  succeeded: boolean;
  results: TxnOpResult[];
  /** The session token after the transaction (the client keeps it too: see `sessionToken`). */
  token: string;
}

/** The API's JSON for a get result of a transaction. */
type TxnOpAnswer = { op: 'put' | 'delete'; key: string; version: number } | { op: 'get'; key: string; found: true; value?: string; valueBase64?: string; version: number } | { op: 'get'; key: string; found: false };

/** Bytes go as `valueBase64` (exact), text as `value` (the server stores its UTF-8 bytes). */
function txnValue(value: string | Uint8Array): { value: string } | { valueBase64: string } {
  return typeof value === 'string' ? { value } : { valueBase64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
}

/** The request as the API takes it; other fields pass through, so the server judges (and names) them. */
function txnBody(request: TxnRequest): string {
  const withBytes = <T extends object>(entry: T): object => {
    if (!('value' in entry)) return entry;
    const { value, ...rest } = entry as T & { value: string | Uint8Array };
    return { ...rest, ...txnValue(value) };
  };
  return JSON.stringify({ compare: (request.compare ?? []).map(withBytes), success: (request.success ?? []).map(withBytes), failure: (request.failure ?? []).map(withBytes) });
}

function txnResultOf(answer: TxnOpAnswer): TxnOpResult {
  if (answer.op !== 'get' || !answer.found) return answer;
  const value = answer.valueBase64 !== undefined ? new Uint8Array(Buffer.from(answer.valueBase64, 'base64')) : new TextEncoder().encode(answer.value ?? '');
  return { op: 'get', key: answer.key, found: true, value, version: answer.version, text: () => new TextDecoder().decode(value) };
}

/** `GET /cluster`: nodes, shard leaders and epochs, log heads, replica lag. */
export interface ClusterStatus {
  region: string;
  homeRegion: string;
  replicaRegions: string[];
  replication: 'async' | 'quorum' | 'all';
  clusterEpoch: number;
  leaseMs: number;
  tickMs: number;
  nodes: { id: string; status: 'alive' | 'suspected' | 'dead'; lastHeartbeatAgeMs: number | null; incarnation: string | null; seq: number | null }[];
  shards: {
    shard: number;
    leader: string | null;
    epoch: number;
    headIndex: number;
    leaseAgeMs: number | null;
    live: boolean;
    /** Replica regions an `all` write must reach (null: every replica). */
    inSync: string[] | null;
  }[];
  replicas: { region: string; shard: number; appliedIndex: number; lagEntries: number; lagMs: number; lastApplyLagMs: number; reportAgeMs: number }[];
}

/** Any answer the API gave that is not a success: carries its status and the API's `{error, message}`. */
export class EpochKvError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A compare-and-swap (If-Match / If-None-Match) condition did not hold; nothing was written. */
export class VersionConflictError extends EpochKvError {}

/** The request was refused as invalid (4xx): retrying it unchanged will not help. */
export class BadRequestError extends EpochKvError {}

/** The caller is not allowed (401 without a valid token, 403 from IAM): retrying will not help. */
export class AccessDeniedError extends EpochKvError {}

/** The store stayed unavailable (503/429 or no answer) through every retry, or past the call's deadline. */
export class UnavailableError extends EpochKvError {}

/**
 * A write was sent and no verdict came back (no answer, a 502/504 from the gateway, the call's
 * deadline, the server's own `OutcomeUnknown`, or a 503 whose code does not say that nothing
 * was applied), or it came back `503 ReplicationUnmet` (committed at home, but not yet in enough
 * replica regions: it may survive, or be lost with the home region): it may or may not have
 * been applied. Read the key to find out; it is not retried blindly, since the write may have
 * happened.
 */
export class OutcomeUnknownError extends UnavailableError {}

/** `409 LockHeld`: the lock (or election) stayed held by another holder for the whole `waitMs`. */
export class LockHeldError extends EpochKvError {
  constructor(
    message: string,
    /** The current holder's token. */
    readonly token: number | null,
  ) {
    super(409, 'LockHeld', message);
  }
}

/**
 * `409 FenceRejected`: the token given (an `X-Epochkv-Fence` header, a release, a proclaim) is
 * not the lock's current one: the lock moved on, or is free. Nothing was written.
 */
export class FenceRejectedError extends EpochKvError {
  constructor(
    message: string,
    /** The lock's current token, null when it is not held. */
    readonly token: number | null,
  ) {
    super(409, 'FenceRejected', message);
  }
}

/** `404 LeaseNotFound`: the lease expired, was revoked, or never existed; its keys are (being) deleted. */
export class LeaseNotFoundError extends EpochKvError {}

/** `422 IdempotencyKeyReused`: the key was used in the last 24 h for a different request. */
export class IdempotencyKeyReusedError extends BadRequestError {}

const sessionHeader = 'x-epochkv-session';

/**
 * Codes of a 503 that guarantee a write was not applied (lost races, no leader, a region cut
 * off): such a write is retried. Any other 503 on a write (`OutcomeUnknown`, `ReplicationUnmet`,
 * a store error without a verdict) is an unknown outcome and is not.
 */
const notAppliedCodes: ReadonlySet<string> = new Set(['NoLeader', 'Busy', 'StaleEpoch', 'HeadConflict', 'TransactionConflict', 'RegionUnreachable', 'RegionDetached']);

/** How one call's requests are sent. */
interface RequestOptions {
  /** How long one attempt waits (default: the client's timeoutMs). */
  attemptTimeoutMs?: number;
  /** A write's Idempotency-Key (default: a fresh UUID when the client's idempotentWrites is on; false: none). */
  idempotencyKey?: string | false | undefined;
  /** A 404 is an answer (a missing key), not an error. */
  notFoundIsAnswer?: boolean;
}

/** A call's own deadline and signal, combined once and shared by its attempts and backoffs. */
interface CallScope {
  /** The caller's signal. */
  signal: AbortSignal | undefined;
  /** The call's deadline (timeoutMs), when one was given. */
  deadline: AbortSignal | undefined;
  /** Aborts when either does. */
  either: AbortSignal | undefined;
}

function scopeOf(options: CallOptions): CallScope {
  const deadline = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs);
  const signals = [options.signal, deadline].filter((signal): signal is AbortSignal => signal !== undefined);
  return { signal: options.signal, deadline, either: signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals) };
}

/** Sleeps, but wakes (rejecting) as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Errors that mean the request never reached a server, so even a write is known not to have happened. */
const notSentCodes = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

function networkCode(error: unknown): string | undefined {
  const cause = (error as { cause?: { code?: string; errors?: { code?: string }[] } }).cause;
  // Connecting to a name with several addresses fails with an AggregateError of each attempt.
  return cause?.code ?? cause?.errors?.[0]?.code;
}

/**
 * A typed client for the epochkv API. It carries the session token from every response to the
 * next request (read-your-writes and monotonic reads, even across regions), retries 429/503
 * with backoff honouring `Retry-After` (a write's 503 only when its code says nothing was
 * applied), and surfaces version conflicts as VersionConflictError.
 * Every call takes a `signal` and a `timeoutMs` (CallOptions).
 */
export class EpochKv {
  readonly endpoint: string;
  #sessionToken: string | undefined;
  readonly #signer: SignatureV4 | undefined;
  readonly #attemptsMax: number;
  readonly #timeoutMs: number;
  readonly #bearerToken: string | undefined;
  readonly #idempotentWrites: boolean;
  #retries = 0;

  constructor(options: EpochKvOptions = {}) {
    this.endpoint = (options.endpoint ?? localEndpoint).replace(/\/+$/, '');
    this.#sessionToken = options.sessionToken;
    this.#attemptsMax = options.attemptsMax ?? 6;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#bearerToken = options.bearerToken;
    this.#idempotentWrites = options.idempotentWrites ?? true;
    if (options.region !== undefined || options.credentials !== undefined) {
      const region = options.region ?? 'us-east-1';
      const credentials = options.credentials ?? defaultCredentials();
      this.#signer = new SignatureV4({ service: 'execute-api', region, credentials, sha256: Sha256 });
    }
  }

  /** Requests this client repeated after a 429/503 or no answer. */
  get retries(): number {
    return this.#retries;
  }

  /** The session token to hand to another client (or process) that should see this one's writes. */
  get sessionToken(): string | undefined {
    return this.#sessionToken;
  }

  async get(key: string, options: { consistency?: Consistency | undefined } & CallOptions = {}): Promise<Item | undefined> {
    const query = options.consistency === undefined ? '' : `?consistency=${options.consistency}`;
    const response = await this.#request('GET', `/kv/${encodeKey(key)}${query}`, { accept: 'application/json' }, undefined, scopeOf(options), { notFoundIsAnswer: true });
    if (response.status === 404) return undefined;
    const body = (await response.json()) as ListedItem;
    const value = body.encoding === 'base64' ? new Uint8Array(Buffer.from(body.value, 'base64')) : new TextEncoder().encode(body.value);
    const servedBy = response.headers.get('x-epochkv-served-by');
    return {
      key: body.key,
      value,
      version: body.version,
      epoch: body.epoch,
      index: body.index,
      servedBy: servedBy === 'home' || servedBy === 'replica' ? servedBy : null,
      text: () => new TextDecoder().decode(value),
    };
  }

  /**
   * `replication`: a mode stronger than the cluster's for this write (`quorum`: acknowledged
   * once a majority of regions has it; `all`: every in-sync replica region).
   * `lease`: attach the key to a lease (its id or handle): the key is deleted when the lease
   * ends. `ttlMs`: give the key its own expiry. `fence`: commit only while that lock is held
   * with that token (else FenceRejectedError, nothing written).
   */
  async put(
    key: string,
    value: string | Uint8Array,
    options: { ifVersion?: number; ifAbsent?: boolean; replication?: 'async' | 'quorum' | 'all'; lease?: string | { readonly id: string }; ttlMs?: number; fence?: FenceOption } & WriteCallOptions = {},
  ): Promise<WriteResult> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', ...fenceHeader(options.fence) };
    if (options.ifVersion !== undefined) headers['if-match'] = `"${options.ifVersion}"`;
    if (options.ifAbsent === true) headers['if-none-match'] = '*';
    const query = new URLSearchParams();
    if (options.replication !== undefined) query.set('replication', options.replication);
    if (options.lease !== undefined) query.set('lease', typeof options.lease === 'string' ? options.lease : options.lease.id);
    if (options.ttlMs !== undefined) query.set('ttlMs', String(options.ttlMs));
    const path = `/kv/${encodeKey(key)}${query.size > 0 ? `?${query}` : ''}`;
    const response = await this.#request('PUT', path, headers, typeof value === 'string' ? new TextEncoder().encode(value) : value, scopeOf(options), { idempotencyKey: options.idempotencyKey });
    return (await response.json()) as WriteResult;
  }

  /** Compare-and-swap: writes `value` only while the key is at `expectedVersion`. */
  async cas(key: string, expectedVersion: number, value: string | Uint8Array, options: { fence?: FenceOption } & WriteCallOptions = {}): Promise<WriteResult> {
    return this.put(key, value, { ...options, ifVersion: expectedVersion });
  }

  /** Deletes the key; false when it did not exist. `fence` as for `put`. */
  async delete(key: string, options: { ifVersion?: number; fence?: FenceOption } & WriteCallOptions = {}): Promise<boolean> {
    const headers: Record<string, string> = { ...fenceHeader(options.fence), ...(options.ifVersion === undefined ? {} : { 'if-match': `"${options.ifVersion}"` }) };
    const response = await this.#request('DELETE', `/kv/${encodeKey(key)}`, headers, undefined, scopeOf(options), { idempotencyKey: options.idempotencyKey, notFoundIsAnswer: true });
    return response.status !== 404;
  }

  /**
   * A multi-key transaction (`POST /txn`), atomic across shards: when every compare holds the
   * `success` ops run, else the `failure` ops. Values may be strings or bytes; a found get's
   * `value` is bytes, with `text()`. A read-only transaction is a linearizable snapshot of its
   * keys. Lost races (503 with a code that says nothing was applied) are retried; an unknown
   * outcome rejects with OutcomeUnknownError and is not; a refused request (400 `TxnTooLarge`,
   * `BadRequest`) rejects with BadRequestError.
   */
  async txn(request: TxnRequest, options: { replication?: 'async' | 'quorum' | 'all'; fence?: FenceOption } & WriteCallOptions = {}): Promise<TxnResult> {
    const query = options.replication === undefined ? '' : `?replication=${encodeURIComponent(options.replication)}`;
    const headers = { 'content-type': 'application/json', ...fenceHeader(options.fence) };
    const response = await this.#request('POST', `/txn${query}`, headers, new TextEncoder().encode(txnBody(request)), scopeOf(options), { idempotencyKey: options.idempotencyKey });
    const body = (await response.json()) as { succeeded: boolean; results: TxnOpAnswer[]; token: string };
    return { succeeded: body.succeeded, results: body.results.map(txnResultOf), token: body.token };
  }

  /** One page of keys with a prefix, in key order. */
  async listPage(options: { prefix?: string | undefined; limit?: number | undefined; after?: string | undefined; consistency?: Consistency | undefined } & CallOptions = {}): Promise<{ items: ListedItem[]; next: string | null }> {
    const query = new URLSearchParams();
    if (options.prefix !== undefined) query.set('prefix', options.prefix);
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.after !== undefined) query.set('after', options.after);
    if (options.consistency !== undefined) query.set('consistency', options.consistency);
    const response = await this.#request('GET', `/kv${query.size > 0 ? `?${query}` : ''}`, {}, undefined, scopeOf(options));
    return (await response.json()) as { items: ListedItem[]; next: string | null };
  }

  /** Every key with a prefix, page by page; `signal` and `timeoutMs` apply to each page. */
  async *list(options: { prefix?: string | undefined; pageSize?: number | undefined; consistency?: Consistency | undefined } & CallOptions = {}): AsyncGenerator<ListedItem> {
    let after: string | undefined;
    do {
      const page = await this.listPage({ prefix: options.prefix, limit: options.pageSize, after, consistency: options.consistency, signal: options.signal, timeoutMs: options.timeoutMs });
      yield* page.items;
      after = page.next ?? undefined;
    } while (after !== undefined);
  }

  /**
   * The ordered change stream of one shard (or of a hash-tagged prefix), long-polling until
   * `signal` aborts; an idle shard is waited on for ever. `from`: a log index (default 1, the
   * whole log) or `'now'` (only what is committed from now on). `waitMs`: how long each long
   * poll waits for an entry before the server answers empty (default 10 s, at most 20 s); each
   * poll's own timeout is that plus the client's `timeoutMs`, so an idle poll is never cut off.
   */
  async *watch(options: { shard?: number; prefix?: string | undefined; from?: number | 'now'; waitMs?: number; signal?: AbortSignal }): AsyncGenerator<WatchEntry> {
    let from: number | 'now' = options.from ?? 1;
    const waitMs = options.waitMs ?? 10_000;
    while (options.signal?.aborted !== true) {
      const query = new URLSearchParams({ from: String(from), waitMs: String(waitMs) });
      if (options.shard !== undefined) query.set('shard', String(options.shard));
      if (options.prefix !== undefined) query.set('prefix', options.prefix);
      const scope = scopeOf({ ...(options.signal === undefined ? {} : { signal: options.signal }) });
      const response = await this.#request('GET', `/watch?${query}`, {}, undefined, scope, { attemptTimeoutMs: waitMs + this.#timeoutMs });
      const body = (await response.json()) as { entries: WatchEntry[]; next: number };
      for (const entry of body.entries) {
        // Once aborted, nothing more: not even the rest of a page already received.
        if (isAborted(options.signal)) return;
        yield entry;
      }
      from = body.next;
    }
  }

  /**
   * `POST /leases`: a lease of `ttlMs` (1,000 to 86,400,000). By default the handle keeps it
   * alive every ttl/3 until `close()` or `revoke()`; `keepAlive: false` leaves that to you. Keys
   * put with `{lease}` and locks taken with it are deleted when it ends. A lease found lost (a
   * keepalive answered LeaseNotFound, or none succeeded for a whole ttl) resolves `lost` and
   * calls `onLost`.
   */
  async grantLease(ttlMs: number, options: { keepAlive?: boolean; onLost?: (error: Error) => void } & WriteCallOptions = {}): Promise<Lease> {
    const response = await this.#request('POST', '/leases', { 'content-type': 'application/json' }, jsonBytes({ ttlMs }), scopeOf(options), { idempotencyKey: options.idempotencyKey });
    const granted = (await response.json()) as { id: string; ttlMs: number };
    return new Lease(this, granted.id, granted.ttlMs, options.keepAlive ?? true, options.onLost);
  }

  /** A handle on a lease granted elsewhere (by id), kept alive as `grantLease`'s unless `keepAlive: false`. */
  async lease(id: string, options: { keepAlive?: boolean; onLost?: (error: Error) => void } & CallOptions = {}): Promise<Lease> {
    const info = await this.leaseInfo(id, options);
    return new Lease(this, id, info.ttlMs, options.keepAlive ?? true, options.onLost);
  }

  /** `POST /leases/{id}/keepalive`: starts the lease's ttl again; LeaseNotFoundError once it has ended. */
  async keepLeaseAlive(id: string, options: WriteCallOptions = {}): Promise<{ id: string; ttlMs: number }> {
    const response = await this.#request('POST', `/leases/${encodeURIComponent(id)}/keepalive`, {}, undefined, scopeOf(options), { idempotencyKey: options.idempotencyKey });
    return (await response.json()) as { id: string; ttlMs: number };
  }

  /** `GET /leases/{id}`: its ttl, the time left as its shard's leader last judged it, and its keys. */
  async leaseInfo(id: string, options: CallOptions = {}): Promise<LeaseInfo> {
    return (await (await this.#request('GET', `/leases/${encodeURIComponent(id)}`, {}, undefined, scopeOf(options))).json()) as LeaseInfo;
  }

  /** `DELETE /leases/{id}`: ends the lease now and deletes its keys (locks and leaderships included). */
  async revokeLease(id: string, options: WriteCallOptions = {}): Promise<{ id: string; revoked: true; keysDeleted: number }> {
    const response = await this.#request('DELETE', `/leases/${encodeURIComponent(id)}`, {}, undefined, scopeOf(options), { idempotencyKey: options.idempotencyKey });
    return (await response.json()) as { id: string; revoked: true; keysDeleted: number };
  }

  /**
   * Takes lock `name` (`POST /locks/{name}`), waiting up to `waitMs` (default 0) while another
   * holder has it, else LockHeldError. With `ttlMs` (default 10,000) the client grants the lock
   * its own lease and keeps it alive until `release()`; with `lease` the lock lives on that
   * lease. The handle's `fence` (`name:token`) goes on writes as the `fence` option: they commit
   * only while this holder still has the lock.
   */
  async lock(name: string, options: { ttlMs?: number; lease?: Lease | string; waitMs?: number; onLost?: (error: Error) => void } & CallOptions = {}): Promise<Lock> {
    const { lease, own } = await this.#holderLease(options);
    try {
      const holder = await this.#acquire(`/locks/${encodeURIComponent(name)}`, '/locks', name, { leaseId: lease.id }, options);
      return new Lock(this, name, holder.token, lease, own);
    } catch (error) {
      if (own) await lease.revoke().catch(() => undefined);
      throw error;
    }
  }

  /** `GET /locks/{name}`: the holder's token and lease, or `held: false`. */
  async lockHolder(name: string, options: CallOptions = {}): Promise<{ name: string; held: boolean; token: number | null; leaseId: string | null }> {
    return (await (await this.#request('GET', `/locks/${encodeURIComponent(name)}`, {}, undefined, scopeOf(options))).json()) as { name: string; held: boolean; token: number | null; leaseId: string | null };
  }

  /** `DELETE /locks/{name}?token=`: FenceRejectedError when `token` is no longer the lock's. */
  async releaseLock(name: string, token: number, options: WriteCallOptions = {}): Promise<void> {
    await this.#request('DELETE', `/locks/${encodeURIComponent(name)}?token=${token}`, {}, undefined, scopeOf(options), { idempotencyKey: options.idempotencyKey });
  }

  /** Election `name`: campaign, leader, proclaim, resign, observe. */
  election(name: string): Election {
    return new Election(this, name);
  }

  /** @internal `POST /elections/{name}/campaign` with the given lease (see Election.campaign). */
  async campaign(name: string, value: string, options: { ttlMs?: number; lease?: Lease | string; waitMs?: number; onLost?: (error: Error) => void } & CallOptions = {}): Promise<Leadership> {
    const { lease, own } = await this.#holderLease(options);
    try {
      const holder = await this.#acquire(`/elections/${encodeURIComponent(name)}/campaign`, '/elections', name, { leaseId: lease.id, value }, options);
      return new Leadership(this, name, holder.token, value, lease, own);
    } catch (error) {
      if (own) await lease.revoke().catch(() => undefined);
      throw error;
    }
  }

  /** `GET /elections/{name}`: the leader and its value, or undefined when there is none. */
  async leader(name: string, options: CallOptions = {}): Promise<ElectionLeader | undefined> {
    const response = await this.#request('GET', `/elections/${encodeURIComponent(name)}`, {}, undefined, scopeOf(options), { notFoundIsAnswer: true });
    if (response.status === 404) return undefined;
    return (await response.json()) as ElectionLeader;
  }

  /** `POST /elections/{name}/proclaim`: the leader holding `token` changes its value; FenceRejectedError otherwise. */
  async proclaim(name: string, token: number, value: string, options: WriteCallOptions = {}): Promise<void> {
    await this.#request('POST', `/elections/${encodeURIComponent(name)}/proclaim`, { 'content-type': 'application/json' }, jsonBytes({ token, value }), scopeOf(options), { idempotencyKey: options.idempotencyKey });
  }

  /** `DELETE /elections/{name}?token=`: the leader holding `token` steps down; FenceRejectedError otherwise. */
  async resign(name: string, token: number, options: WriteCallOptions = {}): Promise<void> {
    await this.#request('DELETE', `/elections/${encodeURIComponent(name)}?token=${token}`, {}, undefined, scopeOf(options), { idempotencyKey: options.idempotencyKey });
  }

  /**
   * The changes of every key starting with `prefix` on every shard (`GET /watch?prefix=`), from
   * now (the default), from the start (`from: 1`) or a cursor a previous event carried, until
   * `signal` aborts. Each key's events come in order.
   */
  async *watchPrefix(options: { prefix: string; from?: 'now' | 1 | string; waitMs?: number; signal?: AbortSignal }): AsyncGenerator<PrefixEvent> {
    let from = String(options.from ?? 'now');
    const waitMs = options.waitMs ?? 10_000;
    while (!isAborted(options.signal)) {
      const query = new URLSearchParams({ prefix: options.prefix, from, waitMs: String(waitMs) });
      const scope = scopeOf(options.signal === undefined ? {} : { signal: options.signal });
      const response = await this.#request('GET', `/watch?${query}`, {}, undefined, scope, { attemptTimeoutMs: waitMs + this.#timeoutMs });
      const body = (await response.json()) as { events: Omit<PrefixEvent, 'cursor'>[]; next: string };
      for (const event of body.events) {
        if (isAborted(options.signal)) return;
        yield { ...event, cursor: body.next };
      }
      from = body.next;
    }
  }

  /** A prefix watch's cursor at the current heads: `watchPrefix({from: cursor})` then sees every change after now. */
  async watchCursor(prefix: string, options: CallOptions = {}): Promise<string> {
    const query = new URLSearchParams({ prefix, from: 'now', waitMs: '0' });
    return ((await (await this.#request('GET', `/watch?${query}`, {}, undefined, scopeOf(options))).json()) as { next: string }).next;
  }

  /** The lease a lock or a campaign lives on: the caller's, or one of its own kept alive by this client. */
  async #holderLease(options: { ttlMs?: number; lease?: Lease | string; onLost?: (error: Error) => void } & CallOptions): Promise<{ lease: Lease; own: boolean }> {
    if (options.lease !== undefined && options.ttlMs !== undefined) throw new BadRequestError(400, 'BadRequest', 'give a lock or a campaign either lease or ttlMs, not both');
    if (options.lease instanceof Lease) return { lease: options.lease, own: false };
    if (typeof options.lease === 'string') return { lease: await this.lease(options.lease, { keepAlive: false, ...callOnly(options) }), own: false };
    // A lease of the client's own (not the server's ttlMs grant): its id is known before the
    // acquire, so a repeated acquire whose first answer was lost recognises the lock as ours.
    return { lease: await this.grantLease(options.ttlMs ?? defaultHolderTtlMs, { ...callOnly(options), ...(options.onLost === undefined ? {} : { onLost: options.onLost }) }), own: true };
  }

  /** A lock or a campaign: POST until held, `waitMs` at most 20 s per request (longer waits ask again). */
  async #acquire(path: string, route: '/locks' | '/elections', name: string, body: Record<string, unknown>, options: { waitMs?: number } & CallOptions): Promise<{ token: number }> {
    const waitMs = options.waitMs ?? 0;
    const startMs = performance.now();
    for (;;) {
      const leftMs = Math.max(0, waitMs - (performance.now() - startMs));
      const stepMs = Math.round(Math.min(leftMs, lockWaitMsMax));
      try {
        const response = await this.#request('POST', `${path}?waitMs=${stepMs}`, { 'content-type': 'application/json' }, jsonBytes(body), scopeOf(options), { attemptTimeoutMs: stepMs + this.#timeoutMs });
        return (await response.json()) as { token: number };
      } catch (error) {
        if (!(error instanceof LockHeldError)) throw error;
        // Held by our own lease: an earlier attempt of this call took it and its answer was lost.
        const held = route === '/locks' ? await this.lockHolder(name, callOnly(options)) : await this.leader(name, callOnly(options));
        if (held !== undefined && held.leaseId === body.leaseId && typeof held.token === 'number') return { token: held.token };
        if (leftMs - stepMs <= 0) throw error;
      }
    }
  }

  /** `GET /cluster`: what `epochkv status` prints. */
  async status(options: CallOptions = {}): Promise<ClusterStatus> {
    return (await (await this.#request('GET', '/cluster', {}, undefined, scopeOf(options))).json()) as ClusterStatus;
  }

  async #request(method: string, path: string, headers: Record<string, string>, body: Uint8Array | undefined, scope: CallScope, options: RequestOptions = {}): Promise<Response> {
    const write = method !== 'GET';
    const what = `${method} ${path}`;
    const attemptTimeoutMs = options.attemptTimeoutMs ?? this.#timeoutMs;
    // One key for every attempt of this call: the server answers a repeat with the first answer.
    const idempotencyKey = !write || options.idempotencyKey === false ? undefined : (options.idempotencyKey ?? (this.#idempotentWrites ? randomUUID() : undefined));
    // Past the call's deadline a read has simply failed, but a write that was sent may have happened.
    const expired = (): UnavailableError =>
      write
        ? new OutcomeUnknownError(0, 'Timeout', `${what}: no answer within the call's timeoutMs; the write may or may not have been applied`)
        : new UnavailableError(0, 'Timeout', `${what}: no answer within the call's timeoutMs`);
    let lastError: EpochKvError | undefined;
    // Set once an attempt of this write may have been applied: from then on, giving up is an unknown outcome.
    let unknown: OutcomeUnknownError | undefined;
    // A ReplicationUnmet write is committed at home; a replay of it says nothing of the replicas since.
    let replicationUnmet: OutcomeUnknownError | undefined;
    /** An unknown outcome: repeated with the same Idempotency-Key when there is one, else the call's answer. */
    const unknownOutcome = (error: OutcomeUnknownError): void => {
      if (idempotencyKey === undefined) throw error;
      unknown = error;
      lastError = error;
    };
    for (let attempt = 1; attempt <= this.#attemptsMax; attempt += 1) {
      if (attempt > 1) {
        this.#retries += 1;
        try {
          await sleep(backoffMs(attempt, lastError instanceof RetryAfter ? lastError.retryAfter : undefined), scope.either);
        } catch {
          if (scope.signal?.aborted) throw scope.signal.reason;
          // Nothing was in flight while sleeping: the last error is the honest outcome (unknown, once any attempt may have landed).
          throw unknown ?? lastError ?? expired();
        }
      }
      const requestHeaders: Record<string, string> = { ...headers };
      if (this.#sessionToken !== undefined) requestHeaders[sessionHeader] = this.#sessionToken;
      if (this.#bearerToken !== undefined) requestHeaders.authorization = `Bearer ${this.#bearerToken}`;
      if (idempotencyKey !== undefined) requestHeaders['idempotency-key'] = idempotencyKey;
      let response: Response;
      try {
        const signed = await this.#sign(method, path, requestHeaders, body);
        const timeout = AbortSignal.timeout(attemptTimeoutMs);
        response = await fetch(`${this.endpoint}${path}`, {
          method,
          headers: signed,
          ...(body === undefined ? {} : { body }),
          signal: scope.either === undefined ? timeout : AbortSignal.any([scope.either, timeout]),
        });
      } catch (error) {
        if (scope.signal?.aborted) throw scope.signal.reason;
        if (scope.deadline?.aborted) throw expired();
        const code = networkCode(error);
        const sent = code === undefined || !notSentCodes.has(code);
        const reason = code ?? (error as { cause?: { message?: string } }).cause?.message ?? String(error);
        lastError = new UnavailableError(0, 'NoAnswer', `${what}: no answer from ${this.endpoint} (${reason})`, { cause: error });
        // A write that may have reached the server is repeated only under its Idempotency-Key.
        if (write && sent) unknownOutcome(new OutcomeUnknownError(0, 'NoAnswer', `${what}: no answer from ${this.endpoint} (${reason}); the write may or may not have been applied`, { cause: error }));
        continue;
      }
      const token = response.headers.get(sessionHeader);
      if (token !== null) this.#sessionToken = token;
      const found404 = response.status === 404 && options.notFoundIsAnswer === true;
      if (response.ok || found404) {
        // The first answer of a write that met ReplicationUnmet: committed at home once, and still not known to be in the replicas.
        if (replicationUnmet !== undefined && response.headers.get('idempotent-replayed') === 'true') throw replicationUnmet;
        return response;
      }
      // API Gateway's own refusals say `message` or `Message` (IAM), without `error`.
      const problem = (await response.json().catch(() => ({}))) as { error?: string; message?: string; Message?: string; token?: number | null };
      const code = problem.error ?? `Http${response.status}`;
      const message = problem.message ?? problem.Message ?? `${what} answered ${response.status}`;
      if (response.status === 412) throw new VersionConflictError(412, code, message);
      if (response.status === 401 || response.status === 403) throw new AccessDeniedError(response.status, code, message);
      // 502/504: the gateway lost the function's answer (a crash, the 29 s limit), not a verdict.
      if (response.status === 502 || response.status === 504) {
        if (write) {
          unknownOutcome(new OutcomeUnknownError(response.status, code, `${message}; the write may or may not have been applied`));
          continue;
        }
        lastError = new UnavailableError(response.status, code, message);
        continue;
      }
      if (response.status === 429 || response.status === 503) {
        // An unknown outcome is repeated only under its Idempotency-Key: the write may have
        // happened. A 429 never reached the store; a 503 only says "not applied" through its code.
        if (write && response.status === 503 && !notAppliedCodes.has(code)) {
          const error = new OutcomeUnknownError(response.status, code, code === 'OutcomeUnknown' ? message : `${message}; the write may or may not have been applied`);
          if (code === 'ReplicationUnmet') replicationUnmet = error;
          unknownOutcome(error);
          continue;
        }
        lastError = new RetryAfter(response.status, code, message, response.headers.get('retry-after'));
        continue;
      }
      if (response.status === 409 && code === 'LockHeld') throw new LockHeldError(message, problem.token ?? null);
      if (response.status === 409 && code === 'FenceRejected') throw new FenceRejectedError(message, problem.token ?? null);
      if (response.status === 404 && code === 'LeaseNotFound') throw new LeaseNotFoundError(404, code, message);
      if (response.status === 422 && code === 'IdempotencyKeyReused') throw new IdempotencyKeyReusedError(422, code, message);
      if (response.status >= 400 && response.status < 500) throw new BadRequestError(response.status, code, message);
      throw new EpochKvError(response.status, code, message);
    }
    if (unknown !== undefined) throw unknown;
    if (lastError instanceof RetryAfter) throw new UnavailableError(lastError.status, lastError.code, lastError.message);
    throw lastError ?? new UnavailableError(0, 'Unavailable', `${what}: gave up after ${this.#attemptsMax} attempts`);
  }

  async #sign(method: string, path: string, headers: Record<string, string>, body: Uint8Array | undefined): Promise<Record<string, string>> {
    if (this.#signer === undefined) return headers;
    const url = new URL(`${this.endpoint}${path}`);
    const query: Record<string, string> = {};
    for (const [name, value] of url.searchParams) query[name] = value;
    const signed = await this.#signer.sign({
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port === '' ? {} : { port: Number(url.port) }),
      path: url.pathname,
      query,
      headers: { ...headers, host: url.host },
      ...(body === undefined ? {} : { body }),
    });
    return signed.headers as Record<string, string>;
  }
}

/** `GET /leases/{id}`. */
export interface LeaseInfo {
  id: string;
  ttlMs: number;
  /** Time left as the lease's shard leader last judged it (a tick old at most). */
  remainingMs: number;
  keys: string[];
}

/** `GET /elections/{name}`. */
export interface ElectionLeader {
  name: string;
  token: number;
  leaseId: string;
  value: string;
}

/** A change seen by `watchPrefix`; `cursor` resumes right after the page that held it. */
export interface PrefixEvent {
  key: string;
  type: 'put' | 'delete';
  version: number;
  value?: string;
  valueBase64?: string;
  cursor: string;
}

/** The ttl of the lease a lock or a campaign gets when given neither `ttlMs` nor `lease`. */
const defaultHolderTtlMs = 10_000;
/** The API's longest wait for a lock or a campaign in one request. */
const lockWaitMsMax = 20_000;

function jsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

/** Only a call's signal and deadline, for the calls it makes on its way. */
function callOnly(options: CallOptions): CallOptions {
  return { ...(options.signal === undefined ? {} : { signal: options.signal }), ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) };
}

/**
 * A lease. While it is kept alive (the default) a keepalive goes every ttl/3, each bounded by
 * ttl/3; `close()` stops them (the lease then ends a ttl after the last one), `revoke()` ends it
 * now. The lease is lost when a keepalive is answered LeaseNotFound, or when none has succeeded
 * for a whole ttl since the last one that did was sent (its keys may be deleted from then on):
 * `lost` resolves with the reason and `onLost` is called, once, and the keepalives stop.
 */
export class Lease {
  /** Resolves (never rejects) once the lease is known lost. */
  readonly lost: Promise<Error>;
  #resolveLost!: (error: Error) => void;
  #lostError: Error | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** performance.now() when the last successful keepalive (or the grant) was sent. */
  #aliveSinceMs: number;

  constructor(
    readonly client: EpochKv,
    readonly id: string,
    readonly ttlMs: number,
    keepAlive: boolean,
    private readonly onLost?: (error: Error) => void,
  ) {
    this.#aliveSinceMs = performance.now();
    this.lost = new Promise<Error>((resolve) => (this.#resolveLost = resolve));
    if (keepAlive) this.#schedule();
    else this.#closed = true;
  }

  /** Whether keepalives have stopped (closed, revoked or lost). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Why the lease was lost, once it was. */
  get lostError(): Error | undefined {
    return this.#lostError;
  }

  /** One keepalive now; LeaseNotFoundError (and the lease marked lost) once it has ended. */
  async keepAlive(options: WriteCallOptions = {}): Promise<void> {
    const sentAtMs = performance.now();
    try {
      await this.client.keepLeaseAlive(this.id, options);
      this.#aliveSinceMs = Math.max(this.#aliveSinceMs, sentAtMs);
    } catch (error) {
      if (error instanceof LeaseNotFoundError) this.#lose(error);
      throw error;
    }
  }

  /** `GET /leases/{id}`. */
  show(options: CallOptions = {}): Promise<LeaseInfo> {
    return this.client.leaseInfo(this.id, options);
  }

  /** Stops the keepalives and ends the lease now: its keys, locks and leaderships are deleted. */
  async revoke(options: WriteCallOptions = {}): Promise<{ keysDeleted: number }> {
    this.close();
    try {
      return { keysDeleted: (await this.client.revokeLease(this.id, options)).keysDeleted };
    } catch (error) {
      // Already ended: nothing of it is left to delete by us.
      if (error instanceof LeaseNotFoundError) return { keysDeleted: 0 };
      throw error;
    }
  }

  /** Stops the keepalives; the lease ends a ttl after the last one. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  #schedule(): void {
    const intervalMs = Math.max(1, Math.floor(this.ttlMs / 3));
    this.#timer = setTimeout(() => void this.#tick(intervalMs), intervalMs);
  }

  async #tick(intervalMs: number): Promise<void> {
    if (this.#closed) return;
    try {
      await this.keepAlive({ timeoutMs: intervalMs });
    } catch (error) {
      if (this.#closed) return;
      // Past a whole ttl without a keepalive known to have landed, the lease may be gone.
      if (performance.now() - this.#aliveSinceMs >= this.ttlMs) {
        this.#lose(new LeaseNotFoundError(0, 'LeaseLost', `lease ${this.id}: no keepalive succeeded for its whole ttl (${this.ttlMs} ms); it may have expired (last error: ${String(error)})`, { cause: error }));
        return;
      }
    }
    if (!this.#closed) this.#schedule();
  }

  #lose(error: Error): void {
    if (this.#lostError !== undefined) return;
    this.#lostError = error;
    this.close();
    this.#resolveLost(error);
    this.onLost?.(error);
  }
}

/** A held lock: send `fence` with writes (the `fence` option) so they commit only while it is held. */
export class Lock {
  /** `X-Epochkv-Fence`'s value: `<name>:<token>`. */
  readonly fence: string;
  readonly leaseId: string;

  constructor(
    readonly client: EpochKv,
    readonly name: string,
    readonly token: number,
    readonly lease: Lease,
    private readonly ownLease: boolean,
  ) {
    this.fence = `${name}:${token}`;
    this.leaseId = lease.id;
  }

  /** Resolves once the lease under the lock is known lost (the lock may then be someone else's). */
  get lost(): Promise<Error> {
    return this.lease.lost;
  }

  /**
   * Releases the lock (FenceRejectedError when it had already moved on: the lease was lost) and,
   * when the lock got its own lease, revokes that lease too.
   */
  async release(options: CallOptions = {}): Promise<void> {
    try {
      await this.client.releaseLock(this.name, this.token, options);
    } finally {
      if (this.ownLease) await this.lease.revoke(options).catch(() => undefined);
    }
  }
}

/** Leading an election: `proclaim` a new value, `resign`. */
export class Leadership {
  constructor(
    readonly client: EpochKv,
    readonly name: string,
    readonly token: number,
    public value: string,
    readonly lease: Lease,
    private readonly ownLease: boolean,
  ) {}

  get leaseId(): string {
    return this.lease.id;
  }

  /** Resolves once the lease under the leadership is known lost. */
  get lost(): Promise<Error> {
    return this.lease.lost;
  }

  async proclaim(value: string, options: WriteCallOptions = {}): Promise<void> {
    await this.client.proclaim(this.name, this.token, value, options);
    this.value = value;
  }

  async resign(options: CallOptions = {}): Promise<void> {
    try {
      await this.client.resign(this.name, this.token, options);
    } finally {
      if (this.ownLease) await this.lease.revoke(options).catch(() => undefined);
    }
  }
}

/** One election: campaign to lead it, read or observe its leader. */
export class Election {
  #leadership: Leadership | undefined;

  constructor(
    readonly client: EpochKv,
    readonly name: string,
  ) {}

  /** The leadership this handle won, until it resigns. */
  get leadership(): Leadership | undefined {
    return this.#leadership;
  }

  /**
   * Campaigns with `value`, waiting up to `waitMs` (default 0) for the leader to go (else
   * LockHeldError). With `ttlMs` (default 10,000) the leadership gets its own lease, kept alive
   * until `resign()`; with `lease` it lives on that lease.
   */
  async campaign(value: string, options: { ttlMs?: number; lease?: Lease | string; waitMs?: number; onLost?: (error: Error) => void } & CallOptions = {}): Promise<Leadership> {
    this.#leadership = await this.client.campaign(this.name, value, options);
    return this.#leadership;
  }

  leader(options: CallOptions = {}): Promise<ElectionLeader | undefined> {
    return this.client.leader(this.name, options);
  }

  /** The leader this handle won changes its value. */
  async proclaim(value: string, options: WriteCallOptions = {}): Promise<void> {
    if (this.#leadership === undefined) throw new BadRequestError(400, 'NotLeader', `election "${this.name}": campaign before proclaiming`);
    await this.#leadership.proclaim(value, options);
  }

  async resign(options: CallOptions = {}): Promise<void> {
    if (this.#leadership === undefined) return;
    const leadership = this.#leadership;
    this.#leadership = undefined;
    await leadership.resign(options);
  }

  /**
   * The leader now, then each change of leader or value (undefined: no leader), until `signal`
   * aborts: a prefix watch of the election's keys, each change read back with `leader()`.
   */
  async *observe(options: { signal?: AbortSignal; waitMs?: number } = {}): AsyncGenerator<ElectionLeader | undefined> {
    const key = `__epochkv/election/${this.name}`;
    const call = options.signal === undefined ? {} : { signal: options.signal };
    // The cursor is taken before the first read, so no change between the two is missed.
    const from = await this.client.watchCursor(key, call);
    let current = await this.leader(call);
    yield current;
    const events = this.client.watchPrefix({ prefix: key, from, ...(options.waitMs === undefined ? {} : { waitMs: options.waitMs }), ...call });
    for await (const event of events) {
      // The prefix also matches longer election names: only this one's leader and value keys count.
      if (event.key !== key && event.key !== `${key}/value`) continue;
      const now = await this.leader(call);
      if (JSON.stringify(now ?? null) === JSON.stringify(current ?? null) || isAborted(options.signal)) continue;
      current = now;
      yield now;
    }
  }
}

/** A 429/503 that will be retried, with the server's Retry-After for the backoff. */
class RetryAfter extends UnavailableError {
  constructor(
    status: number,
    code: string,
    message: string,
    readonly retryAfter: string | null,
  ) {
    super(status, code, message);
  }
}

/** A function, not an inline check: the signal changes between yields, which narrowing cannot see. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function fenceHeader(fence: FenceOption | undefined): Record<string, string> {
  if (fence === undefined) return {};
  return { 'x-epochkv-fence': typeof fence === 'string' ? fence : fence.fence };
}

function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

/** Full-jitter exponential backoff, never shorter than the server's Retry-After. */
function backoffMs(attempt: number, retryAfter: string | null | undefined): number {
  const floorMs = retryAfter !== null && retryAfter !== undefined && /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1_000 : 0;
  const jitterMs = Math.random() * Math.min(2_000, 50 * 2 ** attempt);
  return Math.max(floorMs, jitterMs);
}

function defaultCredentials(): () => Promise<Credentials> {
  let provider: (() => Promise<Credentials>) | undefined;
  return async () => {
    // Loaded on first use: local users never need the credential chain.
    provider ??= (await import('@aws-sdk/credential-provider-node')).defaultProvider();
    return provider();
  };
}
