import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { LambdaFunctionReport, LocalCloud } from '../../lib/local/cloud.ts';
import { startLocalCloud } from '../../lib/local/cloud.ts';
import { keyInShard, uniquePrefix, waitUntil } from '../support.ts';

/**
 * The local cloud's API as Lambda runs it (the default model): one request per execution
 * environment, environments made on demand, and the local controls that show and kill them.
 */
const shardCount = 4;
let cloud: LocalCloud;
const output: string[] = [];

async function lambda(): Promise<{ model: { kind: string }; functions: LambdaFunctionReport[] }> {
  const response = await fetch(`${cloud.apiUrl}/_local/lambda`);
  expect(response.status).toBe(200);
  return (await response.json()) as { model: { kind: string }; functions: LambdaFunctionReport[] };
}

async function homeApi(): Promise<LambdaFunctionReport> {
  const report = (await lambda()).functions.find((entry) => entry.function === 'api' && entry.region === cloud.config.homeRegion);
  expect(report).toBeDefined();
  return report as LambdaFunctionReport;
}

/** A watch of an empty stretch of the log: it holds its environment for `waitMs`. */
function longPoll(waitMs: number): Promise<Response> {
  return fetch(`${cloud.apiUrl}/watch?shard=0&from=1000000&waitMs=${waitMs}`);
}

describe('Local cloud: the API as Lambda execution environments', () => {
  beforeAll(async () => {
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('lambda'),
      replicaRegions: ['eu-west-1'],
      shardCount,
      leaseMs: 2_000,
      tickMs: 250,
      nodeIds: ['node-a', 'node-b'],
      log: (line) => output.push(`${Date.now()} ${line}`),
    });
    await cloud.waitForLeaders(20_000);
  });

  afterAll(async () => {
    await cloud?.stop();
  });

  it('serves writes and reads, and GET /_local/lambda lists each region’s api and apply functions', async () => {
    const put = await fetch(`${cloud.apiUrl}/kv/greeting`, { method: 'PUT', body: 'hello' });
    expect(put.status).toBe(200);
    const get = await fetch(`${cloud.apiUrl}/kv/greeting`);
    expect(await get.text()).toBe('hello');

    const listing = await lambda();
    expect(cloud.apiModel).toEqual({ kind: 'lambda', concurrencyMax: 1000 });
    expect(listing.model).toEqual({ kind: 'lambda', concurrencyMax: 1000 });
    expect(listing.functions.map((entry) => `${entry.function} ${entry.region}`).sort()).toEqual(['api eu-west-1', 'api us-east-1', 'apply eu-west-1']);
    expect((await homeApi()).stats.invocations).toBeGreaterThanOrEqual(2);
  });

  it('a fault hook reaches every home environment, new ones too; a write whose environment dies before its commit is not committed', async () => {
    // Prepare: hold every home write between its lease read and its commit. At most two
    // environments exist yet (the requests so far came one at a time), so of three writes at
    // once at least one runs in an environment started after the hook was set.
    const environmentsBefore = (await homeApi()).stats.environments;
    expect(environmentsBefore).toBeLessThanOrEqual(2);
    const keys = [1, 2, 3].map((shard) => keyInShard(shard, shardCount, 'held'));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let held = 0;
    cloud.setBeforeCommit(async () => {
      held += 1;
      await released;
    });
    try {
      const writes = keys.map(async (key) => ({ key, answer: await fetch(`${cloud.apiUrl}/kv/${key}`, { method: 'PUT', body: key }) }));
      await waitUntil('three writes held before their commit', () => (held === 3 ? true : undefined), 10_000);

      // Act: one environment crashes, then the writes go on.
      const killed = cloud.killApiEnvironment();
      expect(killed?.region).toBe(cloud.config.homeRegion);
      cloud.setBeforeCommit(undefined);
      release();
      const outcomes = await Promise.all(writes);

      // Assess: API Gateway's 502 for the killed one, and its commit never left the dead
      // environment; the others committed.
      expect(outcomes.map(({ answer }) => answer.status).sort()).toEqual([200, 200, 502]);
      for (const { key, answer } of outcomes) {
        const read = await fetch(`${cloud.apiUrl}/kv/${key}`);
        if (answer.status === 502) expect(read.status).toBe(404);
        else expect(await read.text()).toBe(key);
      }
      await waitUntil(`${killed?.environmentId} gone`, async () => ((await homeApi()).environments.some((environment) => environment.id === killed?.environmentId) ? undefined : true), 5_000);
    } finally {
      cloud.setBeforeCommit(undefined);
      release();
    }
  });

  it('makes an environment per concurrent request: 12 at once make 12, and they are reused afterwards', async () => {
    // Prepare: what the home api has so far (earlier requests ran one at a time).
    const before = (await homeApi()).stats;

    // Act: 12 requests that each hold their environment for a while, all at once.
    const polls = Array.from({ length: 12 }, () => longPoll(1_500));
    const during = await waitUntil('12 busy api environments', async () => {
      const report = await homeApi();
      return report.stats.busy >= 12 ? report : undefined;
    }, 5_000);
    const answers = await Promise.all(polls);

    // Assess
    expect(answers.map((answer) => answer.status)).toEqual(Array(12).fill(200));
    expect(new Set(during.environments.filter((environment) => environment.state === 'busy').map((environment) => environment.id)).size).toBeGreaterThanOrEqual(12);
    const after = (await homeApi()).stats;
    expect(after.environments).toBeGreaterThanOrEqual(12);
    expect(after.busyMax).toBeGreaterThanOrEqual(12);
    expect(after.coldStarts - before.coldStarts).toBeGreaterThanOrEqual(12 - before.environments);
    expect(after.throttles).toBe(0);

    // The same burst again finds idle environments: no cold start.
    await Promise.all(Array.from({ length: 12 }, () => longPoll(200)));
    expect((await homeApi()).stats.coldStarts).toBe(after.coldStarts);
  });

  it('kills a busy environment on POST /_local/lambda/{region}/kill: its request answers 502 as API Gateway does', async () => {
    // Prepare: one request in flight.
    const killsBefore = (await homeApi()).stats.kills;
    const polling = longPoll(10_000);
    const busy = await waitUntil('a busy api environment', async () => (await homeApi()).environments.find((environment) => environment.state === 'busy'), 5_000);

    // Act
    const response = await fetch(`${cloud.apiUrl}/_local/lambda/${cloud.config.homeRegion}/kill`, { method: 'POST' });

    // Assess
    expect(response.status).toBe(200);
    const body = (await response.json()) as { killed: string | null; stats: { kills: number } };
    expect(body.killed).toBe(busy.id);
    expect(body.stats.kills).toBe(killsBefore + 1);
    const answer = await polling;
    expect(answer.status).toBe(502);
    expect(await answer.json()).toEqual({ error: 'LambdaFunctionError', message: 'Internal server error' });
    expect((await homeApi()).environments.map((environment) => environment.id)).not.toContain(busy.id);

    // Nothing busy: nothing killed. An unknown region: 404.
    const none = (await (await fetch(`${cloud.apiUrl}/_local/lambda/${cloud.config.homeRegion}/kill`, { method: 'POST' })).json()) as { killed: string | null };
    expect(none.killed).toBeNull();
    expect((await fetch(`${cloud.apiUrl}/_local/lambda/mars-1/kill`, { method: 'POST' })).status).toBe(404);
  });

  it('takes 24 concurrent HTTP writers on one shard — each its own environment — with every write answered, once, in a dense log, environments killed mid-write included', async () => {
    // Prepare: 24 clients, each writing its own keys of shard 1 in a loop, for about 4 s; a
    // killer crashes busy environments meanwhile.
    const shard = 1;
    const writers = 24;
    const acknowledged: { key: string; value: string; index: number; epoch: number }[] = [];
    const answers = new Map<number, number>();
    const stopAtMs = Date.now() + 4_000;
    let killed = 0;
    let answered = 0;
    const killer = (async () => {
      while (Date.now() < stopAtMs - 1_000) {
        // A kill every 20 answers: the writers keep going between kills.
        const mark = answered;
        await waitUntil('20 more answers', () => (answered >= mark + 20 || Date.now() >= stopAtMs - 1_000 ? true : undefined), 10_000, 5);
        const body = (await (await fetch(`${cloud.apiUrl}/_local/lambda/${cloud.config.homeRegion}/kill`, { method: 'POST' })).json()) as { killed: string | null };
        if (body.killed !== null) killed += 1;
      }
    })();

    // Act
    await Promise.all(
      Array.from({ length: writers }, async (_, writer) => {
        for (let sequence = 0; Date.now() < stopAtMs; sequence += 1) {
          const key = keyInShard(shard, shardCount, `many-${writer}-${sequence % 4}`);
          const value = `${writer}:${sequence}`;
          const response = await fetch(`${cloud.apiUrl}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value });
          answers.set(response.status, (answers.get(response.status) ?? 0) + 1);
          answered += 1;
          const body = (await response.json()) as { index?: number; epoch?: number };
          if (response.status === 200) acknowledged.push({ key, value, index: body.index as number, epoch: body.epoch as number });
        }
      }),
    );
    await killer;

    // Assess: every answer is a success or API Gateway's 502 for a killed environment — no 503
    // from lost races; the environments were many.
    expect([...answers.keys()].filter((status) => status !== 200 && status !== 502)).toEqual([]);
    expect(answers.get(502) ?? 0).toBe(killed);
    expect(acknowledged.length).toBeGreaterThan(writers * 3);
    expect((await homeApi()).stats.busyMax).toBeGreaterThanOrEqual(writers);
    // Each acknowledged write is in the home log at its index and epoch, with its value; the
    // log is dense and no request id appears twice (nothing committed twice).
    const log: { index: number; epoch: number; requestId?: string; ops: { type: string; key?: string; value?: string }[] }[] = [];
    for (let from = 1; ; ) {
      const page = (await (await fetch(`${cloud.apiUrl}/watch?shard=${shard}&from=${from}&waitMs=0&limit=1000`)).json()) as { entries: typeof log; next: number };
      if (page.entries.length === 0) break;
      log.push(...page.entries);
      from = page.next;
    }
    expect(log.map((entry) => entry.index)).toEqual(Array.from({ length: log.length }, (_, position) => position + 1));
    for (const write of acknowledged) {
      const entry = log[write.index - 1];
      expect(entry?.epoch).toBe(write.epoch);
      expect(entry?.ops[0]).toMatchObject({ type: 'put', key: write.key, value: Buffer.from(write.value).toString('base64') });
    }
    const written = log.flatMap((entry) => entry.ops.filter((op) => op.type === 'put').map((op) => `${op.key}=${op.value}`));
    expect(new Set(written).size).toBe(written.length);
  }, 60_000);
});
