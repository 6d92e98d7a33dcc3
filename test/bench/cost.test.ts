import { describe, expect, it } from 'vitest';
import {
  amortizedPerMillion,
  backgroundUsage,
  gbSeconds,
  globalTablesWrite,
  itemSizeBytes,
  monthlyUsd,
  priceLines,
  readUsage,
  secondsPerMonth,
  writeUsage,
  type MeasuredPhase,
} from '../../lib/bench/cost.ts';
import { billedUnits, classifyDynamo, diffSnapshots, lagSamples, Meter, subtractBackground, type MeterSnapshot } from '../../lib/bench/meter.ts';
import { priceTable, type PriceTable } from '../../lib/bench/prices.ts';

const stats = (fields: Partial<MeterSnapshot[string]>): MeterSnapshot[string] => ({
  count: 0,
  errors: 0,
  attempts: 0,
  writeUnits: 0,
  readUnits: 0,
  sqsBillable: 0,
  bytesSent: 0,
  durationMs: 0,
  ...fields,
});

describe('price table', () => {
  it('gives every price a positive amount, a source URL and a date note', () => {
    for (const price of Object.values(priceTable)) {
      expect(price.usd).toBeGreaterThan(0);
      expect(price.source).toMatch(/^https:\/\/aws\.amazon\.com\//);
      expect(price.asOf).toMatch(/2026/);
    }
  });
});

describe('cost arithmetic', () => {
  it('prices lines per million operations', () => {
    const priced = priceLines([
      { component: 'writes', price: 'dynamodbWriteRequestUnit', quantity: 6, basis: 'measured' },
      { component: 'api', price: 'apiGatewayRestRequest', quantity: 1, basis: 'modelled' },
    ]);
    expect(priced.lines[0]?.usdPerMillion).toBeCloseTo(6 * 0.625, 10);
    expect(priced.lines[1]?.usdPerMillion).toBeCloseTo(3.5, 10);
    expect(priced.usdPerMillion).toBeCloseTo(3.75 + 3.5, 10);
  });

  it('uses the price table it is given', () => {
    const doubled = Object.fromEntries(Object.entries(priceTable).map(([key, price]) => [key, { ...price, usd: price.usd * 2 }])) as PriceTable;
    expect(priceLines([{ component: 'x', price: 'lambdaRequest', quantity: 1, basis: 'modelled' }], doubled).usdPerMillion).toBeCloseTo(0.4, 10);
  });

  it('turns a per-second background into dollars per month and per million operations', () => {
    const perSecond = [{ component: 'renewals', price: 'dynamodbWriteRequestUnit' as const, quantity: 10, basis: 'measured' as const }];
    const month = monthlyUsd(perSecond);
    expect(month).toBeCloseTo(10 * 0.625e-6 * secondsPerMonth, 8);
    // Spread over 100 operations per second: 0.1 WRU per operation.
    expect(amortizedPerMillion(month, 100)).toBeCloseTo(0.1 * 0.625, 8);
    expect(amortizedPerMillion(month, 0)).toBe(Number.POSITIVE_INFINITY);
  });

  it('computes GB-seconds', () => {
    expect(gbSeconds(512, 0.04)).toBeCloseTo(0.02, 10);
  });

  it('sizes items the way DynamoDB counts them', () => {
    expect(itemSizeBytes({ key: 'abc' })).toBe(6);
    expect(itemSizeBytes({ value: new Uint8Array(100) })).toBe(105);
    expect(itemSizeBytes({ n: 12345 })).toBe(1 + 4);
    expect(itemSizeBytes({ b: true, z: null })).toBe(4);
    expect(itemSizeBytes({ l: ['a', 'b'] })).toBe(1 + 3 + 2 + 2);
  });

  it('prices a global table write: a write unit per started KB at home and in each replica, plus transfer', () => {
    const small = globalTablesWrite(151, 2);
    expect(small.lines.map((line) => line.quantity)).toEqual([1, 2, (151 * 2) / 1e9]);
    expect(small.usdPerMillion).toBeCloseTo(3 * 0.625 + ((151 * 2) / 1e9) * 0.02 * 1e6, 8);
    const large = globalTablesWrite(4147, 1);
    expect(large.lines[0]?.quantity).toBe(5);
    expect(large.lines[1]?.quantity).toBe(5);
  });
});

describe('usage from a measured phase', () => {
  const phase: MeasuredPhase = {
    ops: 100,
    requests: {
      'p|dynamodb|us-east-1|commit|TransactWriteItems': stats({ count: 100, writeUnits: 600 }),
      'p|dynamodb|us-east-1|lease-read|GetItem': stats({ count: 10, readUnits: 10 }),
      'p|dynamodb|us-east-1|log-range-read|Query': stats({ count: 2, readUnits: 20 }),
      'p|dynamodb|eu-west-1|apply|TransactWriteItems': stats({ count: 50, writeUnits: 400 }),
      'p|dynamodb|eu-west-1|report-write|PutItem': stats({ count: 8, writeUnits: 8 }),
      'p|dynamodb|ap-southeast-2|apply|TransactWriteItems': stats({ count: 50, writeUnits: 200 }),
      'p|sqs|eu-west-1|ship|SendMessageBatch': stats({ count: 40, sqsBillable: 40, bytesSent: 50_000 }),
      'p|sqs|eu-west-1|receive|ReceiveMessage': stats({ count: 30, sqsBillable: 30 }),
      'p|sqs|ap-southeast-2|receive|ReceiveMessage': stats({ count: 10, sqsBillable: 10 }),
    },
    homeRegion: 'us-east-1',
    measuredRegions: ['eu-west-1', 'ap-southeast-2'],
    applyBatches: { 'eu-west-1': 30, 'ap-southeast-2': 10 },
    meanLatencyMs: 50,
  };
  const quantity = (lines: ReturnType<typeof writeUsage>, prefix: string) => lines.find((line) => line.component.startsWith(prefix))?.quantity;

  it('takes home requests as measured and a replica region as the mean of the measured ones', () => {
    const one = writeUsage(phase, 1);
    expect(quantity(one, 'home DynamoDB writes')).toBe(6);
    expect(quantity(one, 'home DynamoDB reads')).toBe(0.1);
    // (408 + 200) / 2 regions / 100 writes
    expect(quantity(one, 'replica DynamoDB writes')).toBeCloseTo(3.04, 10);
    // repair reads of the home log are shared by the regions: 20 / 2 / 100
    expect(quantity(one, 'replica DynamoDB reads')).toBeCloseTo(0.1, 10);
    expect(quantity(one, 'SQS send')).toBe(1);
    expect(quantity(one, 'SQS receive')).toBeCloseTo(0.2, 10);
    expect(quantity(one, 'apply Lambda invocations')).toBeCloseTo(0.2, 10);
    const two = writeUsage(phase, 2);
    expect(quantity(two, 'replica DynamoDB writes')).toBeCloseTo(6.08, 10);
    expect(quantity(two, 'SQS send')).toBe(2);
    expect(quantity(two, 'replication traffic')).toBeCloseTo((2 * 250) / 1e9, 15);
    expect(priceLines(two).usdPerMillion).toBeGreaterThan(priceLines(one).usdPerMillion);
  });

  it('has no replica lines without replica regions, and reads count every read unit', () => {
    expect(writeUsage(phase, 0).some((line) => line.component.includes('replica'))).toBe(false);
    expect(quantity(readUsage(phase), 'DynamoDB reads')).toBeCloseTo(0.3, 10);
  });

  it('scales a background measured at one tick to another', () => {
    const lines = backgroundUsage(
      {
        nodes: { 'b|dynamodb|us-east-1|lease-write|UpdateItem': stats({ count: 32, writeUnits: 32 }) },
        heartbeatPerRegion: { 'b|dynamodb|eu-west-1|progress-read|GetItem': stats({ count: 40, readUnits: 40 }) },
        measuredTickMs: 250,
        modelTickMs: 1000,
        nodeCount: 3,
      },
      2,
    );
    expect(quantity(lines, 'nodes: DynamoDB writes')).toBe(8);
    expect(quantity(lines, 'replica heartbeats: DynamoDB reads')).toBe(20);
    expect(quantity(lines, 'apply event source idle polling')).toBe(0.5);
  });
});

describe('request classification and billing', () => {
  it('names the fenced write, the apply, the marker and the reads', () => {
    const commit = { TransactItems: [{ ConditionCheck: { TableName: 'p-control' } }, { Put: { TableName: 'p-log', Item: { shard: 1, index: 2 } } }] };
    expect(classifyDynamo('TransactWriteItems', commit)).toEqual({ prefix: 'p', role: 'commit' });
    expect(classifyDynamo('TransactWriteItems', { TransactItems: [{ Put: { TableName: 'p-control', Item: { pk: 'progress' } } }] }).role).toBe('apply');
    expect(classifyDynamo('TransactWriteItems', { TransactItems: [{ Update: { TableName: 'p-control' } }, { Put: { TableName: 'p-log' } }] }).role).toBe('marker');
    expect(classifyDynamo('GetItem', { TableName: 'my-prefix-control', Key: { pk: 'lease', sk: '0001' } })).toEqual({ prefix: 'my-prefix', role: 'lease-read' });
    expect(classifyDynamo('Query', { TableName: 'p-log', KeyConditionExpression: '#shard = :shard' }).role).toBe('head-read');
    expect(classifyDynamo('Query', { TableName: 'p-log', KeyConditionExpression: '#shard = :shard AND #index >= :from' }).role).toBe('log-range-read');
    expect(classifyDynamo('GetItem', { TableName: 'p-kv', ConsistentRead: true }).role).toBe('kv-read-strong');
    expect(classifyDynamo('Query', { TableName: 'p-control', ExpressionAttributeValues: { ':pk': { S: 'node' } } }).role).toBe('heartbeats-read');
  });

  it('bills at least the per-request minimum and models failed writes', () => {
    expect(billedUnits('Query', { ConsistentRead: true }, { ConsumedCapacity: { CapacityUnits: 0 } }, false)).toEqual({ write: 0, read: 1 });
    expect(billedUnits('GetItem', {}, { ConsumedCapacity: { CapacityUnits: 0.5 } }, false)).toEqual({ write: 0, read: 0.5 });
    expect(billedUnits('TransactWriteItems', {}, { ConsumedCapacity: [{ CapacityUnits: 2 }, { CapacityUnits: 10 }] }, false)).toEqual({ write: 12, read: 0 });
    // DynamoDB Local reports 2 per table: a group of 3 writes is 7 items, a 4 KiB put 5 KB.
    const group = { TransactItems: [{ ConditionCheck: {} }, ...[1, 2, 3].flatMap((n) => [{ Put: { Item: { shard: 1, index: n, value: 'x'.repeat(100) } } }, { Put: { Item: { shard: 1, key: `k${n}`, value: 'x'.repeat(100) } } }])] };
    expect(billedUnits('TransactWriteItems', group, { ConsumedCapacity: [{ CapacityUnits: 2 }, { CapacityUnits: 2 }, { CapacityUnits: 2 }] }, false)).toEqual({ write: 14, read: 0 });
    const large = { TransactItems: [{ Put: { Item: { shard: { N: '1' }, key: { S: 'k' }, value: { B: new Uint8Array(4096) } } } }] };
    expect(billedUnits('TransactWriteItems', large, { ConsumedCapacity: [{ CapacityUnits: 2 }] }, false)).toEqual({ write: 10, read: 0 });
    expect(billedUnits('TransactWriteItems', { TransactItems: [{ Put: {} }, { Put: {} }, { ConditionCheck: {} }] }, undefined, true)).toEqual({ write: 6, read: 0 });
    expect(billedUnits('SendMessageBatch', {}, undefined, false)).toEqual({ write: 0, read: 0 });
  });
});

describe('Meter', () => {
  const base = { attempts: 1, error: undefined } as const;

  it('counts SQS payload in 64 KiB requests and follows entries from commit to apply', () => {
    const meter = new Meter();
    meter.trackEntries('p', 'us-east-1');
    const logPut = { Put: { TableName: 'p-log', Item: { shard: 3, index: 7 } } };
    meter.record({ ...base, service: 'dynamodb', region: 'us-east-1', operation: 'TransactWriteItems', input: { TransactItems: [{ ConditionCheck: { TableName: 'p-control' } }, logPut] }, output: {}, startMs: 0, endMs: 10 });
    meter.record({
      ...base,
      service: 'sqs',
      region: 'eu-west-1',
      operation: 'SendMessageBatch',
      input: { QueueUrl: 'http://x/000/p-replication.fifo', Entries: [{ Id: '0', MessageBody: 'x'.repeat(70_000), MessageDeduplicationId: '3:7' }] },
      output: {},
      startMs: 10,
      endMs: 15,
    });
    meter.record({ ...base, service: 'sqs', region: 'eu-west-1', operation: 'ReceiveMessage', input: { QueueUrl: 'http://x/000/p-replication.fifo' }, output: { Messages: [{ Attributes: { MessageDeduplicationId: '3:7' } }] }, startMs: 15, endMs: 40 });
    meter.record({
      ...base,
      service: 'dynamodb',
      region: 'eu-west-1',
      operation: 'TransactWriteItems',
      input: { TransactItems: [{ Put: { TableName: 'p-control', Item: { pk: 'progress', shard: 3, appliedIndex: 7 } } }, logPut] },
      output: {},
      startMs: 40,
      endMs: 55,
    });
    const snapshot = meter.snapshot();
    expect(snapshot['p|sqs|eu-west-1|ship|SendMessageBatch']).toMatchObject({ count: 1, sqsBillable: 2, bytesSent: 70_000 });
    // Two transactional items at 2 units each, whatever the (empty) reported capacity says.
    expect(snapshot['p|dynamodb|us-east-1|commit|TransactWriteItems']).toMatchObject({ count: 1, writeUnits: 4 });
    const { samples, unapplied } = lagSamples(meter.entries(), ['eu-west-1', 'ap-southeast-2']);
    expect(samples).toEqual([{ region: 'eu-west-1', committedMs: 10, appliedMs: 55, lagMs: 45, shipMs: 5, queueMs: 25, applyMs: 15 }]);
    expect(unapplied).toEqual({ 'eu-west-1': 0, 'ap-southeast-2': 1 });
  });

  it('diffs snapshots and subtracts a background without going below zero', () => {
    const before: MeterSnapshot = { a: stats({ count: 1, writeUnits: 2 }) };
    const after: MeterSnapshot = { a: stats({ count: 4, writeUnits: 8 }), b: stats({ count: 1 }) };
    const delta = diffSnapshots(after, before);
    expect(delta.a).toMatchObject({ count: 3, writeUnits: 6 });
    expect(delta.b).toMatchObject({ count: 1 });
    expect(subtractBackground(delta, { a: stats({ count: 5, writeUnits: 1 }) }).a).toMatchObject({ count: 0, writeUnits: 5 });
  });
});

describe('lag samples', () => {
  it('counts an entry applied before its message arrived as pulled from the home log', () => {
    const { samples } = lagSamples([{ committedMs: 0, shipped: { r: 5 }, received: { r: 80 }, applied: { r: 50 } }], ['r']);
    expect(samples).toEqual([{ region: 'r', committedMs: 0, appliedMs: 50, lagMs: 50, shipMs: 5, queueMs: undefined, applyMs: undefined }]);
  });
});
