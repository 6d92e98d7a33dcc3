import { createHash } from 'node:crypto';
import { isReplicationMode, replicationModes, type ReplicationMode } from '../lib/core/replication.ts';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { systemClock, type Clock } from '../lib/clock.ts';
import { configFromEnv, type ClusterConfig } from '../lib/config.ts';
import { limits } from '../lib/core/limits.ts';
import { countWithinBytes } from '../lib/core/page.ts';
import { isValidUtf8, parseListLimit, parseVersion, validateKey, validateValue, type Invalid } from '../lib/core/validation.ts';
import { EpochKvError, FenceRejectedError, IdempotencyKeyReusedError, IdempotencyRaceError, LeaseNotFoundError, LockHeldError, NoLeaderError, NotFoundError, ValidationError, VersionConflictError } from '../lib/ports/errors.ts';
import type { KvChange, KvItem, Precondition } from '../lib/ports/store.ts';
import { decodeToken, encodeToken, mergeToken, type SessionToken } from '../lib/core/session.ts';
import { hashTagOf } from '../lib/core/shard.ts';
import { parseTxn, type TxnCompare, type TxnOp } from '../lib/core/txn.ts';
import { isReservedKey, lockKey, parseFence, reservedPrefix, validateLeaseId, validateName, validateTtlMs } from '../lib/core/coordination.ts';
import { CoordinationService } from '../lib/service/coordination.ts';
import { consistencies, type Consistency, type Fence, type TxnResult, type WriteResult } from '../lib/service/kv-service.ts';
import { clusterStatus } from '../lib/service/cluster-status.ts';
import { ReadinessCache, regionReadiness } from '../lib/service/readiness.ts';
import { createRegionService } from '../lib/service/factory.ts';
import type { KvService } from '../lib/service/kv-service.ts';
import { apiTelemetry } from './telemetry.ts';

export type ApiHandler = (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>;

export interface ApiDependencies {
  config: ClusterConfig;
  service: KvService;
  clock: Clock;
}

const jsonHeaders = { 'content-type': 'application/json; charset=utf-8' };

function json(statusCode: number, body: unknown, headers: Record<string, string> = {}): APIGatewayProxyResult {
  return { statusCode, headers: { ...jsonHeaders, ...headers }, body: JSON.stringify(body) };
}

function problem(statusCode: number, error: string, message: string, headers: Record<string, string> = {}): APIGatewayProxyResult {
  return json(statusCode, { error, message }, headers);
}

function invalid(result: Invalid, status = 400): never {
  throw new ValidationError(result.field, result.message, status);
}

/** Header lookup that is case-insensitive and refuses a header sent twice with different values. */
function header(event: APIGatewayProxyEvent, name: string): string | undefined {
  const wanted = name.toLowerCase();
  const values: string[] = [];
  for (const [key, list] of Object.entries(event.multiValueHeaders ?? {})) {
    if (key.toLowerCase() === wanted && list) values.push(...list);
  }
  if (values.length === 0) {
    for (const [key, value] of Object.entries(event.headers ?? {})) {
      if (key.toLowerCase() === wanted && value !== undefined) values.push(value);
    }
  }
  const distinct = [...new Set(values)];
  if (distinct.length > 1) throw new ValidationError(name, `${name} was sent ${values.length} times with different values; send it once`);
  return distinct[0];
}

const knownQueryParameters: Record<string, readonly string[]> = {
  'GET /kv/{key}': ['consistency'],
  'PUT /kv/{key}': ['replication', 'lease', 'ttlMs'],
  'DELETE /kv/{key}': ['replication'],
  'POST /locks/{name}': ['waitMs'],
  'DELETE /locks/{name}': ['token'],
  'POST /elections/{name}/campaign': ['waitMs'],
  'DELETE /elections/{name}': ['token'],
  'GET /kv': ['prefix', 'limit', 'after', 'consistency'],
  'GET /watch': ['shard', 'from', 'prefix', 'limit', 'waitMs'],
  'POST /txn': ['replication'],
};

const sessionHeader = 'x-epochkv-session';

function tokenOf(event: APIGatewayProxyEvent): SessionToken {
  const parsed = decodeToken(header(event, sessionHeader));
  if (!parsed.ok) throw new ValidationError('X-Epochkv-Session', parsed.message);
  return parsed.token;
}

function consistencyOf(raw: string | undefined, deps: ApiDependencies): Consistency {
  // Home answers strong by default; a replica region answers session: its own copy when it is
  // fresh enough for the client, never older than what the client saw.
  if (raw === undefined) return deps.service.isReplica() ? 'session' : 'strong';
  if (!(consistencies as readonly string[]).includes(raw)) {
    throw new ValidationError('consistency', `consistency must be one of ${consistencies.join(', ')}; got "${raw.slice(0, 40)}"`);
  }
  return raw as Consistency;
}

function replicationOf(raw: string | undefined): ReplicationMode | undefined {
  if (raw === undefined) return undefined;
  if (!isReplicationMode(raw)) throw new ValidationError('replication', `replication must be one of ${replicationModes.join(', ')}; got "${raw.slice(0, 40)}"`);
  return raw;
}

function integerParameter(raw: string | undefined, field: string, min: number, max: number, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d{1,16}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new ValidationError(field, `${field} must be an integer from ${min} to ${max}; got "${raw.slice(0, 40)}"`);
  }
  return Number(raw);
}

function queryParameters(event: APIGatewayProxyEvent, route: string): Record<string, string> {
  const allowed = knownQueryParameters[route] ?? [];
  const out: Record<string, string> = {};
  const multi = event.multiValueQueryStringParameters ?? {};
  const single = event.queryStringParameters ?? {};
  for (const name of new Set([...Object.keys(multi), ...Object.keys(single)])) {
    if (!allowed.includes(name)) {
      const hint = allowed.length === 0 ? 'this route takes no query parameters' : `known parameters: ${allowed.join(', ')}`;
      throw new ValidationError(name, `unknown query parameter "${name.slice(0, 64)}"; ${hint}`);
    }
    const values = multi[name] ?? (single[name] === undefined ? [] : [single[name] as string]);
    if (values.length > 1) throw new ValidationError(name, `query parameter "${name}" was given ${values.length} times; give it once`);
    out[name] = values[0] ?? '';
  }
  return out;
}

function bodyBytes(event: APIGatewayProxyEvent): Uint8Array {
  if (event.body === null || event.body === undefined) return new Uint8Array();
  return event.isBase64Encoded ? new Uint8Array(Buffer.from(event.body, 'base64')) : new Uint8Array(Buffer.from(event.body, 'utf8'));
}

function itemJson(item: KvItem): Record<string, unknown> {
  const utf8 = isValidUtf8(item.value);
  return {
    key: item.key,
    value: utf8 ? Buffer.from(item.value).toString('utf8') : Buffer.from(item.value).toString('base64'),
    encoding: utf8 ? 'utf8' : 'base64',
    version: item.version,
    epoch: item.epoch,
    index: item.index,
  };
}

function wantsJson(event: APIGatewayProxyEvent): boolean {
  return (header(event, 'accept') ?? '').toLowerCase().includes('application/json');
}

/** The key of `/kv/{key+}`: API Gateway hands the greedy path parameter over URL-decoded. */
function keyOf(event: APIGatewayProxyEvent): string {
  const raw = event.pathParameters?.key ?? event.pathParameters?.proxy;
  if (raw === undefined) throw new ValidationError('key', 'missing key: use /kv/{key}');
  const checked = validateKey(raw);
  if (!checked.ok) invalid(checked);
  return checked.value;
}

function preconditionOf(event: APIGatewayProxyEvent, method: string): Precondition {
  const version = parseVersion(header(event, 'if-match'), 'If-Match');
  if (!version.ok) invalid(version);
  const noneMatch = header(event, 'if-none-match');
  if (noneMatch !== undefined && noneMatch.trim() !== '*') {
    throw new ValidationError('If-None-Match', 'If-None-Match only supports "*" (create the key only if it does not exist)');
  }
  if (noneMatch !== undefined && method !== 'PUT') throw new ValidationError('If-None-Match', 'If-None-Match: * applies to PUT only');
  if (noneMatch !== undefined && version.value !== undefined) {
    throw new ValidationError('If-Match', 'send either If-Match or If-None-Match, not both');
  }
  return { ifVersion: version.value, ifAbsent: noneMatch !== undefined };
}

function methodNotAllowed(method: string, allowed: string[]): APIGatewayProxyResult {
  return problem(405, 'MethodNotAllowed', `${method} is not supported here; use ${allowed.join(', ')}`, { allow: allowed.join(', ') });
}

async function route(deps: ApiDependencies, event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  const method = event.httpMethod.toUpperCase();
  const path = event.path;
  const { service } = deps;
  // Only PUT carries a body; a GET or DELETE sent with one is a client mistake worth naming
  // (other methods are answered 405 by their route).
  if ((method === 'GET' || method === 'DELETE') && event.body !== null && event.body !== undefined && event.body.length > 0) {
    throw new ValidationError('body', `${method} takes no body; only PUT /kv/{key} and POST /txn do`);
  }

  if (path === '/livez') {
    // The process answers; says nothing of the store or the leaders (that is /health).
    if (method !== 'GET') return methodNotAllowed(method, ['GET']);
    return json(200, { status: 'ok', region: deps.config.region });
  }
  if (path === '/health') {
    // Ready: 200 only when this region can serve now, so a client that waited for it can write.
    if (method !== 'GET') return methodNotAllowed(method, ['GET']);
    return health(deps);
  }
  if (path === '/cluster') {
    if (method !== 'GET') return methodNotAllowed(method, ['GET']);
    return json(200, await clusterStatus(service.store, deps.config, deps.clock));
  }
  if (path === '/kv' || (path === '/kv/' && method === 'GET')) {
    if (method !== 'GET') return methodNotAllowed(method, ['GET']);
    const query = queryParameters(event, 'GET /kv');
    const prefix = query.prefix ?? '';
    if (prefix !== '') {
      const checked = validateKey(prefix);
      if (!checked.ok) invalid({ ...checked, field: 'prefix', message: checked.message.replace(/^key/, 'prefix') });
    }
    const limit = parseListLimit(query.limit);
    if (!limit.ok) invalid(limit);
    const after = query.after;
    if (after !== undefined) {
      const checked = validateKey(after);
      if (!checked.ok) invalid({ ...checked, field: 'after', message: checked.message.replace(/^key/, 'after') });
    }
    const page = await service.list(prefix, limit.value, after, consistencyOf(query.consistency, deps));
    // Cut by bytes as well as by count: the answer must fit Lambda's 6 MB response cap.
    const items = page.items.map(itemJson);
    const count = countWithinBytes(items.map(proxyBytesOf), limits.pageBytesMax);
    const next = count < items.length ? items[count - 1]!.key : (page.next ?? null);
    return json(200, { items: items.slice(0, count), next });
  }
  if (path.startsWith('/kv/')) {
    const allowed = ['GET', 'PUT', 'DELETE'];
    if (!allowed.includes(method)) return methodNotAllowed(method, allowed);
    if (path === '/kv/') throw new ValidationError('key', 'missing key: use /kv/{key} with a key of 1 to 1024 bytes');
    const key = keyOf(event);
    const query = queryParameters(event, `${method} /kv/{key}`);
    const token = tokenOf(event);
    if (method === 'GET') {
      const read = await service.read(key, consistencyOf(query.consistency, deps), token);
      const session = { [sessionHeader]: encodeToken(read.token), 'x-epochkv-served-by': read.servedBy };
      const item = read.item;
      if (item === undefined) return problem(404, 'NotFound', `key "${key}" does not exist`, session);
      const etag = { etag: `"${item.version}"`, ...session };
      if (wantsJson(event)) return json(200, itemJson(item), etag);
      return {
        statusCode: 200,
        headers: { 'content-type': 'application/octet-stream', ...etag, 'x-epochkv-epoch': String(item.epoch), 'x-epochkv-index': String(item.index) },
        body: Buffer.from(item.value).toString('base64'),
        isBase64Encoded: true,
      };
    }
    refuseReserved(key);
    const precondition = preconditionOf(event, method);
    let change: KvChange;
    if (method === 'PUT') {
      const value = validateValue(bodyBytes(event));
      if (!value.ok) invalid(value, 413);
      change = { type: 'put', key, value: value.value };
    } else {
      change = { type: 'delete', key };
    }
    const fence = fenceOf(event);
    const leased = method === 'PUT' && (query.lease !== undefined || query.ttlMs !== undefined);
    // Writes sent to a replica region run against the home region: the same fenced path. A
    // fenced, leased or idempotent write is a transaction (its lock, lease or Idempotency-Key
    // record in the same commit).
    if (fence !== undefined || leased || header(event, 'idempotency-key') !== undefined) {
      const options = { fence, leaseId: query.lease, ttlMs: query.ttlMs, token, replication: replicationOf(query.replication) };
      return idempotent(deps, event, (idempotency) => coordinatedWrite(deps, change, precondition, { ...options, idempotency }));
    }
    const result = await service.write(change, precondition, { replication: replicationOf(query.replication) });
    const next = encodeToken(mergeToken(token, result.shard, result.index));
    const body = {
      key,
      ...(change.type === 'delete' ? { deleted: true } : {}),
      version: result.version,
      epoch: result.epoch,
      index: result.index,
      token: next,
      replication: result.replication,
    };
    return json(200, body, { ...(change.type === 'put' ? { etag: `"${result.version}"` } : {}), [sessionHeader]: next });
  }
  if (path === '/watch') {
    if (method !== 'GET') return methodNotAllowed(method, ['GET']);
    return watch(deps, event);
  }
  if (path === '/txn') {
    if (method !== 'POST') return methodNotAllowed(method, ['POST']);
    return txn(deps, event);
  }
  const coordinationRoute = path === '/leases' || path.startsWith('/leases/') ? leasesRoute : path.startsWith('/locks/') ? locksRoute : path.startsWith('/elections/') ? electionsRoute : undefined;
  if (coordinationRoute !== undefined) {
    if (method !== 'POST' && method !== 'DELETE') return coordinationRoute(deps, event, method, path);
    // Their first answer is stored right after it (not in the same transaction as for /kv and /txn).
    return idempotent(
      deps,
      event,
      async () => {
        const answer = await coordinationRoute(deps, event, method, path);
        return { status: answer.statusCode, body: answer.body };
      },
      true,
    );
  }
  return problem(404, 'NotFound', `no route for ${method} ${path.slice(0, 200)}; routes: /kv/{key}, /kv?prefix=, /txn, /leases, /locks/{name}, /elections/{name}, /watch, /cluster, /health, /livez`);
}

const readinessCaches = new WeakMap<KvService, ReadinessCache>();

/** `GET /health`: 200 `{status: "ok"}` when the region can serve, else 503 `{status: "unavailable", reasons}` with Retry-After. */
async function health(deps: ApiDependencies): Promise<APIGatewayProxyResult> {
  let cache = readinessCaches.get(deps.service);
  if (cache === undefined) {
    // Half a tick: fresh enough that "ok" still holds when the client's next request lands.
    cache = new ReadinessCache(() => regionReadiness(deps.service, deps.config, deps.clock), deps.clock, Math.floor(deps.config.tickMs / 2));
    readinessCaches.set(deps.service, cache);
  }
  const { ready, reasons, ...readiness } = await cache.get();
  if (ready) return json(200, { status: 'ok', ...readiness });
  return json(503, { status: 'unavailable', ...readiness, reasons }, { 'retry-after': String(limits.retryAfterSeconds) });
}

/** Long-poll of this region's copy of one shard's log, in index order. */
async function watch(deps: ApiDependencies, event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  const query = queryParameters(event, 'GET /watch');
  const prefix = query.prefix;
  if (prefix !== undefined && prefix !== '') {
    const checked = validateKey(prefix);
    if (!checked.ok) invalid({ ...checked, field: 'prefix', message: checked.message.replace(/^key/, 'prefix') });
  }
  let shard: number;
  if (query.shard !== undefined) {
    shard = integerParameter(query.shard, 'shard', 0, deps.config.shardCount - 1, 0);
  } else if (prefix !== undefined && hashTagOf(prefix) !== prefix) {
    // A prefix with a hash tag names one shard: every key under it shares the tag.
    shard = deps.service.shardOf(prefix);
  } else if (prefix !== undefined) {
    return prefixWatch(deps, query, prefix);
  } else {
    throw new ValidationError('shard', 'watch needs shard=<0..' + (deps.config.shardCount - 1) + '>, or a prefix (prefix=app/ watches every shard; a hash tag such as prefix={user42}/ one)');
  }
  // from=now: only what is committed after this request. The head is the home log's, the order
  // every region's copy follows, so a replica's watch skips what it has yet to apply from before now.
  const fromIndex = query.from === 'now' ? ((await deps.service.store.readHead(shard))?.index ?? 0) + 1 : integerParameter(query.from, 'from', 1, Number.MAX_SAFE_INTEGER, 1);
  const limit = integerParameter(query.limit, 'limit', 1, limits.listLimitMax, limits.listLimitDefault);
  const waitMs = integerParameter(query.waitMs, 'waitMs', 0, watchWaitMsMax, watchWaitMsDefault);
  const entries = await deps.service.watch(shard, fromIndex, limit, waitMs);
  const last = entries.at(-1);
  const matching = entries.filter((entry) => prefix === undefined || entry.ops.some((op) => op.type !== 'leader' && op.key.startsWith(prefix)));
  const shown = matching.map((entry) => ({
    index: entry.index,
    epoch: entry.epoch,
    committedAtMs: entry.committedAtMs,
    hash: entry.hash,
    ops: entry.ops.map((op) => (op.type === 'put' ? { type: 'put', key: op.key, value: Buffer.from(op.value).toString('base64'), encoding: 'base64' } : op)),
    // A multi-shard transaction's part: its id and every part (shard, index).
    ...(entry.txn === undefined ? {} : { txn: entry.txn }),
  }));
  // Cut by bytes as well as by count: the answer must fit Lambda's 6 MB response cap.
  const count = countWithinBytes(shown.map(proxyBytesOf), limits.pageBytesMax);
  return json(200, {
    shard,
    region: deps.config.region,
    entries: shown.slice(0, count),
    // Where to continue: past everything read, including entries the prefix filtered out.
    next: count < shown.length ? shown[count - 1]!.index + 1 : last === undefined ? fromIndex : last.index + 1,
  });
}

const { watchWaitMsDefault, watchWaitMsMax } = limits;

/** A prefix watch's cursor: each shard's next log index, opaque to clients. */
function encodeWatchCursor(nextIndexes: readonly number[]): string {
  return `w1.${Buffer.from(JSON.stringify(nextIndexes)).toString('base64url')}`;
}

function decodeWatchCursor(raw: string, shardCount: number): number[] {
  let parsed: unknown;
  try {
    parsed = raw.startsWith('w1.') ? JSON.parse(Buffer.from(raw.slice(3), 'base64url').toString('utf8')) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || parsed.length !== shardCount || !parsed.every((index) => Number.isSafeInteger(index) && (index as number) >= 1)) {
    throw new ValidationError('from', 'a prefix watch takes from=now, from=1 (the whole log) or from=<the next cursor a prefix watch answered>');
  }
  return parsed as number[];
}

/**
 * `GET /watch?prefix=p&from=now|1|<cursor>`: the changes of keys starting with `p` on every
 * shard, as events `{key, type, version, value|valueBase64}` — each key's events in order (a key
 * lives on one shard) — and `next`, a cursor that resumes exactly after them.
 */
async function prefixWatch(deps: ApiDependencies, query: Record<string, string>, prefix: string): Promise<APIGatewayProxyResult> {
  const { service, config } = deps;
  const shards = Array.from({ length: config.shardCount }, (_, shard) => shard);
  const from = query.from ?? '1';
  const nextIndexes =
    from === 'now'
      ? await Promise.all(shards.map(async (shard) => ((await service.store.readHead(shard))?.index ?? 0) + 1))
      : from === '1'
        ? shards.map(() => 1)
        : decodeWatchCursor(from, config.shardCount);
  const limit = integerParameter(query.limit, 'limit', 1, limits.listLimitMax, limits.listLimitDefault);
  const waitMs = integerParameter(query.waitMs, 'waitMs', 0, watchWaitMsMax, watchWaitMsDefault);
  const pages = await service.watchShards(nextIndexes, limit, waitMs);
  const events: Record<string, unknown>[] = [];
  let bytes = 0;
  let cut = false;
  for (const { shard, entries } of pages) {
    if (cut) break;
    for (const entry of entries) {
      const shown = entry.ops.flatMap((op) => {
        if (op.type === 'leader' || !op.key.startsWith(prefix)) return [];
        if (op.type === 'delete') return [{ key: op.key, type: 'delete', version: entry.index }];
        return [{ key: op.key, type: 'put', version: entry.index, ...(isValidUtf8(op.value) ? { value: Buffer.from(op.value).toString('utf8') } : { valueBase64: Buffer.from(op.value).toString('base64') }) }];
      });
      const entryBytes = shown.reduce((sum, one) => sum + proxyBytesOf(one), 0);
      // Cut by bytes at an entry boundary: Lambda's 6 MB answer cap. The shard resumes at this entry.
      if (events.length > 0 && bytes + entryBytes > limits.pageBytesMax) {
        cut = true;
        break;
      }
      events.push(...shown);
      bytes += entryBytes;
      nextIndexes[shard] = entry.index + 1;
    }
  }
  return json(200, { region: config.region, events, next: encodeWatchCursor(nextIndexes) });
}

/** Leases, locks and elections keep their state under a reserved prefix: user writes may not touch it. */
function refuseReserved(key: string): void {
  if (isReservedKey(key)) throw new ValidationError('key', `keys under "${reservedPrefix}" are reserved: they hold leases, locks and elections; use /leases, /locks and /elections to change them`);
}

/** `X-Epochkv-Fence: <lock>:<token>`: the write commits only while the lock is held with that token. */
function fenceOf(event: APIGatewayProxyEvent): Fence | undefined {
  const raw = header(event, 'x-epochkv-fence');
  if (raw === undefined) return undefined;
  const parsed = parseFence(raw);
  if (!parsed.ok) invalid(parsed);
  return { key: lockKey(parsed.value.name), token: parsed.value.token, what: `lock "${parsed.value.name}"` };
}

const coordinations = new WeakMap<KvService, CoordinationService>();

function coordinationOf(deps: ApiDependencies): CoordinationService {
  let coordination = coordinations.get(deps.service);
  if (coordination === undefined) {
    coordination = new CoordinationService(deps.service, deps.clock);
    coordinations.set(deps.service, coordination);
  }
  return coordination;
}

/** A fenced or leased single-key write, as a transaction whose compare is its precondition. */
async function coordinatedWrite(
  deps: ApiDependencies,
  change: KvChange,
  precondition: Precondition,
  options: { fence: Fence | undefined; leaseId: string | undefined; ttlMs: string | undefined; token: SessionToken; replication: ReplicationMode | undefined; idempotency: { key: string; fingerprint: string } | undefined },
): Promise<{ status: number; body: string }> {
  const { service } = deps;
  const key = change.key;
  if (options.leaseId !== undefined && options.ttlMs !== undefined) throw new ValidationError('lease', 'send lease=<id> or ttlMs=<n>, not both');
  let leaseId = options.leaseId;
  if (leaseId !== undefined) {
    const checked = validateLeaseId(leaseId);
    if (!checked.ok) invalid(checked);
  }
  if (options.ttlMs !== undefined) {
    const ttlMs = validateTtlMs(Number(options.ttlMs));
    if (!ttlMs.ok) invalid(ttlMs);
    // A key's own expiry: a lease of its own that nobody keeps alive.
    leaseId = (await coordinationOf(deps).grantLease(ttlMs.value)).id;
  }
  // A delete without If-Match must find the key (404 otherwise), as an unfenced delete does.
  let expected = precondition.ifVersion;
  if (change.type === 'delete' && expected === undefined) {
    const current = await service.read(key, 'strong', options.token);
    if (current.item === undefined) throw new NotFoundError(`key "${key}" does not exist`);
    expected = current.item.version;
  }
  const compare: TxnCompare[] = expected !== undefined ? [{ key, version: expected }] : precondition.ifAbsent === true ? [{ key, absent: true }] : [];
  const op: TxnOp = change.type === 'put' ? { op: 'put', key, value: change.value } : { op: 'delete', key };
  // The answer, from the transaction's result: the same for the first request and for its repeats.
  const answer = (result: TxnResult): { status: number; body: string } => {
    if (!result.succeeded) {
      const current = result.results[0];
      const version = current?.op === 'get' && current.found ? current.version : undefined;
      if (change.type === 'delete' && version === undefined) return { status: 404, body: JSON.stringify({ error: 'NotFound', message: `key "${key}" does not exist` }) };
      const wanted = precondition.ifAbsent === true ? 'no existing item' : `version ${expected}`;
      return { status: 412, body: JSON.stringify({ error: 'VersionConflict', message: `version conflict on "${key}": expected ${wanted}, but ${version === undefined ? 'the key does not exist' : `the current version is ${version}`}` }) };
    }
    const part = result.parts?.find((candidate) => candidate.shard === service.shardOf(key));
    const index = part?.index ?? 0;
    const written: WriteResult = { key, shard: service.shardOf(key), version: index, epoch: part?.epoch ?? 0, index, replication: { mode: service.replicationFor(options.replication), acceptedBy: result.acceptedBy ?? [] } };
    return { status: 200, body: JSON.stringify(writeBody(written, change, encodeToken(result.token))) };
  };
  const idempotency = options.idempotency === undefined ? undefined : { ...options.idempotency, answer };
  const result =
    leaseId !== undefined && change.type === 'put'
      ? await coordinationOf(deps).putWithLease(key, change.value, leaseId, options.token, options.fence, compare, idempotency)
      : await service.txn({ compare, success: [op], failure: [{ op: 'get', key }] }, options.token, { fence: options.fence, replication: options.replication, idempotency });
  return answer(result);
}

/** A write's answer body (PUT and DELETE /kv/{key}). */
function writeBody(result: WriteResult, change: KvChange, token: string): Record<string, unknown> {
  return { key: result.key, ...(change.type === 'delete' ? { deleted: true } : {}), version: result.version, epoch: result.epoch, index: result.index, token, replication: result.replication };
}

function jsonBody(event: APIGatewayProxyEvent): Record<string, unknown> {
  const text = Buffer.from(bodyBytes(event)).toString('utf8');
  if (text.trim() === '') return {};
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // answered below
  }
  throw new ValidationError('body', 'the body must be a JSON object');
}

function ownerOf(body: Record<string, unknown>): { leaseId?: string; ttlMs?: number } {
  if (body.leaseId !== undefined) {
    const checked = validateLeaseId(String(body.leaseId));
    if (!checked.ok) invalid(checked);
    return { leaseId: checked.value };
  }
  if (body.ttlMs !== undefined) {
    const checked = validateTtlMs(body.ttlMs);
    if (!checked.ok) invalid(checked);
    return { ttlMs: checked.value };
  }
  throw new ValidationError('body', 'send {"leaseId": "<id from POST /leases>"} or {"ttlMs": n} (a new lease for this holder)');
}

function tokenParameter(raw: string | undefined): number {
  return integerParameter(raw, 'token', 1, Number.MAX_SAFE_INTEGER, 0);
}

/** `/leases`: grant, keepalive, show, revoke. */
async function leasesRoute(deps: ApiDependencies, event: APIGatewayProxyEvent, method: string, path: string): Promise<APIGatewayProxyResult> {
  const coordination = coordinationOf(deps);
  const segments = path.split('/').filter(Boolean);
  if (segments.length === 1) {
    if (method !== 'POST') return methodNotAllowed(method, ['POST']);
    const ttlMs = validateTtlMs(jsonBody(event).ttlMs);
    if (!ttlMs.ok) invalid(ttlMs);
    return json(201, await coordination.grantLease(ttlMs.value));
  }
  const id = validateLeaseId(decodeURIComponent(segments[1] ?? ''));
  if (!id.ok) invalid(id);
  if (segments.length === 3 && segments[2] === 'keepalive') {
    if (method !== 'POST') return methodNotAllowed(method, ['POST']);
    return json(200, await coordination.keepAlive(id.value));
  }
  if (segments.length !== 2) return problem(404, 'NotFound', 'use /leases, /leases/{id} or /leases/{id}/keepalive');
  if (method === 'GET') {
    const info = await coordination.leaseInfo(id.value);
    return json(200, { ...info, remainingMs: await coordination.remainingMs(id.value, info.ttlMs) });
  }
  if (method === 'DELETE') {
    const revoked = await coordination.revokeLease(id.value);
    if (revoked === undefined) throw new LeaseNotFoundError(id.value);
    return json(200, { id: id.value, revoked: true, keysDeleted: revoked.keysDeleted });
  }
  return methodNotAllowed(method, ['GET', 'DELETE']);
}

/** `/locks/{name}`: acquire (POST), show (GET), release (DELETE ?token=). */
async function locksRoute(deps: ApiDependencies, event: APIGatewayProxyEvent, method: string, path: string): Promise<APIGatewayProxyResult> {
  const coordination = coordinationOf(deps);
  const segments = path.split('/').filter(Boolean);
  if (segments.length !== 2) return problem(404, 'NotFound', 'use /locks/{name}');
  const name = validateName(decodeURIComponent(segments[1]!), 'lock');
  if (!name.ok) invalid(name);
  if (method === 'POST') {
    const query = queryParameters(event, 'POST /locks/{name}');
    const waitMs = integerParameter(query.waitMs, 'waitMs', 0, limits.lockWaitMsMax, 0);
    const holder = await coordination.acquireLock(name.value, ownerOf(jsonBody(event)), waitMs);
    return json(200, { name: name.value, token: holder.token, leaseId: holder.leaseId, fence: `${name.value}:${holder.token}` });
  }
  if (method === 'GET') {
    const holder = await coordination.lockHolder(name.value);
    return json(200, holder === undefined ? { name: name.value, held: false, token: null, leaseId: null } : { name: name.value, held: true, token: holder.token, leaseId: holder.leaseId });
  }
  if (method === 'DELETE') {
    const query = queryParameters(event, 'DELETE /locks/{name}');
    if (query.token === undefined) throw new ValidationError('token', 'release needs ?token=<the token POST /locks answered>');
    await coordination.releaseLock(name.value, tokenParameter(query.token));
    return json(200, { name: name.value, released: true });
  }
  return methodNotAllowed(method, ['GET', 'POST', 'DELETE']);
}

/** `/elections/{name}`: campaign, leader, proclaim, resign. */
async function electionsRoute(deps: ApiDependencies, event: APIGatewayProxyEvent, method: string, path: string): Promise<APIGatewayProxyResult> {
  const coordination = coordinationOf(deps);
  const segments = path.split('/').filter(Boolean);
  const name = validateName(decodeURIComponent(segments[1] ?? ''), 'election');
  if (!name.ok) invalid(name);
  const valueOf = (body: Record<string, unknown>): Uint8Array => {
    if (typeof body.value !== 'string') throw new ValidationError('value', 'send "value" as a string');
    const bytes = validateValue(new Uint8Array(Buffer.from(body.value, 'utf8')));
    if (!bytes.ok) invalid(bytes, 413);
    return bytes.value;
  };
  const text = (bytes: Uint8Array) => Buffer.from(bytes).toString('utf8');
  if (segments.length === 3 && segments[2] === 'campaign') {
    if (method !== 'POST') return methodNotAllowed(method, ['POST']);
    const query = queryParameters(event, 'POST /elections/{name}/campaign');
    const body = jsonBody(event);
    const value = valueOf(body);
    const holder = await coordination.campaign(name.value, ownerOf(body), value, integerParameter(query.waitMs, 'waitMs', 0, limits.lockWaitMsMax, 0));
    return json(200, { name: name.value, token: holder.token, leaseId: holder.leaseId, value: text(value) });
  }
  if (segments.length === 3 && segments[2] === 'proclaim') {
    if (method !== 'POST') return methodNotAllowed(method, ['POST']);
    const body = jsonBody(event);
    if (typeof body.token !== 'number') throw new ValidationError('token', 'send the "token" campaign answered');
    const value = valueOf(body);
    await coordination.proclaim(name.value, body.token, value);
    return json(200, { name: name.value, token: body.token, value: text(value) });
  }
  if (segments.length !== 2) return problem(404, 'NotFound', 'use /elections/{name}, /elections/{name}/campaign or /elections/{name}/proclaim');
  if (method === 'GET') {
    const leader = await coordination.leader(name.value);
    if (leader === undefined) return problem(404, 'NotFound', `election "${name.value}" has no leader`);
    return json(200, { name: name.value, token: leader.token, leaseId: leader.leaseId, value: text(leader.value) });
  }
  if (method === 'DELETE') {
    const query = queryParameters(event, 'DELETE /elections/{name}');
    if (query.token === undefined) throw new ValidationError('token', 'resign needs ?token=<the token campaign answered>');
    await coordination.resign(name.value, tokenParameter(query.token));
    return json(200, { name: name.value, resigned: true });
  }
  return methodNotAllowed(method, ['GET', 'DELETE']);
}

/** `POST /txn`: compare, then the success or the failure ops, atomically (see KvService.txn). */
async function txn(deps: ApiDependencies, event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  const query = queryParameters(event, 'POST /txn');
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bodyBytes(event)).toString('utf8'));
  } catch {
    throw new ValidationError('body', 'the body must be JSON: {"compare": [...], "success": [...], "failure": [...]}');
  }
  const parsed = parseTxn(body);
  if (!parsed.ok) return problem(400, parsed.code, parsed.message);
  for (const op of [...parsed.value.success, ...parsed.value.failure]) if (op.op !== 'get') refuseReserved(op.key);
  const fence = fenceOf(event);
  const answer = (result: TxnResult) => {
    const results = result.results.map((one) => {
      if (one.op !== 'get' || !one.found) return one;
      const { value, ...rest } = one;
      return isValidUtf8(value) ? { ...rest, value: Buffer.from(value).toString('utf8') } : { ...rest, valueBase64: Buffer.from(value).toString('base64') };
    });
    return { status: 200, body: JSON.stringify({ succeeded: result.succeeded, results, token: encodeToken(result.token) }) };
  };
  return idempotent(deps, event, async (idempotency) => answer(await deps.service.txn(parsed.value, tokenOf(event), { replication: replicationOf(query.replication), fence, ...(idempotency === undefined ? {} : { idempotency: { ...idempotency, answer } }) })));
}

/**
 * `Idempotency-Key`: a repeat of a request within 24 h gets its first answer (same status and
 * body, `Idempotent-Replayed: true`) and writes nothing; the same key on another request is a
 * 422. `run` gets the key and fingerprint when there is one; /kv writes and /txn store the
 * answer in their commit's transaction, other routes right after (see the README).
 */
async function idempotent(
  deps: ApiDependencies,
  event: APIGatewayProxyEvent,
  run: (idempotency: { key: string; fingerprint: string } | undefined) => Promise<{ status: number; body: string }>,
  storeAfter = false,
): Promise<APIGatewayProxyResult> {
  const key = header(event, 'idempotency-key');
  const session = (body: string): Record<string, string> => {
    const token = (JSON.parse(body) as { token?: unknown }).token;
    return typeof token === 'string' ? { [sessionHeader]: token } : {};
  };
  if (key === undefined) {
    const { status, body } = await run(undefined);
    return { statusCode: status, headers: { ...jsonHeaders, ...session(body) }, body };
  }
  if (!/^[\x20-\x7E]{1,128}$/.test(key)) throw new ValidationError('Idempotency-Key', `Idempotency-Key must be 1 to ${limits.idempotencyKeyCharsMax} printable ASCII characters`);
  const fingerprint = createHash('sha256')
    .update(JSON.stringify([event.httpMethod.toUpperCase(), event.path, Object.entries(event.queryStringParameters ?? {}).sort(), header(event, 'if-match') ?? null, header(event, 'if-none-match') ?? null, header(event, 'x-epochkv-fence') ?? null]))
    .update(bodyBytes(event))
    .digest('hex');
  const replay = async (): Promise<APIGatewayProxyResult | undefined> => {
    const record = await deps.service.store.readIdempotency(key, deps.clock.wallMs());
    if (record === undefined) return undefined;
    if (record.fingerprint !== fingerprint) throw new IdempotencyKeyReusedError(key);
    // A quorum/all answer promises durability: a replay checks it again before promising it.
    if (record.durability !== undefined) await deps.service.awaitDurable(record.durability);
    return { statusCode: record.status, headers: { ...jsonHeaders, ...session(record.body), 'idempotent-replayed': 'true' }, body: record.body };
  };
  const earlier = await replay();
  if (earlier !== undefined) return earlier;
  try {
    const { status, body } = await run({ key, fingerprint });
    if (storeAfter) await deps.service.store.putIdempotency({ key, fingerprint, status, body, expiresAtMs: deps.clock.wallMs() + limits.idempotencyKeepMs }, deps.clock.wallMs());
    return { statusCode: status, headers: { ...jsonHeaders, ...session(body) }, body };
  } catch (error) {
    // A concurrent request with the key committed first: its answer is ours.
    if (error instanceof IdempotencyRaceError) {
      const theirs = await replay();
      if (theirs !== undefined) return theirs;
    }
    throw error;
  }
}

/** Bytes a value takes in the proxy result: JSON in the body, a JSON string inside the result. */
function proxyBytesOf(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(JSON.stringify(value)));
}

/** Maps typed errors to responses; anything else is a 500 that is logged, never leaked. */
export function createApiHandler(deps: ApiDependencies, log: (line: string) => void = console.error): ApiHandler {
  return async (event) => {
    try {
      return await route(deps, event);
    } catch (error) {
      if (error instanceof NoLeaderError) {
        return problem(error.status, error.code, error.message, { 'retry-after': String(error.retryAfterSeconds) });
      }
      if (error instanceof LockHeldError || error instanceof FenceRejectedError) {
        return json(error.status, { error: error.code, message: error.message, token: error.token ?? null });
      }
      if (error instanceof EpochKvError) {
        const headers: Record<string, string> = error.status === 503 || error.status === 429 ? { 'retry-after': String(limits.retryAfterSeconds) } : {};
        // An error with more to say (410 Compacted: compactedThrough) adds its fields to the answer.
        if (error.details !== undefined) return json(error.status, { error: error.code, message: error.message, ...error.details }, headers);
        return problem(error.status, error.code, error.message, headers);
      }
      log(`api: ${event.httpMethod} ${event.path} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      // Store errors (throttling, network) are retryable from the client's side.
      return problem(503, 'Unavailable', 'the store did not answer; retry', { 'retry-after': String(limits.retryAfterSeconds) });
    }
  };
}

let cached: ApiHandler | undefined;

/** The Lambda entry point (API Gateway REST proxy integration). */
export const handler: ApiHandler = async (event) => {
  if (cached === undefined) {
    const config = configFromEnv();
    const clock = systemClock();
    // Request count and latency per route and status, commits and lost races (telemetry.ts).
    const telemetry = apiTelemetry(config);
    const log = (line: string) => telemetry.logger.error(line);
    cached = telemetry.wrap(createApiHandler({ config, clock, service: createRegionService(config, clock, log).service }, log));
  }
  return cached(event);
};
