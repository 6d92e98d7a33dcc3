import type { Clock } from '../clock.ts';
import type { ClusterConfig } from '../config.ts';
import { homeUnreadyReasons, replicaReportAgeMsMax, replicaUnreadyReasons } from '../core/readiness.ts';
import type { KvService } from './kv-service.ts';

export interface Readiness {
  ready: boolean;
  region: string;
  role: 'home' | 'replica';
  /** Why the region cannot serve now; empty when ready. */
  reasons: string[];
  /** At a replica: the most entries any shard is behind the home head (once known). */
  lagEntriesMax?: number;
}

/** A key no client can write (keys are checked; this one is read only to see the kv table answer). */
const probeKey = 'epochkv/health-probe';

function describe(what: string, error: unknown): string {
  const name = error instanceof Error ? error.name : 'Error';
  const message = error instanceof Error ? error.message : String(error);
  return `${what} did not answer: ${name}: ${message.slice(0, 200)}`;
}

/**
 * Whether this region can serve now (see lib/core/readiness.ts for the rules). Home: the lease
 * items, the log and the kv table answer, and every shard has a live leader. Replica: the home
 * reports and heads answer (its lag is known), its own tables answer, and its heartbeat reported
 * every shard recently (its applier runs). Reads only; every call is bounded by the API's SDK
 * timeouts, so a hanging store makes this answer "unavailable", not hang.
 */
export async function regionReadiness(service: KvService, config: ClusterConfig, clock: Clock): Promise<Readiness> {
  const { store } = service;
  const role = service.isReplica() ? 'replica' : 'home';
  const reasons: string[] = [];
  if (role === 'home') {
    const [leases, log, kv] = await Promise.allSettled([store.readLeases(), store.readHead(0), store.getItem(service.shardOf(probeKey), probeKey, true)]);
    if (log.status === 'rejected') reasons.push(describe(`the log table of ${config.homeRegion}`, log.reason));
    if (kv.status === 'rejected') reasons.push(describe(`the kv table of ${config.homeRegion}`, kv.reason));
    if (leases.status === 'rejected') reasons.push(describe(`the control table of ${config.homeRegion} (leases)`, leases.reason));
    else reasons.push(...homeUnreadyReasons({ shardCount: config.shardCount, leaseMs: config.leaseMs, nowMs: clock.wallMs(), leases: leases.value }));
    return { ready: reasons.length === 0, region: config.region, role, reasons };
  }
  const [reports, heads, local] = await Promise.allSettled([
    store.readReplicaReports(),
    Promise.all(Array.from({ length: config.shardCount }, (_, shard) => store.readHead(shard))),
    // A session read with no token: this region's progress and kv tables.
    service.read(probeKey, 'session', {}),
  ]);
  if (local.status === 'rejected') reasons.push(describe(`the tables of ${config.region}`, local.reason));
  if (heads.status === 'rejected') reasons.push(describe(`the home log (${config.homeRegion}): the lag of ${config.region} is unknown`, heads.reason));
  if (reports.status === 'rejected') {
    reasons.push(describe(`the home control table (${config.homeRegion}): the lag of ${config.region} is unknown`, reports.reason));
    return { ready: false, region: config.region, role, reasons };
  }
  reasons.push(...replicaUnreadyReasons({ region: config.region, shardCount: config.shardCount, nowMs: clock.wallMs(), reportAgeMsMax: replicaReportAgeMsMax(config), reports: reports.value }));
  let lagEntriesMax: number | undefined;
  if (heads.status === 'fulfilled') {
    lagEntriesMax = 0;
    for (const report of reports.value.filter((candidate) => candidate.region === config.region)) {
      lagEntriesMax = Math.max(lagEntriesMax, (heads.value[report.shard]?.index ?? 0) - report.appliedIndex);
    }
  }
  return { ready: reasons.length === 0, region: config.region, role, reasons, ...(lagEntriesMax === undefined ? {} : { lagEntriesMax }) };
}

/**
 * One readiness answer shared for `ttlMs` (and one check in flight at a time): /health is
 * unauthenticated, so a flood of probes costs a few reads per interval, not per request.
 */
export class ReadinessCache {
  #answer: { readiness: Readiness; atMs: number } | undefined;
  #checking: Promise<Readiness> | undefined;

  constructor(
    private readonly check: () => Promise<Readiness>,
    private readonly clock: Clock,
    private readonly ttlMs: number,
  ) {}

  async get(): Promise<Readiness> {
    const answer = this.#answer;
    if (answer !== undefined && this.clock.monotonicMs() - answer.atMs < this.ttlMs) return answer.readiness;
    this.#checking ??= this.check()
      .then((readiness) => {
        this.#answer = { readiness, atMs: this.clock.monotonicMs() };
        return readiness;
      })
      .finally(() => {
        this.#checking = undefined;
      });
    return this.#checking;
  }
}
