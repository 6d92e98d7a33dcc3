import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { createApiHandler } from '../../functions/api.ts';
import { createApplyHandler, type ApplyHandlerOptions } from '../../functions/apply.ts';
import { runReplicaHeartbeat } from '../../functions/replica-heartbeat.ts';
import { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import { makeSqsClient } from '../adapters/aws/clients.ts';
import { createRegionService } from '../service/factory.ts';
import type { KvService } from '../service/kv-service.ts';
import { ReplicaApplier, type ReplicaApplierOptions } from '../service/replica-applier.ts';
import { createEventSource, type EventSource, type FaultSettings } from './event-source.ts';
import { ensureReplicationQueue, type ReplicationQueue } from './queues.ts';
import { cutOffRegion, isCutOff, localCredentials, makeDynamoClient, reconnectRegion } from '../adapters/aws/clients.ts';
import type { ReplicationMode } from '../core/replication.ts';
import { promoteRegion, PromotionRefusedError, type PromotionReport } from '../service/promotion.ts';
import type { ClusterState, Store } from '../ports/store.ts';
import type { ApiHandler } from '../../functions/api.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { systemClock } from '../clock.ts';
import { clusterStatus } from '../service/cluster-status.ts';
import { waitUntil } from '../wait.ts';
import { configToEnv, defaultNodeIds, env, validateConfig, type ClusterConfig, type WritePath } from '../config.ts';
import { limits } from '../core/limits.ts';
import { tableNames } from '../infra/schema.ts';
import { awsLatencyEnabled, setAwsLatency } from './aws-latency.ts';
import { startDynamoLocal, startSqsEmulator, type Emulator } from './emulators.ts';
import { apiGatewayIntegration, concurrencyMaxDefault, LambdaPool, type LambdaEnvironmentInfo, type LambdaPoolStats } from './lambda-pool.ts';
import { serveApi, TokenBucket, type ApiServer, type LocalRoute } from './http-server.ts';
import { ensureTables } from './tables.ts';
import { startFaultProxy, type FaultProxy } from './fault-proxy.ts';

/**
 * A replica apply function's settings, its applier's items per shared transaction
 * (`packItemsMax`, lib/service/replica-applier.ts), and its local event source's concurrent poll
 * loops and batch size (defaults 2 and 10).
 */
export type LocalApplyOptions = ApplyHandlerOptions & ReplicaApplierOptions & { pollers?: number; batchSize?: number };

export interface LocalCloudOptions {
  /** Home API port; DynamoDB Local listens on +20 and the SQS emulator on +21. 0 picks free ports (tests). */
  basePort?: number;
  /** Where DynamoDB Local keeps its files; in memory when undefined. */
  dataDirectory?: string | undefined;
  /** Reuse running emulators instead of starting them (tests start them once per run). */
  dynamoEndpoint?: string;
  sqsEndpoint?: string;
  /** The home region. */
  region?: string;
  /** Replica regions; [] runs the home region alone. */
  replicaRegions?: string[];
  tablePrefix?: string;
  shardCount?: number;
  leaseMs?: number;
  tickMs?: number;
  nodeIds?: string[];
  /** Length of one node invocation before the next (overlapping) one starts. */
  invocationMs?: number;
  /** Seeds the replication fault hooks (per region: seed + position). */
  faultSeed?: number;
  /** async (default) | quorum | all: what a write waits for before it is acknowledged. */
  replication?: ReplicationMode;
  /** How the API writes (see ClusterConfig.writePath); default intake. */
  writePath?: WritePath;
  /** Log retention (ClusterConfig.logRetainEntries / logRetainAgeMs; `--log-retain-entries N`): defaults 100000 entries, 7 days. */
  logRetainEntries?: number;
  logRetainAgeMs?: number;
  /** TEST ONLY: the API writes without the epoch ConditionCheck (the chaos suite must then fail). */
  unsafeDisableFencing?: boolean;
  /** Require `Authorization: Bearer <token>` on every API and control request (EPOCHKV_TOKEN). */
  bearerToken?: string | undefined;
  /** Requests per second each region's API accepts before answering 429 (burst: twice that). Default 2000. */
  rateLimitPerSecond?: number;
  /** The replica apply functions' settings (defaults: the Lambda's) and their event sources'. */
  apply?: LocalApplyOptions;
  /**
   * One API service per region shared by every request (the model before Lambda's was played):
   * no cold starts, one lease and head cache per region. Default false: each region's API and
   * each replica's apply function run as Lambda does (lib/local/lambda-pool.ts), one request per
   * execution environment, each environment with its own service and SDK clients.
   */
  singleProcess?: boolean;
  /** Execution environments per function and region before Lambda throttles. Default 1000, the AWS account default. */
  lambdaConcurrencyMax?: number;
  /**
   * Delay every AWS SDK call to the emulators as AWS would take (lib/local/aws-latency.ts), in
   * this process and in the node processes. Default: on when EPOCHKV_LOCAL_AWS_LATENCY=1.
   */
  awsLatency?: boolean;
  /**
   * Put a loopback TCP proxy in front of DynamoDB Local and the SQS emulator and give every
   * client (nodes, API, apply) the proxies' endpoints, so `blackhole` can make both hang
   * (lib/local/fault-proxy.ts). Default false: clients talk to the emulators directly.
   */
  faultProxy?: boolean;
  log?: (line: string) => void;
}

/** How the API runs: as Lambda execution environments, or one shared service per region. */
export type ApiModel = { kind: 'lambda'; concurrencyMax: number } | { kind: 'single-process' };

/** A fault hook awaited by a home API service between its lease read and its commit (KvService.beforeCommit). */
export type BeforeCommitHook = (shard: number, epoch: number) => Promise<void>;

/** One function's execution environments in one region, as `GET /_local/lambda` shows them. */
export interface LambdaFunctionReport {
  function: 'api' | 'apply';
  region: string;
  stats: LambdaPoolStats;
  environments: LambdaEnvironmentInfo[];
}

export type NodeState = 'running' | 'paused' | 'killed' | 'exited';

export interface NodeControl {
  id: string;
  state: NodeState;
  pid: number | undefined;
}

export interface RegionEndpoint {
  region: string;
  apiUrl: string;
  /** `detached`: no longer part of the cluster (lost and promoted away from). */
  role: 'home' | 'replica' | 'detached';
  /** Cut off by the local fault control: unreachable to other regions and to clients. */
  cutOff: boolean;
}

/** A replica region's machinery in the local cloud. */
export interface LocalReplicaRegion {
  region: string;
  /** The poller playing the Lambda SQS event source mapping, with fault hooks. */
  eventSource: EventSource;
  queue: ReplicationQueue;
}

export interface LocalCloud {
  /** The cluster as it is now (a promotion changes its home and replica regions in place). */
  config: ClusterConfig;
  /** The home API (a promotion moves it). */
  readonly apiUrl: string;
  regions: RegionEndpoint[];
  replicas: LocalReplicaRegion[];
  /**
   * Rehearses losing a region: its tables and queues become unreachable from every other
   * region, its API answers clients 503, and if it is home its node processes are killed.
   */
  cutOff(region: string): void;
  /** Undoes cutOff (a lost home's nodes restart only while it is still home). */
  heal(region: string): void;
  /** `epochkv promote`: makes a replica region home (see lib/service/promotion.ts) and rewires every component. */
  promote(region: string, options?: { force?: boolean }): Promise<PromotionReport>;
  dynamoEndpoint: string;
  sqsEndpoint: string;
  nodes(): NodeControl[];
  kill(node: string): NodeControl;
  pause(node: string): NodeControl;
  resume(node: string): NodeControl;
  start(node: string, options?: { clockSkewMs?: number }): NodeControl;
  /** Stops and restarts the SQS emulator: every message in flight is lost (only when this cloud started it). */
  restartSqs(): Promise<void>;
  /** The AWS requests the running node processes have made so far, per operation (the benchmark counts the cluster's requests). */
  nodeRequestCounts(): Promise<Record<string, { calls: number; failed: number }>>;
  readonly apiModel: ApiModel;
  /**
   * A home API service. In single-process mode the one that serves every home request; in the
   * Lambda model one the cloud keeps aside, serving none (each execution environment has its
   * own): use `homeStore` to read the home tables and `setBeforeCommit` for fault hooks.
   */
  readonly homeService: KvService;
  /** The home region's tables (follows a promotion). */
  readonly homeStore: Store;
  /**
   * Sets (or with undefined, clears) the fault hook of every home API service: each execution
   * environment's that exists and each one started later (single-process: the one service).
   */
  setBeforeCommit(hook: BeforeCommitHook | undefined): void;
  /**
   * Kills one busy API execution environment of `region` (default: home) mid-request, as a
   * crashed Lambda: its client gets API Gateway's 502 at once, a call it already sent may still
   * land, it sends nothing more. Undefined when none is busy, or in single-process mode.
   */
  killApiEnvironment(region?: string): { region: string; environmentId: string } | undefined;
  /** Every region's api and apply functions' execution environments ([] in single-process mode). */
  lambdaFunctions(): LambdaFunctionReport[];
  /**
   * Until every shard has a live leader at the home region, as `/cluster` reports it (waiting
   * through a promotion's rewiring); throws after timeoutMs.
   */
  waitForLeaders(timeoutMs: number): Promise<void>;
  /**
   * Until `GET /health` answers 200 in every region of the cluster, asked over HTTP as a client
   * would; throws after timeoutMs with each unready region's last reasons.
   */
  waitForReady(timeoutMs: number): Promise<void>;
  /**
   * Fault injection (needs `faultProxy`): DynamoDB and SQS accept connections and never answer
   * while on, for every process of the cloud; off heals.
   */
  blackhole(on: boolean): void;
  /** Whether the fault proxies run (see LocalCloudOptions.faultProxy). */
  readonly faultProxy: boolean;
  stop(): Promise<void>;
}

export const defaultReplicaRegions = ['eu-west-1', 'ap-southeast-2'];

const here = path.dirname(fileURLToPath(import.meta.url));

class NodeProcesses {
  readonly #children = new Map<string, { child: ChildProcess | undefined; state: NodeState }>();

  constructor(
    private readonly config: ClusterConfig,
    private readonly invocationMs: number,
    private readonly log: (line: string) => void,
    /** Further environment of every node process (the AWS latency model's switch). */
    private readonly extraEnv: Record<string, string> = {},
  ) {
    for (const id of config.nodeIds) this.#children.set(id, { child: undefined, state: 'exited' });
  }

  list(): NodeControl[] {
    return [...this.#children.entries()].map(([id, entry]) => ({ id, state: entry.state, pid: entry.child?.pid }));
  }

  #entry(id: string) {
    const entry = this.#children.get(id);
    if (entry === undefined) throw new UnknownNodeError(id, [...this.#children.keys()]);
    return entry;
  }

  #control(id: string): NodeControl {
    const entry = this.#entry(id);
    return { id, state: entry.state, pid: entry.child?.pid };
  }

  /** Starts the node's process; `clockSkewMs` shifts its wall clock (a fault: safety must not depend on it). */
  start(id: string, options: { clockSkewMs?: number } = {}): NodeControl {
    const entry = this.#entry(id);
    if (entry.state === 'running' || entry.state === 'paused') return this.#control(id);
    const require = createRequire(import.meta.url);
    const loader = pathToFileURL(require.resolve('tsx')).href;
    const child = spawn(process.execPath, ['--import', loader, path.join(here, 'node-process.ts'), id], {
      env: {
        ...process.env,
        ...configToEnv(this.config),
        EPOCHKV_LOCAL_INVOCATION_MS: String(this.invocationMs),
        [env.clockSkewMs]: String(options.clockSkewMs ?? 0),
        ...this.extraEnv,
      },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const forward = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') this.log(line);
    };
    child.stdout?.on('data', forward);
    child.stderr?.on('data', forward);
    child.on('exit', () => {
      if (entry.child === child && entry.state !== 'killed') entry.state = 'exited';
    });
    entry.child = child;
    entry.state = 'running';
    return this.#control(id);
  }

  kill(id: string): NodeControl {
    const entry = this.#entry(id);
    if (entry.child !== undefined && (entry.state === 'running' || entry.state === 'paused')) {
      // A crash, not a shutdown: no chance to release leases or finish a write.
      entry.child.kill('SIGKILL');
      entry.state = 'killed';
      this.log(`local: killed ${id}`);
    }
    return this.#control(id);
  }

  pause(id: string): NodeControl {
    const entry = this.#entry(id);
    if (entry.child !== undefined && entry.state === 'running') {
      entry.child.kill('SIGSTOP');
      entry.state = 'paused';
      this.log(`local: paused ${id}`);
    }
    return this.#control(id);
  }

  resume(id: string): NodeControl {
    const entry = this.#entry(id);
    if (entry.child !== undefined && entry.state === 'paused') {
      entry.child.kill('SIGCONT');
      entry.state = 'running';
      this.log(`local: resumed ${id}`);
    }
    return this.#control(id);
  }

  /**
   * The AWS requests each running node process has made, per operation, summed (a node
   * process answers over its IPC channel; lib/local/node-process.ts). A node that does not
   * answer within `timeoutMs` (paused, dying) is left out.
   */
  async requestCounts(timeoutMs = 2_000): Promise<Record<string, { calls: number; failed: number }>> {
    const answers = await Promise.all(
      [...this.#children.values()].map(async (entry) => {
        const child = entry.child;
        if (child === undefined || entry.state !== 'running' || !child.connected) return {};
        return new Promise<Record<string, { calls: number; failed: number }>>((resolve) => {
          const timer = setTimeout(() => finish({}), timeoutMs);
          const onMessage = (message: unknown) => {
            const answer = message as { type?: unknown; counts?: Record<string, { calls: number; failed: number }> } | null;
            if (answer?.type === 'requestCounts' && answer.counts !== undefined) finish(answer.counts);
          };
          const finish = (counts: Record<string, { calls: number; failed: number }>) => {
            clearTimeout(timer);
            child.off('message', onMessage);
            resolve(counts);
          };
          child.on('message', onMessage);
          child.send({ type: 'requestCounts' }, (error) => {
            if (error !== null) finish({});
          });
        });
      }),
    );
    const sum: Record<string, { calls: number; failed: number }> = {};
    for (const counts of answers) {
      for (const [operation, { calls, failed }] of Object.entries(counts)) {
        const total = (sum[operation] ??= { calls: 0, failed: 0 });
        total.calls += calls;
        total.failed += failed;
      }
    }
    return sum;
  }

  async stopAll(): Promise<void> {
    await Promise.all(
      [...this.#children.values()].map(async (entry) => {
        const child = entry.child;
        if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        if (entry.state === 'paused') child.kill('SIGCONT');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
        await exited;
        clearTimeout(timer);
        entry.state = 'exited';
      }),
    );
  }
}

/** Request rates for the dashboard: per-second counts of writes and reads over the last two minutes. */
class RequestMeter {
  static readonly windowS = 120;
  readonly #buckets = new Map<number, { writes: number; reads: number }>();

  count(method: string, path: string, nowMs: number): void {
    if (!path.startsWith('/kv')) return;
    const second = Math.floor(nowMs / 1_000);
    const bucket = this.#buckets.get(second) ?? { writes: 0, reads: 0 };
    if (method === 'GET') bucket.reads += 1;
    else bucket.writes += 1;
    this.#buckets.set(second, bucket);
    for (const key of this.#buckets.keys()) if (key < second - RequestMeter.windowS) this.#buckets.delete(key);
  }

  /** Complete seconds only: the current one is still filling. */
  series(nowMs: number): { writes: number[]; reads: number[] } {
    const last = Math.floor(nowMs / 1_000) - 1;
    const seconds = Array.from({ length: RequestMeter.windowS }, (_, index) => last - RequestMeter.windowS + 1 + index);
    return {
      writes: seconds.map((second) => this.#buckets.get(second)?.writes ?? 0),
      reads: seconds.map((second) => this.#buckets.get(second)?.reads ?? 0),
    };
  }
}

/** The newest log entries across shards, newest first, values left out. */
async function recentEntries(home: DynamoStore, shardCount: number, limit: number): Promise<unknown[]> {
  const count = Number.isInteger(limit) && limit > 0 ? Math.min(limit, 100) : 25;
  const perShard = await Promise.all(
    Array.from({ length: shardCount }, async (_, shard) => {
      const head = await home.readHead(shard);
      if (head === undefined) return [];
      return home.readLog(shard, Math.max(1, head.index - count + 1), count);
    }),
  );
  return perShard
    .flat()
    .sort((a, b) => b.committedAtMs - a.committedAtMs)
    .slice(0, count)
    .map((entry) => ({
      shard: entry.shard,
      index: entry.index,
      epoch: entry.epoch,
      committedAtMs: entry.committedAtMs,
      ops: entry.ops.map((op) => (op.type === 'put' ? { type: 'put', key: op.key, bytes: op.value.length } : op)),
    }));
}

let dashboardHtml: string | undefined;
function dashboardPage(): string {
  dashboardHtml ??= readFileSync(path.join(here, 'dashboard.html'), 'utf8');
  return dashboardHtml;
}

/**
 * The functions' timeouts, as deployed (lib/infra/api.ts `apiTimeout`, lib/infra/data.ts
 * `applyTimeout`; not imported: those modules load the CDK).
 */
const apiFunctionTimeoutMs = 29_000;
const applyFunctionTimeoutMs = 20_000;
/**
 * An execution environment idle this long is closed. AWS does not document when it reclaims
 * one; this keeps a burst's environments (and their sockets) from staying forever.
 */
const environmentIdleReclaimMs = 5 * 60_000;

/** Local queue settings: a short visibility timeout so a failed batch is retried within seconds. */
const localVisibilityTimeoutS = 2;
const localMaxReceiveCount = 5;

/**
 * Replication fault hooks: `GET /_local/replication` lists each replica region's poller and
 * its stats; `POST /_local/replication/{region}/faults` with JSON `{dropRate, duplicateRate,
 * reorder, delayMs}` sets faults; `POST /_local/replication/{region}/poller/stop|start`.
 */
async function replicationRoute(replicas: LocalReplicaRegion[], method: string, segments: string[], body: Buffer): ReturnType<LocalRoute> {
  if (segments.length === 0) {
    if (method !== 'GET') return { status: 405, body: { error: 'MethodNotAllowed', message: 'use GET /_local/replication' } };
    return {
      status: 200,
      body: { replicas: replicas.map((replica) => ({ region: replica.region, running: replica.eventSource.running(), faults: replica.eventSource.faults(), stats: replica.eventSource.stats() })) },
    };
  }
  const [region, verb, action] = segments;
  const replica = replicas.find((candidate) => candidate.region === region);
  if (replica === undefined) {
    return { status: 404, body: { error: 'NotFound', message: `no replica region "${region}"; replica regions: ${replicas.map((candidate) => candidate.region).join(', ')}` } };
  }
  if (method !== 'POST') return { status: 405, body: { error: 'MethodNotAllowed', message: 'use POST for replication controls' } };
  if (verb === 'faults' && action === undefined) {
    let faults: unknown;
    try {
      faults = JSON.parse(body.toString('utf8') || '{}');
    } catch {
      return { status: 400, body: { error: 'BadRequest', message: 'send JSON such as {"dropRate":0.2,"duplicateRate":0.2,"reorder":true,"delayMs":0}' } };
    }
    const checked = checkFaults(faults);
    if (typeof checked === 'string') return { status: 400, body: { error: 'BadRequest', message: checked } };
    return { status: 200, body: { region: replica.region, faults: replica.eventSource.setFaults(checked) } };
  }
  if (verb === 'poller' && (action === 'stop' || action === 'start')) {
    if (action === 'stop') await replica.eventSource.stop();
    else replica.eventSource.start();
    return { status: 200, body: { region: replica.region, running: replica.eventSource.running() } };
  }
  return { status: 404, body: { error: 'NotFound', message: 'use POST /_local/replication/{region}/faults or /_local/replication/{region}/poller/stop|start' } };
}

function checkFaults(raw: unknown): Partial<FaultSettings> | string {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'faults must be a JSON object';
  const out: Partial<FaultSettings> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (name === 'dropRate' || name === 'duplicateRate') {
      if (typeof value !== 'number' || value < 0 || value > 1) return `${name} must be a number from 0 to 1`;
      out[name] = value;
    } else if (name === 'reorder') {
      if (typeof value !== 'boolean') return 'reorder must be true or false';
      out.reorder = value;
    } else if (name === 'delayMs') {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 60_000) return 'delayMs must be an integer from 0 to 60000';
      out.delayMs = value;
    } else {
      return `unknown fault "${name.slice(0, 40)}"; known: dropRate, duplicateRate, reorder, delayMs`;
    }
  }
  return out;
}

/** The latest promotion recorded in any region's tables, applied to `config` (undefined: never promoted). */
async function adoptRecordedHome(config: ClusterConfig, regions: string[]): Promise<ClusterState | undefined> {
  const states = await Promise.all(
    regions.map(async (region) => {
      const client = makeDynamoClient({ region, endpoint: config.dynamoEndpoint });
      try {
        return await new DynamoStore(client, config.tables, config.shardCount).readClusterState();
      } finally {
        client.destroy();
      }
    }),
  );
  const latest = states.reduce<ClusterState | undefined>((best, state) => (state !== undefined && (best === undefined || state.clusterEpoch > best.clusterEpoch) ? state : best), undefined);
  if (latest === undefined || latest.homeRegion === config.homeRegion) return undefined;
  config.homeRegion = latest.homeRegion;
  config.region = latest.homeRegion;
  config.replicaRegions = latest.replicaRegions ?? regions.filter((region) => region !== latest.homeRegion);
  validateConfig(config);
  return latest;
}

interface RegionControls {
  regions(): RegionEndpoint[];
  config(): ClusterConfig;
  cutOff(region: string): void;
  heal(region: string): void;
  promote(region: string, options?: { force?: boolean }): Promise<PromotionReport>;
}

/**
 * Disaster-recovery controls: `GET /_local/regions`; `POST /_local/regions/{region}/cut|heal`;
 * `POST /_local/promote/{region}` with optional JSON `{"force": true}`.
 */
async function regionRoute(controls: RegionControls, method: string, segments: string[], body: Buffer): ReturnType<LocalRoute> {
  const config = controls.config();
  const listing = () => ({ homeRegion: config.homeRegion, replicaRegions: config.replicaRegions, replication: config.replication, regions: controls.regions() });
  if (segments[0] === 'regions' && segments.length === 1) {
    if (method !== 'GET') return { status: 405, body: { error: 'MethodNotAllowed', message: 'use GET /_local/regions' } };
    return { status: 200, body: listing() };
  }
  if (method !== 'POST') return { status: 405, body: { error: 'MethodNotAllowed', message: 'use POST for region controls' } };
  const region = segments[1] ?? '';
  const known = controls.regions().map((endpoint) => endpoint.region);
  if (!known.includes(region)) return { status: 404, body: { error: 'NotFound', message: `no region "${region.slice(0, 40)}"; regions: ${known.join(', ')}` } };
  if (segments[0] === 'regions' && segments.length === 3 && (segments[2] === 'cut' || segments[2] === 'heal')) {
    if (segments[2] === 'cut') controls.cutOff(region);
    else controls.heal(region);
    return { status: 200, body: listing() };
  }
  if (segments[0] === 'promote' && segments.length === 2) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8') || '{}');
    } catch {
      return { status: 400, body: { error: 'BadRequest', message: 'send no body or JSON such as {"force": true}' } };
    }
    const force = (parsed as { force?: unknown } | null)?.force;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || Object.keys(parsed).some((name) => name !== 'force') || (force !== undefined && typeof force !== 'boolean')) {
      return { status: 400, body: { error: 'BadRequest', message: 'the body may only be {"force": true|false}' } };
    }
    try {
      return { status: 200, body: await controls.promote(region, { force: force === true }) };
    } catch (error) {
      if (error instanceof PromotionRefusedError) return { status: 409, body: { error: 'PromotionRefused', message: error.message } };
      throw error;
    }
  }
  return { status: 404, body: { error: 'NotFound', message: 'use GET /_local/regions, POST /_local/regions/{region}/cut|heal or POST /_local/promote/{region}' } };
}

interface LambdaControls {
  apiModel: ApiModel;
  regions(): string[];
  functions(): LambdaFunctionReport[];
  killApiEnvironment(region: string): { region: string; environmentId: string } | undefined;
}

/**
 * Lambda execution environments: `GET /_local/lambda` lists each region's api and apply
 * functions' environments and stats; `POST /_local/lambda/{region}/kill` kills one busy api
 * environment of the region mid-request (`killed` is null when none was busy).
 */
function lambdaRoute(controls: LambdaControls, method: string, segments: string[]): Awaited<ReturnType<LocalRoute>> {
  if (segments.length === 0) {
    if (method !== 'GET') return { status: 405, body: { error: 'MethodNotAllowed', message: 'use GET /_local/lambda' } };
    return { status: 200, body: { model: controls.apiModel, functions: controls.functions() } };
  }
  const [region, verb] = segments;
  if (segments.length !== 2 || verb !== 'kill') return { status: 404, body: { error: 'NotFound', message: 'use GET /_local/lambda or POST /_local/lambda/{region}/kill' } };
  if (method !== 'POST') return { status: 405, body: { error: 'MethodNotAllowed', message: 'use POST /_local/lambda/{region}/kill' } };
  const known = controls.regions();
  if (!known.includes(region ?? '')) return { status: 404, body: { error: 'NotFound', message: `no region "${(region ?? '').slice(0, 40)}"; regions: ${known.join(', ')}` } };
  if (controls.apiModel.kind !== 'lambda') {
    return { status: 409, body: { error: 'SingleProcess', message: 'the API runs as one process per region (--single-process): there is no execution environment to kill' } };
  }
  const killed = controls.killApiEnvironment(region as string);
  const report = controls.functions().find((entry) => entry.function === 'api' && entry.region === region);
  return { status: 200, body: { region, killed: killed?.environmentId ?? null, ...(report === undefined ? {} : { stats: report.stats }) } };
}

export class UnknownRegionError extends Error {
  constructor(region: string, known: string[]) {
    super(`unknown region "${region}"; regions are ${known.join(', ')}`);
  }
}

export class UnknownNodeError extends Error {
  constructor(id: string, known: string[]) {
    super(`unknown node "${id}"; nodes are ${known.join(', ')}`);
  }
}

/**
 * The embedded local cloud: DynamoDB Local and the SQS emulator on loopback, the home
 * region's tables, one OS process per node running the `node` handler, and the `api`
 * handler served over HTTP as API Gateway's REST proxy integration would call it.
 */
export async function startLocalCloud(options: LocalCloudOptions = {}): Promise<LocalCloud> {
  const log = options.log ?? ((line: string) => console.log(line));
  const basePort = options.basePort ?? 8080;
  const homeRegion = options.region ?? 'us-east-1';
  const config: ClusterConfig = {
    region: homeRegion,
    homeRegion,
    replicaRegions: options.replicaRegions ?? defaultReplicaRegions,
    tablePrefix: options.tablePrefix ?? 'epochkv',
    tables: tableNames(options.tablePrefix ?? 'epochkv'),
    shardCount: options.shardCount ?? limits.shardsDefault,
    leaseMs: options.leaseMs ?? limits.leaseMsLocal,
    tickMs: options.tickMs ?? limits.tickMsLocal,
    nodeIds: options.nodeIds ?? defaultNodeIds,
    replication: options.replication ?? 'async',
    writePath: options.writePath ?? 'intake',
    ...(options.logRetainEntries === undefined ? {} : { logRetainEntries: options.logRetainEntries }),
    ...(options.logRetainAgeMs === undefined ? {} : { logRetainAgeMs: options.logRetainAgeMs }),
    dynamoEndpoint: options.dynamoEndpoint,
    sqsEndpoint: options.sqsEndpoint,
    local: true,
  };
  validateConfig(config);

  const owned: Emulator[] = [];
  const servers: ApiServer[] = [];
  const closers: (() => void)[] = [];
  const replicas: LocalReplicaRegion[] = [];
  const regions: RegionEndpoint[] = [];
  /** What one wiring of the regions (see `wire`) runs; a promotion tears it down and wires again. */
  let wiring:
    | {
        background: AbortController;
        loops: Promise<unknown>[];
        closers: (() => void)[];
        handlers: Map<string, ApiHandler>;
        /** Single-process mode: the home region's one service. */
        homeService: KvService | undefined;
        /** Lambda model: each region's api function and each replica region's apply function. */
        apiPools: Map<string, LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>>;
        applyPools: Map<string, LambdaPool<SQSEvent, SQSBatchResponse>>;
        /** Lambda model: the home service `homeService` hands out, made on first use. */
        spareHomeService: { service: KvService; close(): void } | undefined;
      }
    | undefined;
  const apiModel: ApiModel = options.singleProcess === true ? { kind: 'single-process' } : { kind: 'lambda', concurrencyMax: options.lambdaConcurrencyMax ?? concurrencyMaxDefault };
  // Every home API service that exists, so a fault hook reaches each (setBeforeCommit).
  const homeServices = new Set<KvService>();
  let beforeCommit: BeforeCommitHook | undefined;
  // The latency model is process-wide: this cloud sets it for its lifetime and puts it back.
  const awsLatencyBefore = awsLatencyEnabled();
  const awsLatency = options.awsLatency ?? awsLatencyBefore;
  setAwsLatency(awsLatency);
  let nodes: NodeProcesses | undefined;
  let sqsEmulator: Emulator | undefined;
  const faultProxies: FaultProxy[] = [];
  // The emulators' own endpoints (with fault proxies, config has the proxies'): for the cloud's
  // admin calls, which a blackhole must not stop.
  let directSqsEndpoint: string | undefined;
  let cutOff: LocalCloud['cutOff'] = () => undefined;
  let heal: LocalCloud['heal'] = () => undefined;
  let promote: LocalCloud['promote'] = () => Promise.reject(new Error('the cloud is not started'));
  // The home tables, for the cloud's own reads (/cluster-like waits, the dashboard's log).
  const homeStores = new Map<string, DynamoStore>();
  const homeStore = (): DynamoStore => {
    let store = homeStores.get(config.homeRegion);
    if (store === undefined) {
      const client = makeDynamoClient({ region: config.homeRegion, endpoint: config.dynamoEndpoint });
      closers.push(() => client.destroy());
      store = new DynamoStore(client, config.tables, config.shardCount);
      homeStores.set(config.homeRegion, store);
    }
    return store;
  };
  const cloudControls: RegionControls = {
    regions: () => regions,
    config: () => config,
    cutOff: (region) => cutOff(region),
    heal: (region) => heal(region),
    promote: (region, promoteOptions) => promote(region, promoteOptions),
  };
  const unwire = async () => {
    const current = wiring;
    wiring = undefined;
    if (current === undefined) return;
    current.background.abort();
    await Promise.all(replicas.map((replica) => replica.eventSource.stop()));
    await Promise.allSettled(current.loops);
    for (const close of current.closers) close();
    current.spareHomeService?.close();
    replicas.length = 0;
  };
  const lambdaFunctions = (): LambdaFunctionReport[] => {
    const current = wiring;
    if (current === undefined) return [];
    const report = (name: 'api' | 'apply', region: string, pool: Pick<LambdaPool<unknown, unknown>, 'stats' | 'environments'>): LambdaFunctionReport => ({
      function: name,
      region,
      stats: pool.stats(),
      environments: pool.environments(),
    });
    return [...[...current.apiPools].map(([region, pool]) => report('api', region, pool)), ...[...current.applyPools].map(([region, pool]) => report('apply', region, pool))];
  };
  const killApiEnvironment = (region: string) => {
    const pool = wiring?.apiPools.get(region);
    if (pool === undefined) return undefined;
    const environments = pool.environments();
    // A request mid-flight is the interesting crash; one still starting is the next best.
    const target = environments.find((environment) => environment.state === 'busy') ?? environments.find((environment) => environment.state === 'starting');
    if (target === undefined || !pool.kill(target.id)) return undefined;
    return { region, environmentId: target.id };
  };
  const stop = async () => {
    // Cuts are process-wide (the clients' partition check): undo this cloud's.
    for (const endpoint of regions) if (endpoint.cutOff) reconnectRegion(endpoint.region);
    await unwire();
    await nodes?.stopAll();
    await Promise.all(servers.map((server) => server.close()));
    for (const close of closers) close();
    await Promise.all(faultProxies.map((proxy) => proxy.close()));
    await sqsEmulator?.stop();
    for (const emulator of owned.reverse()) await emulator.stop();
    setAwsLatency(awsLatencyBefore);
  };
  try {
    if (config.dynamoEndpoint === undefined) {
      const dynamo = await startDynamoLocal({ port: basePort === 0 ? undefined : basePort + 20, dbPath: options.dataDirectory });
      owned.push(dynamo);
      config.dynamoEndpoint = dynamo.endpoint;
    }
    if (config.sqsEndpoint === undefined) {
      sqsEmulator = await startSqsEmulator({ port: basePort === 0 ? 0 : basePort + 21 });
      config.sqsEndpoint = sqsEmulator.endpoint;
    }
    directSqsEndpoint = config.sqsEndpoint;
    if (options.faultProxy === true) {
      // Every client made from config (this process's and the node processes') goes through them.
      for (const service of ['dynamoEndpoint', 'sqsEndpoint'] as const) {
        const proxy = await startFaultProxy({ target: config[service] as string });
        faultProxies.push(proxy);
        config[service] = proxy.endpoint;
      }
    }
    // Every region's tables (and each replica region's queues) from the same definitions.
    // One DynamoDB Local and one SQS emulator serve them all, separated by the client's region.
    const queues = new Map<string, ReplicationQueue>();
    await Promise.all(
      [config.homeRegion, ...config.replicaRegions].map(async (region) => {
        const admin = new DynamoDBClient({ region, endpoint: config.dynamoEndpoint, credentials: localCredentials });
        try {
          await ensureTables(admin, config.tables);
        } finally {
          admin.destroy();
        }
        // Every region gets a queue: a promotion can make any region a replica.
        const sqs = makeSqsClient({ region, endpoint: config.sqsEndpoint });
        closers.push(() => sqs.destroy());
        queues.set(region, await ensureReplicationQueue(sqs, config.tablePrefix, { visibilityTimeoutS: localVisibilityTimeoutS, maxReceiveCount: localMaxReceiveCount }));
      }),
    );

    const initialRegions = [config.homeRegion, ...config.replicaRegions];
    // A promotion is recorded in the tables: with a kept data directory, start where it left off.
    const recorded = await adoptRecordedHome(config, [config.homeRegion, ...config.replicaRegions]);
    if (recorded !== undefined) log(`local: ${recorded.homeRegion} is home since a promotion (cluster epoch ${recorded.clusterEpoch}); replicas ${config.replicaRegions.join(', ') || '(none)'}`);

    nodes = new NodeProcesses(config, options.invocationMs ?? 20_000, log, { [env.localAwsLatency]: awsLatency ? '1' : '0' });
    for (const id of config.nodeIds) nodes.start(id);

    const clock = systemClock();
    const allRegions = [...initialRegions];

    /**
     * Wires the regions for the current config: each replica region's apply function on its
     * queue (a poller plays the event source mapping) and its replica heartbeat, and each
     * region's API, all in this process. In the Lambda model (default) the api and apply
     * functions run as Lambda execution environments (lib/local/lambda-pool.ts): an invocation
     * gets an idle environment or a new one, each with its own services and SDK clients; in
     * single-process mode one service per region serves every request. Every client states the
     * region it runs in, so a cut-off region is unreachable to the others.
     */
    const wire = () => {
      const background = new AbortController();
      const loops: Promise<unknown>[] = [];
      const wiringClosers: (() => void)[] = [];
      const apiPools = new Map<string, LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>>();
      const applyPools = new Map<string, LambdaPool<SQSEvent, SQSBatchResponse>>();
      for (const [position, region] of config.replicaRegions.entries()) {
        const regionConfig = { ...config, region };
        const regionLog = (line: string) => log(`${region} ${line}`);
        // What the apply function's (and the heartbeat's) module scope makes: the home log and
        // this region's replica, and the applier over them.
        const makeApplier = (alive?: () => boolean) => {
          const homeClient = makeDynamoClient({ region: config.homeRegion, endpoint: config.dynamoEndpoint, from: region, alive });
          const home = new DynamoStore(homeClient, config.tables, config.shardCount);
          const replicaClient = makeDynamoClient({ region, endpoint: config.dynamoEndpoint, alive });
          const replica = new DynamoReplicaStore(replicaClient, config.tables);
          return {
            home,
            replica,
            applier: new ReplicaApplier(replica, home, clock, options.apply),
            close: () => {
              homeClient.destroy();
              replicaClient.destroy();
            },
          };
        };
        // The replica heartbeat is a function of its own; in single-process mode the apply
        // handler shares its applier, as before the Lambda model.
        const heartbeat = makeApplier();
        wiringClosers.push(heartbeat.close);
        let applyHandler: (event: SQSEvent) => Promise<SQSBatchResponse>;
        if (apiModel.kind === 'lambda') {
          const pool = new LambdaPool<SQSEvent, SQSBatchResponse>({
            name: `apply-${region}`,
            factory: (_environmentId, alive) => {
              const made = makeApplier(alive);
              return { handler: createApplyHandler(made.applier, regionLog, options.apply), close: made.close };
            },
            concurrencyMax: apiModel.concurrencyMax,
            timeoutMs: applyFunctionTimeoutMs,
            idleReclaimMs: environmentIdleReclaimMs,
            log,
          });
          applyPools.set(region, pool);
          wiringClosers.push(() => pool.close());
          // A failed invocation throws: the event source leaves the whole batch for redelivery, as Lambda's does.
          applyHandler = (event) => pool.invoke(event);
        } else {
          applyHandler = createApplyHandler(heartbeat.applier, regionLog, options.apply);
        }
        const queue = queues.get(region) as ReplicationQueue;
        // The event source mapping long-polls its queue.
        const sqs = makeSqsClient({ region, endpoint: config.sqsEndpoint, role: 'long-poll' });
        wiringClosers.push(() => sqs.destroy());
        const eventSource = createEventSource({
          client: sqs,
          queueUrl: queue.queueUrl,
          region,
          handler: applyHandler,
          ...(options.apply?.pollers === undefined ? {} : { pollers: options.apply.pollers }),
          ...(options.apply?.batchSize === undefined ? {} : { batchSize: options.apply.batchSize }),
          visibilityTimeoutS: localVisibilityTimeoutS,
          seed: (options.faultSeed ?? 1) + position,
          log: regionLog,
        });
        eventSource.start();
        replicas.push({ region, eventSource, queue });
        loops.push(
          (async () => {
            while (!background.signal.aborted) {
              await runReplicaHeartbeat({ config: regionConfig, replica: heartbeat.replica, home: heartbeat.home, applier: heartbeat.applier, budgetMs: 60_000, clock, log, signal: background.signal });
            }
          })(),
        );
      }
      const handlers = new Map<string, ApiHandler>();
      let homeService: KvService | undefined;
      for (const region of [config.homeRegion, ...config.replicaRegions]) {
        const regionConfig = { ...config, region };
        const isHome = region === config.homeRegion;
        // What the api function's module scope makes (functions/api.ts `handler`).
        const makeService = (alive?: () => boolean) => {
          const made = createRegionService(regionConfig, clock, log, { disableFencing: options.unsafeDisableFencing === true }, { alive });
          if (isHome) {
            made.service.beforeCommit = beforeCommit;
            homeServices.add(made.service);
          }
          return {
            service: made.service,
            close: () => {
              homeServices.delete(made.service);
              made.close();
            },
          };
        };
        if (apiModel.kind === 'lambda') {
          const pool = new LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>({
            name: `api-${region}`,
            factory: (_environmentId, alive) => {
              const made = makeService(alive);
              return { handler: createApiHandler({ config: regionConfig, clock, service: made.service }, log), close: made.close };
            },
            concurrencyMax: apiModel.concurrencyMax,
            timeoutMs: apiFunctionTimeoutMs,
            idleReclaimMs: environmentIdleReclaimMs,
            log,
          });
          apiPools.set(region, pool);
          wiringClosers.push(() => pool.close());
          handlers.set(region, apiGatewayIntegration(pool, log));
        } else {
          const made = makeService();
          wiringClosers.push(made.close);
          if (isHome) homeService = made.service;
          handlers.set(region, createApiHandler({ config: regionConfig, clock, service: made.service }, log));
        }
      }
      wiring = { background, loops, closers: wiringClosers, handlers, homeService, apiPools, applyPools, spareHomeService: undefined };
      for (const endpoint of regions) {
        endpoint.role = endpoint.region === config.homeRegion ? 'home' : config.replicaRegions.includes(endpoint.region) ? 'replica' : 'detached';
      }
    };
    wire();
    const processes = nodes;
    const meter = new RequestMeter();
    const endpointOf = (region: string): RegionEndpoint => {
      const endpoint = regions.find((candidate) => candidate.region === region);
      if (endpoint === undefined) throw new UnknownRegionError(region, regions.map((candidate) => candidate.region));
      return endpoint;
    };
    cutOff = (region) => {
      const endpoint = endpointOf(region);
      cutOffRegion(region);
      endpoint.cutOff = true;
      // A lost home loses its compute too (the nodes are other processes: kill them).
      if (region === config.homeRegion) for (const node of processes.list()) processes.kill(node.id);
      log(`local: cut off ${region}${region === config.homeRegion ? ' (home: its nodes are killed)' : ''}`);
    };
    heal = (region) => {
      const endpoint = endpointOf(region);
      reconnectRegion(region);
      endpoint.cutOff = false;
      if (region === config.homeRegion) for (const node of processes.list()) if (node.state === 'killed' || node.state === 'exited') processes.start(node.id);
      log(`local: reconnected ${region}`);
    };
    let promoting = false;
    promote = async (target, promoteOptions = {}) => {
      if (promoting) throw new PromotionRefusedError('a promotion is already running');
      endpointOf(target);
      promoting = true;
      try {
        // Stop the apply pollers and heartbeats: the promotion drains the queues itself.
        await unwire();
        let report: PromotionReport;
        try {
          report = await promoteRegion({
            homeRegion: config.homeRegion,
            replicaRegions: config.replicaRegions,
            target,
            tablePrefix: config.tablePrefix,
            tables: config.tables,
            shardCount: config.shardCount,
            mode: config.replication,
            dynamoEndpoint: config.dynamoEndpoint,
            sqsEndpoint: config.sqsEndpoint,
            force: promoteOptions.force === true,
            clock,
            log,
          });
        } catch (error) {
          wire();
          throw error;
        }
        // The old home's nodes stop by themselves once fenced; a lost home's are already dead.
        await processes.stopAll();
        config.homeRegion = target;
        config.region = target;
        config.replicaRegions = report.replicaRegions;
        validateConfig(config);
        wire();
        for (const node of processes.list()) processes.start(node.id);
        return report;
      } finally {
        promoting = false;
      }
    };
    const lambdaControls: LambdaControls = {
      apiModel,
      regions: () => regions.map((endpoint) => endpoint.region),
      functions: () => lambdaFunctions(),
      killApiEnvironment: (region) => killApiEnvironment(region),
    };
    const localRoute: LocalRoute = async (method, segments, body, query) => {
      if (segments[0] === 'replication') return replicationRoute(replicas, method, segments.slice(1), body);
      if (segments[0] === 'lambda') return lambdaRoute(lambdaControls, method, segments.slice(1));
      if (segments[0] === 'regions' || segments[0] === 'promote') return regionRoute(cloudControls, method, segments, body);
      if (segments[0] === 'metrics' && segments.length === 1) return { status: 200, body: meter.series(Date.now()) };
      if (segments[0] === 'log' && segments.length === 1) return { status: 200, body: { entries: await recentEntries(homeStore(), config.shardCount, Number(query.get('limit') ?? 25)) } };
      if (segments[0] !== 'nodes') return undefined;
        if (segments.length === 1 && method === 'GET') return { status: 200, body: { nodes: processes.list() } };
        const [, id, verb] = segments;
        if (id === undefined || verb === undefined || segments.length !== 3) return undefined;
        if (method !== 'POST') return { status: 405, body: { error: 'MethodNotAllowed', message: 'use POST for node controls' } };
          const actions = { kill: 'kill', pause: 'pause', resume: 'resume', start: 'start' } as const;
        const action = actions[verb as keyof typeof actions];
        if (action === undefined) return { status: 404, body: { error: 'NotFound', message: `unknown control "${verb}"; use kill, pause, resume or start` } };
        try {
          return { status: 200, body: processes[action](id) };
        } catch (error) {
          if (error instanceof UnknownNodeError) return { status: 404, body: { error: 'NotFound', message: error.message } };
          throw error;
        }
    };

    // One API server per region, on a fixed port (home first): a promotion swaps the handler
    // behind it, so clients keep their region's URL.
    for (const [position, region] of allRegions.entries()) {
      const handler: ApiHandler = async (event) => {
        if (isCutOff(region)) {
          return { statusCode: 503, headers: { 'content-type': 'application/json', 'retry-after': '1' }, body: JSON.stringify({ error: 'RegionUnreachable', message: `${region} is cut off (local disaster-recovery rehearsal); use another region or heal it` }) };
        }
        const current = wiring?.handlers.get(region);
        if (current === undefined) {
          return { statusCode: 503, headers: { 'content-type': 'application/json', 'retry-after': '1' }, body: JSON.stringify({ error: 'RegionDetached', message: `${region} is not part of the cluster now (home: ${config.homeRegion}; replicas: ${config.replicaRegions.join(', ') || 'none'})` }) };
        }
        return current(event);
      };
      const server = await serveApi(handler, {
        port: basePort === 0 ? 0 : basePort + position,
        log,
        localRoute,
        onAnswer: (method, path) => meter.count(method, path, Date.now()),
        bearerToken: options.bearerToken,
        rateLimit: new TokenBucket(options.rateLimitPerSecond ?? 2_000, 2 * (options.rateLimitPerSecond ?? 2_000), Date.now()),
        // The dashboard is on every region's port; its fault buttons exist only in the local cloud.
        ...(position === 0 ? { page: dashboardPage() } : {}),
      });
      servers.push(server);
      regions.push({ region, apiUrl: server.url, role: region === config.homeRegion ? 'home' : 'replica', cutOff: false });
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const processes = nodes;
  return {
    config,
    get apiUrl() {
      return regions.find((endpoint) => endpoint.region === config.homeRegion)?.apiUrl as string;
    },
    regions,
    replicas,
    cutOff: (region) => cutOff(region),
    heal: (region) => heal(region),
    promote: (region, promoteOptions) => promote(region, promoteOptions),
    dynamoEndpoint: config.dynamoEndpoint!,
    sqsEndpoint: config.sqsEndpoint!,
    nodes: () => processes.list(),
    kill: (id) => processes.kill(id),
    pause: (id) => processes.pause(id),
    resume: (id) => processes.resume(id),
    start: (id, startOptions) => processes.start(id, startOptions),
    nodeRequestCounts: () => processes.requestCounts(),
    apiModel,
    get homeService() {
      const current = wiring;
      if (current === undefined) throw new Error('the cloud is being rewired (a promotion is running)');
      if (current.homeService !== undefined) return current.homeService;
      current.spareHomeService ??= createRegionService({ ...config, region: config.homeRegion }, systemClock(), log, { disableFencing: options.unsafeDisableFencing === true });
      return current.spareHomeService.service;
    },
    get homeStore() {
      return homeStore();
    },
    setBeforeCommit(hook) {
      beforeCommit = hook;
      for (const service of homeServices) service.beforeCommit = hook;
    },
    killApiEnvironment: (region) => killApiEnvironment(region ?? config.homeRegion),
    lambdaFunctions: () => lambdaFunctions(),
    async waitForReady(timeoutMs) {
      const unready = new Map<string, string>();
      await waitUntil(
        'GET /health 200 in every region',
        async () => {
          const members = regions.filter((endpoint) => endpoint.role !== 'detached' && !endpoint.cutOff);
          const answers = await Promise.all(
            members.map(async (endpoint) => {
              const response = await fetch(`${endpoint.apiUrl}/health`, {
                headers: options.bearerToken === undefined ? {} : { authorization: `Bearer ${options.bearerToken}` },
                signal: AbortSignal.timeout(10_000),
              });
              const body = (await response.json().catch(() => ({}))) as { reasons?: string[]; error?: string };
              if (response.status === 200) unready.delete(endpoint.region);
              else unready.set(endpoint.region, `${response.status} ${(body.reasons ?? [body.error ?? '']).join('; ').slice(0, 300)}`);
              return response.status === 200;
            }),
          );
          return answers.every(Boolean) ? true : undefined;
        },
        timeoutMs,
        100,
      ).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}: ${[...unready].map(([region, why]) => `${region}: ${why}`).join(' | ')}`);
      });
    },
    faultProxy: options.faultProxy === true,
    blackhole(on) {
      if (faultProxies.length === 0) throw new Error('blackhole needs the fault proxies: start the cloud with faultProxy: true');
      for (const proxy of faultProxies) proxy.setBlackhole(on);
      log(`local: DynamoDB and SQS ${on ? 'blackholed (connections accepted, never answered)' : 'answer again'}`);
    },
    async waitForLeaders(timeoutMs) {
      await waitUntil(
        'a live leader for every shard',
        async () => {
          // A promotion is rewiring: wait for it.
          if (wiring === undefined) return undefined;
          return (await clusterStatus(homeStore(), config, systemClock())).shards.every((shard) => shard.live) ? true : undefined;
        },
        timeoutMs,
        50,
      );
    },
    restartSqs: async () => {
      if (sqsEmulator === undefined) throw new Error('the SQS emulator was given to this cloud; restart it where it was started');
      const port = Number(new URL(directSqsEndpoint!).port);
      await sqsEmulator.stop();
      sqsEmulator = await startSqsEmulator({ port });
      // The emulator keeps nothing: the queues come back empty, as after losing every message.
      for (const region of regions.map((endpoint) => endpoint.region)) {
        const sqs = makeSqsClient({ region, endpoint: directSqsEndpoint });
        try {
          // A just-started emulator on a loaded machine can be slow to answer its first calls:
          // keep trying within a bound rather than fail the caller (the chaos run's nemesis).
          await waitUntil(
            `the replication queue of ${region} on the restarted SQS emulator`,
            async () => (await ensureReplicationQueue(sqs, config.tablePrefix, { visibilityTimeoutS: localVisibilityTimeoutS, maxReceiveCount: localMaxReceiveCount }), true),
            30_000,
            200,
          );
        } finally {
          sqs.destroy();
        }
      }
    },
    stop,
  };
}
