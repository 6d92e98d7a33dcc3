import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { makeDynamoClient } from '../../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../../lib/adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../../lib/adapters/aws/replica-store.ts';
import { makeSqsClient } from '../../lib/adapters/aws/clients.ts';
import { verifyChain } from '../../lib/core/log.ts';
import { tableNames } from '../../lib/infra/schema.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import type { ClusterStatus } from '../../lib/service/cluster-status.ts';
import { uniquePrefix, waitUntil } from '../support.ts';

const shardCount = 8;
const homeRegion = 'us-east-1';
const replicaRegions = ['eu-west-1', 'ap-southeast-2'];
const sessionHeader = 'x-epochkv-session';

let cloud: LocalCloud;
let prefix: string;
let home: DynamoStore;
const copies = new Map<string, { store: DynamoStore; progress: DynamoReplicaStore }>();

function apiOf(region: string): string {
  const endpoint = cloud.regions.find((candidate) => candidate.region === region);
  if (endpoint === undefined) throw new Error(`no API for ${region}`);
  return endpoint.apiUrl;
}

async function cluster(): Promise<ClusterStatus> {
  return (await (await fetch(`${cloud.apiUrl}/cluster`)).json()) as ClusterStatus;
}

/** Writes like a client: retries 503 (a handoff) until it gets an answer. */
async function write(key: string, value: string | undefined, token?: string): Promise<{ status: number; body: Record<string, unknown>; token: string | null }> {
  return waitUntil(
    `a write of ${key}`,
    async () => {
      const response = await fetch(`${cloud.apiUrl}/kv/${encodeURIComponent(key)}`, {
        method: value === undefined ? 'DELETE' : 'PUT',
        ...(value === undefined ? {} : { body: value }),
        headers: token === undefined ? {} : { [sessionHeader]: token },
      });
      if (response.status === 503) return undefined;
      return { status: response.status, body: (await response.json()) as Record<string, unknown>, token: response.headers.get(sessionHeader) };
    },
    10_000,
  );
}

/** Runs `count` writes with `concurrency` workers over keys spread across every shard. */
async function writeMany(label: string, count: number, concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const position = (next += 1);
        const key = `${label}/${position % 40}`;
        // Every fifth operation deletes, so replicas apply deletes too.
        const outcome = await write(key, position % 5 === 0 ? undefined : `${label}-${position}`);
        expect([200, 404]).toContain(outcome.status);
      }
    }),
  );
}

/** True when every replica has applied every shard up to the home head, with the same hash. */
async function converged(): Promise<boolean> {
  const heads = await Promise.all(Array.from({ length: shardCount }, (_, shard) => home.readHead(shard)));
  for (const { progress } of copies.values()) {
    const applied = await progress.readAllProgress();
    for (let shard = 0; shard < shardCount; shard += 1) {
      const head = heads[shard];
      const mine = applied.get(shard);
      if ((head?.index ?? 0) !== (mine?.appliedIndex ?? 0)) return false;
      if (head !== undefined && head.hash !== mine?.appliedHash) return false;
    }
  }
  return true;
}

async function scan(store: DynamoStore): Promise<[string, string, number][]> {
  const rows: [string, string, number][] = [];
  let after: string | undefined;
  do {
    const page = await store.list('', 1000, after, true);
    rows.push(...page.items.map((item): [string, string, number] => [item.key, Buffer.from(item.value).toString('base64'), item.version]));
    after = page.next;
  } while (after !== undefined);
  return rows;
}

/**
 * Every replica's log per shard is the home log (same entries, same hash chain) and its table
 * equals the home table. Leader markers keep arriving (a node's next invocation takes over its
 * own leases), so the comparison is retried until a moment where the home did not move under it.
 */
async function expectReplicasEqualHome(): Promise<void> {
  await waitUntil(
    'the replicas to equal home at one moment',
    async () => {
      const heads = JSON.stringify(await Promise.all(Array.from({ length: shardCount }, (_, shard) => home.readHead(shard))));
      if (!(await converged())) return undefined;
      try {
        await compareReplicasWithHome();
        return true;
      } catch (error) {
        const after = JSON.stringify(await Promise.all(Array.from({ length: shardCount }, (_, shard) => home.readHead(shard))));
        // The home moved while comparing: try again. Otherwise the difference is real.
        if (after !== heads) return undefined;
        throw error;
      }
    },
    30_000,
    100,
  ).catch(async (error: unknown) => {
    // Show the real difference, not only the timeout.
    await compareReplicasWithHome();
    throw error;
  });
}

async function compareReplicasWithHome(): Promise<void> {
  const homeRows = await scan(home);
  for (const [region, { store }] of copies) {
    for (let shard = 0; shard < shardCount; shard += 1) {
      const homeLog = await home.readLog(shard, 1, 100_000);
      const copy = await store.readLog(shard, 1, 100_000);
      expect(copy.map((entry) => [entry.index, entry.hash]), `${region} shard ${shard} log`).toEqual(homeLog.map((entry) => [entry.index, entry.hash]));
      expect(verifyChain(copy), `${region} shard ${shard} chain`).toEqual({ ok: true });
    }
    expect(await scan(store), `${region} table`).toEqual(homeRows);
  }
}

describe('Local cloud: replication to two regions through SQS FIFO', () => {
  beforeAll(async () => {
    prefix = uniquePrefix('repl');
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: prefix,
      shardCount,
      region: homeRegion,
      replicaRegions,
      faultSeed: 42,
      log: () => undefined,
    });
    const endpoint = inject('dynamoEndpoint');
    home = new DynamoStore(makeDynamoClient({ region: homeRegion, endpoint }), tableNames(prefix), shardCount);
    for (const region of replicaRegions) {
      const client = makeDynamoClient({ region, endpoint });
      copies.set(region, { store: new DynamoStore(client, tableNames(prefix), shardCount), progress: new DynamoReplicaStore(client, tableNames(prefix)) });
    }
    await waitUntil('a live leader for every shard', async () => ((await cluster()).shards.every((shard) => shard.live) ? true : undefined), 30_000);
  });

  afterAll(async () => {
    await cloud?.stop();
  });

  it('prints one API per region and serves each', async () => {
    expect(cloud.regions.map((region) => [region.region, region.role])).toEqual([
      [homeRegion, 'home'],
      ['eu-west-1', 'replica'],
      ['ap-southeast-2', 'replica'],
    ]);
    for (const region of cloud.regions) {
      const health = (await (await fetch(`${region.apiUrl}/health`)).json()) as { region: string };
      expect(health.region).toBe(region.region);
    }
  });

  it('brings both replicas to the home head after concurrent writes: same log hashes, same table', async () => {
    // Act
    const startedMs = Date.now();
    await writeMany('steady', 200, 16);
    await waitUntil('both replicas to converge', async () => ((await converged()) ? true : undefined), 30_000, 100);

    // Assess
    console.log(`replication: 200 writes (16 concurrent) applied in both replicas ${Date.now() - startedMs} ms after the first write`);
    await expectReplicasEqualHome();
  });

  it('converges with 20% of messages dropped, 20% duplicated and delivery reordered, each entry applied exactly once', async () => {
    // Prepare
    const before = Object.fromEntries(cloud.replicas.map((replica) => [replica.region, replica.eventSource.stats()]));
    for (const region of replicaRegions) {
      const response = await fetch(`${cloud.apiUrl}/_local/replication/${region}/faults`, {
        method: 'POST',
        body: JSON.stringify({ dropRate: 0.2, duplicateRate: 0.2, reorder: true, delayMs: 0 }),
      });
      expect(response.status).toBe(200);
    }

    // Act
    await writeMany('faulty', 150, 8);
    await waitUntil('both replicas to converge under faults', async () => ((await converged()) ? true : undefined), 45_000, 100);

    // Assess
    for (const replica of cloud.replicas) {
      const stats = replica.eventSource.stats();
      const was = before[replica.region];
      console.log(`replication faults ${replica.region}: dropped ${stats.dropped - (was?.dropped ?? 0)}, duplicated ${stats.duplicated - (was?.duplicated ?? 0)}, reordered events ${stats.reordered - (was?.reordered ?? 0)}`);
      expect(stats.dropped - (was?.dropped ?? 0)).toBeGreaterThan(0);
      expect(stats.duplicated - (was?.duplicated ?? 0)).toBeGreaterThan(0);
    }
    // Exactly once: each index is in the copy once, in order, chained, and the state is the home's.
    await expectReplicasEqualHome();
    for (const region of replicaRegions) {
      await fetch(`${cloud.apiUrl}/_local/replication/${region}/faults`, { method: 'POST', body: JSON.stringify({ dropRate: 0, duplicateRate: 0, reorder: false }) });
    }
  });

  it('shows replication lag in /cluster while a replica poller is stopped, and the replica catches up after restart without operator action', async () => {
    // Prepare
    const region = 'eu-west-1';
    const stopped = await fetch(`${cloud.apiUrl}/_local/replication/${region}/poller/stop`, { method: 'POST' });
    expect(((await stopped.json()) as { running: boolean }).running).toBe(false);

    // Act: writes the stopped region does not receive from its queue.
    await writeMany('paused', 60, 8);
    const lagging = await waitUntil(
      'lag to show in /cluster',
      async () => {
        const rows = (await cluster()).replicas.filter((row) => row.region === region && row.lagEntries > 0);
        return rows.length > 0 ? rows : undefined;
      },
      5_000,
      20,
    );
    const restarted = await fetch(`${cloud.apiUrl}/_local/replication/${region}/poller/start`, { method: 'POST' });
    expect(((await restarted.json()) as { running: boolean }).running).toBe(true);
    await waitUntil('the stopped replica to catch up', async () => ((await converged()) ? true : undefined), 30_000, 100);

    // Assess
    console.log(`replication lag seen in /cluster for ${region}: ${JSON.stringify(lagging[0])}`);
    expect(lagging[0]?.lagMs).toBeGreaterThan(0);
    await expectReplicasEqualHome();
    // /cluster shows what the replica last reported: the report after the catch-up says no lag.
    const caughtUp = await waitUntil(
      'the caught-up replica to report no lag in /cluster',
      async () => {
        const rows = (await cluster()).replicas.filter((row) => row.region === region);
        return rows.every((row) => row.lagEntries === 0 && row.lagMs === 0) ? rows : undefined;
      },
      10_000,
      100,
    );
    expect(caughtUp.every((row) => row.lagEntries === 0 && row.lagMs === 0)).toBe(true);
    // The queue drains: messages sent while stopped are applied or skipped as already applied.
    const replica = cloud.replicas.find((candidate) => candidate.region === region);
    const sqs = makeSqsClient({ region, endpoint: cloud.sqsEndpoint });
    try {
      await waitUntil(
        'the queue to drain',
        async () => {
          const attributes = await sqs.send(
            new GetQueueAttributesCommand({ QueueUrl: replica?.queue.queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }),
          );
          const waiting = Number(attributes.Attributes?.ApproximateNumberOfMessages ?? 0) + Number(attributes.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0);
          return waiting === 0 ? true : undefined;
        },
        20_000,
        100,
      );
    } finally {
      sqs.destroy();
    }
  });

  it('gives read-your-writes and monotonic reads to a session at a lagging replica', async () => {
    // Prepare: ap-southeast-2 receives nothing from its queue and delays what it pulls.
    const lagging = 'ap-southeast-2';
    await fetch(`${cloud.apiUrl}/_local/replication/${lagging}/poller/stop`, { method: 'POST' });
    const key = 'session/profile';
    let token: string | undefined;
    let lastVersion = 0;
    const servedBy: string[] = [];

    // Act / Assess: each round writes at home, then reads with the session token from the lagging
    // replica and the healthy one, in turn.
    for (let round = 1; round <= 8; round += 1) {
      const written = await write(key, `v${round}`, token);
      expect(written.status).toBe(200);
      token = written.token ?? undefined;
      for (const region of [lagging, 'eu-west-1']) {
        const response = await fetch(`${apiOf(region)}/kv/${encodeURIComponent(key)}?consistency=session`, {
          headers: { [sessionHeader]: token as string, accept: 'application/json' },
        });
        expect(response.status).toBe(200);
        const body = (await response.json()) as { value: string; version: number };
        // Read-your-writes: the write of this round, never an older value.
        expect(body.value).toBe(`v${round}`);
        // Monotonic reads: versions never go back.
        expect(body.version).toBeGreaterThanOrEqual(lastVersion);
        lastVersion = body.version;
        token = response.headers.get(sessionHeader) ?? token;
        servedBy.push(`${region}:${response.headers.get('x-epochkv-served-by')}`);
      }
    }
    await fetch(`${cloud.apiUrl}/_local/replication/${lagging}/poller/start`, { method: 'POST' });

    // Both paths ran: the lagging replica sent some reads to the home table, and replicas answered others.
    console.log(`session reads served by: ${servedBy.join(' ')}`);
    expect(servedBy.some((entry) => entry.endsWith(':home'))).toBe(true);
    expect(servedBy.some((entry) => entry.endsWith(':replica'))).toBe(true);
    await waitUntil('the lagging replica to catch up', async () => ((await converged()) ? true : undefined), 30_000, 100);
  });

  it('answers eventual reads from the region, writes at a replica API through home, and watch from the region log', async () => {
    // Act
    const viaReplica = await fetch(`${apiOf('eu-west-1')}/kv/remote-write`, { method: 'PUT', body: 'from-europe' });
    const body = (await viaReplica.json()) as { index: number; epoch: number };
    await waitUntil('both replicas to converge', async () => ((await converged()) ? true : undefined), 20_000, 100);
    const eventual = await fetch(`${apiOf('ap-southeast-2')}/kv/remote-write?consistency=eventual`);
    const strongAtReplica = await fetch(`${apiOf('ap-southeast-2')}/kv/remote-write?consistency=strong`);
    const shard = (await (await fetch(`${cloud.apiUrl}/kv/remote-write`, { headers: { accept: 'application/json' } })).json()) as { index: number };
    const watchShard = cloud.config.shardCount > 0 ? await shardOfKey('remote-write') : 0;
    const watched = await fetch(`${apiOf('eu-west-1')}/watch?shard=${watchShard}&from=${body.index}&waitMs=0`);
    const badConsistency = await fetch(`${apiOf('eu-west-1')}/kv/remote-write?consistency=linearish`);
    const badToken = await fetch(`${apiOf('eu-west-1')}/kv/remote-write`, { headers: { [sessionHeader]: 'not-a-token!' } });

    // Assess
    expect(viaReplica.status).toBe(200);
    expect(await eventual.text()).toBe('from-europe');
    expect(eventual.headers.get('x-epochkv-served-by')).toBe('replica');
    expect(strongAtReplica.headers.get('x-epochkv-served-by')).toBe('home');
    expect(shard.index).toBe(body.index);
    const entries = ((await watched.json()) as { entries: { index: number; ops: { key?: string }[] }[] }).entries;
    expect(entries[0]?.index).toBe(body.index);
    expect(entries[0]?.ops[0]?.key).toBe('remote-write');
    expect(badConsistency.status).toBe(400);
    expect(badToken.status).toBe(400);
  });
});

async function shardOfKey(key: string): Promise<number> {
  const { shardOf } = await import('../../lib/core/shard.ts');
  return shardOf(key, shardCount);
}
