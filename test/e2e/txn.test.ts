import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { limits } from '../../lib/core/limits.ts';
import { shardOf } from '../../lib/core/shard.ts';
import type { LocalCloud } from '../../lib/local/cloud.ts';
import { keyInShard, startLedCloud, waitUntil } from '../support.ts';

let cloud: LocalCloud;
const shardCount = 8;

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, base = cloud.apiUrl): Promise<Answer> {
  const response = await fetch(`${base}${path}`, { method, headers: { accept: 'application/json', ...headers }, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) });
  const text = await response.text();
  return { status: response.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>), headers: response.headers };
}

async function heads(): Promise<number[]> {
  const cluster = (await call('GET', '/cluster')).body as { shards: { shard: number; headIndex: number }[] };
  return cluster.shards.map((shard) => shard.headIndex);
}

describe('POST /txn through the local cloud (Lambda model, two replica regions)', () => {
  beforeAll(async () => {
    cloud = await startLedCloud('txn');
  }, 120_000);

  afterAll(async () => {
    await cloud?.stop();
  });

  it('commits a two-shard transaction atomically, one log entry per shard with a shared id, and answers each op', async () => {
    // Prepare: keys on two shards.
    const a = keyInShard(1, shardCount, 'txn-a');
    const b = keyInShard(2, shardCount, 'txn-b');
    const c = keyInShard(3, shardCount, 'txn-c');
    await call('PUT', `/kv/${encodeURIComponent(c)}`, 'see');

    // Act
    const answer = await call('POST', '/txn', {
      compare: [{ key: a, absent: true }, { key: b, version: 0 }],
      success: [
        { op: 'put', key: a, value: 'alpha' },
        { op: 'put', key: b, valueBase64: Buffer.from([0, 1, 255]).toString('base64') },
        { op: 'get', key: c },
      ],
      failure: [{ op: 'get', key: a }],
    });

    // Assess: both parts committed, each in its shard's log, naming both parts.
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    const results = answer.body.results as { op: string; key: string; version?: number; value?: string; found?: boolean }[];
    expect(answer.body.succeeded).toBe(true);
    expect(results.map((result) => result.op)).toEqual(['put', 'put', 'get']);
    expect(results[2]).toMatchObject({ key: c, found: true, value: 'see' });
    expect(answer.headers.get('x-epochkv-session')).toBe(answer.body.token);
    const watchA = (await call('GET', `/watch?shard=1&from=${results[0]!.version}&waitMs=0&limit=1`)).body as { entries: { txn?: { id: string; parts: { shard: number; index: number }[] } }[] };
    const watchB = (await call('GET', `/watch?shard=2&from=${results[1]!.version}&waitMs=0&limit=1`)).body as typeof watchA;
    expect(watchA.entries[0]?.txn?.id).toBeDefined();
    expect(watchA.entries[0]?.txn).toEqual(watchB.entries[0]?.txn);
    expect(watchA.entries[0]?.txn?.parts).toEqual([
      { shard: 1, index: results[0]!.version },
      { shard: 2, index: results[1]!.version },
    ]);
    const readB = await call('GET', `/kv/${encodeURIComponent(b)}`);
    expect(readB.body).toMatchObject({ encoding: 'base64', value: 'AAH/', version: results[1]!.version });
    // A single-key CAS on the same key serializes after it.
    expect((await call('PUT', `/kv/${encodeURIComponent(a)}`, 'beta', { 'if-match': `"${results[0]!.version}"` })).status).toBe(200);
  });

  it('runs the failure branch when a compare fails, writing nothing, and reads a snapshot', async () => {
    // Prepare
    const key = keyInShard(4, shardCount, 'txn-fail');
    const written = await call('PUT', `/kv/${encodeURIComponent(key)}`, 'v1');
    const before = await heads();

    // Act
    const answer = await call('POST', '/txn', { compare: [{ key, version: (written.body.version as number) + 100 }], success: [{ op: 'delete', key }], failure: [{ op: 'get', key }, { op: 'get', key: 'txn-missing' }] });

    // Assess
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ succeeded: false, results: [{ op: 'get', key, found: true, value: 'v1', version: written.body.version }, { op: 'get', key: 'txn-missing', found: false }] });
    expect(await heads()).toEqual(before);
  });

  it('refuses bad transactions with a 400 that says what to fix, and changes nothing', async () => {
    // Prepare
    const before = await heads();
    const many = (count: number) => Array.from({ length: count }, (_, n) => ({ key: `txn-k${n}`, absent: true }));

    // Act
    const answers = {
      notJson: await call('POST', '/txn', '{"compare": ['),
      twice: await call('POST', '/txn', { success: [{ op: 'put', key: 'x', value: '1' }, { op: 'delete', key: 'x' }] }),
      badOp: await call('POST', '/txn', { success: [{ op: 'increment', key: 'x' }] }),
      badCompare: await call('POST', '/txn', { compare: [{ key: 'x', version: 1, absent: true }] }),
      badBase64: await call('POST', '/txn', { success: [{ op: 'put', key: 'x', valueBase64: 'not base64!' }] }),
      tooManyCompares: await call('POST', '/txn', { compare: many(limits.txnComparesMax + 1) }),
      tooManyKeys: await call('POST', '/txn', { compare: many(60), success: Array.from({ length: 60 }, (_, n) => ({ op: 'put', key: `txn-w${n}`, value: 'v' })) }),
      // 94 keys fit one snapshot; their writes over all 8 shards take 16 more items than 94.
      tooManyItems: await call('POST', '/txn', { compare: many(64), success: Array.from({ length: 30 }, (_, n) => ({ op: 'put', key: `txn-w${n}`, value: 'v' })) }),
      get: await call('GET', '/txn'),
    };

    // Assess
    expect(answers.notJson).toMatchObject({ status: 400, body: { error: 'BadRequest', message: expect.stringContaining('JSON') } });
    expect(answers.twice).toMatchObject({ status: 400, body: { message: expect.stringContaining('twice') } });
    expect(answers.badOp).toMatchObject({ status: 400, body: { message: expect.stringContaining('"put", "delete" or "get"') } });
    expect(answers.badCompare).toMatchObject({ status: 400, body: { message: expect.stringContaining('exactly one of') } });
    expect(answers.badBase64).toMatchObject({ status: 400, body: { message: expect.stringContaining('base64') } });
    expect(answers.tooManyCompares).toMatchObject({ status: 400, body: { error: 'TxnTooLarge', message: `the transaction has 65 compares; the limit is 64` } });
    expect(answers.tooManyKeys).toMatchObject({ status: 400, body: { error: 'TxnTooLarge', message: 'the transaction names 120 distinct keys; the limit is 100 (one snapshot read)' } });
    expect(answers.tooManyItems).toMatchObject({ status: 400, body: { error: 'TxnTooLarge', message: expect.stringMatching(/success would commit \d+ items .* the limit is 100/) } });
    expect(answers.get.status).toBe(405);
    expect(await heads()).toEqual(before);
  });

  it('keeps the sum of accounts on four shards under concurrent compare-and-transfer transactions, seen whole by read-only transactions', async () => {
    // Prepare: four accounts of 100 on four shards.
    const accounts = [0, 2, 5, 7].map((shard) => keyInShard(shard, shardCount, 'acct'));
    expect(new Set(accounts.map((key) => shardOf(key, shardCount))).size).toBe(4);
    for (const account of accounts) expect((await call('PUT', `/kv/${encodeURIComponent(account)}`, '100')).status).toBe(200);
    const snapshot = async () => {
      const answer = await call('POST', '/txn', { success: accounts.map((key) => ({ op: 'get', key })) });
      const results = answer.body.results as { value: string; version: number }[];
      return { total: results.reduce((sum, result) => sum + Number(result.value), 0), results };
    };

    // Act: 6 clients × 5 transfers of 1..10 between random accounts, by compare on both versions.
    const sums: number[] = [];
    let transferred = 0;
    const transfer = async (seed: number) => {
      for (let round = 0; round < 5; round += 1) {
        const from = accounts[(seed + round) % 4]!;
        const to = accounts[(seed + round + 1 + (round % 3)) % 4]!;
        const { results } = await snapshot();
        const [fromState, toState] = [results[accounts.indexOf(from)]!, results[accounts.indexOf(to)]!];
        const amount = 1 + ((seed * 7 + round) % 10);
        const answer = await call('POST', '/txn', {
          compare: [{ key: from, version: fromState.version }, { key: to, version: toState.version }],
          success: [{ op: 'put', key: from, value: String(Number(fromState.value) - amount) }, { op: 'put', key: to, value: String(Number(toState.value) + amount) }],
        });
        // A 503 lost race is an answer too: nothing was applied.
        expect([200, 503]).toContain(answer.status);
        if (answer.body.succeeded === true) transferred += 1;
        sums.push((await snapshot()).total);
      }
    };
    await Promise.all([1, 2, 3, 4, 5, 6].map(transfer));

    // Assess: every read-only transaction saw the whole total; some transfers went through.
    expect(new Set(sums)).toEqual(new Set([400]));
    expect((await snapshot()).total).toBe(400);
    expect(transferred).toBeGreaterThan(0);
  }, 120_000);

  it('shows a replica session read a transaction whole: the token waits for every part', async () => {
    // Prepare
    const a = keyInShard(3, shardCount, 'session-a');
    const b = keyInShard(6, shardCount, 'session-b');

    // Act: a transaction at home, then session reads at a replica with its token.
    const answer = await call('POST', '/txn', { success: [{ op: 'put', key: a, value: 'A1' }, { op: 'put', key: b, value: 'B1' }] });
    const token = answer.body.token as string;
    const replica = cloud.regions.find((region) => region.role === 'replica')?.apiUrl ?? '';
    expect(replica).not.toBe('');
    const readA = await call('GET', `/kv/${encodeURIComponent(a)}`, undefined, { 'x-epochkv-session': token }, replica);
    const readB = await call('GET', `/kv/${encodeURIComponent(b)}`, undefined, { 'x-epochkv-session': readA.headers.get('x-epochkv-session') ?? token }, replica);

    // Assess
    expect(readA.body).toMatchObject({ value: 'A1' });
    expect(readB.body).toMatchObject({ value: 'B1' });
  });

  it('watches a prefix across shards with a cursor that resumes exactly where it stopped, deletes included', async () => {
    // Prepare: a cursor at the head of every shard.
    const start = await call('GET', '/watch?prefix=app/&from=now&waitMs=0');
    expect(start.status).toBe(200);
    const a = keyInShard(1, shardCount, 'app/');
    const b = keyInShard(6, shardCount, 'app/');

    // Act: writes on two shards, one outside the prefix, a binary value, and a transaction's delete.
    await call('PUT', `/kv/${encodeURIComponent(a)}`, 'a1');
    await call('PUT', `/kv/${encodeURIComponent('other/c')}`, 'c1');
    await fetch(`${cloud.apiUrl}/kv/${encodeURIComponent(b)}`, { method: 'PUT', body: new Uint8Array([0xff, 0x00]) });
    await call('POST', '/txn', { success: [{ op: 'delete', key: a }, { op: 'put', key: b, value: 'b2' }] });
    const events: { key: string; type: string; version: number; value?: string; valueBase64?: string }[] = [];
    let cursor = start.body.next as string;
    await waitUntil('the four events', async () => {
      const page = await call('GET', `/watch?prefix=app/&from=${encodeURIComponent(cursor)}&waitMs=500`);
      expect(page.status).toBe(200);
      events.push(...(page.body.events as typeof events));
      cursor = page.body.next as string;
      return events.length >= 4 ? true : undefined;
    }, 30_000);
    const after = await call('GET', `/watch?prefix=app/&from=${encodeURIComponent(cursor)}&waitMs=0`);

    // Assess: each key's events in order, nothing outside the prefix, nothing twice.
    expect(events.filter((event) => event.key === a).map((event) => event.type)).toEqual(['put', 'delete']);
    expect(events.filter((event) => event.key === b).map((event) => [event.type, event.value ?? event.valueBase64])).toEqual([
      ['put', '/wA='],
      ['put', 'b2'],
    ]);
    expect(events.some((event) => !event.key.startsWith('app/'))).toBe(false);
    expect(after.body.events).toEqual([]);
    expect((await call('GET', '/watch?prefix=app/&from=w1.bogus')).status).toBe(400);
  });
});
