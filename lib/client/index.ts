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
  /** Per-attempt timeout; default 10 s. */
  timeoutMs?: number;
  /** Starting session token (from another client). */
  sessionToken?: string;
  /** The local cloud's EPOCHKV_TOKEN, sent as `Authorization: Bearer`. */
  bearerToken?: string;
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

/** Any answer the API gave that is not a success: carries its status and the API's `{error, message}`. */
export class EpochKvError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A compare-and-swap (If-Match / If-None-Match) condition did not hold; nothing was written. */
export class VersionConflictError extends EpochKvError {}

/** The request was refused as invalid (4xx): retrying it unchanged will not help. */
export class BadRequestError extends EpochKvError {}

/** The store stayed unavailable (503/429) through every retry, or the outcome of a write is unknown. */
export class UnavailableError extends EpochKvError {}

const sessionHeader = 'x-epochkv-session';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A typed client for the epochkv API. It carries the session token from every response to the
 * next request (read-your-writes and monotonic reads, even across regions), retries 429/503
 * with backoff honouring `Retry-After`, and surfaces version conflicts as VersionConflictError.
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

  async get(key: string, options: { consistency?: Consistency } = {}): Promise<Item | undefined> {
    const query = options.consistency === undefined ? '' : `?consistency=${options.consistency}`;
    const response = await this.#request('GET', `/kv/${encodeKey(key)}${query}`, { accept: 'application/json' });
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
  async put(key: string, value: string | Uint8Array, options: { ifVersion?: number; ifAbsent?: boolean; replication?: 'async' | 'quorum' | 'all' } = {}): Promise<WriteResult> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (options.ifVersion !== undefined) headers['if-match'] = `"${options.ifVersion}"`;
    if (options.ifAbsent === true) headers['if-none-match'] = '*';
    const query = options.replication === undefined ? '' : `?replication=${encodeURIComponent(options.replication)}`;
    const response = await this.#request('PUT', `/kv/${encodeKey(key)}${query}`, headers, typeof value === 'string' ? new TextEncoder().encode(value) : value);
    return (await response.json()) as WriteResult;
  }

  /** Compare-and-swap: writes `value` only while the key is at `expectedVersion`. */
  async cas(key: string, expectedVersion: number, value: string | Uint8Array): Promise<WriteResult> {
    return this.put(key, value, { ifVersion: expectedVersion });
  }

  /** Deletes the key; false when it did not exist. */
  async delete(key: string, options: { ifVersion?: number } = {}): Promise<boolean> {
    const headers: Record<string, string> = options.ifVersion === undefined ? {} : { 'if-match': `"${options.ifVersion}"` };
    const response = await this.#request('DELETE', `/kv/${encodeKey(key)}`, headers);
    return response.status !== 404;
  }

  /** One page of keys with a prefix, in key order. */
  async listPage(options: { prefix?: string; limit?: number; after?: string; consistency?: Consistency } = {}): Promise<{ items: ListedItem[]; next: string | null }> {
    const query = new URLSearchParams();
    if (options.prefix !== undefined) query.set('prefix', options.prefix);
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.after !== undefined) query.set('after', options.after);
    if (options.consistency !== undefined) query.set('consistency', options.consistency);
    const response = await this.#request('GET', `/kv${query.size > 0 ? `?${query}` : ''}`);
    return (await response.json()) as { items: ListedItem[]; next: string | null };
  }

  /** Every key with a prefix, page by page. */
  async *list(options: { prefix?: string; pageSize?: number; consistency?: Consistency } = {}): AsyncGenerator<ListedItem> {
    let after: string | undefined;
    do {
      const page = await this.listPage({ prefix: options.prefix, limit: options.pageSize, after, consistency: options.consistency });
      yield* page.items;
      after = page.next ?? undefined;
    } while (after !== undefined);
  }

  /**
   * The ordered change stream of one shard (or of a hash-tagged prefix) from `from`, long-polling
   * until `signal` aborts.
   */
  async *watch(options: { shard?: number; prefix?: string; from?: number; waitMs?: number; signal?: AbortSignal }): AsyncGenerator<WatchEntry> {
    let from = options.from ?? 1;
    while (options.signal?.aborted !== true) {
      const query = new URLSearchParams({ from: String(from), waitMs: String(options.waitMs ?? 10_000) });
      if (options.shard !== undefined) query.set('shard', String(options.shard));
      if (options.prefix !== undefined) query.set('prefix', options.prefix);
      const response = await this.#request('GET', `/watch?${query}`, {}, undefined, options.signal);
      const body = (await response.json()) as { entries: WatchEntry[]; next: number };
      yield* body.entries;
      from = body.next;
    }
  }

  async status(): Promise<Record<string, unknown>> {
    return (await (await this.#request('GET', '/cluster')).json()) as Record<string, unknown>;
  }

  async #request(method: string, path: string, headers: Record<string, string> = {}, body?: Uint8Array, signal?: AbortSignal): Promise<Response> {
    let lastError: EpochKvError | undefined;
    for (let attempt = 1; attempt <= this.#attemptsMax; attempt += 1) {
      const requestHeaders: Record<string, string> = { ...headers };
      if (this.#sessionToken !== undefined) requestHeaders[sessionHeader] = this.#sessionToken;
      if (this.#bearerToken !== undefined) requestHeaders.authorization = `Bearer ${this.#bearerToken}`;
      let response: Response;
      try {
        const signed = await this.#sign(method, path, requestHeaders, body);
        const timeout = AbortSignal.timeout(this.#timeoutMs);
        response = await fetch(`${this.endpoint}${path}`, {
          method,
          headers: signed,
          ...(body === undefined ? {} : { body }),
          signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
        });
      } catch (error) {
        if (signal?.aborted) throw error;
        // Not answered: safe to retry for reads; a write may have been applied, so say so.
        lastError = new UnavailableError(0, 'NoAnswer', `${method} ${path}: no answer (${String(error)})${method === 'GET' ? '' : '; the write may or may not have been applied'}`);
        if (method !== 'GET') throw lastError;
        this.#retries += 1;
        await sleep(backoffMs(attempt, undefined));
        continue;
      }
      const token = response.headers.get(sessionHeader);
      if (token !== null) this.#sessionToken = token;
      if (response.ok || (response.status === 404 && (method === 'DELETE' || (method === 'GET' && path.startsWith('/kv/'))))) return response;
      const problem = (await response.json().catch(() => ({}))) as { error?: string; message?: string };
      const code = problem.error ?? `Http${response.status}`;
      const message = problem.message ?? `${method} ${path} answered ${response.status}`;
      if (response.status === 412) throw new VersionConflictError(412, code, message);
      if (response.status === 429 || response.status === 503) {
        lastError = new UnavailableError(response.status, code, message);
        // An unknown outcome must not be retried blindly: the write may have happened.
        if (code === 'OutcomeUnknown') throw lastError;
        this.#retries += 1;
        await sleep(backoffMs(attempt, response.headers.get('retry-after')));
        continue;
      }
      if (response.status >= 400 && response.status < 500) throw new BadRequestError(response.status, code, message);
      throw new EpochKvError(response.status, code, message);
    }
    throw lastError ?? new UnavailableError(0, 'Unavailable', `${method} ${path}: gave up after ${this.#attemptsMax} attempts`);
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
