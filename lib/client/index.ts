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

const sessionHeader = 'x-epochkv-session';

/**
 * Codes of a 503 that guarantee a write was not applied (lost races, no leader, a region cut
 * off): such a write is retried. Any other 503 on a write (`OutcomeUnknown`, `ReplicationUnmet`,
 * a store error without a verdict) is an unknown outcome and is not.
 */
const notAppliedCodes: ReadonlySet<string> = new Set(['NoLeader', 'Busy', 'StaleEpoch', 'HeadConflict', 'TransactionConflict', 'RegionUnreachable', 'RegionDetached']);

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
  #retries = 0;

  constructor(options: EpochKvOptions = {}) {
    this.endpoint = (options.endpoint ?? localEndpoint).replace(/\/+$/, '');
    this.#sessionToken = options.sessionToken;
    this.#attemptsMax = options.attemptsMax ?? 6;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#bearerToken = options.bearerToken;
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
    const response = await this.#request('GET', `/kv/${encodeKey(key)}${query}`, { accept: 'application/json' }, undefined, scopeOf(options));
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
   */
  async put(key: string, value: string | Uint8Array, options: { ifVersion?: number; ifAbsent?: boolean; replication?: 'async' | 'quorum' | 'all' } & CallOptions = {}): Promise<WriteResult> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (options.ifVersion !== undefined) headers['if-match'] = `"${options.ifVersion}"`;
    if (options.ifAbsent === true) headers['if-none-match'] = '*';
    const query = options.replication === undefined ? '' : `?replication=${encodeURIComponent(options.replication)}`;
    const response = await this.#request('PUT', `/kv/${encodeKey(key)}${query}`, headers, typeof value === 'string' ? new TextEncoder().encode(value) : value, scopeOf(options));
    return (await response.json()) as WriteResult;
  }

  /** Compare-and-swap: writes `value` only while the key is at `expectedVersion`. */
  async cas(key: string, expectedVersion: number, value: string | Uint8Array, options: CallOptions = {}): Promise<WriteResult> {
    return this.put(key, value, { ...options, ifVersion: expectedVersion });
  }

  /** Deletes the key; false when it did not exist. */
  async delete(key: string, options: { ifVersion?: number } & CallOptions = {}): Promise<boolean> {
    const headers: Record<string, string> = options.ifVersion === undefined ? {} : { 'if-match': `"${options.ifVersion}"` };
    const response = await this.#request('DELETE', `/kv/${encodeKey(key)}`, headers, undefined, scopeOf(options));
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
  async txn(request: TxnRequest, options: { replication?: 'async' | 'quorum' | 'all' } & CallOptions = {}): Promise<TxnResult> {
    const query = options.replication === undefined ? '' : `?replication=${encodeURIComponent(options.replication)}`;
    const response = await this.#request('POST', `/txn${query}`, { 'content-type': 'application/json' }, new TextEncoder().encode(txnBody(request)), scopeOf(options));
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
      const response = await this.#request('GET', `/watch?${query}`, {}, undefined, scope, waitMs + this.#timeoutMs);
      const body = (await response.json()) as { entries: WatchEntry[]; next: number };
      for (const entry of body.entries) {
        // Once aborted, nothing more: not even the rest of a page already received.
        if (isAborted(options.signal)) return;
        yield entry;
      }
      from = body.next;
    }
  }

  /** `GET /cluster`: what `epochkv status` prints. */
  async status(options: CallOptions = {}): Promise<ClusterStatus> {
    return (await (await this.#request('GET', '/cluster', {}, undefined, scopeOf(options))).json()) as ClusterStatus;
  }

  async #request(method: string, path: string, headers: Record<string, string>, body: Uint8Array | undefined, scope: CallScope, attemptTimeoutMs = this.#timeoutMs): Promise<Response> {
    const write = method !== 'GET';
    const what = `${method} ${path}`;
    // Past the call's deadline a read has simply failed, but a write that was sent may have happened.
    const expired = (): UnavailableError =>
      write
        ? new OutcomeUnknownError(0, 'Timeout', `${what}: no answer within the call's timeoutMs; the write may or may not have been applied`)
        : new UnavailableError(0, 'Timeout', `${what}: no answer within the call's timeoutMs`);
    let lastError: EpochKvError | undefined;
    for (let attempt = 1; attempt <= this.#attemptsMax; attempt += 1) {
      if (attempt > 1) {
        this.#retries += 1;
        try {
          await sleep(backoffMs(attempt, lastError instanceof RetryAfter ? lastError.retryAfter : undefined), scope.either);
        } catch {
          if (scope.signal?.aborted) throw scope.signal.reason;
          // Nothing was in flight while sleeping: the last error is the honest outcome.
          throw lastError ?? expired();
        }
      }
      const requestHeaders: Record<string, string> = { ...headers };
      if (this.#sessionToken !== undefined) requestHeaders[sessionHeader] = this.#sessionToken;
      if (this.#bearerToken !== undefined) requestHeaders.authorization = `Bearer ${this.#bearerToken}`;
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
        // A write that may have reached the server must not be repeated blindly.
        if (write && sent) throw new OutcomeUnknownError(0, 'NoAnswer', `${what}: no answer from ${this.endpoint} (${reason}); the write may or may not have been applied`, { cause: error });
        continue;
      }
      const token = response.headers.get(sessionHeader);
      if (token !== null) this.#sessionToken = token;
      if (response.ok || (response.status === 404 && (method === 'DELETE' || (method === 'GET' && path.startsWith('/kv/'))))) return response;
      // API Gateway's own refusals say `message` or `Message` (IAM), without `error`.
      const problem = (await response.json().catch(() => ({}))) as { error?: string; message?: string; Message?: string };
      const code = problem.error ?? `Http${response.status}`;
      const message = problem.message ?? problem.Message ?? `${what} answered ${response.status}`;
      if (response.status === 412) throw new VersionConflictError(412, code, message);
      if (response.status === 401 || response.status === 403) throw new AccessDeniedError(response.status, code, message);
      // 502/504: the gateway lost the function's answer (a crash, the 29 s limit), not a verdict.
      if (response.status === 502 || response.status === 504) {
        if (write) throw new OutcomeUnknownError(response.status, code, `${message}; the write may or may not have been applied`);
        lastError = new UnavailableError(response.status, code, message);
        continue;
      }
      if (response.status === 429 || response.status === 503) {
        // An unknown outcome must not be retried blindly: the write may have happened. A 429
        // never reached the store; a 503 only says "not applied" through its code.
        if (write && response.status === 503 && !notAppliedCodes.has(code)) {
          throw new OutcomeUnknownError(response.status, code, code === 'OutcomeUnknown' ? message : `${message}; the write may or may not have been applied`);
        }
        lastError = new RetryAfter(response.status, code, message, response.headers.get('retry-after'));
        continue;
      }
      if (response.status >= 400 && response.status < 500) throw new BadRequestError(response.status, code, message);
      throw new EpochKvError(response.status, code, message);
    }
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
