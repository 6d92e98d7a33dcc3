import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createApiHandler } from '../../functions/api.ts';
import { localCredentials, makeDynamoClient } from '../adapters/aws/clients.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { systemClock } from '../clock.ts';
import { configToEnv, defaultNodeIds, validateConfig, type ClusterConfig } from '../config.ts';
import { limits } from '../core/limits.ts';
import { tableNames } from '../infra/schema.ts';
import { KvService } from '../service/kv-service.ts';
import { startDynamoLocal, startSqsEmulator, type Emulator } from './emulators.ts';
import { serveApi, type ApiServer } from './http-server.ts';
import { ensureTables } from './tables.ts';

export interface LocalCloudOptions {
  /** Home API port; DynamoDB Local listens on +20 and the SQS emulator on +21. 0 picks free ports (tests). */
  basePort?: number;
  /** Where DynamoDB Local keeps its files; in memory when undefined. */
  dataDirectory?: string | undefined;
  /** Reuse running emulators instead of starting them (tests start them once per run). */
  dynamoEndpoint?: string;
  sqsEndpoint?: string;
  region?: string;
  tablePrefix?: string;
  shardCount?: number;
  leaseMs?: number;
  tickMs?: number;
  nodeIds?: string[];
  /** Length of one node invocation before the next (overlapping) one starts. */
  invocationMs?: number;
  log?: (line: string) => void;
}

export type NodeState = 'running' | 'paused' | 'killed' | 'exited';

export interface NodeControl {
  id: string;
  state: NodeState;
  pid: number | undefined;
}

export interface LocalCloud {
  config: ClusterConfig;
  apiUrl: string;
  dynamoEndpoint: string;
  sqsEndpoint: string;
  nodes(): NodeControl[];
  kill(node: string): NodeControl;
  pause(node: string): NodeControl;
  resume(node: string): NodeControl;
  start(node: string): NodeControl;
  stop(): Promise<void>;
}

const here = path.dirname(fileURLToPath(import.meta.url));

class NodeProcesses {
  readonly #children = new Map<string, { child: ChildProcess | undefined; state: NodeState }>();

  constructor(
    private readonly config: ClusterConfig,
    private readonly invocationMs: number,
    private readonly log: (line: string) => void,
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

  start(id: string): NodeControl {
    const entry = this.#entry(id);
    if (entry.state === 'running' || entry.state === 'paused') return this.#control(id);
    const require = createRequire(import.meta.url);
    const loader = pathToFileURL(require.resolve('tsx')).href;
    const child = spawn(process.execPath, ['--import', loader, path.join(here, 'node-process.ts'), id], {
      env: { ...process.env, ...configToEnv(this.config), EPOCHKV_LOCAL_INVOCATION_MS: String(this.invocationMs) },
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
  const config: ClusterConfig = {
    region: options.region ?? 'us-east-1',
    tablePrefix: options.tablePrefix ?? 'epochkv',
    tables: tableNames(options.tablePrefix ?? 'epochkv'),
    shardCount: options.shardCount ?? limits.shardsDefault,
    leaseMs: options.leaseMs ?? limits.leaseMsLocal,
    tickMs: options.tickMs ?? limits.tickMsLocal,
    nodeIds: options.nodeIds ?? defaultNodeIds,
    dynamoEndpoint: options.dynamoEndpoint,
    sqsEndpoint: options.sqsEndpoint,
    local: true,
  };
  validateConfig(config);

  const owned: Emulator[] = [];
  let api: ApiServer | undefined;
  let nodes: NodeProcesses | undefined;
  const stop = async () => {
    await nodes?.stopAll();
    await api?.close();
    for (const emulator of owned.reverse()) await emulator.stop();
  };
  try {
    if (config.dynamoEndpoint === undefined) {
      const dynamo = await startDynamoLocal({ port: basePort === 0 ? undefined : basePort + 20, dbPath: options.dataDirectory });
      owned.push(dynamo);
      config.dynamoEndpoint = dynamo.endpoint;
    }
    if (config.sqsEndpoint === undefined) {
      const sqs = await startSqsEmulator({ port: basePort === 0 ? 0 : basePort + 21 });
      owned.push(sqs);
      config.sqsEndpoint = sqs.endpoint;
    }
    const admin = new DynamoDBClient({ region: config.region, endpoint: config.dynamoEndpoint, credentials: localCredentials });
    try {
      await ensureTables(admin, config.tables);
    } finally {
      admin.destroy();
    }

    nodes = new NodeProcesses(config, options.invocationMs ?? 20_000, log);
    for (const id of config.nodeIds) nodes.start(id);

    const clock = systemClock();
    const store = new DynamoStore(makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint }), config.tables, config.shardCount);
    const handler = createApiHandler({ config, clock, service: new KvService(store, config, clock) }, log);
    const processes = nodes;
    api = await serveApi(handler, {
      port: basePort,
      log,
      localRoute: async (method, segments) => {
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
      },
    });
  } catch (error) {
    await stop();
    throw error;
  }
  const processes = nodes;
  return {
    config,
    apiUrl: api.url,
    dynamoEndpoint: config.dynamoEndpoint!,
    sqsEndpoint: config.sqsEndpoint!,
    nodes: () => processes.list(),
    kill: (id) => processes.kill(id),
    pause: (id) => processes.pause(id),
    resume: (id) => processes.resume(id),
    start: (id) => processes.start(id),
    stop,
  };
}
