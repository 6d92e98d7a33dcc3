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
    if (String(answer.body.value) !== written.value || version < written.version) {
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
