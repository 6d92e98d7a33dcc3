import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EpochKv, FenceRejectedError, LeaseNotFoundError, LockHeldError, OutcomeUnknownError, type ElectionLeader } from '../../lib/client/index.ts';
import type { LocalCloud } from '../../lib/local/cloud.ts';
import { startLedCloud, waitUntil } from '../support.ts';

const root = path.resolve(import.meta.dirname, '..', '..');
const cliPath = path.join(root, 'bin', 'epochkv.js');
// Each CLI run is a Node process compiling TypeScript: seconds apiece on a busy machine.
const cliTestTimeoutMs = 180_000;
// The local cloud's shard lease and tick: a lease's keys go within ttl + leaseMs + 2 ticks.
const leaseMs = 2_000;
const tickMs = 250;
// Room for this shared 2-core machine's scheduling on top of the bound above.
const slackMs = 4_000;
let cloud: LocalCloud;
let scratch: string;

function client(options: ConstructorParameters<typeof EpochKv>[0] = {}): EpochKv {
  return new EpochKv({ endpoint: cloud.apiUrl, attemptsMax: 10, ...options });
}

/** Runs `epochkv` as a user would: a child process, its stdout, stderr and exit code. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, EPOCHKV_ENDPOINT: cloud.apiUrl, EPOCHKV_CLI: cliPath, EPOCHKV_NODE: process.execPath };
    delete env.EPOCHKV_TOKEN;
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: scratch, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end();
  });
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

interface Forwarded {
  method: string;
  idempotencyKey: string | undefined;
  status: number;
  replayed: string | undefined;
  body: string;
}

/**
 * A gateway in front of the local cloud's API that forwards every request, but loses the answer
 * of the first write of each method in `lose`: it cuts the connection (`drop`) or answers 502 as
 * API Gateway does when its function crashed after committing. Records what the API answered.
 */
async function lossyGateway(lose: Record<string, 'drop' | 502>): Promise<{ endpoint: string; forwarded: Forwarded[]; close(): Promise<void> }> {
  const forwarded: Forwarded[] = [];
  const lost = new Set<string>();
  const target = new URL(cloud.apiUrl);
  const server = createServer((incoming, outgoing) => {
    const chunks: Buffer[] = [];
    incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
    incoming.on('end', () => {
      const upstream = httpRequest({ host: target.hostname, port: target.port, method: incoming.method, path: incoming.url, headers: incoming.headers }, (answer: IncomingMessage) => {
        const body: Buffer[] = [];
        answer.on('data', (chunk: Buffer) => body.push(chunk));
        answer.on('end', () => {
          const method = incoming.method ?? '';
          const text = Buffer.concat(body).toString('utf8');
          forwarded.push({ method, idempotencyKey: incoming.headers['idempotency-key'] as string | undefined, status: answer.statusCode ?? 0, replayed: answer.headers['idempotent-replayed'] as string | undefined, body: text });
          const loss = lose[method];
          if (loss !== undefined && !lost.has(method)) {
            lost.add(method);
            if (loss === 'drop') return outgoing.socket?.destroy();
            outgoing.writeHead(502, { 'content-type': 'application/json' });
            return outgoing.end(JSON.stringify({ message: 'Internal server error' }));
          }
          outgoing.writeHead(answer.statusCode ?? 500, answer.headers);
          outgoing.end(Buffer.concat(body));
        });
      });
      upstream.on('error', () => outgoing.socket?.destroy());
      upstream.end(Buffer.concat(chunks));
    });
  });
  const endpoint = await listen(server);
  return {
    endpoint,
    forwarded,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** An API that answers each request with the next of `answers` (the last one repeats), recording each request's Idempotency-Key. */
async function scriptedApi(answers: { status: number; body: unknown; headers?: Record<string, string> }[]): Promise<{ endpoint: string; keys: (string | undefined)[]; close(): Promise<void> }> {
  const keys: (string | undefined)[] = [];
  const server = createServer((request, response) => {
    const answer = answers[Math.min(keys.length, answers.length - 1)]!;
    keys.push(request.headers['idempotency-key'] as string | undefined);
    request.resume();
    response.writeHead(answer.status, { 'content-type': 'application/json', 'retry-after': '0', ...answer.headers });
    response.end(JSON.stringify(answer.body));
  });
  const endpoint = await listen(server);
  return {
    endpoint,
    keys,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('Class: EpochKv, leases, locks, elections and idempotent writes, against the local cloud', () => {
  beforeAll(async () => {
    scratch = mkdtempSync(path.join(os.tmpdir(), 'epochkv-coord-client-'));
    cloud = await startLedCloud('coordclient', { replicaRegions: [] });
  }, 120_000);

  afterAll(async () => {
    await cloud?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('gives a lock to one client at a time: its fence writes, a second client is refused or waits, and after release the old fence writes nothing', async () => {
    // Prepare
    const first = client();
    const second = client();

    // Act
    const lock = await first.lock('report', { ttlMs: 5_000 });
    const refused = await second.lock('report', { ttlMs: 5_000 }).catch((error: unknown) => error);
    const fenced = await first.put('report/out', 'by first', { fence: lock });
    const waiting = second.lock('report', { ttlMs: 5_000, waitMs: 15_000 });
    await lock.release();
    const next = await waiting;
    const stale = await first.put('report/out', 'late first', { fence: lock }).catch((error: unknown) => error);
    const staleDelete = await first.delete('report/out', { fence: lock.fence }).catch((error: unknown) => error);
    const nextWrite = await second.put('report/out', 'by second', { fence: next });
    const firstLease = await first.leaseInfo(lock.leaseId).catch((error: unknown) => error);
    await next.release();

    // Assess
    expect(lock).toMatchObject({ name: 'report', token: expect.any(Number), leaseId: expect.any(String), fence: `report:${lock.token}` });
    expect(refused).toBeInstanceOf(LockHeldError);
    expect((refused as LockHeldError).token).toBe(lock.token);
    expect(fenced.version).toBeGreaterThan(0);
    expect(next.token).toBeGreaterThan(lock.token);
    expect(stale).toBeInstanceOf(FenceRejectedError);
    expect((stale as FenceRejectedError).token).toBe(next.token);
    expect(staleDelete).toBeInstanceOf(FenceRejectedError);
    expect(nextWrite.version).toBeGreaterThan(fenced.version);
    expect((await first.get('report/out'))?.text()).toBe('by second');
    // The lock's own lease went with the release: nothing of the first holder is left to expire.
    expect(firstLease).toBeInstanceOf(LeaseNotFoundError);
    expect(await first.lockHolder('report')).toMatchObject({ held: false });
  });

  it('keeps a leased key alive past its ttl while the handle keeps the lease alive; after close() the key expires', async () => {
    // Prepare
    const kv = client();
    const ttlMs = 1_500;
    const lease = await kv.grantLease(ttlMs);
    await kv.put('session/alive', 'here', { lease });
    const grantedAtMs = Date.now();

    // Act: three ttls, the key read all along.
    let missingSeen = false;
    await waitUntil(
      'three ttls with the lease kept alive',
      async () => {
        if ((await kv.get('session/alive')) === undefined) missingSeen = true;
        return Date.now() - grantedAtMs >= 3 * ttlMs ? true : undefined;
      },
      3 * ttlMs + slackMs,
      100,
    );
    const shown = await lease.show();
    lease.close();
    const closedAtMs = Date.now();
    await waitUntil('the key deleted once the lease expired', async () => ((await kv.get('session/alive')) === undefined ? true : undefined), ttlMs + leaseMs + 2 * tickMs + slackMs, 50);
    const goneAfterMs = Date.now() - closedAtMs;

    // Assess
    expect(missingSeen).toBe(false);
    expect(shown).toMatchObject({ id: lease.id, ttlMs, keys: ['session/alive'] });
    // Not before a ttl since the last keepalive, which was at most ttl/3 before close().
    expect(goneAfterMs).toBeGreaterThanOrEqual(ttlMs - ttlMs / 3);
    expect(await kv.keepLeaseAlive(lease.id).catch((error: unknown) => error)).toBeInstanceOf(LeaseNotFoundError);
  }, 60_000);

  it('reports a lease revoked elsewhere as lost: onLost is called and lost resolves, and the keepalives stop', async () => {
    // Prepare
    const kv = client();
    const seen: Error[] = [];
    const lease = await kv.grantLease(3_000, { onLost: (error) => seen.push(error) });

    // Act
    await client().revokeLease(lease.id);
    const lost = await waitUntil('the lease reported lost', () => lease.lostError, 3_000 + slackMs);

    // Assess
    expect(lost).toBeInstanceOf(LeaseNotFoundError);
    expect(seen).toEqual([lost]);
    expect(lease.closed).toBe(true);
  }, 30_000);

  it('elects one leader: campaign, leader, proclaim, a second candidate waits, resign hands over, and an observer sees each change', async () => {
    // Prepare
    const a = client().election('primary');
    const b = client().election('primary');
    const stop = new AbortController();
    const observed: (ElectionLeader | undefined)[] = [];
    const observing = (async () => {
      for await (const leader of client().election('primary').observe({ signal: stop.signal, waitMs: 1_000 })) observed.push(leader);
    })().catch((error: unknown) => {
      if (!stop.signal.aborted) throw error;
    });
    await waitUntil('the observer to see no leader yet', () => (observed.length > 0 ? true : undefined), 10_000);

    // Act
    const won = await a.campaign('node-a', { ttlMs: 5_000 });
    const wonValue = won.value;
    const refused = await b.campaign('node-b', { ttlMs: 5_000 }).catch((error: unknown) => error);
    const leader = await b.leader();
    await a.proclaim('node-a v2');
    const proclaimed = await b.leader();
    const waiting = b.campaign('node-b', { ttlMs: 5_000, waitMs: 15_000 });
    await a.resign();
    const next = await waiting;
    await waitUntil('the observer to see node-b lead', () => (observed.at(-1)?.value === 'node-b' ? true : undefined), 15_000);
    await b.resign();
    await waitUntil('the observer to see no leader', () => (observed.length > 0 && observed.at(-1) === undefined && observed.some((one) => one?.value === 'node-b') ? true : undefined), 15_000);
    stop.abort();
    await observing;

    // Assess
    expect(won).toMatchObject({ name: 'primary', token: expect.any(Number) });
    expect(wonValue).toBe('node-a');
    // The handle follows its own proclaims.
    expect(won.value).toBe('node-a v2');
    expect(refused).toBeInstanceOf(LockHeldError);
    expect(leader).toMatchObject({ name: 'primary', token: won.token, value: 'node-a' });
    expect(proclaimed).toMatchObject({ token: won.token, value: 'node-a v2' });
    expect(next.token).toBeGreaterThan(won.token);
    expect(await b.leader()).toBeUndefined();
    // Each change in order (a change that came and went between two reads may be skipped).
    const values = observed.map((one) => one?.value ?? null);
    expect(values[0]).toBeNull();
    expect(values.indexOf('node-b')).toBeGreaterThan(values.indexOf('node-a v2'));
    expect(values.at(-1)).toBeNull();
  }, 60_000);

  it('repeats a write whose answer was lost with the same Idempotency-Key, and it is written once', async () => {
    // Prepare: the first PUT's connection is cut after the API answered; the first POST /txn's answer becomes a 502.
    const gateway = await lossyGateway({ PUT: 'drop', POST: 502 });
    const kv = new EpochKv({ endpoint: gateway.endpoint });

    try {
      // Act
      const put = await kv.put('idem/once', 'one');
      const txn = await kv.txn({ compare: [{ key: 'idem/txn', absent: true }], success: [{ op: 'put', key: 'idem/txn', value: 'once' }], failure: [{ op: 'get', key: 'idem/txn' }] });
      const stored = await kv.get('idem/once');
      const puts = gateway.forwarded.filter((one) => one.method === 'PUT');
      const posts = gateway.forwarded.filter((one) => one.method === 'POST');

      // Assess: two sends, one key, the second the first's answer replayed.
      expect(puts).toHaveLength(2);
      expect(puts[0]!.idempotencyKey).toMatch(/^[0-9a-f-]{36}$/);
      expect(puts[1]!.idempotencyKey).toBe(puts[0]!.idempotencyKey);
      expect(puts[1]).toMatchObject({ status: 200, replayed: 'true', body: puts[0]!.body });
      expect(put.version).toBe((JSON.parse(puts[0]!.body) as { version: number }).version);
      expect(stored?.version).toBe(put.version);
      expect(posts).toHaveLength(2);
      expect(posts[1]!.idempotencyKey).toBe(posts[0]!.idempotencyKey);
      expect(posts[1]).toMatchObject({ status: 200, replayed: 'true' });
      // Succeeded, not the failure branch a second commit would have run.
      expect(txn.succeeded).toBe(true);
    } finally {
      await gateway.close();
    }
  });

  it('without an Idempotency-Key, a write whose answer was lost is an unknown outcome and is sent once', async () => {
    // Prepare
    const gateway = await lossyGateway({ PUT: 'drop' });
    const kv = new EpochKv({ endpoint: gateway.endpoint, idempotentWrites: false });

    try {
      // Act
      const put = await kv.put('idem/off', 'one').catch((error: unknown) => error);

      // Assess
      expect(put).toBeInstanceOf(OutcomeUnknownError);
      expect(gateway.forwarded.filter((one) => one.method === 'PUT')).toEqual([expect.objectContaining({ idempotencyKey: undefined, status: 200 })]);
    } finally {
      await gateway.close();
    }
  });

  it('`epochkv lock` runs the command with EPOCHKV_FENCE, whose fenced write lands, releases the lock after, and passes on the exit code', async () => {
    // Act
    const ran = await cli(['lock', 'cli-job', '--ttl-ms', '5000', '--', 'sh', '-c', 'echo "$EPOCHKV_FENCE"; "$EPOCHKV_NODE" "$EPOCHKV_CLI" put cli-job/out done --fence "$EPOCHKV_FENCE" >&2']);
    const holder = await client().lockHolder('cli-job');
    const failed = await cli(['lock', 'cli-job', '--', 'sh', '-c', 'exit 7']);
    const held = await client().lock('cli-job', { ttlMs: 10_000 });
    const refused = await cli(['lock', 'cli-job', '--wait-ms', '0', '--', 'sh', '-c', 'echo ran']);
    await held.release();

    // Assess
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stdout.trim()).toMatch(/^cli-job:\d+$/);
    expect(ran.stderr).toContain('released');
    expect((await client().get('cli-job/out'))?.text()).toBe('done');
    expect(holder).toMatchObject({ held: false });
    expect(failed.code).toBe(7);
    expect(refused.code).toBe(4);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toContain('held');
  }, cliTestTimeoutMs);

  it('`epochkv lease grant|show|revoke`: the id, its keys, and exit 3 once it has ended', async () => {
    // Act
    const granted = await cli(['lease', 'grant', '60000']);
    const id = granted.stdout.trim();
    await client().put('cli-lease/k', 'v', { lease: id });
    const shown = await cli(['lease', 'show', id, '--json']);
    const kept = await cli(['lease', 'keepalive', id, '--once']);
    const revoked = await cli(['lease', 'revoke', id]);
    const after = await cli(['lease', 'show', id]);
    const help = await cli(['lease', '--help']);

    // Assess
    expect(granted.code, granted.stderr).toBe(0);
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id, ttlMs: 60_000, keys: ['cli-lease/k'], remainingMs: expect.any(Number) });
    expect(kept.code).toBe(0);
    expect(revoked).toMatchObject({ code: 0, stdout: expect.stringContaining('1 key(s) deleted') });
    expect(await client().get('cli-lease/k')).toBeUndefined();
    expect(after.code).toBe(3);
    expect(help.stdout).toContain('keepalive <id>');
  }, cliTestTimeoutMs);
  it('`epochkv elect` leads until Ctrl-C, then resigns and exits 0', async () => {
    // Prepare
    const env: NodeJS.ProcessEnv = { ...process.env, EPOCHKV_ENDPOINT: cloud.apiUrl };
    delete env.EPOCHKV_TOKEN;
    const child = spawn(process.execPath, [cliPath, 'elect', 'cli-primary', 'node-cli', '--ttl-ms', '5000'], { cwd: scratch, env });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));

    // Act
    await waitUntil('the CLI to lead', () => (stdout.includes('leader of cli-primary') ? true : undefined), 60_000, 50);
    const leading = await client().leader('cli-primary');
    child.kill('SIGINT');
    const code = await exited;

    // Assess
    expect(leading).toMatchObject({ name: 'cli-primary', value: 'node-cli' });
    expect(code).toBe(0);
    expect(await client().leader('cli-primary')).toBeUndefined();
  }, cliTestTimeoutMs);
});

describe('Class: EpochKv, which unknown outcomes a write repeats under its Idempotency-Key', () => {
  it('repeats a 502 and an OutcomeUnknown with the same key; a replay after ReplicationUnmet stays an unknown outcome', async () => {
    // Prepare
    const committed = { key: 'k', version: 7, epoch: 1, index: 7, token: 't', replication: { mode: 'quorum', acceptedBy: [] } };
    const lostThenOk = await scriptedApi([
      { status: 502, body: { message: 'Internal server error' } },
      { status: 503, body: { error: 'OutcomeUnknown', message: 'the store timed out mid-commit' } },
      { status: 200, body: committed, headers: { 'idempotent-replayed': 'true' } },
    ]);
    const unmet = await scriptedApi([
      { status: 503, body: { error: 'ReplicationUnmet', message: 'committed at home; quorum not met' } },
      { status: 200, body: committed, headers: { 'idempotent-replayed': 'true' } },
    ]);
    const own = await scriptedApi([{ status: 200, body: committed }]);

    try {
      // Act
      const repeated = await new EpochKv({ endpoint: lostThenOk.endpoint }).put('k', 'v');
      const unmetPut = await new EpochKv({ endpoint: unmet.endpoint }).put('k', 'v', { replication: 'quorum' }).catch((error: unknown) => error);
      await new EpochKv({ endpoint: own.endpoint }).put('k', 'v', { idempotencyKey: 'job-42/step-1' });

      // Assess
      expect(repeated.version).toBe(7);
      expect(lostThenOk.keys).toHaveLength(3);
      expect(new Set(lostThenOk.keys).size).toBe(1);
      expect(unmetPut).toBeInstanceOf(OutcomeUnknownError);
      expect(unmetPut).toMatchObject({ status: 503, code: 'ReplicationUnmet' });
      expect(unmet.keys).toHaveLength(2);
      expect(own.keys).toEqual(['job-42/step-1']);
    } finally {
      await Promise.all([lostThenOk.close(), unmet.close(), own.close()]);
    }
  });
});
