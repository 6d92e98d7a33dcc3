import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCloud } from '../../lib/local/cloud.ts';
import { startLedCloud, waitUntil } from '../support.ts';

let cloud: LocalCloud;

async function call(method: string, path: string, body: string | undefined, headers: Record<string, string> = {}) {
  const response = await fetch(`${cloud.apiUrl}${path}`, { method, headers: { accept: 'application/json', ...headers }, ...(body === undefined ? {} : { body }) });
  return { status: response.status, replayed: response.headers.get('idempotent-replayed'), text: await response.text() };
}

async function heads(): Promise<number[]> {
  const cluster = JSON.parse((await call('GET', '/cluster', undefined)).text) as { shards: { headIndex: number }[] };
  return cluster.shards.map((shard) => shard.headIndex);
}

describe('Idempotency-Key on writes, over HTTP (Lambda model)', () => {
  beforeAll(async () => {
    cloud = await startLedCloud('idem', { replicaRegions: [] });
  }, 120_000);

  afterAll(async () => {
    await cloud?.stop();
  });

  it('answers a repeated PUT with its first answer and writes once; the same key on another request is a 422', async () => {
    // Act
    const first = await call('PUT', '/kv/idem-a', 'one', { 'idempotency-key': 'put-1' });
    const before = await heads();
    const again = await call('PUT', '/kv/idem-a', 'one', { 'idempotency-key': 'put-1' });
    const other = await call('PUT', '/kv/idem-a', 'two', { 'idempotency-key': 'put-1' });
    const after = await heads();
    const read = await call('GET', '/kv/idem-a', undefined);

    // Assess
    expect(first.status).toBe(200);
    expect(first.replayed).toBeNull();
    expect(again).toMatchObject({ status: 200, replayed: 'true', text: first.text });
    expect(other.status).toBe(422);
    expect(JSON.parse(other.text)).toMatchObject({ error: 'IdempotencyKeyReused', message: expect.stringContaining('put-1') });
    expect(after).toEqual(before);
    expect(JSON.parse(read.text)).toMatchObject({ value: 'one', version: JSON.parse(first.text).version });
  });

  it('commits once when the same request races itself, and every copy gets the one answer', async () => {
    // Act: eight copies of one transaction with one key, at once.
    const before = await heads();
    const body = JSON.stringify({ compare: [{ key: 'idem-race', absent: true }], success: [{ op: 'put', key: 'idem-race', value: 'first' }], failure: [{ op: 'get', key: 'idem-race' }] });
    const answers = await Promise.all(Array.from({ length: 8 }, () => call('POST', '/txn', body, { 'idempotency-key': 'txn-race-1' })));
    const after = await heads();

    // Assess: one commit (one entry in one shard), the same answer eight times.
    const ok = answers.filter((answer) => answer.status === 200);
    expect(ok.length, JSON.stringify(answers.map((answer) => answer.text))).toBe(8);
    expect(new Set(ok.map((answer) => answer.text)).size).toBe(1);
    expect(JSON.parse(ok[0]!.text)).toMatchObject({ succeeded: true });
    expect(after.reduce((a, b) => a + b, 0) - before.reduce((a, b) => a + b, 0)).toBe(1);
  });

  it('replays a refused compare-and-swap as refused, and a lease grant as the same lease', async () => {
    // Act
    await call('PUT', '/kv/idem-cas', 'v', {});
    const refused = await call('PUT', '/kv/idem-cas', 'w', { 'if-match': '"999999"', 'idempotency-key': 'cas-1' });
    const refusedAgain = await call('PUT', '/kv/idem-cas', 'w', { 'if-match': '"999999"', 'idempotency-key': 'cas-1' });
    const lease = await call('POST', '/leases', JSON.stringify({ ttlMs: 60_000 }), { 'idempotency-key': 'lease-1' });
    const leaseAgain = await call('POST', '/leases', JSON.stringify({ ttlMs: 60_000 }), { 'idempotency-key': 'lease-1' });
    const badKey = await call('PUT', '/kv/idem-x', 'v', { 'idempotency-key': 'x'.repeat(129) });

    // Assess
    expect(refused.status).toBe(412);
    expect(refusedAgain).toMatchObject({ status: 412, replayed: 'true', text: refused.text });
    expect(lease.status).toBe(201);
    expect(leaseAgain).toMatchObject({ status: 201, replayed: 'true', text: lease.text });
    expect(badKey.status).toBe(400);
    expect((await call('GET', '/kv/idem-x', undefined)).status).toBe(404);
  });
});
