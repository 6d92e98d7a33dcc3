import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AccessDeniedError, EpochKv, OutcomeUnknownError, UnavailableError } from '../../lib/client/index.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { discoveryFileName, findLocalCloud, removeDiscoveryFile, writeDiscoveryFile } from '../../lib/local/discovery.ts';
import { keyInShard, uniquePrefix, waitUntil } from '../support.ts';

const root = path.resolve(import.meta.dirname, '..', '..');
const cliPath = path.join(root, 'bin', 'epochkv.js');
const shardCount = 8;
const bearerToken = `cli-test-${randomBytes(8).toString('hex')}`;
let cloud: LocalCloud;
let scratch: string;

interface CliRun {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** The environment of a user's shell that has set nothing for epochkv. */
function bareEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (extra.EPOCHKV_ENDPOINT === undefined) delete env.EPOCHKV_ENDPOINT;
  if (extra.EPOCHKV_TOKEN === undefined) delete env.EPOCHKV_TOKEN;
  return env;
}

/** Runs `epochkv` as a user would: a child process, bytes in and out. */
function cli(args: string[], options: { input?: Uint8Array; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: options.cwd ?? scratch, env: options.env ?? bareEnv({ EPOCHKV_ENDPOINT: cloud.apiUrl, EPOCHKV_TOKEN: bearerToken }) });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString('utf8') }));
    child.stdin.end(options.input ?? new Uint8Array());
  });
}

/** `epochkv ...` in a shell pipeline; the CLI's own exit status is reported on stderr's last line. */
function pipeline(cliArgs: string, reader: string): Promise<{ stdout: string; stderr: string; cliCode: number }> {
  return new Promise((resolve, reject) => {
    const script = `"${process.execPath}" "${cliPath}" ${cliArgs} | ${reader}; echo "cli-exit \${PIPESTATUS[0]}" >&2`;
    const child = spawn('bash', ['-c', script], { cwd: scratch, env: bareEnv({ EPOCHKV_ENDPOINT: cloud.apiUrl, EPOCHKV_TOKEN: bearerToken }) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', () => {
      const code = /cli-exit (\d+)\s*$/.exec(stderr)?.[1];
      resolve({ stdout, stderr: stderr.replace(/cli-exit \d+\s*$/, ''), cliCode: code === undefined ? -1 : Number(code) });
    });
  });
}

/** A long-running `epochkv watch`, its output collected as it comes. */
function startWatch(args: string[]): { child: ChildProcess; lines: () => string[]; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [cliPath, 'watch', ...args], { cwd: scratch, env: bareEnv({ EPOCHKV_ENDPOINT: cloud.apiUrl, EPOCHKV_TOKEN: bearerToken }) });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, lines: () => stdout.split('\n').filter(Boolean), stderr: () => stderr, exited };
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function listen(server: Server | ReturnType<typeof createTcpServer>): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const client = () => new EpochKv({ endpoint: cloud.apiUrl, bearerToken });

// Each CLI run is a Node process compiling TypeScript: seconds apiece on a busy machine.
const cliTestTimeoutMs = 180_000;

describe('The epochkv CLI and the typed client, from the user\'s side', () => {
  beforeAll(async () => {
    scratch = mkdtempSync(path.join(os.tmpdir(), 'epochkv-cli-'));
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('cli'),
      shardCount,
      bearerToken,
      log: () => undefined,
    });
    await waitUntil('every shard led', async () => ((await client().status()).shards.every((shard) => shard.live) ? true : undefined), 30_000);
  });

  afterAll(async () => {
    await cloud?.stop();
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  it('puts 16 random bytes from stdin and gets them back byte for byte; --json names them valueBase64', async () => {
    // Prepare: bytes that are not UTF-8 (0xff never occurs in UTF-8).
    const bytes = Buffer.concat([Buffer.from([0xff, 0x00, 0x0a, 0xc3]), randomBytes(12)]);
    const file = path.join(scratch, 'value.bin');
    writeFileSync(file, Buffer.from(bytes).reverse());

    // Act
    const put = await cli(['put', 'cli/bytes'], { input: bytes });
    const get = await cli(['get', 'cli/bytes']);
    const json = await cli(['get', 'cli/bytes', '--json']);
    const fromFile = await cli(['put', 'cli/file', '--file', file]);
    const getFile = await cli(['get', 'cli/file']);
    await cli(['put', 'cli/text', 'héllo']);
    const text = await cli(['get', 'cli/text', '--json']);

    // Assess
    expect(put.code, put.stderr).toBe(0);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout.length).toBe(16);
    expect(get.stdout.equals(bytes)).toBe(true);
    expect(JSON.parse(json.stdout.toString('utf8'))).toMatchObject({ key: 'cli/bytes', valueBase64: bytes.toString('base64') });
    expect(JSON.parse(json.stdout.toString('utf8'))).not.toHaveProperty('value');
    expect(fromFile.code, fromFile.stderr).toBe(0);
    expect(getFile.stdout.equals(readFileSync(file))).toBe(true);
    expect(JSON.parse(text.stdout.toString('utf8'))).toMatchObject({ key: 'cli/text', value: 'héllo' });
  }, cliTestTimeoutMs);

  it('prints each command\'s usage on --help, the version on --version, and refuses what it does not know with exit 2', async () => {
    // Act
    const putHelp = await cli(['put', '--help']);
    const watchHelp = await cli(['watch', '-h']);
    const helpGet = await cli(['help', 'get']);
    const version = await cli(['--version']);
    const unknownOption = await cli(['get', 'k', '--frobnicate']);
    const unknownCommand = await cli(['frobnicate']);

    // Assess
    const packageVersion = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
    expect(putHelp.code).toBe(0);
    expect(putHelp.stdout.toString()).toMatch(/^usage: epochkv put <key>/);
    expect(putHelp.stdout.toString()).toMatch(/exit codes: .*5 access denied/s);
    expect(watchHelp.code).toBe(0);
    expect(watchHelp.stdout.toString()).toMatch(/--from now/);
    expect(helpGet.code).toBe(0);
    expect(helpGet.stdout.toString()).toMatch(/^usage: epochkv get <key>/);
    expect(version.code).toBe(0);
    expect(version.stdout.toString().trim()).toBe(`epochkv ${packageVersion}`);
    expect(unknownOption.code).toBe(2);
    expect(unknownOption.stderr).toMatch(/usage: epochkv get/);
    expect(unknownCommand.code).toBe(2);
  }, cliTestTimeoutMs);

  it('ends quietly when the reader of its output goes away (status | head -1)', async () => {
    // Act: head keeps one line; `true` reads nothing, so every write meets a closed pipe.
    const head = await pipeline('status', 'head -1');
    const gone = await pipeline('status', 'true');
    const goneJson = await pipeline('ls --json', 'true');

    // Assess
    expect(head.stdout).toMatch(/^cluster at http:\/\/127\.0\.0\.1:\d+ \(region us-east-1;.*\)\n$/);
    for (const run of [head, gone, goneJson]) {
      expect(run.stderr).not.toMatch(/EPIPE|Error|at .*\.ts:\d+/);
      expect(run.cliCode).toBe(0);
    }
  }, cliTestTimeoutMs);

  it('an idle watch outlives many long polls shorter than its request timeout, then prints the next write; from now by default, --from 1 replays', async () => {
    // Prepare: a shard with history, and a poll (1.5 s) longer than one request's timeout (0.2 s):
    // before the fix every poll was cut off, and six of them ended the watch in under 5 s.
    const shard = 3;
    const earlier = keyInShard(shard, shardCount, 'cli-before');
    await client().put(earlier, 'before');
    const watch = startWatch(['--shard', String(shard), '--wait-ms', '1500', '--timeout-ms', '200']);
    const replay = startWatch(['--shard', String(shard), '--from', '1', '--wait-ms', '1500']);
    try {
      await waitUntil('the watch to start', () => (watch.stderr().includes('watching shard 3 from now') ? true : undefined), 60_000);
      const startedMs = Date.now();

      // Act: the watch stays idle for several polls (it must not exit), then a write comes.
      let exitCode: number | null | undefined;
      void watch.exited.then((code) => (exitCode = code));
      await waitUntil('the idle watch to live through 6 s of empty polls', () => {
        if (exitCode !== undefined) throw new Error(`watch exited ${exitCode}: ${watch.stderr()}`);
        return Date.now() - startedMs >= 6_000 ? true : undefined;
      }, 10_000, 100);
      const later = keyInShard(shard, shardCount, 'cli-after');
      await client().put(later, 'after');
      await waitUntil('the watch to print the write', () => (watch.lines().some((line) => line.includes(later)) ? true : undefined), 30_000);
      await waitUntil('the replay to print both writes', () => (replay.lines().some((line) => line.includes(later)) ? true : undefined), 30_000);
      watch.child.kill('SIGINT');
      const code = await watch.exited;

      // Assess
      expect(exitCode ?? code).toBe(0);
      // From now: nothing written before the watch began, only the write (and any leader change since).
      const puts = watch.lines().filter((line) => line.includes(' put '));
      expect(puts).toHaveLength(1);
      expect(puts[0]).toMatch(new RegExp(`^\\d+  epoch \\d+  put ${later}="after"$`));
      expect(watch.stderr()).not.toMatch(/Error|NoAnswer/);
      const replayed = replay.lines();
      expect(replayed[0]).toMatch(/^1  epoch \d+  leader node-/);
      expect(replayed.findIndex((line) => line.includes(earlier))).toBeLessThan(replayed.findIndex((line) => line.includes(later)));
    } finally {
      watch.child.kill('SIGINT');
      replay.child.kill('SIGINT');
      await Promise.all([watch.exited, replay.exited]);
    }
  }, cliTestTimeoutMs);

  it('the typed client waits on an idle shard across polls longer than its request timeout, from now, and reads a typed status', async () => {
    // Prepare: before the fix a poll was cut off at timeoutMs and two such attempts ended the watch.
    const shard = 6;
    await client().put(keyInShard(shard, shardCount, 'client-before'), 'before');
    const kv = new EpochKv({ endpoint: cloud.apiUrl, bearerToken, timeoutMs: 200, attemptsMax: 2 });
    const stop = new AbortController();
    const seen: string[] = [];
    let failure: unknown;
    const watching = (async () => {
      for await (const entry of kv.watch({ shard, from: 'now', waitMs: 1_000, signal: stop.signal })) {
        for (const op of entry.ops) if (op.type === 'put') seen.push(op.key);
      }
    })().catch((error: unknown) => {
      if (!stop.signal.aborted) failure = error;
    });
    const startedMs = Date.now();

    // Act
    await waitUntil('the idle watch to live through 4 s of empty polls', () => {
      if (failure !== undefined) throw failure;
      return Date.now() - startedMs >= 4_000 ? true : undefined;
    }, 10_000, 100);
    const later = keyInShard(shard, shardCount, 'client-after');
    await client().put(later, 'after');
    await waitUntil('the watch to see the write', () => (seen.length > 0 ? true : undefined), 10_000);
    stop.abort();
    await watching;
    const status = await kv.status();

    // Assess
    expect(failure).toBeUndefined();
    expect(seen).toEqual([later]);
    expect(status.homeRegion).toBe('us-east-1');
    expect(status.shards).toHaveLength(shardCount);
    expect(status.shards[shard]?.headIndex).toBeGreaterThan(1);
  });

  it('finds the local cloud from the file npm start writes, and says which endpoint it tried when nothing answers', async () => {
    // Prepare: the file as `npm start` writes it, in the directory above where the user is.
    const project = path.join(scratch, 'project');
    const below = path.join(project, 'src', 'deep');
    mkdirSync(below, { recursive: true });
    const discovery = { pid: process.pid, apiUrl: cloud.apiUrl, regions: cloud.regions.map(({ region, role, apiUrl }) => ({ region, role, apiUrl })), dynamoEndpoint: cloud.dynamoEndpoint, sqsEndpoint: cloud.sqsEndpoint, startedAt: new Date().toISOString() };
    const file = writeDiscoveryFile(project, discovery);
    const deadPort = await closedPort();

    // Act
    const found = await cli(['status'], { cwd: below, env: bareEnv({ EPOCHKV_TOKEN: bearerToken }) });
    writeDiscoveryFile(project, { ...discovery, apiUrl: `http://127.0.0.1:${deadPort}` });
    const fromFile = await cli(['get', 'k'], { cwd: below, env: bareEnv({ EPOCHKV_TOKEN: bearerToken }) });
    const fromEnv = await cli(['status'], { cwd: below, env: bareEnv({ EPOCHKV_ENDPOINT: `http://127.0.0.1:${deadPort}` }) });
    removeDiscoveryFile(file, process.pid + 1);
    const keptForOther = existsSync(file);
    removeDiscoveryFile(file);

    // Assess
    expect(found.code, found.stderr).toBe(0);
    expect(found.stdout.toString()).toContain(`cluster at ${cloud.apiUrl}`);
    expect(fromFile.code).toBe(1);
    expect(fromFile.stderr).toContain(`nothing answers at http://127.0.0.1:${deadPort} (from the local cloud's ${path.join(project, discoveryFileName)})`);
    expect(fromFile.stderr).toContain('EPOCHKV_ENDPOINT');
    expect(fromFile.stderr).not.toMatch(/at .*\.ts:\d+/);
    expect(fromEnv.code).toBe(1);
    expect(fromEnv.stderr).toContain(`nothing answers at http://127.0.0.1:${deadPort} (from EPOCHKV_ENDPOINT)`);
    expect(keptForOther).toBe(true);
    expect(existsSync(file)).toBe(false);
    expect(findLocalCloud(below)).toEqual({ found: false, stale: undefined });
  }, cliTestTimeoutMs);

  it('gives an auth refusal its own exit code (5), not bad usage: 401 from the local cloud, 403 from API Gateway', async () => {
    // Prepare: what API Gateway answers a caller IAM does not allow.
    const gateway = createHttpServer((request, response) => {
      request.resume();
      response.writeHead(403, { 'content-type': 'application/json', 'x-amzn-errortype': 'AccessDeniedException' });
      response.end(JSON.stringify({ Message: 'User: arn:aws:iam::123456789012:user/alice is not authorized to perform: execute-api:Invoke on resource: arn:aws:execute-api:us-east-1:123456789012:abc/v1/PUT/kv/k' }));
    });
    const gatewayUrl = await listen(gateway);

    try {
      // Act
      const noToken = await cli(['get', 'k'], { env: bareEnv({ EPOCHKV_ENDPOINT: cloud.apiUrl }) });
      const forbidden = await cli(['put', 'k', 'v'], { env: bareEnv({ EPOCHKV_ENDPOINT: gatewayUrl }) });
      const byClient = await new EpochKv({ endpoint: gatewayUrl }).get('k').catch((error: unknown) => error);

      // Assess
      expect(noToken.code).toBe(5);
      expect(noToken.stderr).toMatch(/access denied .*EPOCHKV_TOKEN/);
      expect(forbidden.code).toBe(5);
      expect(forbidden.stderr).toContain('is not authorized to perform: execute-api:Invoke');
      expect(byClient).toBeInstanceOf(AccessDeniedError);
    } finally {
      gateway.closeAllConnections();
      await new Promise((resolve) => gateway.close(resolve));
    }
  }, cliTestTimeoutMs);
});

describe('Class: EpochKv, per call: signal, timeoutMs, unknown outcomes, an idle watch', () => {
  it('aborts a call on its signal, and ends a call past its timeoutMs: a read as unavailable, a write as outcome unknown', async () => {
    // Prepare: a server that accepts connections and never answers.
    const sockets: Socket[] = [];
    const blackhole = createTcpServer((socket) => sockets.push(socket));
    const endpoint = await listen(blackhole);
    const kv = new EpochKv({ endpoint, timeoutMs: 60_000 });

    try {
      // Act
      const controller = new AbortController();
      const abortedStartMs = Date.now();
      const aborting = kv.get('k', { signal: controller.signal }).catch((error: unknown) => error);
      await waitUntil('the request to reach the server', () => (sockets.length > 0 ? true : undefined), 5_000);
      controller.abort();
      const aborted = await aborting;
      const abortedMs = Date.now() - abortedStartMs;
      const readStartMs = Date.now();
      const read = await kv.get('k', { timeoutMs: 300 }).catch((error: unknown) => error);
      const readMs = Date.now() - readStartMs;
      const write = await kv.put('k', 'v', { timeoutMs: 300 }).catch((error: unknown) => error);
      const early = await kv.status({ signal: AbortSignal.abort() }).catch((error: unknown) => error);

      // Assess
      expect((aborted as Error).name).toBe('AbortError');
      expect(abortedMs).toBeLessThan(5_000);
      expect(read).toBeInstanceOf(UnavailableError);
      expect(read).not.toBeInstanceOf(OutcomeUnknownError);
      expect((read as UnavailableError).code).toBe('Timeout');
      expect(readMs).toBeLessThan(5_000);
      expect(write).toBeInstanceOf(OutcomeUnknownError);
      expect((early as Error).name).toBe('AbortError');
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => blackhole.close(resolve));
    }
  });

  it('treats a 502/504 on a write without an Idempotency-Key as an unknown outcome and does not repeat it; retries one on a read', async () => {
    // Prepare: a gateway that lost its function's answer.
    const seen: string[] = [];
    const gateway = createHttpServer((request, response) => {
      seen.push(request.method ?? '');
      request.resume();
      response.writeHead(request.method === 'PUT' ? 504 : 502, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ message: request.method === 'PUT' ? 'Endpoint request timed out' : 'Internal server error' }));
    });
    const endpoint = await listen(gateway);
    // Without Idempotency-Keys (idempotentWrites: false) nothing makes a repeat safe.
    const kv = new EpochKv({ endpoint, attemptsMax: 3, idempotentWrites: false });

    try {
      // Act
      const write = await kv.put('k', 'v').catch((error: unknown) => error);
      const writes = seen.filter((method) => method === 'PUT').length;
      const read = await kv.get('k').catch((error: unknown) => error);

      // Assess
      expect(write).toBeInstanceOf(OutcomeUnknownError);
      expect((write as OutcomeUnknownError).status).toBe(504);
      expect((write as Error).message).toMatch(/may or may not have been applied/);
      expect(writes).toBe(1);
      expect(read).toBeInstanceOf(UnavailableError);
      expect(read).not.toBeInstanceOf(OutcomeUnknownError);
      expect(seen.filter((method) => method === 'GET')).toHaveLength(3);
    } finally {
      gateway.closeAllConnections();
      await new Promise((resolve) => gateway.close(resolve));
    }
  });
});
