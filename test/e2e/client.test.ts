import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EpochKv, VersionConflictError } from '../../lib/client/index.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { keyInShard, uniquePrefix, waitUntil } from '../support.ts';

const run = promisify(execFile);
let cloud: LocalCloud;

describe('Class: EpochKv (typed client) and the epochkv CLI, against the local cloud', () => {
  beforeAll(async () => {
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('client'),
      log: () => undefined,
    });
    const client = new EpochKv({ endpoint: cloud.apiUrl });
    await waitUntil('every shard led', async () => (((await client.status()) as { shards: { live: boolean }[] }).shards.every((shard) => shard.live) ? true : undefined), 30_000);
  });

  afterAll(async () => {
    await cloud?.stop();
  });

  it('puts, gets, lists and deletes, with binary values intact', async () => {
    // Prepare
    const client = new EpochKv({ endpoint: cloud.apiUrl });
    const binary = new Uint8Array(Array.from({ length: 256 }, (_, index) => index));

    // Act
    const written = await client.put('client/a', 'alpha');
    await client.put('client/b', binary);
    const read = await client.get('client/a');
    const readBinary = await client.get('client/b');
    const keys: string[] = [];
    for await (const item of client.list({ prefix: 'client/', pageSize: 1 })) keys.push(item.key);
    const deleted = await client.delete('client/a');
    const deletedAgain = await client.delete('client/a');

    // Assess
    expect(read?.text()).toBe('alpha');
    expect(read?.version).toBe(written.version);
    expect(Buffer.from(readBinary?.value ?? []).equals(Buffer.from(binary))).toBe(true);
    expect(keys).toEqual(['client/a', 'client/b']);
    expect(deleted).toBe(true);
    expect(deletedAgain).toBe(false);
    expect(await client.get('client/a')).toBeUndefined();
  });

  it('surfaces a failed compare-and-swap as a VersionConflictError and writes nothing', async () => {
    // Prepare
    const client = new EpochKv({ endpoint: cloud.apiUrl });
    const first = await client.put('client/cas', 'one');

    // Act
    const stale = await client.cas('client/cas', first.version + 5, 'two').catch((error: unknown) => error);
    const created = await client.put('client/cas', 'again', { ifAbsent: true }).catch((error: unknown) => error);

    // Assess
    expect(stale).toBeInstanceOf(VersionConflictError);
    expect(created).toBeInstanceOf(VersionConflictError);
    expect((await client.get('client/cas'))?.text()).toBe('one');
    const swapped = await client.cas('client/cas', first.version, 'two');
    expect(swapped.version).toBeGreaterThan(first.version);
  });

  it('carries the session token so a read at a replica region sees the write made at home', async () => {
    // Prepare: the replica's poller is stopped, so only the token makes it wait or fall back.
    const home = new EpochKv({ endpoint: cloud.apiUrl });
    const replicaUrl = cloud.regions.find((region) => region.role === 'replica')?.apiUrl as string;
    await cloud.replicas[0]?.eventSource.stop();

    // Act
    await home.put('client/session', 'mine');
    const replica = new EpochKv({ endpoint: replicaUrl, sessionToken: home.sessionToken });
    const read = await replica.get('client/session', { consistency: 'session' });
    cloud.replicas[0]?.eventSource.start();

    // Assess
    expect(read?.text()).toBe('mine');
  });

  it('retries 503 answers (honouring Retry-After) while no shard has a live leader, then succeeds', async () => {
    // Prepare: freeze every node until the API refuses writes for want of a live leader.
    const client = new EpochKv({ endpoint: cloud.apiUrl, attemptsMax: 10 });
    for (const node of cloud.nodes()) cloud.pause(node.id);
    await waitUntil(
      'writes to be refused with 503',
      async () => ((await fetch(`${cloud.apiUrl}/kv/client/probe`, { method: 'PUT', body: 'x' })).status === 503 ? true : undefined),
      10_000,
      100,
    );

    // Act: the client keeps retrying while the nodes come back.
    const startedMs = Date.now();
    const writing = client.put('client/retry', 'after-outage');
    await waitUntil('the client to have retried', () => (client.retries >= 1 ? true : undefined), 5_000);
    for (const node of cloud.nodes()) cloud.resume(node.id);
    const written = await writing;
    const tookMs = Date.now() - startedMs;

    // Assess
    console.log(`client: write succeeded after ${client.retries} retries and ${tookMs} ms of outage`);
    expect(client.retries).toBeGreaterThanOrEqual(1);
    expect(tookMs).toBeGreaterThanOrEqual(1_000);
    expect((await client.get('client/retry'))?.text()).toBe('after-outage');
    expect(written.version).toBeGreaterThan(0);
  });

  it('watches a shard as an ordered stream', async () => {
    // Prepare
    const client = new EpochKv({ endpoint: cloud.apiUrl });
    const key = keyInShard(5, 8, 'watch');
    const first = await client.put(key, 'w1');
    await client.put(key, 'w2');
    const stop = new AbortController();

    // Act
    const seen: number[] = [];
    for await (const entry of client.watch({ shard: 5, from: first.index, waitMs: 200, signal: stop.signal })) {
      seen.push(entry.index);
      if (seen.length === 2) stop.abort();
    }

    // Assess
    expect(seen).toEqual([first.index, first.index + 1]);
  });

  it('the CLI prints the cluster status table and maps outcomes to exit codes', async () => {
    // Act
    const cli = (...args: string[]) => run(process.execPath, ['bin/epochkv.js', ...args, '--endpoint', cloud.apiUrl], { env: { ...process.env } }).then(
      (result) => ({ code: 0, ...result }),
      (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
    );
    const status = await cli('status');
    const put = await cli('put', 'cli/key', 'hello', '--json');
    const get = await cli('get', 'cli/key');
    const conflict = await cli('cas', 'cli/key', '999', 'x');
    const missing = await cli('get', 'cli/missing');
    const usage = await cli('frobnicate');

    // Assess
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/node-a\s+(alive|suspected|dead)\s+\d+ ms/);
    expect(status.stdout).toMatch(/shard\s+leader\s+epoch\s+head\s+live/);
    expect(status.stdout).toMatch(/replica\s+shard\s+applied\s+lag entries\s+lag/);
    expect(JSON.parse(put.stdout)).toMatchObject({ key: 'cli/key', version: expect.any(Number) });
    expect(get.stdout.trim()).toBe('hello');
    expect(conflict.code).toBe(4);
    expect(missing.code).toBe(3);
    expect(usage.code).toBe(2);
  });
});
