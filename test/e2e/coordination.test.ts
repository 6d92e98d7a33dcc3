import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCloud } from '../../lib/local/cloud.ts';
import { startLedCloud, waitUntil } from '../support.ts';

let cloud: LocalCloud;

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** Codes of a 503 that say nothing was applied: a client retries them, as the typed client does. */
const nothingApplied = new Set(['NoLeader', 'Busy', 'TransactionConflict', 'HeadConflict', 'StaleEpoch']);

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  for (let attempt = 0; ; attempt += 1) {
    const response = await fetch(`${cloud.apiUrl}${path}`, { method, headers: { accept: 'application/json', ...headers }, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) });
    const text = await response.text();
    const answer = { status: response.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
    if (answer.status !== 503 || !nothingApplied.has(String(answer.body.error)) || attempt >= 5) return answer;
    console.log(`coordination test: ${method} ${path} answered 503 ${String(answer.body.error)}; retrying as a client would`);
    await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)));
  }
}

const kv = (key: string) => `/kv/${encodeURIComponent(key)}`;

describe('Leases, TTL keys, locks with fencing tokens and elections, over HTTP (Lambda model)', () => {
  beforeAll(async () => {
    cloud = await startLedCloud('coord', { replicaRegions: [] });
  }, 120_000);

  afterAll(async () => {
    await cloud?.stop();
  });

  it('grants a lease, keeps it alive, attaches keys, shows them, and deletes them when revoked', async () => {
    // Act
    const granted = await call('POST', '/leases', { ttlMs: 60_000 });
    const id = granted.body.id as string;
    const kept = await call('POST', `/leases/${id}/keepalive`);
    const put = await call('PUT', `${kv('session/alice')}?lease=${id}`, 'online');
    const shown = await call('GET', `/leases/${id}`);
    const revoked = await call('DELETE', `/leases/${id}`);
    const keptAfter = await call('POST', `/leases/${id}/keepalive`);

    // Assess
    expect(granted).toMatchObject({ status: 201, body: { id: expect.any(String), ttlMs: 60_000 } });
    expect(kept).toMatchObject({ status: 200, body: { id, ttlMs: 60_000 } });
    expect(put.status).toBe(200);
    expect(shown).toMatchObject({ status: 200, body: { id, ttlMs: 60_000, keys: ['session/alice'], remainingMs: expect.any(Number) } });
    expect(shown.body.remainingMs as number).toBeLessThanOrEqual(60_000);
    expect(revoked).toMatchObject({ status: 200, body: { id, revoked: true, keysDeleted: 1 } });
    expect((await call('GET', kv('session/alice'))).status).toBe(404);
    expect(keptAfter).toMatchObject({ status: 404, body: { error: 'LeaseNotFound' } });
    expect((await call('PUT', `${kv('session/bob')}?lease=${id}`, 'x')).status).toBe(404);
  });

  it('expires a key with its own ttl through the log: there at half its ttl, deleted within ttl + leaseMs + 2 ticks, and watchers see the delete', async () => {
    // Prepare: the local cloud's lease is 2000 ms and its tick 250 ms.
    const ttlMs = 2_000;
    const key = '{ttl}/temp';
    const put = await call('PUT', `${kv(key)}?ttlMs=${ttlMs}`, 'short-lived');
    const writtenAtMs = Date.now();
    expect(put.status).toBe(200);

    // Act
    await waitUntil('half the ttl', async () => (Date.now() - writtenAtMs >= ttlMs / 2 ? true : undefined), ttlMs);
    const atHalf = await call('GET', kv(key));
    await waitUntil('the key expired', async () => ((await call('GET', kv(key))).status === 404 ? true : undefined), 20_000, 50);
    const goneAfterMs = Date.now() - writtenAtMs;
    const shard = put.body.index === undefined ? 0 : ((await call('GET', `/watch?prefix=%7Bttl%7D/&from=${put.body.index as number}&waitMs=0`)).body as { entries: { ops: { type: string; key?: string }[] }[] });

    // Assess
    expect(atHalf.status).toBe(200);
    // ttl + leaseMs + 2 ticks, with room for this loaded machine's scheduling.
    expect(goneAfterMs).toBeGreaterThanOrEqual(ttlMs);
    expect(goneAfterMs).toBeLessThan(ttlMs + 2_000 + 2 * 250 + 3_000);
    const ops = (shard as { entries: { ops: { type: string; key?: string }[] }[] }).entries.flatMap((entry) => entry.ops);
    expect(ops).toContainEqual({ type: 'delete', key });
  }, 60_000);

  it('gives a lock to one holder at a time with a growing token that fences writes: a stale token writes nothing', async () => {
    // Act: A takes the lock and writes with its fence; B cannot take it; A releases; B takes it.
    const a = await call('POST', '/locks/cron', { ttlMs: 30_000 });
    const tokenA = a.body.token as number;
    const fencedA = await call('PUT', kv('report'), 'by A', { 'x-epochkv-fence': `cron:${tokenA}` });
    const b = await call('POST', '/locks/cron', { ttlMs: 30_000 });
    const shown = await call('GET', '/locks/cron');
    const wrongRelease = await call('DELETE', `/locks/cron?token=${tokenA + 1}`);
    const released = await call('DELETE', `/locks/cron?token=${tokenA}`);
    const b2 = await call('POST', '/locks/cron?waitMs=2000', { ttlMs: 30_000 });
    const tokenB = b2.body.token as number;
    const staleA = await call('PUT', kv('report'), 'late A', { 'x-epochkv-fence': `cron:${tokenA}` });
    const staleTxn = await call('POST', '/txn', { success: [{ op: 'put', key: 'report', value: 'late A' }] }, { 'x-epochkv-fence': `cron:${tokenA}` });
    const staleDelete = await call('DELETE', kv('report'), undefined, { 'x-epochkv-fence': `cron:${tokenA}` });
    const fencedB = await call('PUT', kv('report'), 'by B', { 'x-epochkv-fence': `cron:${tokenB}` });

    // Assess
    expect(a).toMatchObject({ status: 200, body: { name: 'cron', token: expect.any(Number), leaseId: expect.any(String), fence: `cron:${tokenA}` } });
    expect(fencedA.status).toBe(200);
    expect(b).toMatchObject({ status: 409, body: { error: 'LockHeld', token: tokenA } });
    expect(shown).toMatchObject({ status: 200, body: { name: 'cron', held: true, token: tokenA } });
    expect(wrongRelease).toMatchObject({ status: 409, body: { error: 'FenceRejected', token: tokenA } });
    expect(released).toMatchObject({ status: 200, body: { name: 'cron', released: true } });
    expect(b2.status).toBe(200);
    expect(tokenB).toBeGreaterThan(tokenA);
    for (const stale of [staleA, staleTxn, staleDelete]) expect(stale).toMatchObject({ status: 409, body: { error: 'FenceRejected', token: tokenB } });
    expect(fencedB.status).toBe(200);
    const report = await call('GET', kv('report'));
    expect(report.body).toMatchObject({ value: 'by B' });
    expect((await call('PUT', kv('report'), 'x', { 'x-epochkv-fence': 'cron' })).status).toBe(400);
  });

  it('releases a lock when its lease expires, and the next holder gets a higher token', async () => {
    // Act
    const first = await call('POST', '/locks/short', { ttlMs: 1_000 });
    await waitUntil('the lock released by expiry', async () => ((await call('GET', '/locks/short')).body.held === false ? true : undefined), 20_000, 100);
    const second = await call('POST', '/locks/short', { ttlMs: 30_000 });

    // Assess
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(second.body.token as number).toBeGreaterThan(first.body.token as number);
  }, 60_000);

  it('elects one leader per election, proclaims its value, and hands over on resign', async () => {
    // Act
    const a = await call('POST', '/elections/primary/campaign', { ttlMs: 30_000, value: 'node-a' });
    const b = await call('POST', '/elections/primary/campaign', { ttlMs: 30_000, value: 'node-b' });
    const leader = await call('GET', '/elections/primary');
    const proclaimed = await call('POST', '/elections/primary/proclaim', { token: a.body.token, value: 'node-a v2' });
    const staleProclaim = await call('POST', '/elections/primary/proclaim', { token: (a.body.token as number) + 1, value: 'forged' });
    const afterProclaim = await call('GET', '/elections/primary');
    const resigned = await call('DELETE', `/elections/primary?token=${a.body.token as number}`);
    const none = await call('GET', '/elections/primary');
    const b2 = await call('POST', '/elections/primary/campaign', { ttlMs: 30_000, value: 'node-b' });

    // Assess
    expect(a).toMatchObject({ status: 200, body: { name: 'primary', token: expect.any(Number), value: 'node-a' } });
    expect(b).toMatchObject({ status: 409, body: { error: 'LockHeld', token: a.body.token } });
    expect(leader).toMatchObject({ status: 200, body: { name: 'primary', token: a.body.token, value: 'node-a' } });
    expect(proclaimed.status).toBe(200);
    expect(staleProclaim).toMatchObject({ status: 409, body: { error: 'FenceRejected' } });
    expect(afterProclaim.body).toMatchObject({ token: a.body.token, value: 'node-a v2' });
    expect(resigned.status).toBe(200);
    expect(none.status).toBe(404);
    expect(b2.body.token as number).toBeGreaterThan(a.body.token as number);
  });

  it('refuses bad input with a 4xx that says what to fix, and user writes to the reserved keys', async () => {
    const answers = [
      await call('POST', '/leases', { ttlMs: 10 }),
      await call('POST', '/leases', '{not json'),
      await call('POST', '/locks/bad name', { ttlMs: 5_000 }),
      await call('POST', '/locks/x', {}),
      await call('POST', '/locks/x?waitMs=99999', { ttlMs: 5_000 }),
      await call('DELETE', '/locks/x'),
      await call('PUT', kv('__epochkv/lock/x'), 'forged'),
      await call('POST', '/txn', { success: [{ op: 'delete', key: '__epochkv/lock/x' }] }),
      await call('PUT', `${kv('k')}?lease=not-a-lease!`, 'v'),
    ];
    for (const answer of answers) expect({ status: answer.status, error: answer.body.error }).toMatchObject({ status: expect.any(Number), error: expect.any(String) });
    expect(answers.map((answer) => answer.status)).toEqual([400, 400, 400, 400, 400, 400, 400, 400, 400]);
    expect(answers[0]?.body.message).toContain('ttlMs must be an integer from 1000 to 86400000');
    expect(answers[6]?.body.message).toContain('reserved');
    expect((await call('GET', '/locks/x')).body).toMatchObject({ held: false });
  });
});
