import { assert } from './core/assert.ts';
import { retainEntriesMin, retentionDefaults, type RetentionPolicy } from './core/compaction.ts';
import { checkTimings, limits } from './core/limits.ts';
import { isReplicationMode, replicationModes, type ReplicationMode } from './core/replication.ts';
import { tableNames, type TableNames } from './infra/schema.ts';

/**
 * Environment variable names: the contract between the infrastructure (CDK stacks, the local
 * cloud) and the handlers. Nothing else reads the environment.
 */
export const env = {
  region: 'EPOCHKV_REGION',
  homeRegion: 'EPOCHKV_HOME_REGION',
  replicaRegions: 'EPOCHKV_REPLICA_REGIONS',
  tablePrefix: 'EPOCHKV_TABLE_PREFIX',
  shardCount: 'EPOCHKV_SHARD_COUNT',
  leaseMs: 'EPOCHKV_LEASE_MS',
  tickMs: 'EPOCHKV_TICK_MS',
  nodeIds: 'EPOCHKV_NODE_IDS',
  nodeId: 'EPOCHKV_NODE_ID',
  dynamoEndpoint: 'EPOCHKV_DYNAMODB_ENDPOINT',
  sqsEndpoint: 'EPOCHKV_SQS_ENDPOINT',
  /** async (default) | quorum | all: what a write waits for before it is acknowledged. */
  replication: 'EPOCHKV_REPLICATION',
  /**
   * intake (default) | leader | direct: how the API writes (lib/service/kv-service.ts): itself
   * while a shard is quiet and through the shard leader's intake once it is busy; always through
   * the leader; or always itself, racing other writers (the old path, for comparisons).
   */
  writePath: 'EPOCHKV_WRITE_PATH',
  /** Local cloud only: enables /_local fault controls. */
  local: 'EPOCHKV_LOCAL',
  /** Test and fault-injection only: shifts this process's wall clock by this many ms. */
  clockSkewMs: 'EPOCHKV_CLOCK_SKEW_MS',
  /**
   * Local cloud only: `1` delays every AWS SDK call to an emulator as AWS would take
   * (lib/local/aws-latency.ts). The local cloud sets it for the node processes it spawns.
   */
  localAwsLatency: 'EPOCHKV_LOCAL_AWS_LATENCY',
  /**
   * Log retention (lib/core/compaction.ts): each shard's log keeps at most this many entries and
   * none older than this many ms (the head always stays); defaults 100000 and 7 days.
   */
  logRetainEntries: 'EPOCHKV_LOG_RETAIN_ENTRIES',
  logRetainAgeMs: 'EPOCHKV_LOG_RETAIN_AGE_MS',
} as const;

export interface ClusterConfig {
  /** The region this process runs in. */
  region: string;
  /** The authoritative region: leases, the log and strong reads live there. */
  homeRegion: string;
  /** Regions holding replicas (each a FIFO queue, an apply function, log and kv copies). */
  replicaRegions: string[];
  tablePrefix: string;
  tables: TableNames;
  shardCount: number;
  leaseMs: number;
  tickMs: number;
  nodeIds: string[];
  /** The cluster's replication mode; a write may ask for a stronger one, never a weaker one. */
  replication: ReplicationMode;
  /** How the API writes; default intake. */
  writePath?: WritePath | undefined;
  /** Log retention in entries; default retentionDefaults.retainEntries. */
  logRetainEntries?: number | undefined;
  /** Log retention in ms of age; default retentionDefaults.retainAgeMs. */
  logRetainAgeMs?: number | undefined;
  dynamoEndpoint: string | undefined;
  sqsEndpoint: string | undefined;
  local: boolean;
}

export const defaultNodeIds = ['node-a', 'node-b', 'node-c'];

export type WritePath = 'intake' | 'leader' | 'direct';
export const writePaths: readonly WritePath[] = ['intake', 'leader', 'direct'];

function writePathOf(raw: string): WritePath {
  assert((writePaths as readonly string[]).includes(raw), `${env.writePath} must be one of ${writePaths.join(', ')}, got "${raw}"`);
  return raw as WritePath;
}

function integer(source: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = source[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  assert(Number.isInteger(value), `${name} must be an integer, got "${raw}"`);
  return value;
}

export function configFromEnv(source: NodeJS.ProcessEnv = process.env): ClusterConfig {
  const region = source[env.region] ?? source.AWS_REGION ?? 'us-east-1';
  const tablePrefix = source[env.tablePrefix] ?? 'epochkv';
  const config: ClusterConfig = {
    region,
    homeRegion: source[env.homeRegion] ?? region,
    replicaRegions: (source[env.replicaRegions] ?? '').split(',').map((name) => name.trim()).filter(Boolean),
    tablePrefix,
    tables: tableNames(tablePrefix),
    shardCount: integer(source, env.shardCount, limits.shardsDefault),
    leaseMs: integer(source, env.leaseMs, limits.leaseMsDefault),
    tickMs: integer(source, env.tickMs, limits.tickMsDefault),
    nodeIds: (source[env.nodeIds] ?? defaultNodeIds.join(',')).split(',').map((id) => id.trim()).filter(Boolean),
    replication: replicationOf(source[env.replication]),
    dynamoEndpoint: source[env.dynamoEndpoint] || undefined,
    sqsEndpoint: source[env.sqsEndpoint] || undefined,
    local: source[env.local] === '1',
    // Only when set: the handlers' default (intake) needs no variable.
    ...(source[env.writePath] ? { writePath: writePathOf(source[env.writePath] as string) } : {}),
    ...(source[env.logRetainEntries] ? { logRetainEntries: integer(source, env.logRetainEntries, retentionDefaults.retainEntries) } : {}),
    ...(source[env.logRetainAgeMs] ? { logRetainAgeMs: integer(source, env.logRetainAgeMs, retentionDefaults.retainAgeMs) } : {}),
  };
  validateConfig(config);
  return config;
}

function replicationOf(raw: string | undefined): ReplicationMode {
  if (raw === undefined || raw === '') return 'async';
  assert(isReplicationMode(raw), `${env.replication} must be one of ${replicationModes.join(', ')}, got "${raw}"`);
  return raw;
}

export function validateConfig(config: ClusterConfig): void {
  assert(isReplicationMode(config.replication), `replication must be one of ${replicationModes.join(', ')}, got "${String(config.replication)}"`);
  const regions = [config.homeRegion, ...config.replicaRegions];
  assert(new Set(regions).size === regions.length, `regions must be distinct: home ${config.homeRegion}, replicas ${config.replicaRegions.join(',') || '(none)'}`);
  assert(regions.includes(config.region), `region ${config.region} is neither the home region nor a replica region`);
  assert(config.shardCount >= 1 && config.shardCount <= limits.shardsMax, `shardCount must be 1..${limits.shardsMax}, got ${config.shardCount}`);
  assert(config.nodeIds.length >= 1 && config.nodeIds.length <= limits.nodesMax, `nodeIds must list 1..${limits.nodesMax} nodes`);
  assert(new Set(config.nodeIds).size === config.nodeIds.length, `nodeIds has duplicates: ${config.nodeIds.join(',')}`);
  checkTimings(config);
  const retention = retentionOf(config);
  assert(Number.isSafeInteger(retention.retainEntries) && retention.retainEntries >= retainEntriesMin, `logRetainEntries must be an integer >= ${retainEntriesMin}, got ${retention.retainEntries}`);
  assert(Number.isSafeInteger(retention.retainAgeMs) && retention.retainAgeMs >= 1, `logRetainAgeMs must be a positive integer, got ${retention.retainAgeMs}`);
}

/** The log retention the shard leaders keep (lib/core/compaction.ts). */
export function retentionOf(config: ClusterConfig): RetentionPolicy {
  return { retainEntries: config.logRetainEntries ?? retentionDefaults.retainEntries, retainAgeMs: config.logRetainAgeMs ?? retentionDefaults.retainAgeMs };
}

export function configToEnv(config: ClusterConfig): Record<string, string> {
  const out: Record<string, string> = {
    [env.region]: config.region,
    [env.homeRegion]: config.homeRegion,
    [env.replicaRegions]: config.replicaRegions.join(','),
    [env.tablePrefix]: config.tablePrefix,
    [env.shardCount]: String(config.shardCount),
    [env.leaseMs]: String(config.leaseMs),
    [env.tickMs]: String(config.tickMs),
    [env.nodeIds]: config.nodeIds.join(','),
    [env.replication]: config.replication,
  };
  if (config.writePath !== undefined) out[env.writePath] = config.writePath;
  if (config.logRetainEntries !== undefined) out[env.logRetainEntries] = String(config.logRetainEntries);
  if (config.logRetainAgeMs !== undefined) out[env.logRetainAgeMs] = String(config.logRetainAgeMs);
  if (config.dynamoEndpoint) out[env.dynamoEndpoint] = config.dynamoEndpoint;
  if (config.sqsEndpoint) out[env.sqsEndpoint] = config.sqsEndpoint;
  if (config.local) out[env.local] = '1';
  return out;
}
