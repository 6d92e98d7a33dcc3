import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BadRequestError, EpochKv, OutcomeUnknownError } from '../../lib/client/index.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { keyInShard, uniquePrefix, waitUntil } from '../support.ts';

const root = path.resolve(import.meta.dirname, '..', '..');
const cliPath = path.join(root, 'bin', 'epochkv.js');
const shardCount = 8;
// Each CLI run is a Node process compiling TypeScript: seconds apiece on a busy machine.
const cliTestTimeoutMs = 180_000;
let cloud: LocalCloud;
let scratch: string;

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `epochkv` as a user would: a child process, stdin in, stdout and the exit code out. */
function cli(args: string[], input = ''): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, EPOCHKV_ENDPOINT: cloud.apiUrl };
    delete env.EPOCHKV_TOKEN;
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: scratch, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/** An API that answers each request with the next of `answers` (the last one repeats), counting requests by method. */
async function scriptedApi(answers: { status: number; body: unknown }[]): Promise<{ endpoint: string; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const server = createServer((request, response) => {
    const answer = answers[Math.min(seen.length, answers.length - 1)]!;
    seen.push(request.method ?? '');
    request.resume();
    response.writeHead(answer.status, { 'content-type': 'application/json', 'retry-after': '0' });
    response.end(JSON.stringify(answer.body));
  });
  const endpoint = await listen(server);
  return {
    endpoint,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('Class: EpochKv, txn, and `epochkv txn`, against the local cloud', () => {
  beforeAll(async () => {
    scratch = mkdtempSync(path.join(os.tmpdir(), 'epochkv-txn-'));
    cloud = await startLocalCloud({ basePort: 0, dynamoEndpoint: inject('dynamoEndpoint'), sqsEndpoint: inject('sqsEndpoint'), tablePrefix: uniquePrefix('txn-client'), shardCount, log: () => undefined });
    const client = new EpochKv({ endpoint: cloud.apiUrl });
    await waitUntil('every shard led', async () => ((await client.status()).shards.every((shard) => shard.live) ? true : undefined), 60_000);
  }, 120_000);

  afterAll(async () => {
    await cloud?.stop();
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  it('commits a two-shard transaction of text and bytes, answers typed results with bytes and text(), and keeps the session token', async () => {
    // Prepare: keys on two shards; one holds bytes that are not UTF-8.
    const kv = new EpochKv({ endpoint: cloud.apiUrl });
    const a = keyInShard(1, shardCount, 'ctxn-a');
    const b = keyInShard(5, shardCount, 'ctxn-b');
    const binary = new Uint8Array([0xff, 0x00, 0x0a, 0xc3]);
    await kv.put(b, binary);

    // Act: compare b's bytes and a's absence; put text at a, bytes at b; read both back.
    const committed = await kv.txn({
      compare: [{ key: a, absent: true }, { key: b, value: binary }],
      success: [{ op: 'put', key: a, value: 'héllo' }, { op: 'put', key: b, value: new Uint8Array([1, 2, 255]) }],
      failure: [{ op: 'get', key: a }],
    });
    const token = kv.sessionToken;
    const snapshot = await kv.txn({ success: [{ op: 'get', key: a }, { op: 'get', key: b }, { op: 'get', key: 'ctxn-missing' }] });
    const failed = await kv.txn({ compare: [{ key: a, version: 0 }], success: [{ op: 'delete', key: a }], failure: [{ op: 'get', key: a }] });

    // Assess
    expect(committed.succeeded).toBe(true);
    expect(committed.results.map((result) => [result.op, result.key])).toEqual([['put', a], ['put', b]]);
    expect(committed.token).toBe(token);
    const [readA, readB, missing] = snapshot.results;
    expect(readA).toMatchObject({ op: 'get', key: a, found: true });
    expect(readA?.op === 'get' && readA.found ? readA.text() : undefined).toBe('héllo');
    expect(readA?.op === 'get' && readA.found ? readA.version : undefined).toBe(committed.results[0]?.op === 'put' ? committed.results[0].version : -1);
    expect(readB?.op === 'get' && readB.found ? [...readB.value] : undefined).toEqual([1, 2, 255]);
    expect(missing).toEqual({ op: 'get', key: 'ctxn-missing', found: false });
    expect(failed.succeeded).toBe(false);
    expect(failed.results[0]?.op === 'get' && failed.results[0].found ? failed.results[0].text() : undefined).toBe('héllo');
    expect(kv.sessionToken).toBe(failed.token);
  });

  it('refuses a transaction that is too large as a BadRequestError with the code TxnTooLarge, and a key twice in a branch', async () => {
    // Prepare
    const kv = new EpochKv({ endpoint: cloud.apiUrl });

    // Act
    const tooLarge = await kv.txn({ compare: Array.from({ length: 65 }, (_, n) => ({ key: `ctxn-k${n}`, absent: true as const })) }).catch((error: unknown) => error);
    const twice = await kv.txn({ success: [{ op: 'put', key: 'ctxn-x', value: '1' }, { op: 'delete', key: 'ctxn-x' }] }).catch((error: unknown) => error);

    // Assess
    expect(tooLarge).toBeInstanceOf(BadRequestError);
    expect(tooLarge).toMatchObject({ status: 400, code: 'TxnTooLarge', message: 'the transaction has 65 compares; the limit is 64' });
    expect(twice).toBeInstanceOf(BadRequestError);
    expect((twice as Error).message).toMatch(/twice/);
    expect(await kv.get('ctxn-x')).toBeUndefined();
  });

  it('`epochkv txn` reads the body from stdin or --file, prints the JSON answer, exits 0 when the compares held and 4 when the failure branch ran', async () => {
    // Prepare
    const key = keyInShard(2, shardCount, 'cli-txn');
    const other = keyInShard(6, shardCount, 'cli-txn');
    const body = { compare: [{ key, absent: true }], success: [{ op: 'put', key, value: 'one' }, { op: 'put', key: other, valueBase64: 'AAH/' }], failure: [{ op: 'get', key }] };
    const file = path.join(scratch, 'txn.json');
    writeFileSync(file, JSON.stringify({ success: [{ op: 'get', key: other }] }));

    // Act
    const first = await cli(['txn'], JSON.stringify(body));
    const again = await cli(['txn'], JSON.stringify(body));
    const read = await cli(['txn', '--file', file]);
    const notJson = await cli(['txn'], '{"compare": [');
    const refused = await cli(['txn'], JSON.stringify({ success: [{ op: 'increment', key }] }));
    const help = await cli(['txn', '--help']);

    // Assess
    expect(first.code, first.stderr).toBe(0);
    const answer = JSON.parse(first.stdout) as { succeeded: boolean; results: { op: string; key: string; version: number }[]; token: string };
    expect(answer).toMatchObject({ succeeded: true, results: [{ op: 'put', key }, { op: 'put', key: other }] });
    expect(answer.token).toEqual(expect.any(String));
    expect(again.code, again.stderr).toBe(4);
    expect(JSON.parse(again.stdout)).toMatchObject({ succeeded: false, results: [{ op: 'get', key, found: true, value: 'one', version: answer.results[0]!.version }] });
    expect(read.code, read.stderr).toBe(0);
    expect(JSON.parse(read.stdout)).toMatchObject({ succeeded: true, results: [{ op: 'get', key: other, found: true, valueBase64: 'AAH/' }] });
    expect(notJson.code).toBe(2);
    expect(notJson.stderr).toMatch(/must be JSON/);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/"put", "delete" or "get"/);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: epochkv txn/);
    expect(help.stdout).toMatch(/Exit 0 when the compares held .* 4 when they did\s+not/s);
  }, cliTestTimeoutMs);
});

describe('Class: EpochKv, which 503s a write may repeat', () => {
  it('treats 503 ReplicationUnmet on a put and on a txn without an Idempotency-Key as an unknown outcome and sends it once', async () => {
    // Prepare: committed at home, not yet in enough replica regions; no Idempotency-Key makes a repeat safe.
    const api = await scriptedApi([{ status: 503, body: { error: 'ReplicationUnmet', message: 'committed at home; 0 of 1 replica regions accepted it in time' } }]);
    const kv = new EpochKv({ endpoint: api.endpoint, attemptsMax: 4, idempotentWrites: false });

    try {
      // Act
      const put = await kv.put('k', 'v', { replication: 'quorum' }).catch((error: unknown) => error);
      const puts = api.seen.length;
      const txn = await kv.txn({ success: [{ op: 'put', key: 'k', value: 'v' }] }).catch((error: unknown) => error);

      // Assess
      expect(put).toBeInstanceOf(OutcomeUnknownError);
      expect(put).toMatchObject({ status: 503, code: 'ReplicationUnmet' });
      expect((put as Error).message).toMatch(/may or may not have been applied/);
      expect(puts).toBe(1);
      expect(txn).toBeInstanceOf(OutcomeUnknownError);
      expect(api.seen).toEqual(['PUT', 'POST']);
    } finally {
      await api.close();
    }
  });

  it('repeats a txn answered 503 with a code that says nothing was applied, but, without an Idempotency-Key, not OutcomeUnknown nor a bare store error', async () => {
    // Prepare: two lost races, then the commit.
    const raced = await scriptedApi([
      { status: 503, body: { error: 'HeadConflict', message: 'shard 1: log index 7 is taken' } },
      { status: 503, body: { error: 'TransactionConflict', message: 'a key read changed' } },
      { status: 200, body: { succeeded: true, results: [{ op: 'put', key: 'k', version: 7 }], token: 't1' } },
    ]);
    const unknown = await scriptedApi([{ status: 503, body: { error: 'OutcomeUnknown', message: 'the transaction may or may not have been applied' } }]);
    const bare = await scriptedApi([{ status: 503, body: { error: 'Unavailable', message: 'the store did not answer; retry' } }]);

    try {
      // Act
      const committed = await new EpochKv({ endpoint: raced.endpoint, attemptsMax: 4 }).txn({ success: [{ op: 'put', key: 'k', value: 'v' }] });
      const lost = await new EpochKv({ endpoint: unknown.endpoint, attemptsMax: 4, idempotentWrites: false }).txn({ success: [{ op: 'put', key: 'k', value: 'v' }] }).catch((error: unknown) => error);
      const bareWrite = await new EpochKv({ endpoint: bare.endpoint, attemptsMax: 4 }).put('k', 'v', { idempotencyKey: false }).catch((error: unknown) => error);
      const bareRead = await new EpochKv({ endpoint: bare.endpoint, attemptsMax: 3 }).get('k').catch((error: unknown) => error);

      // Assess
      expect(committed).toMatchObject({ succeeded: true, results: [{ op: 'put', key: 'k', version: 7 }], token: 't1' });
      expect(raced.seen).toEqual(['POST', 'POST', 'POST']);
      expect(lost).toBeInstanceOf(OutcomeUnknownError);
      expect(unknown.seen).toEqual(['POST']);
      expect(bareWrite).toBeInstanceOf(OutcomeUnknownError);
      expect(bareRead).not.toBeInstanceOf(OutcomeUnknownError);
      expect(bare.seen).toEqual(['PUT', 'GET', 'GET', 'GET']);
    } finally {
      await Promise.all([raced.close(), unknown.close(), bare.close()]);
    }
  });
});
