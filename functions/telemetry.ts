import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import type { Clock } from '../lib/clock.ts';
import type { ClusterConfig } from '../lib/config.ts';
import { limits } from '../lib/core/limits.ts';
import { clusterDimension, lostRaceErrorCodes, metricNames, metricNamespace, metricPublishEveryMs, metricServices, routeDimension, statusDimension } from '../lib/infra/metrics.ts';
import type { Store } from '../lib/ports/store.ts';

/**
 * Powertools logging and metrics for the Lambda entry points only. The handlers' logic (the
 * `create*`/`run*` functions the local cloud and the tests drive) takes a plain `log` function
 * and a `Store`; on Lambda those become a structured logger and a store that also reports
 * what it observed as metrics (embedded metric format on stdout: no API calls, no extra IAM).
 */

/** A structured JSON logger with the cluster, the region and the invocation's context. */
export function lambdaLogger(service: string, config: ClusterConfig, context?: Context, keys: Record<string, string> = {}): Logger {
  const logger = new Logger({ serviceName: service, persistentKeys: { cluster: config.tablePrefix, region: config.region, ...keys } });
  if (context !== undefined) logger.addContext(context);
  return logger;
}

function clusterMetrics(service: string, config: ClusterConfig): Metrics {
  return new Metrics({ namespace: metricNamespace, serviceName: service, defaultDimensions: { [clusterDimension]: config.tablePrefix } });
}

type Gauges = Partial<Record<(typeof metricNames)[keyof typeof metricNames], number>>;

/** Publishes the latest gauge values at most every `metricPublishEveryMs` (one stdout line each time). */
class GaugePublisher {
  #lastPublishedMs: number | undefined;
  #latest: Gauges = {};

  constructor(
    private readonly metrics: Metrics,
    private readonly clock: Clock,
    private readonly units: Record<string, (typeof MetricUnit)[keyof typeof MetricUnit]>,
  ) {}

  update(values: Gauges): void {
    this.#latest = { ...this.#latest, ...values };
    const nowMs = this.clock.monotonicMs();
    if (this.#lastPublishedMs !== undefined && nowMs - this.#lastPublishedMs < metricPublishEveryMs) return;
    this.#lastPublishedMs = nowMs;
    this.flush();
  }

  flush(extra: Gauges = {}): void {
    const values = { ...this.#latest, ...extra };
    if (Object.keys(values).length === 0) return;
    for (const [name, value] of Object.entries(values)) this.metrics.addMetric(name, this.units[name] ?? MetricUnit.Count, value);
    this.metrics.publishStoredMetrics();
  }
}

/** Returns `target` with some methods replaced; every other member is the target's own, bound to it. */
function intercept<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get(object, property) {
      if (Object.hasOwn(overrides, property)) return overrides[property as keyof T];
      const value: unknown = Reflect.get(object, property, object);
      return typeof value === 'function' ? value.bind(object) : value;
    },
  });
}

/**
 * The node handler's telemetry: every lease read the node makes anyway is turned into the
 * `LeaderlessShards` gauge (shards with no holder or a lease older than leaseMs plus the skew
 * tolerance, by this process's clock, as `/cluster` computes `live`).
 */
export function nodeTelemetry(config: ClusterConfig, node: string, clock: Clock, context: Context) {
  const logger = lambdaLogger(metricServices.node, config, context, { node });
  const metrics = clusterMetrics(metricServices.node, config);
  const gauges = new GaugePublisher(metrics, clock, { [metricNames.leaderlessShards]: MetricUnit.Count, [metricNames.nodeTickErrors]: MetricUnit.Count });
  let leaderless: number | undefined;
  return {
    log: (line: string) => logger.info(line),
    observe(store: Store): Store {
      return intercept(store, {
        readLeases: async () => {
          const leases = await store.readLeases();
          const nowMs = clock.wallMs();
          leaderless = 0;
          for (let shard = 0; shard < config.shardCount; shard += 1) {
            const lease = leases.find((candidate) => candidate.shard === shard);
            const live = lease?.holder !== undefined && nowMs - lease.renewedAtMs <= config.leaseMs + limits.leaseSkewToleranceMs;
            if (!live) leaderless += 1;
          }
          gauges.update({ [metricNames.leaderlessShards]: leaderless });
          return leases;
        },
      });
    },
    finish(summary: { errors: number }): void {
      gauges.flush({ [metricNames.nodeTickErrors]: summary.errors });
    },
  };
}

/**
 * The replica heartbeat's telemetry: each report it writes to the home `control` table (after
 * reading the home heads) becomes the region's `ReplicaLagEntries` and `ReplicaApplyLagMs`
 * gauges, the largest over shards.
 */
export function replicaHeartbeatTelemetry(config: ClusterConfig, clock: Clock, context: Context) {
  const logger = lambdaLogger(metricServices.replicaHeartbeat, config, context);
  const metrics = clusterMetrics(metricServices.replicaHeartbeat, config);
  const gauges = new GaugePublisher(metrics, clock, { [metricNames.replicaLagEntries]: MetricUnit.Count, [metricNames.replicaApplyLagMs]: MetricUnit.Milliseconds });
  const headIndexes = new Map<number, number>();
  const lagEntries = new Map<number, number>();
  const applyLagMs = new Map<number, number>();
  return {
    log: (line: string) => logger.info(line),
    observeHome(home: Store): Store {
      return intercept(home, {
        readHead: async (shard: number) => {
          const head = await home.readHead(shard);
          headIndexes.set(shard, head?.index ?? 0);
          return head;
        },
        putReplicaReports: async (reports: Parameters<Store['putReplicaReports']>[0]) => {
          await home.putReplicaReports(reports);
          for (const report of reports) {
            lagEntries.set(report.shard, Math.max(0, (headIndexes.get(report.shard) ?? 0) - report.appliedIndex));
            applyLagMs.set(report.shard, report.lastLagMs);
          }
          gauges.update({ [metricNames.replicaLagEntries]: Math.max(0, ...lagEntries.values()), [metricNames.replicaApplyLagMs]: Math.max(0, ...applyLagMs.values()) });
        },
      });
    },
    finish(): void {
      gauges.flush();
    },
  };
}

const apiPaths = new Set(['/kv', '/watch', '/cluster', '/health', '/livez', '/txn', '/leases']);
/** Routes with a name or id in the path, by their first segment. */
const apiTemplates: Record<string, string> = { leases: '/leases/{id}', locks: '/locks/{name}', elections: '/elections/{name}' };
const apiMethods = new Set(['GET', 'PUT', 'DELETE', 'POST', 'HEAD']);

/**
 * The route template of a request, for a metric dimension: `GET /kv/{key}`, `PUT /kv/{key}`,
 * `GET /watch`; any other path is `other`, so a caller probing paths cannot mint dimensions.
 */
export function routeOf(method: string, path: string): string {
  const verb = apiMethods.has(method.toUpperCase()) ? method.toUpperCase() : 'OTHER';
  if (path.startsWith('/kv/')) return `${verb} /kv/{key}`;
  if (apiPaths.has(path)) return `${verb} ${path}`;
  const [first, , action] = path.split('/').filter(Boolean);
  const template = first === undefined ? undefined : apiTemplates[first];
  if (template === undefined) return `${verb} other`;
  // The action after the name (keepalive, campaign, proclaim) is a fixed word or `other`.
  return action === undefined ? `${verb} ${template}` : `${verb} ${template}/${['keepalive', 'campaign', 'proclaim'].includes(action) ? action : 'other'}`;
}

/**
 * The API handler's telemetry: two embedded-metric lines per request with `Requests` and
 * `LatencyMs`, one by `cluster,service` (totals, what the alarms use) with `Commits` (a write
 * answered 200) or `LostRaces` (answered 503 with a race's error code), one by
 * `cluster,service,route,status` (the breakdown).
 */
export function apiTelemetry(config: ClusterConfig) {
  const logger = lambdaLogger(metricServices.api, config);
  const metrics = clusterMetrics(metricServices.api, config);
  return {
    logger,
    wrap(handler: (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>) {
      return async (event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> => {
        const startedMs = performance.now();
        const response = await handler(event);
        const method = event.httpMethod.toUpperCase();
        const latencyMs = performance.now() - startedMs;
        // The breakdown on a line of its own: Powertools puts every dimension added to a Metrics
        // object into one set, and the totals (cluster,service) must be a set the alarms can see
        // on every invocation, warm ones included.
        const breakdown = metrics.singleMetric();
        breakdown.addDimensions({ [routeDimension]: routeOf(method, event.path), [statusDimension]: String(response.statusCode) });
        breakdown.addMetric(metricNames.apiRequests, MetricUnit.Count, 1);
        breakdown.addMetric(metricNames.apiLatencyMs, MetricUnit.Milliseconds, latencyMs);
        breakdown.publishStoredMetrics();
        metrics.addMetric(metricNames.apiRequests, MetricUnit.Count, 1);
        metrics.addMetric(metricNames.apiLatencyMs, MetricUnit.Milliseconds, latencyMs);
        if (method === 'PUT' || method === 'DELETE' || method === 'POST') {
          if (response.statusCode === 200) metrics.addMetric(metricNames.commits, MetricUnit.Count, 1);
          else if (response.statusCode === 503 && lostRaceErrorCodes.includes(errorCodeOf(response))) metrics.addMetric(metricNames.lostRaces, MetricUnit.Count, 1);
        }
        metrics.publishStoredMetrics();
        return response;
      };
    },
  };
}

function errorCodeOf(response: APIGatewayProxyResult): string {
  try {
    const body = JSON.parse(response.body) as { error?: unknown };
    return typeof body.error === 'string' ? body.error : '';
  } catch {
    return '';
  }
}

/**
 * The apply handler's telemetry: per batch, `AppliedEntries` (messages handled without
 * failure, an entry a pull already applied included: applied exactly once either way) and
 * `ApplyFailures` (messages handed back for redelivery).
 */
export function applyTelemetry(config: ClusterConfig) {
  const logger = lambdaLogger(metricServices.apply, config);
  const metrics = clusterMetrics(metricServices.apply, config);
  return {
    logger,
    wrap(handler: (event: SQSEvent) => Promise<SQSBatchResponse>) {
      return async (event: SQSEvent): Promise<SQSBatchResponse> => {
        const response = await handler(event);
        const failed = response.batchItemFailures.length;
        metrics.addMetric(metricNames.appliedEntries, MetricUnit.Count, event.Records.length - failed);
        metrics.addMetric(metricNames.applyFailures, MetricUnit.Count, failed);
        metrics.publishStoredMetrics();
        return response;
      };
    },
  };
}
