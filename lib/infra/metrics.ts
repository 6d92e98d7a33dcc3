/**
 * The custom metrics the handlers publish (Powertools Metrics, embedded metric format) and the
 * monitoring construct alarms on: one module, so a renamed metric cannot silently leave an
 * alarm watching nothing. No CDK or SDK imports: the handlers bundle this file.
 */
export const metricNamespace = 'epochkv';

/** Dimension every epochkv metric carries, so two clusters in one account stay apart. */
export const clusterDimension = 'cluster';
/** Powertools adds the `service` dimension from its serviceName. */
export const serviceDimension = 'service';

export const metricServices = {
  node: 'node',
  replicaHeartbeat: 'replica-heartbeat',
  api: 'api',
  apply: 'apply',
} as const;

/**
 * Dimensions of the API's per-request metrics, beside cluster and service: the route template
 * (`GET /kv/{key}`; an unknown path is `other`, so a scan cannot mint dimensions) and the status.
 */
export const routeDimension = 'route';
export const statusDimension = 'status';

export const metricNames = {
  /**
   * Published by every node function (functions/node.ts) about every 10 s: shards whose lease
   * has no holder or was last renewed more than leaseMs + skew tolerance ago, as that node saw
   * at its latest observation. Absent when no node runs.
   */
  leaderlessShards: 'LeaderlessShards',
  /** Node ticks that failed (a store error), per invocation; from functions/node.ts. */
  nodeTickErrors: 'NodeTickErrors',
  /**
   * Published by the replica heartbeat (functions/replica-heartbeat.ts) about every 10 s in its
   * own region: the largest, over shards, of home head index minus the replica's applied index.
   */
  replicaLagEntries: 'ReplicaLagEntries',
  /** Same source: the largest commit-to-apply time of the last applied entry (two clocks; indicative). */
  replicaApplyLagMs: 'ReplicaApplyLagMs',
  /** One per API request, by route and status (functions/api.ts), with its latency below. */
  apiRequests: 'Requests',
  /** Handler time of one API request in ms, by route and status (API Gateway's own time excluded). */
  apiLatencyMs: 'LatencyMs',
  /** Writes (PUT, DELETE) the API committed: answered 200. */
  commits: 'Commits',
  /** Writes that lost a race to another writer (stale head, stale epoch, a conflicting transaction): answered 503, safe to retry. */
  lostRaces: 'LostRaces',
  /** Replication messages a replica's apply function handled without failure, per batch (functions/apply.ts). */
  appliedEntries: 'AppliedEntries',
  /** Messages of a batch the apply function handed back for redelivery (failed, or behind a failure of their group). */
  applyFailures: 'ApplyFailures',
} as const;

/** The error codes of a write that lost a race (lib/ports/errors.ts): counted as `LostRaces`. */
export const lostRaceErrorCodes: readonly string[] = ['HeadConflict', 'StaleEpoch', 'TransactionConflict'];

/** How often the handlers publish the gauges above: often enough for a 1-minute alarm period. */
export const metricPublishEveryMs = 10_000;
