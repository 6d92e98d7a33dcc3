import { performance } from 'node:perf_hooks';
import { shardOf } from '../core/shard.ts';
import { between, mulberry32, pick } from '../random.ts';
import { conflictMarker, type HistoryOperation } from './history.ts';

/** A write the store acknowledged, with where it says it put it: checked against the log later. */
export interface AcknowledgedWrite {
  key: string;
  /** undefined for a delete. */
  value: string | undefined;
  shard: number;
  index: number;
  /** undefined for a transaction's write (its answer carries no epoch). */
  epoch: number | undefined;
}

export interface WorkloadCounters {
  ok: number;
  fail: number;
  info: number;
  /** Answers the workload did not expect (a 5xx other than 503, a 4xx other than 404/412). */
  unexpected: number;
  unexpectedSamples: string[];
}

export interface SessionCounters {
  reads: number;
  servedByReplica: number;
  readYourWritesViolations: number;
  monotonicViolations: number;
  samples: string[];
}


/** Error codes of a 503 that guarantee the write was not applied. */
const notAppliedCodes = new Set(['NoLeader', 'Busy', 'StaleEpoch', 'HeadConflict', 'TransactionConflict', 'RegionUnreachable', 'RegionDetached']);

export interface WorkloadOptions {
  /** The home API; a function when it can move (a promotion) during the run. */
  apiUrl: string | (() => string);
  shardCount: number;
  clients: number;
  keys: string[];
  seed: number;
  deadlineMs: number;
  /** A request slower than this is abandoned and recorded as indeterminate. */
  requestTimeoutMs: number;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

async function send(url: string, init: RequestInit, timeoutMs: number): Promise<Answer | 'timeout'> {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
    const text = await response.text();
    let body: Record<string, unknown> = {};
    try {
      body = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
    } catch {
      body = { raw: text };
    }
    return { status: response.status, body, headers: response.headers };
  } catch {
    return 'timeout';
  }
}

/**
 * Concurrent clients on a small key set (so conflicts happen) issue put, strong get, CAS and
 * delete through the home API, recording each operation with its call and return times as
 * Jepsen does: an operation whose outcome is unknown (timeout, `OutcomeUnknown`) is
 * indeterminate — it may or may not have taken effect.
 */
export async function runWorkload(options: WorkloadOptions): Promise<{ history: HistoryOperation[]; acknowledged: AcknowledgedWrite[]; counters: WorkloadCounters }> {
  const history: HistoryOperation[] = [];
  const acknowledged: AcknowledgedWrite[] = [];
  const counters: WorkloadCounters = { ok: 0, fail: 0, info: 0, unexpected: 0, unexpectedSamples: [] };
  const unexpected = (what: string) => {
    counters.unexpected += 1;
    if (counters.unexpectedSamples.length < 10) counters.unexpectedSamples.push(what);
  };

  const lastStatus = new Map<number, HistoryOperation['status']>();
  const record = (operation: HistoryOperation) => {
    history.push(operation);
    counters[operation.status] += 1;
    lastStatus.set(operation.client, operation.status);
  };

  const writeStatus = (answer: Answer | 'timeout'): 'ok' | 'fail' | 'info' | 'conflict' | 'missing' => {
    if (answer === 'timeout') return 'info';
    if (answer.status === 200) return 'ok';
    if (answer.status === 412) return 'conflict';
    if (answer.status === 404) return 'missing';
    if (answer.status === 503) return notAppliedCodes.has(String(answer.body.error)) ? 'fail' : 'info';
    // API Gateway's answers for a Lambda that crashed mid-request (502) or timed out (504): the
    // write may have landed. A throttled invocation (500) never ran.
    if (answer.status === 502 || answer.status === 504) return 'info';
    if (answer.status === 500 && answer.body.error === 'LambdaThrottled') return 'fail';
    unexpected(`${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`);
    return 'info';
  };

  const noteAcknowledged = (key: string, value: string | undefined, answer: Answer | 'timeout') => {
    if (answer === 'timeout') return;
    const index = Number(answer.body.index);
    const epoch = Number(answer.body.epoch);
    acknowledged.push({ key, value, index, epoch, shard: shardOf(key, options.shardCount) });
  };

  const client = async (clientId: number) => {
    const random = mulberry32(options.seed * 1_000 + clientId);
    let sequence = 0;
    while (Date.now() < options.deadlineMs) {
      // A refusal (no leader, a lost region) comes back at once: back off a little, as clients do.
      if (lastStatus.get(clientId) === 'fail') await new Promise((resolve) => setTimeout(resolve, between(20, 80, random)));
      const key = pick(options.keys, random);
      const apiUrl = typeof options.apiUrl === 'string' ? options.apiUrl : options.apiUrl();
      const url = `${apiUrl}/kv/${encodeURIComponent(key)}`;
      const roll = random();
      const callMs = performance.now();
      if (roll < 0.35) {
        const value = `c${clientId}-${(sequence += 1)}`;
        const answer = await send(url, { method: 'PUT', body: value }, options.requestTimeoutMs);
        const status = writeStatus(answer);
        const returnMs = performance.now();
        if (status === 'ok') noteAcknowledged(key, value, answer);
        record({ client: clientId, kind: 'put', key, input: { value }, status: status === 'ok' ? 'ok' : status === 'fail' ? 'fail' : 'info', output: {}, callMs, returnMs });
      } else if (roll < 0.9) {
        // A strong read; when it finds a value, 2 in 5 of them go on to a CAS from that version.
        const answer = await send(url, { headers: { accept: 'application/json' } }, options.requestTimeoutMs);
        const returnMs = performance.now();
        if (answer === 'timeout' || (answer.status !== 200 && answer.status !== 404)) {
          if (answer !== 'timeout' && answer.status !== 503 && answer.status !== 502 && answer.status !== 504 && answer.status !== 500) unexpected(`GET ${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`);
          record({ client: clientId, kind: 'get', key, input: {}, status: 'fail', output: {}, callMs, returnMs });
          continue;
        }
        const value = answer.status === 200 ? String(answer.body.value) : null;
        record({ client: clientId, kind: 'get', key, input: {}, status: 'ok', output: { value }, callMs, returnMs });
        if (value === null || roll < 0.68) continue;
        const next = `c${clientId}-${(sequence += 1)}`;
        const casCallMs = performance.now();
        const cas = await send(url, { method: 'PUT', body: next, headers: { 'if-match': `"${String(answer.body.version)}"` } }, options.requestTimeoutMs);
        const casStatus = writeStatus(cas);
        const casReturnMs = performance.now();
        if (casStatus === 'ok') noteAcknowledged(key, next, cas);
        record({
          client: clientId,
          kind: 'cas',
          key,
          input: { value: next, expectedValue: value },
          status: casStatus === 'ok' || casStatus === 'conflict' ? 'ok' : casStatus === 'fail' ? 'fail' : 'info',
          output: casStatus === 'conflict' ? { value: conflictMarker } : {},
          callMs: casCallMs,
          returnMs: casReturnMs,
        });
      } else {
        const answer = await send(url, { method: 'DELETE' }, options.requestTimeoutMs);
        const status = writeStatus(answer);
        const returnMs = performance.now();
        if (status === 'ok') noteAcknowledged(key, undefined, answer);
        record({
          client: clientId,
          kind: 'delete',
          key,
          input: {},
          status: status === 'ok' || status === 'missing' ? 'ok' : status === 'fail' ? 'fail' : 'info',
          output: status === 'missing' ? { value: null } : {},
          callMs,
          returnMs,
        });
      }
    }
  };

  await Promise.all(Array.from({ length: options.clients }, (_, clientId) => client(clientId)));
  return { history, acknowledged, counters };
}

/**
 * A session client: writes at home, then reads its key with `consistency=session` from a
 * replica region carrying its token, and checks read-your-writes and monotonic reads.
 */
export async function runSessionClient(options: { homeUrl: string; replicaUrls: string[]; seed: number; deadlineMs: number; requestTimeoutMs: number }): Promise<SessionCounters> {
  const counters: SessionCounters = { reads: 0, servedByReplica: 0, readYourWritesViolations: 0, monotonicViolations: 0, samples: [] };
  if (options.replicaUrls.length === 0) return counters;
  const random = mulberry32(options.seed * 7 + 3);
  const key = `session/${options.seed}`;
  let token: string | undefined;
  let written: { value: string; version: number } | undefined;
  let lastVersion = 0;
  let sequence = 0;
  while (Date.now() < options.deadlineMs) {
    if (written === undefined || random() < 0.3) {
      const value = `s-${(sequence += 1)}`;
      const answer = await send(`${options.homeUrl}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value, headers: token === undefined ? {} : { 'x-epochkv-session': token } }, options.requestTimeoutMs);
      if (answer !== 'timeout' && answer.status === 200) {
        written = { value, version: Number(answer.body.version) };
        token = answer.headers.get('x-epochkv-session') ?? token;
      } else {
        // Unknown outcome: a later read may legitimately see either value; start over.
        written = undefined;
        lastVersion = 0;
      }
      continue;
    }
    const replica = pick(options.replicaUrls, random);
    const answer = await send(
      `${replica}/kv/${encodeURIComponent(key)}?consistency=session`,
      { headers: { accept: 'application/json', ...(token === undefined ? {} : { 'x-epochkv-session': token }) } },
      options.requestTimeoutMs,
    );
    if (answer === 'timeout' || answer.status !== 200) continue;
    counters.reads += 1;
    if (answer.headers.get('x-epochkv-served-by') === 'replica') counters.servedByReplica += 1;
    const version = Number(answer.body.version);
    // Only this client writes its key, so a higher version is a later write of its own: one whose
    // outcome it never learned (a timeout) may land after the next acknowledged write. Reading
    // that is reading past its write, not before it.
    if (version < written.version || (version === written.version && String(answer.body.value) !== written.value)) {
      counters.readYourWritesViolations += 1;
      if (counters.samples.length < 5) counters.samples.push(`wrote ${written.value}@${written.version}, read ${String(answer.body.value)}@${version} from ${replica}`);
    }
    if (version < lastVersion) {
      counters.monotonicViolations += 1;
      if (counters.samples.length < 5) counters.samples.push(`read version ${version} after ${lastVersion} from ${replica}`);
    }
    lastVersion = Math.max(lastVersion, version);
    token = answer.headers.get('x-epochkv-session') ?? token;
    await new Promise((resolve) => setTimeout(resolve, between(5, 30, random)));
  }
  return counters;
}

/** One read-only transaction of every account, as the bank workload saw it. */
export interface BankRead {
  client: number;
  /** Balance per account in account order; null when the account was missing. */
  balances: (number | null)[];
  callMs: number;
  returnMs: number;
}

/** One transfer: its outcome as the store answered it (`info`: it may or may not have happened). */
export interface BankTransfer {
  client: number;
  from: string;
  to: string;
  amount: number;
  status: 'ok' | 'fail' | 'info';
  /** Why it failed or is indeterminate: the answer's code, `compare` (the failure branch ran) or `timeout`. */
  reason?: string;
  callMs: number;
  returnMs: number;
}

export interface BankHistory {
  reads: BankRead[];
  transfers: BankTransfer[];
  /** Reads that got no snapshot (a 503, a timeout): availability, not correctness. */
  readsUnavailable: number;
  /** The puts of committed transfers, with where the store says it put them: checked against the log. */
  acknowledged: AcknowledgedWrite[];
  counters: Pick<WorkloadCounters, 'unexpected' | 'unexpectedSamples'>;
}

export interface BankOptions {
  apiUrl: string | (() => string);
  shardCount: number;
  accounts: string[];
  clients: number;
  seed: number;
  deadlineMs: number;
  requestTimeoutMs: number;
}

/** Account keys spread over the shards: account n on shard n mod shardCount. */
export function bankAccounts(count: number, shardCount: number, prefix: string): string[] {
  return Array.from({ length: count }, (_, account) => {
    for (let attempt = 0; ; attempt += 1) {
      const key = `${prefix}/acct${account}-${attempt}`;
      if (shardOf(key, shardCount) === account % shardCount) return key;
    }
  });
}

const postTxn = (apiUrl: string, body: unknown, timeoutMs: number) => send(`${apiUrl}/txn`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }, timeoutMs);

type TxnGet = { op: 'get'; key: string; found: boolean; value?: string; version?: number };

/** Balances and versions of `accounts` from a read-only transaction's answer. */
function balancesOf(answer: Answer): { balance: number | null; version: number }[] {
  return (answer.body.results as TxnGet[]).map((result) => (result.found ? { balance: Number(result.value), version: Number(result.version) } : { balance: null, version: 0 }));
}

/**
 * Writes `balance` into every account, once: a transaction that creates them all only while
 * they are all absent. Re-reads after any answer, so an unknown outcome is settled by what the
 * store holds. Throws when the accounts are not all there by the deadline.
 */
export async function setupBank(apiUrl: string, accounts: string[], balance: number, timeoutMs: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (Date.now() < deadlineMs) {
    const read = await postTxn(apiUrl, { success: accounts.map((key) => ({ op: 'get', key })) }, 5_000);
    if (read !== 'timeout' && read.status === 200) {
      const found = balancesOf(read).filter((account) => account.balance !== null).length;
      if (found === accounts.length) return;
      if (found > 0) throw new Error(`bank setup: ${found} of ${accounts.length} accounts exist; the setup transaction is all or nothing`);
      await postTxn(apiUrl, { compare: accounts.map((key) => ({ key, absent: true })), success: accounts.map((key) => ({ op: 'put', key, value: String(balance) })) }, 10_000);
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`bank setup: the accounts were not created within ${timeoutMs} ms`);
}

/**
 * Jepsen's bank: concurrent clients move money between accounts on different shards by
 * compare-and-transaction over `POST /txn` (read both balances and versions, then commit both
 * puts only while both versions hold; never more than the source holds), and read every account
 * in one read-only transaction. Whatever the faults, every read must see the whole total and no
 * negative balance (checkBank).
 */
export async function runBankWorkload(options: BankOptions): Promise<BankHistory> {
  const history: BankHistory = { reads: [], transfers: [], readsUnavailable: 0, acknowledged: [], counters: { unexpected: 0, unexpectedSamples: [] } };
  const unexpected = (what: string) => {
    history.counters.unexpected += 1;
    if (history.counters.unexpectedSamples.length < 10) history.counters.unexpectedSamples.push(what);
  };
  const { accounts } = options;

  /** ok / fail (certainly not applied) / info (unknown), as for single writes. */
  const transferStatus = (answer: Answer | 'timeout'): { status: BankTransfer['status']; reason?: string } => {
    if (answer === 'timeout') return { status: 'info', reason: 'timeout' };
    if (answer.status === 200) return answer.body.succeeded === true ? { status: 'ok' } : { status: 'fail', reason: 'compare' };
    const code = String(answer.body.error ?? `Http${answer.status}`);
    if (answer.status === 503) return { status: notAppliedCodes.has(code) ? 'fail' : 'info', reason: code };
    // A Lambda that crashed (502) or timed out (504) mid-request: the commit may have landed.
    if (answer.status === 502 || answer.status === 504) return { status: 'info', reason: code };
    if (answer.status === 500 && code === 'LambdaThrottled') return { status: 'fail', reason: code };
    unexpected(`POST /txn ${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`);
    return { status: 'info', reason: code };
  };

  const readAll = async (apiUrl: string, clientId: number): Promise<BankRead | undefined> => {
    const callMs = performance.now();
    const answer = await postTxn(apiUrl, { success: accounts.map((key) => ({ op: 'get', key })) }, options.requestTimeoutMs);
    const returnMs = performance.now();
    if (answer === 'timeout' || answer.status !== 200) {
      if (answer !== 'timeout' && ![500, 502, 503, 504].includes(answer.status)) unexpected(`POST /txn (read) ${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`);
      history.readsUnavailable += 1;
      return undefined;
    }
    const read: BankRead = { client: clientId, balances: balancesOf(answer).map((account) => account.balance), callMs, returnMs };
    history.reads.push(read);
    return read;
  };

  const client = async (clientId: number) => {
    const random = mulberry32(options.seed * 1_000 + 500 + clientId);
    let backoff = false;
    while (Date.now() < options.deadlineMs) {
      // A refusal (no leader, a lost race) comes back at once: back off a little, as clients do.
      if (backoff) await new Promise((resolve) => setTimeout(resolve, between(20, 80, random)));
      backoff = false;
      const apiUrl = typeof options.apiUrl === 'string' ? options.apiUrl : options.apiUrl();
      if (random() < 0.4) {
        backoff = (await readAll(apiUrl, clientId)) === undefined;
        continue;
      }
      const fromIndex = Math.floor(random() * accounts.length);
      const toIndex = (fromIndex + 1 + Math.floor(random() * (accounts.length - 1))) % accounts.length;
      const [from, to] = [accounts[fromIndex]!, accounts[toIndex]!];
      const read = await postTxn(apiUrl, { success: [{ op: 'get', key: from }, { op: 'get', key: to }] }, options.requestTimeoutMs);
      if (read === 'timeout' || read.status !== 200) {
        backoff = true;
        continue;
      }
      const [source, target] = balancesOf(read);
      if (source?.balance == null || target?.balance == null || source.balance <= 0) continue;
      const amount = 1 + Math.floor(random() * Math.min(5, source.balance));
      const callMs = performance.now();
      const answer = await postTxn(
        apiUrl,
        {
          compare: [{ key: from, version: source.version }, { key: to, version: target.version }],
          success: [{ op: 'put', key: from, value: String(source.balance - amount) }, { op: 'put', key: to, value: String(target.balance + amount) }],
        },
        options.requestTimeoutMs,
      );
      const returnMs = performance.now();
      const { status, reason } = transferStatus(answer);
      history.transfers.push({ client: clientId, from, to, amount, status, ...(reason === undefined ? {} : { reason }), callMs, returnMs });
      if (status === 'fail') backoff = true;
      if (status === 'ok' && answer !== 'timeout') {
        const values = [String(source.balance - amount), String(target.balance + amount)];
        for (const [position, result] of (answer.body.results as { key: string; version: number }[]).entries()) {
          // A transaction's answer has no epoch: the log check matches key, value and index.
          history.acknowledged.push({ key: result.key, value: values[position], shard: shardOf(result.key, options.shardCount), index: result.version, epoch: undefined });
        }
      }
    }
  };

  await Promise.all(Array.from({ length: options.clients }, (_, clientId) => client(clientId)));
  return history;
}

/** A read-only transaction of every account once the faults are healed, retried until `timeoutMs`. */
export async function finalBankRead(apiUrl: string, accounts: string[], timeoutMs: number): Promise<BankRead | undefined> {
  const deadlineMs = Date.now() + timeoutMs;
  while (Date.now() < deadlineMs) {
    const callMs = performance.now();
    const answer = await postTxn(apiUrl, { success: accounts.map((key) => ({ op: 'get', key })) }, 5_000);
    if (answer !== 'timeout' && answer.status === 200) return { client: -1, balances: balancesOf(answer).map((account) => account.balance), callMs, returnMs: performance.now() };
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return undefined;
}

/** One POST /locks/{name}: the token it answered, or why not. */
export interface LockAcquisition {
  client: number;
  /** The token answered (status ok); null otherwise. */
  token: number | null;
  status: 'ok' | 'fail' | 'info';
  reason?: string;
  callMs: number;
  returnMs: number;
}

/** What the lock was seen at (GET /locks/{name}, or the holder's token in a 409 LockHeld): null when not held. */
export interface LockObservation {
  client: number;
  token: number | null;
  callMs: number;
  returnMs: number;
}

/** One DELETE /locks/{name}?token=t. `stale`: sent by a holder that saw the lock leave its token first. */
export interface LockRelease {
  client: number;
  token: number;
  stale: boolean;
  status: 'ok' | 'fail' | 'info';
  reason?: string;
  callMs: number;
  returnMs: number;
}

/**
 * One fenced append: a CAS of `key` from the value read to that value plus `element`, sent with
 * `X-Epochkv-Fence: <name>:<token>`. `stale`: sent by a holder after it saw the lock leave its
 * token (the holder-pause fault); the store must refuse it.
 */
export interface FencedWrite {
  client: number;
  key: string;
  token: number;
  /** `c<client>.t<token>.s<sequence>`: unique in the run, the last element of the value written. */
  element: string;
  stale: boolean;
  status: 'ok' | 'fail' | 'info';
  /** FenceRejected, conflict (412), an answer's code, or timeout. */
  reason?: string;
  callMs: number;
  returnMs: number;
}

export interface LockHistory {
  name: string;
  /** The data keys appended to: `sameShard` shares the lock key's shard (one log orders both), `crossShard` does not. */
  keys: { sameShard: string; crossShard: string };
  acquisitions: LockAcquisition[];
  observations: LockObservation[];
  releases: LockRelease[];
  writes: FencedWrite[];
  /** Holder pauses injected, and those whose lock never moved within the wait (no stale write sent). */
  pauses: { injected: number; lockNeverMoved: number };
  /** Keepalives answered 404: the holder learned its lease was gone and stopped writing. */
  leasesLost: number;
  /** Keepalives by outcome: 200, an error code, or timeout. */
  keepalives: Record<string, number>;
  /** The data keys' reads and appends in the register model, for the linearizability checker. */
  history: HistoryOperation[];
  /** Accepted appends, with where the store says it put them: checked against the log. */
  acknowledged: AcknowledgedWrite[];
  counters: Pick<WorkloadCounters, 'unexpected' | 'unexpectedSamples'>;
}

export interface LockWorkloadOptions {
  apiUrl: string | (() => string);
  shardCount: number;
  name: string;
  keys: LockHistory['keys'];
  clients: number;
  /** The lease each acquisition asks for; keepalives every ttlMs / 3. */
  ttlMs: number;
  /** The fraction of holds that end in the holder-pause fault (the run's first hold always does). */
  pauseFraction: number;
  /** A bound on the lock's release by expiry after the lease's ttl (leaseMs + 2 ticks): how long a paused holder waits to see it move. */
  expiryBoundMs: number;
  seed: number;
  deadlineMs: number;
  requestTimeoutMs: number;
}

/** The data keys of the lock workload: one on the lock key's shard, one on another. */
export function lockWorkloadKeys(lockKeyShard: number, shardCount: number, prefix: string): LockHistory['keys'] {
  const find = (wanted: (shard: number) => boolean, label: string) => {
    for (let attempt = 0; ; attempt += 1) {
      const key = `${prefix}/${label}-${attempt}`;
      if (wanted(shardOf(key, shardCount))) return key;
    }
  };
  return { sameShard: find((shard) => shard === lockKeyShard, 'same'), crossShard: find((shard) => shard !== lockKeyShard || shardCount === 1, 'cross') };
}

/** The client id a lock client records in the register history: apart from the register clients'. */
const lockClientBase = 2_000;

/**
 * The fenced lock workload: clients take one lock on a short lease of their own (kept alive every
 * ttl/3) and append their id to a data key by read-then-CAS with the fence header, then release.
 * Some holds end in the holder-pause fault: the holder stops its keepalives and sleeps past its
 * ttl still believing it holds the lock, waits to see the lock move on, and then writes (and
 * releases) with its old token; the store must refuse both with 409 FenceRejected. checkLock
 * proves the rest from this history and the logs.
 */
export async function runLockWorkload(options: LockWorkloadOptions): Promise<LockHistory> {
  const history: LockHistory = {
    name: options.name,
    keys: options.keys,
    acquisitions: [],
    observations: [],
    releases: [],
    writes: [],
    pauses: { injected: 0, lockNeverMoved: 0 },
    leasesLost: 0,
    keepalives: {},
    history: [],
    acknowledged: [],
    counters: { unexpected: 0, unexpectedSamples: [] },
  };
  const unexpected = (what: string) => {
    history.counters.unexpected += 1;
    if (history.counters.unexpectedSamples.length < 10) history.counters.unexpectedSamples.push(what);
  };
  const lockUrl = (apiUrl: string) => `${apiUrl}/locks/${encodeURIComponent(options.name)}`;
  const keyList = [options.keys.sameShard, options.keys.crossShard];

  /** ok / fail (certainly not applied) / info (unknown), with the reason, as for single writes. */
  const outcome = (answer: Answer | 'timeout', refusals: Record<number, string>, what: string): { status: 'ok' | 'fail' | 'info'; reason?: string } => {
    if (answer === 'timeout') return { status: 'info', reason: 'timeout' };
    if (answer.status === 200) return { status: 'ok' };
    const code = String(answer.body.error ?? `Http${answer.status}`);
    if (refusals[answer.status] === code) return { status: 'fail', reason: code };
    if (answer.status === 503) return { status: notAppliedCodes.has(code) ? 'fail' : 'info', reason: code };
    // A Lambda that crashed (502) or timed out (504) mid-request: the commit may have landed.
    if (answer.status === 502 || answer.status === 504) return { status: 'info', reason: code };
    if (answer.status === 500 && code === 'LambdaThrottled') return { status: 'fail', reason: code };
    unexpected(`${what} ${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`);
    return { status: 'info', reason: code };
  };

  /** A strong read then a fenced CAS appending `element`; recorded in both histories. */
  const append = async (apiUrl: string, clientId: number, key: string, token: number, element: string, stale: boolean): Promise<FencedWrite['status'] | 'unread'> => {
    const url = `${apiUrl}/kv/${encodeURIComponent(key)}`;
    const readCallMs = performance.now();
    const read = await send(url, { headers: { accept: 'application/json' } }, options.requestTimeoutMs);
    const readReturnMs = performance.now();
    if (read === 'timeout' || (read.status !== 200 && read.status !== 404)) {
      if (read !== 'timeout' && ![500, 502, 503, 504].includes(read.status)) unexpected(`GET ${key} ${read.status} ${JSON.stringify(read.body).slice(0, 200)}`);
      return 'unread';
    }
    const current = read.status === 200 ? String(read.body.value) : null;
    history.history.push({ client: lockClientBase + clientId, kind: 'get', key, input: {}, status: 'ok', output: { value: current }, callMs: readCallMs, returnMs: readReturnMs });
    const next = current === null || current === '' ? element : `${current},${element}`;
    const precondition: Record<string, string> = current === null ? { 'if-none-match': '*' } : { 'if-match': `"${String(read.body.version)}"` };
    const callMs = performance.now();
    const answer = await send(url, { method: 'PUT', body: next, headers: { ...precondition, 'x-epochkv-fence': `${options.name}:${token}` } }, options.requestTimeoutMs);
    const returnMs = performance.now();
    const conflict = answer !== 'timeout' && answer.status === 412;
    const { status, reason } = conflict ? { status: 'fail' as const, reason: 'conflict' } : outcome(answer, { 409: 'FenceRejected' }, `PUT ${key} (fenced)`);
    history.writes.push({ client: clientId, key, token, element, stale, status, ...(reason === undefined ? {} : { reason }), callMs, returnMs });
    // In the register model a 412 observed the register (it held another value); a refusal changed nothing.
    history.history.push({
      client: lockClientBase + clientId,
      kind: 'cas',
      key,
      input: { value: next, ...(current === null ? {} : { expectedValue: current }) },
      status: conflict ? 'ok' : status,
      output: conflict ? { value: conflictMarker } : {},
      callMs,
      returnMs,
    });
    if (status === 'ok' && answer !== 'timeout') {
      // A fenced write is a transaction: matched in the log by key, value and index.
      history.acknowledged.push({ key, value: next, shard: shardOf(key, options.shardCount), index: Number(answer.body.index), epoch: undefined });
    }
    return status;
  };

  const release = async (apiUrl: string, clientId: number, token: number, stale: boolean) => {
    const callMs = performance.now();
    const answer = await send(`${lockUrl(apiUrl)}?token=${token}`, { method: 'DELETE' }, options.requestTimeoutMs);
    const returnMs = performance.now();
    const { status, reason } = outcome(answer, { 409: 'FenceRejected' }, 'DELETE /locks');
    history.releases.push({ client: clientId, token, stale, status, ...(reason === undefined ? {} : { reason }), callMs, returnMs });
  };

  /** A lease the client holds across its acquisitions, renewed every ttl/3 until stopped or found gone. */
  interface ClientLease {
    id: string;
    lost: boolean;
    stopped: boolean;
    renewals: Promise<void>;
  }

  const grantLease = async (apiUrl: string, clientId: number): Promise<ClientLease | undefined> => {
    const granted = await send(`${apiUrl}/leases`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttlMs: options.ttlMs }) }, options.requestTimeoutMs);
    if (granted === 'timeout' || granted.status !== 201) {
      if (granted !== 'timeout' && ![500, 502, 503, 504].includes(granted.status)) unexpected(`POST /leases ${granted.status} ${JSON.stringify(granted.body).slice(0, 200)}`);
      return undefined;
    }
    const lease: ClientLease = { id: String(granted.body.id), lost: false, stopped: false, renewals: Promise.resolve() };
    lease.renewals = (async () => {
      while (!lease.stopped && !lease.lost) {
        await new Promise((resolve) => setTimeout(resolve, options.ttlMs / 3));
        if (lease.stopped) return;
        const keptCallMs = performance.now();
        const kept = await send(`${apiUrl}/leases/${encodeURIComponent(lease.id)}/keepalive`, { method: 'POST' }, options.ttlMs);
        const keptOutcome = kept === 'timeout' ? 'timeout' : String(kept.status === 200 ? 200 : (kept.body.error ?? kept.status));
        history.keepalives[keptOutcome] = (history.keepalives[keptOutcome] ?? 0) + 1;
        if (process.env.EPOCHKV_CHAOS_DEBUG === '1') console.log(`lock client ${clientId} lease ${lease.id}: keepalive ${keptOutcome} in ${Math.round(performance.now() - keptCallMs)} ms`);
        if (kept !== 'timeout' && kept.status === 404) {
          lease.lost = true;
          history.leasesLost += 1;
        }
      }
    })();
    return lease;
  };

  let firstPauseTaken = false;
  const client = async (clientId: number) => {
    const random = mulberry32(options.seed * 1_000 + 700 + clientId);
    let sequence = 0;
    let backoff = false;
    // One lease per client, kept alive across its acquisitions (as a long-lived worker holds one):
    // a failed acquisition leaves no lease behind to expire. A new one after a loss or a pause.
    let lease: ClientLease | undefined;
    while (Date.now() < options.deadlineMs) {
      // A refusal comes back at once: back off a little, as clients do.
      if (backoff) await new Promise((resolve) => setTimeout(resolve, between(20, 80, random)));
      backoff = false;
      const apiUrl = typeof options.apiUrl === 'string' ? options.apiUrl : options.apiUrl();
      if (lease === undefined || lease.lost) {
        lease = await grantLease(apiUrl, clientId);
        backoff = lease === undefined;
        continue;
      }
      const callMs = performance.now();
      const acquired = await send(`${lockUrl(apiUrl)}?waitMs=${options.ttlMs}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ leaseId: lease.id }) }, options.requestTimeoutMs);
      const returnMs = performance.now();
      if (acquired !== 'timeout' && acquired.status === 409 && acquired.body.error === 'LockHeld') {
        history.acquisitions.push({ client: clientId, token: null, status: 'fail', reason: 'LockHeld', callMs, returnMs });
        history.observations.push({ client: clientId, token: typeof acquired.body.token === 'number' && acquired.body.token > 0 ? acquired.body.token : null, callMs, returnMs });
        continue;
      }
      // 404 LeaseNotFound: the lease expired (a keepalive came too late); nothing was acquired.
      const { status, reason } = outcome(acquired, { 404: 'LeaseNotFound' }, 'POST /locks');
      const token = status === 'ok' && acquired !== 'timeout' ? Number(acquired.body.token) : null;
      history.acquisitions.push({ client: clientId, token, status, ...(reason === undefined ? {} : { reason }), callMs, returnMs });
      if (reason === 'LeaseNotFound') lease.lost = true;
      if (token === null) {
        backoff = true;
        continue;
      }
      // The run's first hold always ends in a pause, so every run sends a stale write.
      const pause = !firstPauseTaken || random() < options.pauseFraction;
      firstPauseTaken = true;
      const appends = 1 + Math.floor(random() * 3);
      for (let count = 0; count < appends && !lease.lost && Date.now() < options.deadlineMs; count += 1) {
        const written = await append(apiUrl, clientId, pick(keyList, random), token, `c${clientId}.t${token}.s${(sequence += 1)}`, false);
        // A refused write says the lock moved on: stop holding.
        if (written === 'fail' && history.writes.at(-1)?.reason === 'FenceRejected') break;
      }
      if (!pause) {
        if (!lease.lost) await release(apiUrl, clientId, token, false);
        continue;
      }

      // The holder-pause fault (a GC pause, a frozen VM): no more keepalives, and a sleep past the
      // lease's ttl while the holder still believes it holds the lock. This sleep is the fault itself.
      history.pauses.injected += 1;
      lease.stopped = true;
      lease = undefined;
      await new Promise((resolve) => setTimeout(resolve, options.ttlMs + between(0, options.ttlMs, random)));
      // Then wait until the lock has moved on from this token (expiry runs through the log within
      // expiryBoundMs; faults may stretch it), so that the write below is stale for certain.
      const waitUntilMs = Date.now() + options.expiryBoundMs + 4 * options.ttlMs;
      let moved = false;
      while (!moved && Date.now() < waitUntilMs) {
        const lookCallMs = performance.now();
        const look = await send(lockUrl(apiUrl), { headers: { accept: 'application/json' } }, options.requestTimeoutMs);
        const lookReturnMs = performance.now();
        if (look !== 'timeout' && look.status === 200) {
          const seen = look.body.held === true ? Number(look.body.token) : null;
          history.observations.push({ client: clientId, token: seen, callMs: lookCallMs, returnMs: lookReturnMs });
          moved = seen !== token;
        }
        if (!moved) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      if (!moved) {
        history.pauses.lockNeverMoved += 1;
        continue;
      }
      await append(apiUrl, clientId, pick(keyList, random), token, `c${clientId}.t${token}.s${(sequence += 1)}.stale`, true);
      await release(apiUrl, clientId, token, true);
    }
    // Revoked at the end, so no lease of the run is left to expire during the checks.
    if (lease !== undefined) {
      lease.stopped = true;
      await lease.renewals;
      const apiUrl = typeof options.apiUrl === 'string' ? options.apiUrl : options.apiUrl();
      await send(`${apiUrl}/leases/${encodeURIComponent(lease.id)}`, { method: 'DELETE' }, options.requestTimeoutMs);
    }
  };

  await Promise.all(Array.from({ length: options.clients }, (_, clientId) => client(clientId)));
  return history;
}
