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
  epoch: number;
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
