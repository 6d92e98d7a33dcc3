import { afterEach, describe, expect, inject, it } from 'vitest';
import { awsCallMsMax, limits } from '../../lib/core/limits.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { keyInShard, uniquePrefix, waitUntil } from '../support.ts';

/**
 * Readiness and hanging stores as a client sees them: over HTTP, with the real DynamoDB Local
 * and SQS emulator. `GET /health` says 200 only when a write sent right after it succeeds.
 */
const shardCount = 4;
let cloud: LocalCloud | undefined;

afterEach(async () => {
  await cloud?.stop();
  cloud = undefined;
});

interface Health {
  status: string;
  region: string;
  role: string;
  reasons?: string[];
}

async function health(url: string): Promise<{ status: number; retryAfter: string | null; body: Health; ms: number }> {
  const startMs = Date.now();
  const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(limits.apiGatewayTimeoutMs) });
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Health, ms: Date.now() - startMs };
}

async function put(url: string, key: string, value: string): Promise<{ status: number; body: { error?: string }; ms: number }> {
  const startMs = Date.now();
  const response = await fetch(`${url}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(limits.apiGatewayTimeoutMs + 5_000) });
  return { status: response.status, body: (await response.json()) as { error?: string }, ms: Date.now() - startMs };
}

/** What a deploy script does: poll /health until 200, bounded. */
async function waitForHealthy(url: string, timeoutMs: number): Promise<void> {
  await waitUntil(`${url}/health to answer 200`, async () => ((await health(url)).status === 200 ? true : undefined), timeoutMs, 50);
}

describe('GET /health: ready means a write sent right after succeeds', () => {
  it('is 503 with reasons before leaders exist, 200 in every region once they do, and then writes to every shard succeed at once', async () => {
    // Arrange
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('ready'),
      replicaRegions: ['eu-west-1'],
      shardCount,
      log: () => undefined,
    });
    const [home, replica] = cloud.regions;

    // Act: asked at once, before the node processes have elected anyone.
    const early = await health(home!.apiUrl);
    const livez = await fetch(`${home!.apiUrl}/livez`);
    await waitForHealthy(home!.apiUrl, 30_000);
    // The script's next line: write one key on every shard.
    const writes = await Promise.all(Array.from({ length: shardCount }, (_, shard) => put(home!.apiUrl, keyInShard(shard, shardCount, 'ready'), `v${shard}`)));
    await waitForHealthy(replica!.apiUrl, 30_000);
    const replicaHealth = await health(replica!.apiUrl);

    // Assess
    expect(early.status).toBe(503);
    expect(early.retryAfter).toMatch(/^\d+$/);
    expect(early.body).toMatchObject({ status: 'unavailable', region: 'us-east-1', role: 'home' });
    expect(early.body.reasons?.length).toBeGreaterThan(0);
    expect(early.body.reasons?.join(' ')).toMatch(/shard \d+ (has no leader yet|has no live leader|: .* is taking over)/);
    expect(livez.status).toBe(200);
    expect(await livez.json()).toMatchObject({ status: 'ok', region: 'us-east-1' });
    expect(writes.map((write) => `${write.status} ${write.body.error ?? ''}`)).toEqual(Array.from({ length: shardCount }, () => '200 '));
    expect(replicaHealth.status).toBe(200);
    expect(replicaHealth.body).toMatchObject({ status: 'ok', region: 'eu-west-1', role: 'replica' });
  }, 90_000);

  it('is 503 with reasons when every node is stopped, and 200 again once they run', async () => {
    // Arrange
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('unready'),
      replicaRegions: [],
      shardCount,
      log: () => undefined,
    });
    await cloud.waitForReady(30_000);

    // Act
    for (const node of cloud.nodes()) cloud.kill(node.id);
    const down = await waitUntil(
      '/health to answer 503 once the leases lapse',
      async () => {
        const answer = await health(cloud!.apiUrl);
        return answer.status === 503 ? answer : undefined;
      },
      10 * cloud.config.leaseMs,
      100,
    );
    for (const node of cloud.nodes()) cloud.start(node.id);
    await waitForHealthy(cloud.apiUrl, 30_000);
    const write = await put(cloud.apiUrl, 'after-restart', 'x');

    // Assess
    expect(down.retryAfter).toMatch(/^\d+$/);
    expect(down.body.status).toBe('unavailable');
    expect(down.body.reasons?.join(' ')).toMatch(/shard \d+ has no live leader: node-[abc] last renewed its lease \d+ ms ago/);
    expect(write.status).toBe(200);
  }, 90_000);
});

describe('Blackhole: DynamoDB and SQS accept connections and never answer', () => {
  it('leaders step down, writes and /health answer 503 within the SDK timeouts, and the cluster recovers by itself after healing', async () => {
    // Arrange
    const output: string[] = [];
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('blackhole'),
      replicaRegions: ['eu-west-1'],
      shardCount,
      faultProxy: true,
      log: (line) => output.push(line),
    });
    await cloud.waitForReady(30_000);
    expect((await put(cloud.apiUrl, 'before', 'x')).status).toBe(200);
    const { leaseMs } = cloud.config;

    // Act
    const { apiUrl } = cloud;
    const startedMs = Date.now();
    cloud.blackhole(true);
    // An environment may answer /health from its readiness answer of the last half tick
    // (ReadinessCache): look until the blackhole shows, and time the answer that shows it.
    const [write, unready] = await Promise.all([
      put(cloud.apiUrl, 'during', 'x'),
      waitUntil(
        '/health to answer 503 while the store hangs',
        async () => {
          const answer = await health(apiUrl);
          return answer.status === 503 ? answer : undefined;
        },
        2 * awsCallMsMax(limits.apiRequestTimeoutMs) + 2_000,
        0,
      ),
    ]);
    // Every shard's leader gives its shard up once its renewals go unanswered for about a lease.
    const stepDowns = await waitUntil(
      'a step-down for every shard',
      () => {
        const lines = output.filter((line) => / stepped down from shard \d+ \(epoch \d+\): no lease renewal acknowledged/.test(line));
        const shards = new Set(lines.map((line) => /shard (\d+)/.exec(line)?.[1]));
        return shards.size === shardCount ? lines : undefined;
      },
      4 * leaseMs,
      50,
    );
    const steppedDownAfterMs = Date.now() - startedMs;
    cloud.blackhole(false);
    const healedMs = Date.now();
    await waitForHealthy(cloud.apiUrl, 10 * leaseMs);
    const recoveredMs = Date.now() - healedMs;
    const after = await put(cloud.apiUrl, 'after', 'x');
    console.log(`blackhole: write ${write.status} ${write.body.error} in ${write.ms} ms; /health ${unready.status} in ${unready.ms} ms; every leader stepped down ${steppedDownAfterMs} ms in; ready ${recoveredMs} ms after healing`);

    // Assess: bounded by the API's SDK timeouts (lib/core/limits.ts), far below API Gateway's 29 s.
    expect(write.status).toBe(503);
    expect(write.ms).toBeLessThan(2 * awsCallMsMax(limits.apiRequestTimeoutMs) + 2_000);
    expect(unready.status).toBe(503);
    expect(unready.body.reasons?.join(' ')).toMatch(/did not answer: TimeoutError/);
    expect(unready.ms).toBeLessThan(awsCallMsMax(limits.apiRequestTimeoutMs) + 2_000);
    // A lease plus one node call bounded by its timeouts, and a tick to notice.
    expect(steppedDownAfterMs).toBeLessThan(leaseMs + awsCallMsMax(limits.nodeRequestTimeoutMs) + 2 * cloud.config.tickMs + 1_000);
    expect(stepDowns.length).toBeGreaterThanOrEqual(shardCount);
    expect(after.status).toBe(200);
  }, 120_000);
});
