import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { makeDynamoClient } from '../../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../../lib/adapters/aws/dynamo-store.ts';
import { tableNames } from '../../lib/infra/schema.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { uniquePrefix, waitUntil } from '../support.ts';

/** One raw HTTP/1.1 exchange over a socket: nothing normalizes the method, target or headers. */
interface RawRequest {
  method: string;
  target: string;
  headers: [string, string][];
  body: Buffer;
}

interface RawResponse {
  status: number;
  body: string;
}

const hangMs = 10_000;

async function exchange(port: number, request: RawRequest): Promise<RawResponse | 'hang'> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('hang');
    }, hangMs);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: match === null ? 0 : Number(match[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
    const head = [`${request.method} ${request.target} HTTP/1.1`, 'Host: 127.0.0.1', ...request.headers.map(([name, value]) => `${name}: ${value}`), `Content-Length: ${request.body.length}`, 'Connection: close', '', ''].join('\r\n');
    socket.write(Buffer.from(head, 'latin1'));
    if (request.body.length > 0) socket.write(request.body);
  });
}

const get = (target: string, headers: [string, string][] = []): RawRequest => ({ method: 'GET', target, headers, body: Buffer.alloc(0) });
const put = (target: string, body: Buffer | string = 'x', headers: [string, string][] = []): RawRequest => ({ method: 'PUT', target, headers, body: Buffer.isBuffer(body) ? body : Buffer.from(body) });

const percentEncode = (bytes: Uint8Array) => [...bytes].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).join('');

/** Request classes: each an arbitrary of adversarial requests. */
const classes: Record<string, fc.Arbitrary<RawRequest>> = {
  'random bytes in the key': fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => put(`/kv/${percentEncode(bytes)}`)),
  'invalid UTF-8': fc
    .constantFrom('%C3%28', '%FF', '%ED%A0%80', '%C0%AF', '%E2%82', '%F8%88%80%80%80', '%80')
    .chain((bad) => fc.tuple(fc.constant(bad), fc.constantFrom('PUT', 'GET', 'DELETE')))
    .map(([bad, method]) => ({ method, target: `/kv/a${bad}b`, headers: [], body: Buffer.from(method === 'PUT' ? 'x' : '') })),
  'huge keys': fc.integer({ min: 1025, max: 6000 }).chain((length) => fc.constantFrom(put(`/kv/${'k'.repeat(length)}`), get(`/kv/${'é'.repeat(Math.ceil(length / 2))}`))),
  'empty keys': fc.constantFrom(put('/kv/'), put('/kv'), get('/kv/'), { method: 'DELETE', target: '/kv/', headers: [], body: Buffer.alloc(0) }, put('/kv/?x=1')),
  'path tricks': fc
    .constantFrom('/kv/..%2f..%2fetc%2fpasswd', '/%2e%2e/kv/x', '//kv/x', '/kv/%2e%2e/_local/nodes', '/_local/../kv/x', '/kv%2fx', '/KV/x', '/kv/x%00y', '/kv/x%0Ay', '/kv/\u00ff')
    .chain((target) => fc.constantFrom('PUT', 'DELETE', 'GET').map((method) => ({ method, target, headers: [] as [string, string][], body: Buffer.from(method === 'PUT' ? 'x' : '') }))),
  'duplicate headers': fc
    .tuple(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 51, max: 99 }))
    .chain(([a, b]) =>
      fc.constantFrom(
        put('/kv/dup', 'x', [['If-Match', `"${a}"`], ['If-Match', `"${b}"`]]),
        put('/kv/dup', 'x', [['If-None-Match', '*'], ['If-Match', `"${a}"`]]),
        get('/kv/dup', [['X-Epochkv-Session', 'abc'], ['X-Epochkv-Session', 'def']]),
      ),
    ),
  'wrong methods': fc
    .constantFrom('POST', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'FOO')
    .chain((method) => fc.constantFrom('/kv/x', '/kv', '/cluster', '/health', '/watch').map((target) => ({ method, target, headers: [] as [string, string][], body: Buffer.from('x') }))),
  'malformed JSON': fc
    .constantFrom('{', '{"dropRate":', '[1,2', 'null', '"x"', '{"dropRate":"high"}', '{"unknownFault":1}', '\u0000\u0001')
    .chain((text) =>
      fc.constantFrom(
        { method: 'POST', target: '/_local/replication/eu-west-1/faults', headers: [] as [string, string][], body: Buffer.from(text) },
        get('/kv/json', [['X-Epochkv-Session', Buffer.from(text).toString('base64url')]]),
      ),
    ),
  'oversized bodies': fc.constantFrom(256 * 1024 + 1, 300_000, 1_048_577, 10 * 1024 * 1024 + 1).map((size) => put('/kv/big', Buffer.alloc(size, 0x61))),
  'bad headers and parameters': fc.constantFrom(
    put('/kv/p', 'x', [['If-Match', 'abc']]),
    put('/kv/p', 'x', [['If-Match', 'W/"1"']]),
    put('/kv/p', 'x', [['If-Match', '"1", "2"']]),
    put('/kv/p', 'x', [['If-None-Match', '"3"']]),
    put('/kv/p?consistency=strong'),
    get('/kv/p?consistency=linearizable'),
    get('/kv?limit=0'),
    get('/kv?limit=1001'),
    get('/kv?limit=1&limit=2'),
    get('/kv?nope=1'),
    get('/watch?shard=99'),
    get('/watch?shard=0&waitMs=999999'),
    get('/watch?prefix=nohashtag&from=notacursor'),
    get('/watch?shard=0&from=-1'),
    { method: 'GET', target: '/kv/p', headers: [], body: Buffer.from('a body on a GET') },
    { method: 'DELETE', target: '/kv/p', headers: [], body: Buffer.from('a body on a DELETE') },
  ),
};

let cloud: LocalCloud;
let home: DynamoStore;

/** Data entries (puts and deletes) appended to any shard's log after `heads`. */
async function dataEntriesSince(heads: number[]): Promise<string[]> {
  const appended = await Promise.all(heads.map((head, shard) => home.readLog(shard, head + 1, 1_000)));
  return appended.flat().flatMap((entry) => entry.ops.filter((op) => op.type !== 'leader').map((op) => `shard ${entry.shard} #${entry.index} ${op.type} ${'key' in op ? op.key : ''}`));
}

async function headIndexes(): Promise<number[]> {
  return Promise.all(Array.from({ length: cloud.config.shardCount }, async (_, shard) => (await home.readHead(shard))?.index ?? 0));
}

describe('Fuzzed HTTP surface of the local cloud', () => {
  beforeAll(async () => {
    const prefix = uniquePrefix('fuzz');
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: prefix,
      // Long invocations: fewer leader markers in the log while the fuzzer compares it.
      invocationMs: 120_000,
      log: () => undefined,
    });
    home = new DynamoStore(makeDynamoClient({ region: cloud.config.homeRegion, endpoint: cloud.dynamoEndpoint }), tableNames(prefix), cloud.config.shardCount);
    await waitUntil('every shard led', async () => {
      const status = (await (await fetch(`${cloud.apiUrl}/cluster`)).json()) as { shards: { live: boolean }[] };
      return status.shards.every((shard) => shard.live) ? true : undefined;
    }, 30_000);
    // Something to protect.
    for (const key of ['dup', 'p', 'json', 'big']) await fetch(`${cloud.apiUrl}/kv/${key}`, { method: 'PUT', body: `seed-${key}` });
  });

  afterAll(async () => {
    await cloud?.stop();
  });

  it('never answers 5xx, never hangs, and no rejected request changes the store or its log', async () => {
    const port = Number(new URL(cloud.apiUrl).port);
    const figures: Record<string, { tried: number; rejected: number; accepted: number; serverErrors: number; hangs: number; changes: number }> = {};
    for (const [name, arbitrary] of Object.entries(classes)) {
      const figure = (figures[name] = { tried: 0, rejected: 0, accepted: 0, serverErrors: 0, hangs: 0, changes: 0 });
      await fc.assert(
        fc.asyncProperty(arbitrary, async (request) => {
          const heads = await headIndexes();
          const before = JSON.stringify((await home.list('', 1000, undefined, true)).items.map((item) => [item.key, item.version]));
          const response = await exchange(port, request);
          figure.tried += 1;
          if (response === 'hang') {
            figure.hangs += 1;
            return false;
          }
          if (response.status >= 500 || response.status === 0) {
            figure.serverErrors += 1;
            return false;
          }
          if (response.status < 400) {
            figure.accepted += 1;
            return true;
          }
          figure.rejected += 1;
          // A rejection names the problem and changes nothing.
          const problem = JSON.parse(response.body) as { error?: unknown; message?: unknown };
          if (typeof problem.error !== 'string' || typeof problem.message !== 'string') return false;
          const after = JSON.stringify((await home.list('', 1000, undefined, true)).items.map((item) => [item.key, item.version]));
          const appended = await dataEntriesSince(heads);
          if (after !== before || appended.length > 0) {
            figure.changes += 1;
            return false;
          }
          return true;
        }),
        { numRuns: name === 'oversized bodies' ? 8 : 40, seed: 20261121, endOnFailure: true },
      );
    }
    console.log(
      `fuzz: ${Object.entries(figures)
        .map(([name, figure]) => `${name}: ${figure.tried} tried, ${figure.rejected} rejected, ${figure.accepted} accepted, ${figure.serverErrors} 5xx, ${figure.hangs} hangs, ${figure.changes} state changes`)
        .join('; ')}`,
    );
    const totals = Object.values(figures).reduce((sum, figure) => ({ tried: sum.tried + figure.tried, serverErrors: sum.serverErrors + figure.serverErrors, changes: sum.changes + figure.changes }), { tried: 0, serverErrors: 0, changes: 0 });
    console.log(`fuzz: ${totals.tried} requests, ${totals.serverErrors} × 5xx, ${totals.changes} state changes by rejected requests`);
    expect(totals.serverErrors).toBe(0);
    expect(totals.changes).toBe(0);
  }, 300_000);

  it('answers 401 without the bearer token and 429 with Retry-After past the rate limit', async () => {
    // Prepare: a second cloud with a token and a tiny rate limit.
    const guarded = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('guarded'),
      replicaRegions: [],
      bearerToken: 'a-local-token-of-32-characters!!',
      rateLimitPerSecond: 5,
      log: () => undefined,
    });
    try {
      // Act
      const anonymous = await fetch(`${guarded.apiUrl}/kv/x`, { method: 'PUT', body: 'x' });
      const wrong = await fetch(`${guarded.apiUrl}/cluster`, { headers: { authorization: 'Bearer not-the-token-of-32-characters!!' } });
      const page = await fetch(`${guarded.apiUrl}/`);
      const answers = await Promise.all(
        Array.from({ length: 30 }, () => fetch(`${guarded.apiUrl}/health`, { headers: { authorization: 'Bearer a-local-token-of-32-characters!!' } })),
      );
      const limited = answers.find((answer) => answer.status === 429);

      // Assess
      expect(anonymous.status).toBe(401);
      expect(((await anonymous.json()) as { message: string }).message).toContain('Authorization: Bearer');
      expect(wrong.status).toBe(401);
      expect(page.status).toBe(200);
      // Past the token and under the rate: answered by the handler, ready (200) or not yet (503).
      expect(answers.filter((answer) => answer.status === 200 || answer.status === 503).length).toBeGreaterThan(0);
      expect(limited?.headers.get('retry-after')).toMatch(/^\d+$/);
      expect(((await limited?.json()) as { error: string }).error).toBe('TooManyRequests');
    } finally {
      await guarded.stop();
    }
  });
});
