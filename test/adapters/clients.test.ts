import { performance } from 'node:perf_hooks';
import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { describe, expect, inject, it } from 'vitest';
import {
  cutOffRegion,
  EnvironmentKilledError,
  makeDynamoClient,
  makeSqsClient,
  observeAwsRequests,
  reconnectRegion,
  RegionUnreachableError,
  type AwsRequestRecord,
} from '../../lib/adapters/aws/clients.ts';
import { awsCallMs, awsLatencyModel, setAwsLatency } from '../../lib/local/aws-latency.ts';
import { ensureReplicationQueue } from '../../lib/local/queues.ts';
import { startFaultProxy } from '../../lib/local/fault-proxy.ts';
import { awsCallMsMax, limits } from '../../lib/core/limits.ts';
import { createReplicaRegion, createStore, uniquePrefix } from '../support.ts';

describe('SQS clients (cached middleware stack, SQS emulator)', () => {
  it('resolve the middleware once, yet see observers and cut-off regions that change after the first request', async () => {
    // Prepare: a queue in eu-west-1, and a client calling it from us-east-1 that has sent once.
    const prefix = uniquePrefix('clients');
    const endpoint = inject('sqsEndpoint');
    const queue = await ensureReplicationQueue(makeSqsClient({ region: 'eu-west-1', endpoint }), prefix);
    const client = makeSqsClient({ region: 'eu-west-1', endpoint, from: 'us-east-1' });
    expect(client.config.cacheMiddleware).toBe(true);
    let sent = 0;
    const send = () => {
      sent += 1;
      return client.send(new SendMessageBatchCommand({ QueueUrl: queue.queueUrl, Entries: [{ Id: '0', MessageBody: `m${sent}`, MessageGroupId: '0', MessageDeduplicationId: `m${sent}` }] }));
    };
    await send();

    // Act + Assert: an observer registered after the first request sees the next one.
    const records: AwsRequestRecord[] = [];
    const stop = observeAwsRequests((record) => records.push(record));
    try {
      await send();
    } finally {
      stop();
    }
    expect(records.map((record) => `${record.service} ${record.region} ${record.operation}`)).toEqual(['sqs eu-west-1 SendMessageBatch']);

    // A region cut off after the first request is unreachable at once, and reachable again after.
    cutOffRegion('eu-west-1');
    try {
      await expect(send()).rejects.toBeInstanceOf(RegionUnreachableError);
    } finally {
      reconnectRegion('eu-west-1');
    }
    const output = await send();
    expect(output.Successful).toHaveLength(1);
  });
});

describe('The local call model (DynamoDB Local): AWS latency and the killed-environment switch', () => {
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

  /** Alternates GetItem calls with the latency model off and on; the ms each took. */
  async function timeGets(client: ReturnType<typeof makeDynamoClient>, table: string, count: number): Promise<{ offMs: number[]; onMs: number[] }> {
    const get = () => client.send(new GetItemCommand({ TableName: table, Key: { shard: { N: '0' }, key: { S: 'absent' } }, ConsistentRead: true }));
    await get(); // Connect before measuring.
    const offMs: number[] = [];
    const onMs: number[] = [];
    try {
      for (let round = 0; round < count; round += 1) {
        for (const on of [false, true]) {
          setAwsLatency(on);
          const startMs = performance.now();
          await get();
          (on ? onMs : offMs).push(performance.now() - startMs);
        }
      }
    } finally {
      setAwsLatency(false);
    }
    return { offMs, onMs };
  }

  it('delays a GetItem by the table figure within a region, and by the round trip plus that across regions', async () => {
    // Prepare: the kv table at home and in ap-southeast-2, a client for each as us-east-1 calls them.
    const prefix = uniquePrefix('latency');
    const endpoint = inject('dynamoEndpoint');
    const { tables } = await createStore(prefix);
    await createReplicaRegion(prefix, 'ap-southeast-2');
    const sameRegion = makeDynamoClient({ region: 'us-east-1', endpoint });
    const crossRegion = makeDynamoClient({ region: 'ap-southeast-2', endpoint, from: 'us-east-1' });
    expect(awsCallMs('dynamodb', 'GetItem', 'us-east-1', 'us-east-1')).toBe(awsLatencyModel.dynamodbCallMs);
    expect(awsCallMs('dynamodb', 'GetItem', 'us-east-1', 'ap-southeast-2')).toBe(awsLatencyModel.dynamodbCallMs + 230);
    try {
      // Act
      const same = await timeGets(sameRegion, tables.kv, 15);
      const cross = await timeGets(crossRegion, tables.kv, 3);

      // Assess: never faster than the model; the medians differ by at least its figure. The 1 ms
      // allows for Node's timers, which count whole milliseconds and may fire up to 1 ms early by
      // performance.now(); there is no upper bound to hold (DynamoDB Local's own time varies).
      expect(Math.min(...same.onMs)).toBeGreaterThanOrEqual(awsLatencyModel.dynamodbCallMs - 1);
      expect(median(same.onMs) - median(same.offMs)).toBeGreaterThanOrEqual(awsLatencyModel.dynamodbCallMs - 1);
      expect(median(cross.onMs) - median(cross.offMs)).toBeGreaterThanOrEqual(awsCallMs('dynamodb', 'GetItem', 'us-east-1', 'ap-southeast-2') - 1);
    } finally {
      sameRegion.destroy();
      crossRegion.destroy();
    }
  });

  it('refuses every call of a client whose environment was killed, before it is sent', async () => {
    // Prepare: a client of a live environment that has written once.
    const prefix = uniquePrefix('killed');
    const endpoint = inject('dynamoEndpoint');
    const { tables } = await createStore(prefix);
    let alive = true;
    const client = makeDynamoClient({ region: 'us-east-1', endpoint, alive: () => alive });
    const observer = makeDynamoClient({ region: 'us-east-1', endpoint });
    const put = (key: string) => client.send(new PutItemCommand({ TableName: tables.kv, Item: { shard: { N: '0' }, key: { S: key } } }));
    const read = async (key: string) => (await observer.send(new GetItemCommand({ TableName: tables.kv, Key: { shard: { N: '0' }, key: { S: key } }, ConsistentRead: true }))).Item;
    try {
      await put('before');
      expect(await read('before')).toBeDefined();

      // Act
      alive = false;

      // Assess: refused, and nothing reached the table.
      await expect(put('after')).rejects.toBeInstanceOf(EnvironmentKilledError);
      await expect(client.send(new GetItemCommand({ TableName: tables.kv, Key: { shard: { N: '0' }, key: { S: 'before' } } }))).rejects.toMatchObject({ name: 'EnvironmentKilledError' });
      expect(await read('after')).toBeUndefined();
    } finally {
      client.destroy();
      observer.destroy();
    }
  });
});

describe('Timeouts: an endpoint that accepts connections and never answers (fault proxy in front of DynamoDB Local and the SQS emulator)', () => {
  it('fails every call by role within its bound (attempts × request timeout + backoff), and works again once healed', async () => {
    // Arrange
    const prefix = uniquePrefix('timeouts');
    const { tables } = await createStore(prefix);
    const dynamoProxy = await startFaultProxy({ target: inject('dynamoEndpoint') });
    const sqsProxy = await startFaultProxy({ target: inject('sqsEndpoint') });
    const node = makeDynamoClient({ region: 'us-east-1', endpoint: dynamoProxy.endpoint, role: 'node' });
    const api = makeDynamoClient({ region: 'us-east-1', endpoint: dynamoProxy.endpoint, role: 'api' });
    const sqs = makeSqsClient({ region: 'us-east-1', endpoint: sqsProxy.endpoint, role: 'node' });
    const get = (client: typeof node) => client.send(new GetItemCommand({ TableName: tables.kv, Key: { shard: { N: '0' }, key: { S: 'k' } }, ConsistentRead: true }));
    const timed = async (call: () => Promise<unknown>): Promise<{ error: { name?: string; $metadata?: { attempts?: number } } | undefined; ms: number }> => {
      const startMs = performance.now();
      try {
        await call();
        return { error: undefined, ms: performance.now() - startMs };
      } catch (error) {
        return { error: error as { name?: string }, ms: performance.now() - startMs };
      }
    };
    try {
      await get(node);

      // Act
      dynamoProxy.setBlackhole(true);
      sqsProxy.setBlackhole(true);
      const [nodeCall, apiCall, sqsCall] = await Promise.all([
        timed(() => get(node)),
        timed(() => get(api)),
        timed(() => sqs.send(new SendMessageBatchCommand({ QueueUrl: `${sqsProxy.endpoint}/000000000000/none`, Entries: [{ Id: '1', MessageBody: 'x' }] }))),
      ]);
      dynamoProxy.setBlackhole(false);
      sqsProxy.setBlackhole(false);
      const healed = await timed(() => get(node));

      // Assess: each ends with a TimeoutError after every attempt, within its role's bound.
      expect(nodeCall.error).toMatchObject({ name: 'TimeoutError', $metadata: { attempts: limits.awsAttemptsMax } });
      expect(nodeCall.ms).toBeGreaterThanOrEqual(limits.awsAttemptsMax * limits.nodeRequestTimeoutMs - 50);
      expect(nodeCall.ms).toBeLessThan(awsCallMsMax(limits.nodeRequestTimeoutMs) + 500);
      expect(apiCall.error).toMatchObject({ name: 'TimeoutError' });
      expect(apiCall.ms).toBeGreaterThanOrEqual(limits.awsAttemptsMax * limits.apiRequestTimeoutMs - 50);
      expect(apiCall.ms).toBeLessThan(awsCallMsMax(limits.apiRequestTimeoutMs) + 500);
      expect(sqsCall.error).toMatchObject({ name: 'TimeoutError' });
      expect(sqsCall.ms).toBeLessThan(awsCallMsMax(limits.nodeRequestTimeoutMs) + 500);
      expect(healed.error).toBeUndefined();
      expect(dynamoProxy.stats().blackholedConnections).toBeGreaterThan(0);
    } finally {
      node.destroy();
      api.destroy();
      sqs.destroy();
      await dynamoProxy.close();
      await sqsProxy.close();
    }
  });
});
