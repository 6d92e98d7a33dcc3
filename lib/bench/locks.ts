/**
 * `npm run bench -- --locks`: lock acquire→release round trips (`POST /locks/{name}` then
 * `DELETE /locks/{name}?token=t`) under Lambda's concurrency model with the AWS latency model on,
 * as a ratio to single-key writes (`PUT /kv/{key}`) measured in the same run at the same number
 * of clients.
 *
 * One local cloud (8 shards, 3 node processes, no replica regions: the home write path alone, as
 * `--aws-model` and `--txn` measure it). Closed-loop clients over HTTP. Each client grants one
 * lease before a cell (`POST /leases`, long enough to outlast it, revoked after) and acquires with
 * `{"leaseId"}`, as a long-lived worker would: what is measured is the lock, not a lease grant per
 * acquisition. Two spreads: every client on one lock name (contended: acquisitions wait with
 * `waitMs`, so a round trip includes the wait for the holder ahead), and each client on a name of
 * its own (N distinct names, spread over the shards by their hash). Single-key writes: each
 * client on keys of its own over all 8 shards.
 */
import { performance } from 'node:perf_hooks';
import { startBenchCloud } from './bench-cloud.ts';
import { failureCode, HttpClient, type HttpAnswer } from './http.ts';
import { closedLoop, type Progress } from './load.ts';
import { round } from './stats.ts';

export interface LockBenchCell {
  /** write: one PUT /kv/{key}; lock-one: acquire→release of one name shared by every client; lock-own: of a name per client. */
  kind: 'write' | 'lock-one' | 'lock-own';
  clients: number;
}

export interface LockBenchResult extends LockBenchCell {
  /** Writes, or acquire→release round trips, completed per second. */
  perSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  ok: number;
  errors: Record<string, number>;
  errorSamples: string[];
  /** perSecond over the single-key writes' at the same clients; null for the writes themselves. */
  ratioToWrites: number | null;
}

export interface LockBenchReport {
  startedAt: string;
  quick: boolean;
  cellSeconds: number;
  shardCount: number;
  /** The machine's 1-minute load average when the run began and ended (os.loadavg). */
  loadAverage: { start: number; end: number };
  results: LockBenchResult[];
  summaryLine: string;
}

const shardCount = 8;
const valueBytes = 100;
const writeKeysPerClient = 8;
/** How long a contended acquisition waits for the holder ahead (the API's bound is 20 s). */
const lockWaitMs = 10_000;
/** The lease each client holds through a cell: longer than any cell, so no keepalive is needed. */
const leaseTtlMs = 120_000;
/** A release answered 503 (no leader, a lost race) is repeated: a lock left held would stall the cell. */
const releaseAttempts = 5;

function cellsFor(clients: number): LockBenchCell[] {
  // With one client, one name and a name of its own are the same cell.
  return clients === 1
    ? [{ kind: 'write', clients }, { kind: 'lock-one', clients }]
    : [{ kind: 'write', clients }, { kind: 'lock-one', clients }, { kind: 'lock-own', clients }];
}

export function lockCellLabel(cell: LockBenchCell): string {
  if (cell.kind === 'write') return '1-key write';
  if (cell.kind === 'lock-one') return cell.clients === 1 ? 'lock round trip' : 'lock round trip, 1 name';
  return `lock round trip, ${cell.clients} names`;
}

function errorCount(result: LockBenchResult | undefined): number {
  return result === undefined ? 0 : Object.values(result.errors).reduce((sum, count) => sum + count, 0);
}

export function locksTable(report: LockBenchReport): string[] {
  const lines = ['| clients | operation | per s | ratio to 1-key writes | p50 / p99 ms | errors |', '| ---: | --- | ---: | ---: | ---: | ---: |'];
  for (const result of report.results) {
    lines.push(
      `| ${result.clients} | ${lockCellLabel(result)} | ${result.perSecond} | ${result.ratioToWrites ?? '(baseline)'} | ${result.p50Ms ?? '–'} / ${result.p99Ms ?? '–'} | ${errorCount(result)}${errorCount(result) > 0 ? ` ${JSON.stringify(result.errors)}` : ''} |`,
    );
  }
  return lines;
}

/** One line: the one-client round trip, and the contended and distinct cells at the most clients. */
export function locksSummary(results: readonly LockBenchResult[]): string {
  const clients = Math.max(0, ...results.map((result) => result.clients));
  const find = (kind: LockBenchCell['kind'], at: number) => results.find((result) => result.kind === kind && result.clients === at);
  const cell = (name: string, found: LockBenchResult | undefined) =>
    `${name}_per_s=${found?.perSecond ?? 'n/a'} ${name}_ratio=${found?.ratioToWrites ?? 'n/a'} ${name}_p50_ms=${found?.p50Ms ?? 'n/a'} ${name}_p99_ms=${found?.p99Ms ?? 'n/a'}`;
  const errors = results.reduce((sum, result) => sum + errorCount(result), 0);
  return `bench-locks: clients=${clients} ${cell('single', find('lock-one', 1))} write_per_s=${find('write', clients)?.perSecond ?? 'n/a'} ${cell('one_name', find('lock-one', clients))} ${cell('own_names', find('lock-own', clients))} errors=${errors}`;
}

const json = (answer: HttpAnswer): Record<string, unknown> => {
  try {
    return JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
};

export async function runLocksBench(options: { quick: boolean; progress: Progress; loadAverage: () => number }): Promise<LockBenchReport> {
  const cellSeconds = options.quick ? 4 : 12;
  const warmupMs = options.quick ? 1_000 : 2_000;
  const clientCounts = options.quick ? [1, 8] : [1, 8, 32];
  const startedAt = new Date().toISOString();
  const loadAtStart = options.loadAverage();
  const results: LockBenchResult[] = [];
  const { cloud, stop } = await startBenchCloud(`bench-locks-${Date.now().toString(36)}`, shardCount);
  const client = new HttpClient(512);
  const api = (path: string) => `${cloud.apiUrl}${path}`;
  try {
    const value = Buffer.alloc(valueBytes, 120);
    // Unmeasured: DynamoDB Local's JVM compiles its hot paths in the first seconds of load.
    await closedLoop({
      label: 'locks bench warmup',
      concurrency: 8,
      durationMs: warmupMs * 3,
      op: async (worker, sequence) => {
        const answer = await client.request('PUT', api(`/kv/bench-locks-warm-${worker}-${sequence % writeKeysPerClient}`), { body: value, timeoutMs: 30_000 }).catch(() => undefined);
        return answer?.status === 200 ? { ok: true } : { ok: false, code: 'warmup' };
      },
    });
    for (const clients of clientCounts) {
      for (const cell of cellsFor(clients)) {
        const tag = `${cell.kind}-${clients}`;
        const errorSamples: string[] = [];
        const sample = (what: string) => {
          if (errorSamples.length < 5) errorSamples.push(what.slice(0, 300));
        };
        const leases: string[] = [];
        if (cell.kind !== 'write') {
          for (let worker = 0; worker < clients; worker += 1) {
            const granted = await client.request('POST', api('/leases'), { body: JSON.stringify({ ttlMs: leaseTtlMs }), headers: { 'content-type': 'application/json' }, timeoutMs: 30_000 });
            if (granted.status !== 201) throw new Error(`locks bench: POST /leases answered ${granted.status} ${granted.body.toString('utf8').slice(0, 200)}`);
            leases.push(String(json(granted).id));
          }
        }
        const nameOf = (worker: number) => (cell.kind === 'lock-one' ? `bench-${tag}` : `bench-${tag}-c${worker}`);
        const startMs = performance.now();
        const phase = await closedLoop({
          label: `${lockCellLabel(cell)}, ${clients} clients`,
          concurrency: clients,
          durationMs: cellSeconds * 1_000,
          warmupMs,
          progress: options.progress,
          op: async (worker, sequence) => {
            try {
              if (cell.kind === 'write') {
                const answer = await client.request('PUT', api(`/kv/bench-locks/${tag}/c${worker}/${sequence % writeKeysPerClient}`), { body: value, timeoutMs: 30_000 });
                if (answer.status === 200) return { ok: true };
                sample(`PUT ${answer.status} ${answer.body.toString('utf8')}`);
                return { ok: false, code: failureCode(answer) };
              }
              const name = encodeURIComponent(nameOf(worker));
              const acquired = await client.request('POST', api(`/locks/${name}?waitMs=${lockWaitMs}`), { body: JSON.stringify({ leaseId: leases[worker] }), headers: { 'content-type': 'application/json' }, timeoutMs: 30_000 });
              if (acquired.status !== 200) {
                sample(`POST /locks ${acquired.status} ${acquired.body.toString('utf8')}`);
                return { ok: false, code: `acquire ${failureCode(acquired)}` };
              }
              const token = Number(json(acquired).token);
              for (let attempt = 1; ; attempt += 1) {
                const released = await client.request('DELETE', api(`/locks/${name}?token=${token}`), { timeoutMs: 30_000 });
                if (released.status === 200) return { ok: true };
                sample(`DELETE /locks ${released.status} ${released.body.toString('utf8')}`);
                if (released.status !== 503 || attempt >= releaseAttempts) return { ok: false, code: `release ${failureCode(released)}` };
              }
            } catch (error) {
              return { ok: false, code: failureCode(undefined, error) };
            }
          },
        });
        // The leases go with their cell: nothing of it is left to expire during the next.
        await Promise.all(leases.map((id) => client.request('DELETE', api(`/leases/${id}`), { timeoutMs: 30_000 }).catch(() => undefined)));
        const perSecond = round(phase.opsPerSecond, 1);
        const baseline = results.find((result) => result.kind === 'write' && result.clients === clients);
        const result: LockBenchResult = {
          ...cell,
          perSecond,
          p50Ms: phase.latency.p50Ms,
          p99Ms: phase.latency.p99Ms,
          ok: phase.ok,
          errors: phase.errors,
          errorSamples,
          ratioToWrites: cell.kind === 'write' || baseline === undefined || baseline.perSecond === 0 ? null : round(perSecond / baseline.perSecond, 2),
        };
        results.push(result);
        options.progress(
          `${lockCellLabel(cell).padEnd(26)} ${String(clients).padStart(3)} clients: ${perSecond}/s${result.ratioToWrites === null ? '' : `, ratio ${result.ratioToWrites} to 1-key writes`}, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, errors ${phase.failed}${phase.failed > 0 ? ` ${JSON.stringify(phase.errors)}` : ''} (${round((performance.now() - startMs) / 1000, 0)} s)`,
        );
      }
    }
  } finally {
    client.destroy();
    await stop();
  }
  return { startedAt, quick: options.quick, cellSeconds, shardCount, loadAverage: { start: round(loadAtStart, 1), end: round(options.loadAverage(), 1) }, results, summaryLine: locksSummary(results) };
}
