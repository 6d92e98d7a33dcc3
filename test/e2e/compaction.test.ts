import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { makeDynamoClient } from '../../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../../lib/adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../../lib/adapters/aws/replica-store.ts';
import { shardOf } from '../../lib/core/shard.ts';
import { tableNames } from '../../lib/infra/schema.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { uniquePrefix, waitUntil } from '../support.ts';

const shardCount = 8;
const homeRegion = 'us-east-1';
const replicaRegions = ['eu-west-1', 'ap-southeast-2'];
const retainEntries = 50;
/** Every key of these tests shares one hash tag, so one shard's log moves. */
const tag = '{compaction}';
const shard = shardOf(`${tag}/k`, shardCount);

let cloud: LocalCloud;
let home: DynamoStore;
const copies = new Map<string, { store: DynamoStore; progress: DynamoReplicaStore }>();

function apiOf(region: string): string {
  const endpoint = cloud.regions.find((candidate) => candidate.region === region);
  if (endpoint === undefined) throw new Error(`no API for ${region}`);
  return endpoint.apiUrl;
}

function copyOf(region: string): { store: DynamoStore; progress: DynamoReplicaStore } {
  const copy = copies.get(region);
  if (copy === undefined) throw new Error(`no tables for ${region}`);
  return copy;
}

/** Writes like a client: retries a 503 (a handoff) until it gets an answer. */
async function write(key: string, value: string | undefined): Promise<number> {
  return waitUntil(
    `a write of ${key}`,
    async () => {
      const response = await fetch(`${cloud.apiUrl}/kv/${encodeURIComponent(key)}`, { method: value === undefined ? 'DELETE' : 'PUT', ...(value === undefined ? {} : { body: value }) });
      await response.arrayBuffer();
      return response.status === 503 ? undefined : response.status;
    },
    20_000,
  );
}

/** Writes over 20 keys of the shard, every fifth a delete, from 8 concurrent clients, until `entries` of them committed (a delete of a missing key commits nothing). */
async function writeMany(label: string, entries: number): Promise<void> {
  let next = 0;
  let committed = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (committed < entries) {
        const position = (next += 1);
        const status = await write(`${tag}/${label}-${position % 20}`, position % 5 === 0 ? undefined : `${label}-${position}`);
        expect([200, 404]).toContain(status);
        if (status === 200) committed += 1;
      }
    }),
  );
}

async function watch(region: string, from: number): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${apiOf(region)}/watch?shard=${shard}&from=${from}&waitMs=0`);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** The whole shard as a region's API lists it: eventual at a replica reads that region's table. */
async function listed(region: string): Promise<[string, number, string][]> {
  const consistency = region === homeRegion ? 'strong' : 'eventual';
  const response = await fetch(`${apiOf(region)}/kv?prefix=${encodeURIComponent(tag)}&limit=1000&consistency=${consistency}`);
  const body = (await response.json()) as { items: { key: string; version: number; value: string }[] };
  return body.items.map((item) => [item.key, item.version, item.value]);
}

async function logLength(store: DynamoStore): Promise<number> {
  return (await store.readLog(shard, 1, 10_000)).length;
}

describe('Log compaction on the local cloud (--log-retain-entries 50)', () => {
  beforeAll(async () => {
    const prefix = uniquePrefix('compact');
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: prefix,
      shardCount,
      region: homeRegion,
      replicaRegions,
      logRetainEntries: retainEntries,
      log: () => undefined,
    });
    const endpoint = inject('dynamoEndpoint');
    home = new DynamoStore(makeDynamoClient({ region: homeRegion, endpoint }), tableNames(prefix), shardCount);
    for (const region of replicaRegions) {
      const client = makeDynamoClient({ region, endpoint });
      copies.set(region, { store: new DynamoStore(client, tableNames(prefix), shardCount), progress: new DynamoReplicaStore(client, tableNames(prefix)) });
    }
    await cloud.waitForLeaders(30_000);
  });

  afterAll(async () => {
    await cloud?.stop();
  });

  it('keeps the log and every replica copy to 50 entries after 500 writes; a watch from 1 gets 410 with compactedThrough', async () => {
    // Arrange
    const startedMs = Date.now();
    await writeMany('a', 500);
    const writtenMs = Date.now();
    const head = (await home.readHead(shard))?.index ?? 0;

    // Act: the leader trims every four ticks, the replica heartbeats behind it.
    await waitUntil('the home log trimmed to the retention', async () => ((await logLength(home)) <= retainEntries ? true : undefined), 30_000, 200);
    for (const region of replicaRegions) {
      await waitUntil(`${region}'s copy trimmed to the retention`, async () => ((await logLength(copyOf(region).store)) <= retainEntries ? true : undefined), 30_000, 200);
    }
    console.log(`500 entries written in ${writtenMs - startedMs} ms; logs trimmed ${Date.now() - writtenMs} ms later`);
    const fromOne = await watch(homeRegion, 1);
    const atReplica = await watch('eu-west-1', 1);

    // Assess
    expect(head).toBeGreaterThanOrEqual(500);
    expect(fromOne.status).toBe(410);
    expect(fromOne.body).toMatchObject({ error: 'Compacted', compactedThrough: expect.any(Number) });
    expect(fromOne.body.message).toMatch(/compacted through index \d+/);
    const compactedThrough = fromOne.body.compactedThrough as number;
    expect(compactedThrough).toBeGreaterThanOrEqual(head - retainEntries);
    expect(Object.keys(fromOne.body).sort()).toEqual(['compactedThrough', 'error', 'message']);
    expect(atReplica.status).toBe(410);
    // From the compaction point on, the watch answers as before.
    const after = await watch(homeRegion, compactedThrough + 1);
    expect(after.status).toBe(200);
    expect((after.body.entries as { index: number }[])[0]?.index).toBe(compactedThrough + 1);
    // Nothing of the state is lost: every region lists what home lists.
    const expected = await listed(homeRegion);
    expect(expected.length).toBeGreaterThan(0);
    for (const region of replicaRegions) {
      await waitUntil(`${region} to list what home lists`, async () => (JSON.stringify(await listed(region)) === JSON.stringify(expected) ? true : undefined), 20_000, 200);
    }
  }, 180_000);

  it('seeds a replica region that was cut off while the log moved past it from a snapshot, and it converges', async () => {
    // Arrange: eu-west-1 stops following; 300 writes (puts and deletes) move the log far past it.
    const cut = await fetch(`${cloud.apiUrl}/_local/regions/eu-west-1/cut`, { method: 'POST' });
    expect(cut.status).toBe(200);
    const behindIndex = (await copyOf('eu-west-1').progress.readProgress(shard)).appliedIndex;
    await writeMany('b', 300);
    const compactedPast = await waitUntil(
      'home compacted past the cut region',
      async () => {
        const answer = await watch(homeRegion, 1);
        const through = answer.body.compactedThrough;
        return typeof through === 'number' && through > behindIndex + 1 ? through : undefined;
      },
      60_000,
      200,
    );

    // Act
    const heal = await fetch(`${cloud.apiUrl}/_local/regions/eu-west-1/heal`, { method: 'POST' });
    expect(heal.status).toBe(200);
    const homeHead = await home.readHead(shard);
    await waitUntil(
      'eu-west-1 back at the home head',
      async () => {
        const progress = await copyOf('eu-west-1').progress.readProgress(shard);
        return homeHead !== undefined && progress.appliedIndex >= homeHead.index ? true : undefined;
      },
      60_000,
      200,
    );

    // Assess: it did not replay the log (those entries are gone): its copy starts past the gap,
    // and its table is home's.
    expect(compactedPast).toBeGreaterThan(behindIndex + 1);
    const expected = await listed(homeRegion);
    await waitUntil('eu-west-1 to list what home lists', async () => (JSON.stringify(await listed('eu-west-1')) === JSON.stringify(expected) ? true : undefined), 20_000, 200);
    const gap = await watch('eu-west-1', behindIndex + 1);
    expect(gap.status).toBe(410);
    const progress = await copyOf('eu-west-1').progress.readProgress(shard);
    const entry = await home.readLogEntry(shard, progress.appliedIndex);
    expect(entry === undefined || entry.hash === progress.appliedHash).toBe(true);
    // And it follows the log again from there.
    await write(`${tag}/after-seed`, 'followed');
    await waitUntil(
      'eu-west-1 to apply a write after the seed',
      async () => {
        const response = await fetch(`${apiOf('eu-west-1')}/kv/${encodeURIComponent(`${tag}/after-seed`)}?consistency=eventual`);
        return response.status === 200 && (await response.text()) === 'followed' ? true : undefined;
      },
      20_000,
      200,
    );
  }, 240_000);
});
