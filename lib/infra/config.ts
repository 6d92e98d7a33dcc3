import { validateConfig, type ClusterConfig } from '../config.ts';
import { AssertionError } from '../core/assert.ts';
import { retainEntriesMin, retentionDefaults } from '../core/compaction.ts';
import { checkTimings, limits } from '../core/limits.ts';
import { functionNameLengthMax, queueNameLengthMax } from './names.ts';
import { tableNames } from './schema.ts';

/**
 * The deployable cluster's configuration, typed in one place. Every value can be set in
 * `cdk.json` under `context` or on the command line (`cdk synth -c epochkv:shardCount=16`);
 * `-c` values arrive as strings and are parsed here. Nothing else reads context.
 */
import { replicationModes, type ReplicationMode } from '../core/replication.ts';

export interface InfraConfig {
  /** Prefix of every physical name: tables `<prefix>-control`, queues `<prefix>-replication.fifo`, stacks. */
  prefix: string;
  /** The authoritative region: leases, the log, the node functions. */
  homeRegion: string;
  /** Regions that hold a replica (queue, apply function, read API); may be empty. */
  replicaRegions: string[];
  /** One node function per identity. */
  nodeIds: string[];
  shardCount: number;
  leaseMs: number;
  tickMs: number;
  /**
   * When a write is acknowledged: `async` after the home commit; `quorum` once enough replica
   * queues accepted the entry that home + they are a majority of regions; `all` once every
   * in-sync replica's queue did. Handlers get it as EPOCHKV_REPLICATION.
   */
  replication: ReplicationMode;
  /** Table deletion protection and RETAIN removal; turn off for dev clusters you want to destroy. */
  deletionProtection: boolean;
  /** Account of every stack; undefined leaves it to the credentials at deploy time. */
  account: string | undefined;
  /** API Gateway stage throttling, per region. */
  apiRateLimitPerSecond: number;
  apiBurstLimit: number;
  /** Memory of each node function; CPU share grows with it (a starved node misses renewals). */
  nodeMemoryMb: number;
  /** Replica lag (log entries behind the home head) that raises the lag alarm. */
  replicaLagEntriesAlarm: number;
  /** Retention of every log group the stacks create. */
  logRetentionDays: number;
  /**
   * Retention of each shard's replicated log (lib/core/compaction.ts): at most this many entries
   * and none older than this many ms; handlers get them as EPOCHKV_LOG_RETAIN_ENTRIES / _AGE_MS.
   */
  logRetainEntries: number;
  logRetainAgeMs: number;
  /**
   * Reserved concurrency of each node function: capacity no other function of the account can
   * take, so a traffic spike elsewhere cannot starve leadership. 0 reserves nothing (for accounts
   * whose concurrency quota is too small to set any aside). See `nodeConcurrencyNeeded`.
   */
  nodeReservedConcurrency: number;
  /** Optional: an email address subscribed to every region's alarm topic (it must confirm). */
  alarmEmail?: string | undefined;
}

/** The context keys, one per field; the names users type after `-c`. */
export const contextKeys = {
  prefix: 'epochkv:prefix',
  homeRegion: 'epochkv:homeRegion',
  replicaRegions: 'epochkv:replicaRegions',
  nodeIds: 'epochkv:nodeIds',
  nodeCount: 'epochkv:nodeCount',
  shardCount: 'epochkv:shardCount',
  leaseMs: 'epochkv:leaseMs',
  tickMs: 'epochkv:tickMs',
  replication: 'epochkv:replication',
  deletionProtection: 'epochkv:deletionProtection',
  account: 'epochkv:account',
  apiRateLimitPerSecond: 'epochkv:apiRateLimitPerSecond',
  apiBurstLimit: 'epochkv:apiBurstLimit',
  nodeMemoryMb: 'epochkv:nodeMemoryMb',
  replicaLagEntriesAlarm: 'epochkv:replicaLagEntriesAlarm',
  logRetentionDays: 'epochkv:logRetentionDays',
  logRetainEntries: 'epochkv:logRetainEntries',
  logRetainAgeMs: 'epochkv:logRetainAgeMs',
  nodeReservedConcurrency: 'epochkv:nodeReservedConcurrency',
  alarmEmail: 'epochkv:alarmEmail',
} as const;

/**
 * Concurrent executions one node function needs: a node runs one invocation at a time except
 * while a minute's run overlaps the previous one (a run lasts up to the 90 s timeout), plus one
 * for a schedule that fires early or late. It does not grow with shards: one invocation leads
 * all of a node's shards in one loop. The whole fleet reserves `nodes × this`.
 */
export const nodeConcurrencyNeeded = 3;
/**
 * Lambda keeps at least 100 executions of an account's quota unreserved; the default quota is
 * 1000 (new accounts may start lower: set `epochkv:nodeReservedConcurrency` to 0 there).
 */
export const accountUnreservedConcurrencyMin = 100;
export const accountConcurrencyDefault = 1000;

export const infraDefaults: Omit<InfraConfig, 'account' | 'alarmEmail'> = {
  prefix: 'epochkv',
  homeRegion: 'us-east-1',
  replicaRegions: ['eu-west-1', 'ap-southeast-2'],
  nodeIds: ['node-a', 'node-b', 'node-c'],
  shardCount: limits.shardsDefault,
  leaseMs: limits.leaseMsDefault,
  tickMs: limits.tickMsDefault,
  replication: 'async',
  deletionProtection: true,
  apiRateLimitPerSecond: 500,
  apiBurstLimit: 1000,
  nodeMemoryMb: 256,
  replicaLagEntriesAlarm: 1000,
  logRetentionDays: 30,
  logRetainEntries: retentionDefaults.retainEntries,
  logRetainAgeMs: retentionDefaults.retainAgeMs,
  nodeReservedConcurrency: nodeConcurrencyNeeded,
};

/** Retention values CloudWatch Logs accepts (days). */
const logRetentionDaysAllowed = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/** Every problem of a configuration, listed together so one run shows all of them. */
export class InfraConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`epochkv: invalid configuration (cdk.json "context" or -c flags):\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
    this.name = 'InfraConfigError';
  }
}

/** Reads context values (a `Node.tryGetContext`, or a plain lookup in tests). */
export type ContextReader = (key: string) => unknown;

const regionPattern = /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/;
const nodeIdPattern = /^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$/;
// DynamoDB table names allow [A-Za-z0-9_.-]; queue names allow no '.', and stack names no '_'.
const prefixPattern = /^[a-z][a-z0-9-]*$/;
const longestQueueSuffix = '-replication-dlq.fifo';

/**
 * Builds the configuration from context over the defaults, then validates it. Throws
 * InfraConfigError naming each bad key and what to do.
 */
export function infraConfigFromContext(read: ContextReader, options: { keys?: Iterable<string>; environment?: NodeJS.ProcessEnv } = {}): InfraConfig {
  const environment = options.environment ?? process.env;
  const problems: string[] = [];
  for (const key of unknownContextKeys(options.keys ?? [])) {
    problems.push(`unknown context key ${key}; known keys: ${Object.values(contextKeys).join(', ')}`);
  }
  const parse = new ContextParser(read, problems);
  const nodeIds = parse.list(contextKeys.nodeIds);
  const nodeCount = parse.integer(contextKeys.nodeCount);
  let resolvedNodeIds = nodeIds ?? infraDefaults.nodeIds;
  if (nodeCount !== undefined) {
    if (nodeIds !== undefined && nodeIds.length !== nodeCount) {
      problems.push(`${contextKeys.nodeCount}=${nodeCount} disagrees with ${contextKeys.nodeIds} (${nodeIds.length} ids: ${nodeIds.join(',')}); set one of them`);
    } else if (nodeIds === undefined) {
      resolvedNodeIds = nodeIdsOfCount(nodeCount);
    }
  }
  const config: InfraConfig = {
    prefix: parse.string(contextKeys.prefix) ?? infraDefaults.prefix,
    homeRegion: parse.string(contextKeys.homeRegion) ?? infraDefaults.homeRegion,
    replicaRegions: parse.list(contextKeys.replicaRegions) ?? infraDefaults.replicaRegions,
    nodeIds: resolvedNodeIds,
    shardCount: parse.integer(contextKeys.shardCount) ?? infraDefaults.shardCount,
    leaseMs: parse.integer(contextKeys.leaseMs) ?? infraDefaults.leaseMs,
    tickMs: parse.integer(contextKeys.tickMs) ?? infraDefaults.tickMs,
    replication: (parse.string(contextKeys.replication) ?? infraDefaults.replication) as ReplicationMode,
    deletionProtection: parse.boolean(contextKeys.deletionProtection) ?? infraDefaults.deletionProtection,
    account: parse.string(contextKeys.account) ?? (environment.CDK_DEFAULT_ACCOUNT || undefined),
    apiRateLimitPerSecond: parse.integer(contextKeys.apiRateLimitPerSecond) ?? infraDefaults.apiRateLimitPerSecond,
    apiBurstLimit: parse.integer(contextKeys.apiBurstLimit) ?? infraDefaults.apiBurstLimit,
    nodeMemoryMb: parse.integer(contextKeys.nodeMemoryMb) ?? infraDefaults.nodeMemoryMb,
    replicaLagEntriesAlarm: parse.integer(contextKeys.replicaLagEntriesAlarm) ?? infraDefaults.replicaLagEntriesAlarm,
    logRetentionDays: parse.integer(contextKeys.logRetentionDays) ?? infraDefaults.logRetentionDays,
    logRetainEntries: parse.integer(contextKeys.logRetainEntries) ?? infraDefaults.logRetainEntries,
    logRetainAgeMs: parse.integer(contextKeys.logRetainAgeMs) ?? infraDefaults.logRetainAgeMs,
    nodeReservedConcurrency: parse.integer(contextKeys.nodeReservedConcurrency) ?? infraDefaults.nodeReservedConcurrency,
    alarmEmail: parse.string(contextKeys.alarmEmail),
  };
  if (problems.length > 0) throw new InfraConfigError(problems);
  return validateInfraConfig(config);
}

/** `node-a`, `node-b`, ... for a node count. */
export function nodeIdsOfCount(count: number): string[] {
  return Array.from({ length: count }, (_, position) => `node-${position < 26 ? String.fromCharCode(97 + position) : position + 1}`);
}

/** Checks every relation; returns the configuration or throws InfraConfigError with all problems. */
export function validateInfraConfig(config: InfraConfig): InfraConfig {
  const problems: string[] = [];
  const check = (condition: boolean, problem: string) => {
    if (!condition) problems.push(problem);
  };
  check(
    prefixPattern.test(config.prefix) && config.prefix.length + longestQueueSuffix.length <= queueNameLengthMax,
    `${contextKeys.prefix} must be lowercase letters, digits and '-', start with a letter and be at most ${queueNameLengthMax - longestQueueSuffix.length} characters (it names tables, queues and stacks); got "${config.prefix}"`,
  );
  for (const region of [config.homeRegion, ...config.replicaRegions]) {
    check(regionPattern.test(region), `"${region}" is not an AWS region name (like us-east-1); check ${contextKeys.homeRegion} and ${contextKeys.replicaRegions}`);
  }
  const regions = [config.homeRegion, ...config.replicaRegions];
  const duplicates = [...new Set(regions.filter((region, position) => regions.indexOf(region) !== position))];
  check(
    duplicates.length === 0,
    `regions must be distinct: ${duplicates.join(', ')} appears more than once (home ${config.homeRegion}, replicas ${config.replicaRegions.join(',') || '(none)'}); a replica in the home region would apply the log onto the home tables`,
  );
  check(
    Number.isInteger(config.shardCount) && config.shardCount >= 1 && config.shardCount <= limits.shardsMax,
    `${contextKeys.shardCount} must be an integer from 1 to ${limits.shardsMax}; got ${config.shardCount}`,
  );
  check(config.nodeIds.length >= 1 && config.nodeIds.length <= limits.nodesMax, `the cluster needs 1 to ${limits.nodesMax} nodes; got ${config.nodeIds.length}`);
  const duplicateNodes = [...new Set(config.nodeIds.filter((id, position) => config.nodeIds.indexOf(id) !== position))];
  check(duplicateNodes.length === 0, `${contextKeys.nodeIds} has duplicates: ${duplicateNodes.join(', ')}`);
  for (const id of config.nodeIds) {
    check(nodeIdPattern.test(id), `node id "${id}" must be 1 to 32 lowercase letters, digits and '-' (it names a function and a rule)`);
  }
  // Function names are `<prefix>-<node id>` and `<prefix>-replica-heartbeat`.
  const longestFunctionSuffix = Math.max('replica-heartbeat'.length, ...config.nodeIds.map((id) => id.length));
  check(
    config.prefix.length + 1 + longestFunctionSuffix <= functionNameLengthMax,
    `${contextKeys.prefix} "${config.prefix}" plus the longest function name (${longestFunctionSuffix} characters) exceeds the ${functionNameLengthMax}-character Lambda limit`,
  );
  try {
    checkTimings(config);
  } catch (error) {
    if (!(error instanceof AssertionError)) throw error;
    problems.push(`${error.message} (${contextKeys.tickMs} / ${contextKeys.leaseMs})`);
  }
  check(
    (replicationModes as readonly string[]).includes(config.replication),
    `${contextKeys.replication} must be one of ${replicationModes.join(', ')}; got "${config.replication}"`,
  );
  check(config.account === undefined || /^\d{12}$/.test(config.account), `${contextKeys.account} must be a 12-digit AWS account id; got "${config.account}"`);
  check(
    Number.isInteger(config.apiRateLimitPerSecond) && config.apiRateLimitPerSecond >= 1,
    `${contextKeys.apiRateLimitPerSecond} must be a positive integer; got ${config.apiRateLimitPerSecond}`,
  );
  check(
    Number.isInteger(config.apiBurstLimit) && config.apiBurstLimit >= 1 && config.apiBurstLimit >= config.apiRateLimitPerSecond,
    `${contextKeys.apiBurstLimit} must be an integer >= ${contextKeys.apiRateLimitPerSecond} (${config.apiRateLimitPerSecond}); got ${config.apiBurstLimit}`,
  );
  check(
    Number.isInteger(config.nodeMemoryMb) && config.nodeMemoryMb >= 128 && config.nodeMemoryMb <= 10_240,
    `${contextKeys.nodeMemoryMb} must be an integer from 128 to 10240; got ${config.nodeMemoryMb}`,
  );
  check(
    Number.isInteger(config.replicaLagEntriesAlarm) && config.replicaLagEntriesAlarm >= 1,
    `${contextKeys.replicaLagEntriesAlarm} must be a positive integer; got ${config.replicaLagEntriesAlarm}`,
  );
  const fleetReserved = config.nodeReservedConcurrency * config.nodeIds.length;
  check(
    Number.isInteger(config.nodeReservedConcurrency) &&
      (config.nodeReservedConcurrency === 0 || config.nodeReservedConcurrency >= nodeConcurrencyNeeded - 1) &&
      fleetReserved <= accountConcurrencyDefault - accountUnreservedConcurrencyMin,
    `${contextKeys.nodeReservedConcurrency} must be 0 (reserve nothing) or an integer of at least ${nodeConcurrencyNeeded - 1} (two overlapping runs; ${nodeConcurrencyNeeded} recommended) whose total over the ${config.nodeIds.length} nodes stays within ${accountConcurrencyDefault - accountUnreservedConcurrencyMin} (Lambda's default account quota of ${accountConcurrencyDefault} minus the ${accountUnreservedConcurrencyMin} it keeps unreserved); got ${config.nodeReservedConcurrency}`,
  );
  check(
    config.alarmEmail === undefined || /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(config.alarmEmail),
    `${contextKeys.alarmEmail} must be an email address (alarms of every region are sent there once it confirms); got "${config.alarmEmail}"`,
  );
  check(
    Number.isSafeInteger(config.logRetainEntries) && config.logRetainEntries >= retainEntriesMin,
    `${contextKeys.logRetainEntries} must be an integer >= ${retainEntriesMin} (the log's head always stays); got ${config.logRetainEntries}`,
  );
  check(Number.isSafeInteger(config.logRetainAgeMs) && config.logRetainAgeMs >= 1, `${contextKeys.logRetainAgeMs} must be a positive integer (ms); got ${config.logRetainAgeMs}`);
  check(logRetentionDaysAllowed.includes(config.logRetentionDays), `${contextKeys.logRetentionDays} must be one of ${logRetentionDaysAllowed.join(', ')}; got ${config.logRetentionDays}`);
  if (problems.length === 0) {
    // The handlers validate the same contract at cold start; catch at synth what they would refuse.
    for (const region of regions) {
      try {
        validateConfig(clusterConfigFor(config, region));
      } catch (error) {
        if (!(error instanceof AssertionError)) throw error;
        problems.push(`handlers would refuse this configuration in ${region}: ${error.message}`);
      }
    }
  }
  if (problems.length > 0) throw new InfraConfigError(problems);
  return config;
}

/** The handlers' view of the cluster from one region: what their environment variables carry. */
export function clusterConfigFor(config: InfraConfig, region: string): ClusterConfig {
  return {
    region,
    homeRegion: config.homeRegion,
    replicaRegions: [...config.replicaRegions],
    tablePrefix: config.prefix,
    tables: tableNames(config.prefix),
    shardCount: config.shardCount,
    leaseMs: config.leaseMs,
    tickMs: config.tickMs,
    nodeIds: [...config.nodeIds],
    replication: config.replication,
    logRetainEntries: config.logRetainEntries,
    logRetainAgeMs: config.logRetainAgeMs,
    // On AWS and on LocalStack the SDK finds its endpoints itself (LocalStack sets AWS_ENDPOINT_URL).
    dynamoEndpoint: undefined,
    sqsEndpoint: undefined,
    local: false,
  };
}

/** Parses context values: JSON types from cdk.json, strings from `-c key=value`. */
class ContextParser {
  constructor(
    private readonly read: ContextReader,
    private readonly problems: string[],
  ) {}

  string(key: string): string | undefined {
    const raw = this.read(key);
    if (raw === undefined || raw === null) return undefined;
    if (typeof raw !== 'string' || raw.trim() === '') {
      this.problems.push(`${key} must be a non-empty string; got ${JSON.stringify(raw)}`);
      return undefined;
    }
    return raw.trim();
  }

  /** A JSON array of strings, or a comma-separated string (`-c key=a,b`); `-c key=` is the empty list. */
  list(key: string): string[] | undefined {
    const raw = this.read(key);
    if (raw === undefined || raw === null) return undefined;
    let values: unknown = raw;
    if (typeof raw === 'string') {
      const text = raw.trim();
      if (text.startsWith('[')) {
        try {
          values = JSON.parse(text);
        } catch {
          this.problems.push(`${key} must be a JSON array or a comma-separated list; got ${JSON.stringify(raw)}`);
          return undefined;
        }
      } else {
        values = text === '' ? [] : text.split(',').map((value) => value.trim());
      }
    }
    if (!Array.isArray(values) || values.some((value) => typeof value !== 'string' || value.trim() === '')) {
      this.problems.push(`${key} must be a list of non-empty strings; got ${JSON.stringify(raw)}`);
      return undefined;
    }
    return values.map((value: string) => value.trim());
  }

  integer(key: string): number | undefined {
    const raw = this.read(key);
    if (raw === undefined || raw === null) return undefined;
    const value = typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : raw;
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      this.problems.push(`${key} must be an integer; got ${JSON.stringify(raw)}`);
      return undefined;
    }
    return value;
  }

  boolean(key: string): boolean | undefined {
    const raw = this.read(key);
    if (raw === undefined || raw === null) return undefined;
    if (raw === true || raw === 'true') return true;
    if (raw === false || raw === 'false') return false;
    this.problems.push(`${key} must be true or false; got ${JSON.stringify(raw)}`);
    return undefined;
  }
}

/** Context keys under `epochkv:` that this module does not know: most likely typos. */
export function unknownContextKeys(keys: Iterable<string>): string[] {
  const known = new Set<string>(Object.values(contextKeys));
  return [...keys].filter((key) => key.startsWith('epochkv:') && !known.has(key));
}
