import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { makeDynamoClient } from '../../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../../lib/adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../../lib/adapters/aws/replica-store.ts';
import { clusterEpochStride } from '../../lib/core/replication.ts';
import { shardOf } from '../../lib/core/shard.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import type { ClusterStatus } from '../../lib/service/cluster-status.ts';
import type { PromotionReport } from '../../lib/service/promotion.ts';
import { uniquePrefix, waitUntil } from '../support.ts';

/**
 * Synchronous replication and region promotion on the local cloud (3 regions, quorum mode):
 * the modes' answers, the in-sync set following a cut-off replica, a planned switchover and
 * the loss of the home region — each acknowledged write must survive.
 */
let cloud: LocalCloud;
const run = promisify(execFile);

/** The `epochkv` command line against the local cloud. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, ['bin/epochkv.js', ...args, '--endpoint', cloud.apiUrl], { env: { ...process.env } }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}
const acknowledged = new Map<string, { value: string; version: number }>();

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(url, init);
  const text = await response.text();
  return { status: response.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

function apiOf(region: string): string {
  const endpoint = cloud.regions.find((candidate) => candidate.region === region);
  if (endpoint === undefined) throw new Error(`no API for ${region}`);
  return endpoint.apiUrl;
}

async function status(): Promise<ClusterStatus> {
  return (await call(`${cloud.apiUrl}/cluster`)).body as unknown as ClusterStatus;
}

async function waitForLeaders(timeoutMs = 20_000): Promise<ClusterStatus> {
  return waitUntil('a live leader for every shard', async () => {
    const current = await status().catch(() => undefined);
    return current?.shards.every((shard) => shard.live) ? current : undefined;
  }, timeoutMs);
}

/** A write that retries handoffs (NoLeader) but returns any other answer. */
async function put(key: string, value: string, query = '', url = cloud.apiUrl): Promise<Answer> {
  return waitUntil(`a write of ${key}`, async () => {
    const answer = await call(`${url}/kv/${encodeURIComponent(key)}${query}`, { method: 'PUT', body: value });
    if (answer.status === 503 && answer.body.error === 'NoLeader') return undefined;
    return answer;
  }, 15_000);
}

async function putAcknowledged(key: string, value: string): Promise<void> {
  const answer = await put(key, value);
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  acknowledged.set(key, { value, version: Number(answer.body.version) });
}

/** Every acknowledged write reads back (strong, at the current home) with its value and version. */
async function expectAllAcknowledged(): Promise<void> {
  for (const [key, expected] of acknowledged) {
    const answer = await call(`${cloud.apiUrl}/kv/${encodeURIComponent(key)}`, { headers: { accept: 'application/json' } });
    expect({ key, status: answer.status, value: answer.body.value, version: answer.body.version }).toEqual({ key, status: 200, value: expected.value, version: expected.version });
  }
}

/** The replicas' logs equal the home log, shard by shard. */
async function waitForConverged(): Promise<void> {
  const endpoint = inject('dynamoEndpoint');
  const store = (region: string) => new DynamoStore(makeDynamoClient({ region, endpoint }), cloud.config.tables, cloud.config.shardCount);
  const home = store(cloud.config.homeRegion);
  await waitUntil('replicas equal to the home log', async () => {
    for (let shard = 0; shard < cloud.config.shardCount; shard += 1) {
      const head = await home.readHead(shard);
      for (const region of cloud.config.replicaRegions) {
        const progress = await new DynamoReplicaStore(makeDynamoClient({ region, endpoint }), cloud.config.tables).readProgress(shard);
        if (progress.appliedIndex !== (head?.index ?? 0) || (head !== undefined && progress.appliedHash !== head.hash)) return undefined;
      }
    }
    return true;
  }, 30_000);
}

beforeAll(async () => {
  cloud = await startLocalCloud({
    basePort: 0,
    dynamoEndpoint: inject('dynamoEndpoint'),
    sqsEndpoint: inject('sqsEndpoint'),
    tablePrefix: uniquePrefix('dr'),
    replication: 'quorum',
    invocationMs: 10_000,
    log: () => undefined,
  });
  await waitForLeaders();
}, 60_000);

afterAll(async () => {
  await cloud?.stop();
});

describe('Replication modes (cluster in quorum mode)', () => {
  it('acknowledges a write once a replica queue has it, and says so', async () => {
    const answer = await put('mode/a', 'one');
    expect(answer.status).toBe(200);
    expect(answer.body.replication).toMatchObject({ mode: 'quorum' });
    expect((answer.body.replication as { acceptedBy: string[] }).acceptedBy.length).toBeGreaterThanOrEqual(1);
    acknowledged.set('mode/a', { value: 'one', version: Number(answer.body.version) });
    const all = await put('mode/a', 'two', '?replication=all');
    expect(all.status).toBe(200);
    expect(all.body.replication).toEqual({ mode: 'all', acceptedBy: ['eu-west-1', 'ap-southeast-2'] });
    acknowledged.set('mode/a', { value: 'two', version: Number(all.body.version) });
  });

  it('refuses a weaker or unknown mode per write with 400, changing nothing', async () => {
    const weaker = await put('mode/a', 'weaker', '?replication=async');
    const unknown = await put('mode/a', 'unknown', '?replication=majority');
    expect([weaker.status, unknown.status]).toEqual([400, 400]);
    expect(weaker.body.message).toMatch(/replicates in quorum mode; a write may ask for a stronger mode \(quorum or all\), not async/);
    expect(unknown.body.message).toMatch(/replication must be one of async, quorum, all/);
    await expectAllAcknowledged();
  });

  it('answers 503 ReplicationUnmet (outcome unknown) while no replica region can take the entry', async () => {
    const cut = await cli('region', 'cut', 'eu-west-1');
    expect([cut.code, cut.stdout.trim()]).toEqual([0, 'eu-west-1: cut off']);
    cloud.cutOff('ap-southeast-2');
    try {
      const answer = await put('mode/unmet', 'maybe');
      expect(answer.status).toBe(503);
      expect(answer.body.error).toBe('ReplicationUnmet');
      expect(answer.body.message).toMatch(/is committed at home, but quorum replication needs the entry in at least 1 replica region\(s\) and it reached none .*its outcome is unknown/);
      // The replica regions' own APIs are unreachable too.
      expect((await call(`${apiOf('eu-west-1')}/kv/mode/a`)).body.error).toBe('RegionUnreachable');
      const cliPut = await cli('put', 'mode/unmet', 'again', '--replication', 'all');
      // Exit 6: the outcome is unknown (committed at home, maybe lost with it); the CLI does not retry it blindly.
      expect(cliPut.code).toBe(6);
      expect(cliPut.stderr).toMatch(/ReplicationUnmet/);
    } finally {
      cloud.heal('eu-west-1');
      cloud.heal('ap-southeast-2');
    }
  });

  it('drops a cut-off replica from the in-sync set, so `all` writes go on without it, and takes it back once healed', async () => {
    cloud.cutOff('ap-southeast-2');
    try {
      const shrunk = await waitUntil('ap-southeast-2 out of every in-sync set', async () => {
        const current = await status();
        return current.shards.every((shard) => JSON.stringify(shard.inSync) === '["eu-west-1"]') ? current : undefined;
      }, 20_000);
      expect(shrunk.replication).toBe('quorum');
      const answer = await put('mode/all', 'without-ap', '?replication=all');
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(answer.body.replication).toEqual({ mode: 'all', acceptedBy: ['eu-west-1'] });
      acknowledged.set('mode/all', { value: 'without-ap', version: Number(answer.body.version) });
    } finally {
      cloud.heal('ap-southeast-2');
    }
    await waitUntil('ap-southeast-2 back in every in-sync set', async () => {
      const current = await status();
      return current.shards.every((shard) => JSON.stringify(shard.inSync) === '["eu-west-1","ap-southeast-2"]') ? true : undefined;
    }, 20_000);
  });
});

describe('Promotion', () => {
  let planned: PromotionReport;

  it('refuses to promote the home region or an unknown region, with what to fix', async () => {
    const home = await call(`${cloud.apiUrl}/_local/promote/us-east-1`, { method: 'POST' });
    const unknown = await call(`${cloud.apiUrl}/_local/promote/mars-1`, { method: 'POST' });
    const badBody = await call(`${cloud.apiUrl}/_local/promote/eu-west-1`, { method: 'POST', body: '{"force":"yes"}' });
    expect([home.status, unknown.status, badBody.status]).toEqual([409, 404, 400]);
    expect(home.body.message).toMatch(/us-east-1 is not a replica region of this cluster/);
    expect(unknown.body.message).toMatch(/no region "mars-1"; regions: us-east-1, eu-west-1, ap-southeast-2/);
    expect(cloud.config.homeRegion).toBe('us-east-1');
  });

  it('switches home to eu-west-1 (planned): nothing lost, new epochs above the cluster epoch, the old home a replica', async () => {
    for (let index = 0; index < 24; index += 1) await putAcknowledged(`planned/${index}`, `v${index}`);
    const oldHome = apiOf('us-east-1');

    const begunMs = Date.now();
    const promoted = await cli('promote', 'eu-west-1', '--json');
    expect(promoted.code, promoted.stderr).toBe(0);
    planned = JSON.parse(promoted.stdout) as PromotionReport;

    expect(planned).toMatchObject({ previousHome: 'us-east-1', home: 'eu-west-1', planned: true, clusterEpoch: 1, unreachable: [], replicaRegions: ['us-east-1', 'ap-southeast-2'], warnings: [] });
    expect(cloud.apiUrl).toBe(apiOf('eu-west-1'));
    const current = await waitForLeaders();
    console.log(`promotion: planned switchover took ${planned.durationMs} ms; every shard led at eu-west-1 ${Date.now() - begunMs} ms after \`epochkv promote\` began (CLI start included)`);
    expect(current).toMatchObject({ homeRegion: 'eu-west-1', replicaRegions: ['us-east-1', 'ap-southeast-2'], clusterEpoch: 1 });
    expect(current.shards.every((shard) => shard.epoch > clusterEpochStride)).toBe(true);
    await expectAllAcknowledged();
    // Writes go on at the new home, under the new cluster epoch; the old home's API now
    // serves as a replica region and sends writes to the new home.
    const after = await put('planned/after', 'x');
    expect(after.status).toBe(200);
    expect(Number(after.body.epoch)).toBeGreaterThan(clusterEpochStride);
    acknowledged.set('planned/after', { value: 'x', version: Number(after.body.version) });
    const viaOld = await put('planned/via-old', 'y', '', oldHome);
    expect(viaOld.status).toBe(200);
    acknowledged.set('planned/via-old', { value: 'y', version: Number(viaOld.body.version) });
    // The old home's leases are fenced: no node there can lead again.
    const leases = await new DynamoStore(makeDynamoClient({ region: 'us-east-1', endpoint: inject('dynamoEndpoint') }), cloud.config.tables, cloud.config.shardCount).readLeases();
    expect(leases.every((lease) => lease.movedTo === 'eu-west-1' && lease.holder === undefined)).toBe(true);
    await waitForConverged();
  });

  it('refuses an unplanned promotion that cannot reach enough replicas, then loses the home region and promotes without losing an acknowledged write', async () => {
    for (let index = 0; index < 24; index += 1) await putAcknowledged(`unplanned/${index}`, `w${index}`);
    cloud.cutOff('eu-west-1');
    cloud.cutOff('us-east-1');
    try {
      const refused = await call(`${apiOf('ap-southeast-2')}/_local/promote/ap-southeast-2`, { method: 'POST' });
      expect(refused.status).toBe(409);
      expect(refused.body.message).toMatch(/the home region eu-west-1 is unreachable and only 1 of 2 replica regions answer \(ap-southeast-2\); quorum mode needs 2 .* pass --force/);
    } finally {
      cloud.heal('us-east-1');
    }
    expect(cloud.config.homeRegion).toBe('eu-west-1');

    const begunMs = Date.now();
    const report = await cloud.promote('ap-southeast-2');

    expect(report).toMatchObject({ previousHome: 'eu-west-1', home: 'ap-southeast-2', planned: false, clusterEpoch: 2, unreachable: ['eu-west-1'], replicaRegions: ['us-east-1'] });
    expect(report.shards.every((shard) => shard.index >= shard.highestKnown)).toBe(true);
    const current = await waitForLeaders();
    console.log(`promotion: unplanned (home cut off) took ${report.durationMs} ms (drained ${report.drainedMessages} queued entries); every shard led at ap-southeast-2 ${Date.now() - begunMs} ms after it began`);
    expect(current).toMatchObject({ homeRegion: 'ap-southeast-2', replicaRegions: ['us-east-1'], clusterEpoch: 2 });
    expect(current.shards.every((shard) => shard.epoch > 2 * clusterEpochStride)).toBe(true);
    await expectAllAcknowledged();
    expect((await call(`${apiOf('eu-west-1')}/kv/planned/0`)).body.error).toBe('RegionUnreachable');
    const after = await put('unplanned/after', 'z');
    expect(after.status).toBe(200);
    acknowledged.set('unplanned/after', { value: 'z', version: Number(after.body.version) });
    await waitForConverged();
    expect(acknowledged.size).toBeGreaterThan(50);
  });
});

describe('epochkv promote --aws (the deployed-cluster path, pointed at the emulators)', () => {
  it('fences the old home, seeds the new home and records it, through the SDK endpoints of the environment', async () => {
    // Prepare: a second cluster, whose promotion the local cloud does not drive.
    const prefix = uniquePrefix('draws');
    const other = await startLocalCloud({ basePort: 0, dynamoEndpoint: inject('dynamoEndpoint'), sqsEndpoint: inject('sqsEndpoint'), tablePrefix: prefix, shardCount: 2, replicaRegions: ['eu-west-1'], log: () => undefined });
    try {
      await waitUntil('leaders', async () => ((await call(`${other.apiUrl}/cluster`)).body.shards as { live: boolean }[] | undefined)?.every((shard) => shard.live) || undefined, 20_000);
      const written = await call(`${other.apiUrl}/kv/aws-path`, { method: 'PUT', body: 'kept' });
      expect(written.status).toBe(200);

      // Act: the CLI as an operator runs it against AWS; the SDK finds the emulators through
      // the standard endpoint variables, with the local key as credentials.
      const env = {
        ...process.env,
        AWS_ENDPOINT_URL_DYNAMODB: inject('dynamoEndpoint'),
        AWS_ENDPOINT_URL_SQS: inject('sqsEndpoint'),
        AWS_ACCESS_KEY_ID: 'epochkvlocal',
        AWS_SECRET_ACCESS_KEY: 'epochkvlocal',
      };
      const args = ['bin/epochkv.js', 'promote', 'eu-west-1', '--aws', '--home', 'us-east-1', '--replicas', 'eu-west-1', '--table-prefix', prefix, '--shards', '2'];
      const { stdout } = await run(process.execPath, args, { env });
      const again = await run(process.execPath, [...args, '--json'], { env }).catch((error: { code: number; stderr: string }) => error);

      // Assess
      expect(stdout).toMatch(/eu-west-1 is home \(cluster epoch 1; planned switchover\)/);
      expect(stdout).toMatch(/npx cdk deploy --all -c epochkv:homeRegion=eu-west-1 -c epochkv:replicaRegions=us-east-1/);
      expect(again).toMatchObject({ code: 1 });
      expect((again as { stderr: string }).stderr).toMatch(/eu-west-1 is already the home region \(cluster epoch 1\)/);
      const store = (region: string) => new DynamoStore(makeDynamoClient({ region, endpoint: inject('dynamoEndpoint') }), other.config.tables, 2);
      expect((await store('us-east-1').readLeases()).map((lease) => [lease.movedTo, lease.holder])).toEqual([['eu-west-1', undefined], ['eu-west-1', undefined]]);
      expect((await store('eu-west-1').readLeases()).map((lease) => lease.epoch)).toEqual([clusterEpochStride, clusterEpochStride]);
      expect(await store('eu-west-1').readClusterState()).toMatchObject({ homeRegion: 'eu-west-1', clusterEpoch: 1, replicaRegions: ['us-east-1'] });
      const item = await store('eu-west-1').getItem(shardOf('aws-path', 2), 'aws-path', true);
      expect(Buffer.from(item?.value ?? []).toString()).toBe('kept');
    } finally {
      await other.stop();
    }
  }, 90_000);
});
