import { createHash } from 'node:crypto';
import {
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { AssertionError } from '../../lib/core/assert.ts';
import { createEventSource, type EventSource, type EventSourceOptions } from '../../lib/local/event-source.ts';
import { makeSqsClient, observeAwsRequests, type AwsRequestRecord } from '../../lib/adapters/aws/clients.ts';
import { ensureReplicationQueue, replicationQueueNames, type ReplicationQueue } from '../../lib/local/queues.ts';
import { region, uniquePrefix, waitUntil } from '../support.ts';

interface Outgoing {
  group: string;
  body: string;
}

const clients = new Map<string, SQSClient>();
/**
 * One client per region: fauxqs tells regions apart by the client's signing region. The
 * long-poll role, as the local cloud's event sources have: a worker's 2 s request timeout would
 * cut a 2 s receive and retry it, three times.
 */
function sqsIn(regionName: string): SQSClient {
  let client = clients.get(regionName);
  if (client === undefined) {
    client = makeSqsClient({ region: regionName, endpoint: inject('sqsEndpoint'), role: 'long-poll' });
    clients.set(regionName, client);
  }
  return client;
}

async function queueArnOf(client: SQSClient, queueUrl: string): Promise<string> {
  const arn = (await client.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }))).Attributes?.QueueArn;
  if (arn === undefined) throw new Error(`no QueueArn for ${queueUrl}`);
  return arn;
}

/** Sends in order, ten per request; the body doubles as the deduplication id. */
async function sendInOrder(client: SQSClient, queueUrl: string, messages: readonly Outgoing[]): Promise<void> {
  for (let start = 0; start < messages.length; start += 10) {
    const chunk = messages.slice(start, start + 10);
    const output = await client.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: chunk.map((message, index) => ({
          Id: String(index),
          MessageBody: message.body,
          MessageGroupId: message.group,
          MessageDeduplicationId: message.body,
          MessageAttributes: { origin: { DataType: 'String', StringValue: 'home' } },
        })),
      }),
    );
    expect(output.Failed ?? []).toEqual([]);
  }
}

/** Messages visible plus in flight; zero means the queue is drained. */
async function messagesInQueue(client: SQSClient, queueUrl: string): Promise<number> {
  const attributes = (
    await client.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }))
  ).Attributes;
  return Number(attributes?.ApproximateNumberOfMessages) + Number(attributes?.ApproximateNumberOfMessagesNotVisible);
}

async function waitUntilDrained(client: SQSClient, queueUrl: string, timeoutMs = 10_000): Promise<void> {
  await waitUntil('the queue to drain', async () => ((await messagesInQueue(client, queueUrl)) === 0 ? true : undefined), timeoutMs);
}

const sources: EventSource[] = [];
function startSource(options: EventSourceOptions, faults: Parameters<EventSource['setFaults']>[0] = {}): EventSource {
  const source = createEventSource(options);
  source.setFaults(faults);
  sources.push(source);
  source.start();
  return source;
}

/** A fresh replication queue whose failed messages come back after one second. */
async function freshQueue(label: string, regionName = region, maxReceiveCount = 5): Promise<ReplicationQueue & { client: SQSClient; queueArn: string }> {
  const client = sqsIn(regionName);
  const queue = await ensureReplicationQueue(client, uniquePrefix(label), { maxReceiveCount, visibilityTimeoutS: 1 });
  return { ...queue, client, queueArn: await queueArnOf(client, queue.queueUrl) };
}

function bodiesOf(events: readonly SQSEvent[]): string[] {
  return events.flatMap((event) => event.Records.map((record) => record.body));
}

afterEach(async () => {
  await Promise.all(sources.splice(0).map((source) => source.stop()));
});

afterAll(() => {
  for (const client of clients.values()) client.destroy();
});

describe('Function: ensureReplicationQueue', () => {
  it('creates a FIFO queue and a FIFO DLQ with every attribute said explicitly', async () => {
    // Prepare
    const client = sqsIn(region);
    const prefix = uniquePrefix('queues');

    // Act
    const queue = await ensureReplicationQueue(client, prefix);

    // Assess
    const names = replicationQueueNames(prefix);
    expect(queue.region).toBe(region);
    expect(queue.queueUrl.endsWith(`/${names.queue}`)).toBe(true);
    expect(queue.dlqUrl.endsWith(`/${names.dlq}`)).toBe(true);
    const attributes = (await client.send(new GetQueueAttributesCommand({ QueueUrl: queue.queueUrl, AttributeNames: ['All'] }))).Attributes ?? {};
    const dlqAttributes = (await client.send(new GetQueueAttributesCommand({ QueueUrl: queue.dlqUrl, AttributeNames: ['All'] }))).Attributes ?? {};
    expect(attributes).toMatchObject({
      FifoQueue: 'true',
      ContentBasedDeduplication: 'false',
      MaximumMessageSize: '1048576',
      VisibilityTimeout: '30',
      MessageRetentionPeriod: '345600',
    });
    expect(JSON.parse(attributes.RedrivePolicy ?? '{}')).toEqual({ deadLetterTargetArn: dlqAttributes.QueueArn, maxReceiveCount: 5 });
    expect(dlqAttributes).toMatchObject({ FifoQueue: 'true', ContentBasedDeduplication: 'false', MaximumMessageSize: '1048576' });
  });

  it('is idempotent, applies changed options to existing queues and keeps regions apart', async () => {
    // Prepare
    const prefix = uniquePrefix('queues');
    const first = await ensureReplicationQueue(sqsIn(region), prefix);

    // Act
    const again = await ensureReplicationQueue(sqsIn(region), prefix);
    const changed = await ensureReplicationQueue(sqsIn(region), prefix, { visibilityTimeoutS: 10, maxReceiveCount: 3 });
    const elsewhere = await ensureReplicationQueue(sqsIn('eu-west-1'), prefix);

    // Assess
    expect(again).toEqual(first);
    expect(changed).toEqual(first);
    const attributes = (await sqsIn(region).send(new GetQueueAttributesCommand({ QueueUrl: first.queueUrl, AttributeNames: ['All'] }))).Attributes ?? {};
    expect(attributes.VisibilityTimeout).toBe('10');
    expect(JSON.parse(attributes.RedrivePolicy ?? '{}')).toMatchObject({ maxReceiveCount: 3 });
    expect(elsewhere.region).toBe('eu-west-1');
    expect(elsewhere.queueUrl).not.toBe(first.queueUrl);
    expect(await queueArnOf(sqsIn('eu-west-1'), elsewhere.queueUrl)).toContain(':eu-west-1:');
  });

  it('accepts a message of 1 MiB and refuses a larger one', async () => {
    // Prepare
    const { client, queueUrl } = await freshQueue('size');
    const send = (body: string) => client.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body, MessageGroupId: 'g', MessageDeduplicationId: String(body.length) }));

    // Act
    const largest = await send('x'.repeat(1024 * 1024));
    // Caught where it is made: a rejection left pending while another await runs is "unhandled".
    const tooLarge = await send('x'.repeat(1024 * 1024 + 1)).then(
      () => undefined,
      (error: unknown) => error,
    );

    // Assess
    expect(largest).toMatchObject({ SequenceNumber: expect.any(String) });
    expect(String(tooLarge)).toMatch(/shorter than 1048576 bytes/);
  });
});

describe('Function: createEventSource', () => {
  it('delivers each message group in order, in events of at most 10 records with the Lambda record shape', async () => {
    // Prepare: the queue lives in another region than the default, to see awsRegion and the ARN follow it.
    const queue = await freshQueue('order', 'eu-west-1');
    const outgoing: Outgoing[] = [];
    for (let index = 1; index <= 12; index += 1) outgoing.push({ group: 'a', body: `a-${index}` }, { group: 'b', body: `b-${index}` });
    await sendInOrder(queue.client, queue.queueUrl, outgoing);
    const events: SQSEvent[] = [];

    // Act
    const source = startSource({
      client: queue.client,
      queueUrl: queue.queueUrl,
      region: queue.region,
      visibilityTimeoutS: 5,
      handler: async (event) => {
        events.push(event);
      },
    });
    await waitUntil('every message to be handled', () => (bodiesOf(events).length >= outgoing.length ? true : undefined), 20_000);
    await waitUntilDrained(queue.client, queue.queueUrl);

    // Assess
    expect(events.every((event) => event.Records.length >= 1 && event.Records.length <= 10)).toBe(true);
    const records = events.flatMap((event) => event.Records);
    for (const group of ['a', 'b']) {
      const ofGroup = records.filter((record) => record.attributes.MessageGroupId === group);
      expect(ofGroup.map((record) => record.body)).toEqual(outgoing.filter((message) => message.group === group).map((message) => message.body));
      const sequenceNumbers = ofGroup.map((record) => BigInt(record.attributes.SequenceNumber ?? '0'));
      expect(sequenceNumbers).toEqual([...sequenceNumbers].sort((left, right) => (left < right ? -1 : left > right ? 1 : 0)));
    }
    const sample = records.find((record) => record.body === 'b-3') as SQSRecord;
    expect(sample).toEqual({
      messageId: expect.any(String),
      receiptHandle: expect.any(String),
      body: 'b-3',
      attributes: expect.objectContaining({
        ApproximateReceiveCount: '1',
        SentTimestamp: expect.stringMatching(/^\d+$/),
        SenderId: expect.any(String),
        ApproximateFirstReceiveTimestamp: expect.stringMatching(/^\d+$/),
        MessageGroupId: 'b',
        MessageDeduplicationId: 'b-3',
        SequenceNumber: expect.stringMatching(/^\d+$/),
      }),
      messageAttributes: { origin: { stringValue: 'home', stringListValues: [], binaryListValues: [], dataType: 'String' } },
      md5OfBody: createHash('md5').update('b-3').digest('hex'),
      md5OfMessageAttributes: expect.any(String),
      eventSource: 'aws:sqs',
      eventSourceARN: queue.queueArn,
      awsRegion: 'eu-west-1',
    });
    expect(queue.queueArn).toContain(':eu-west-1:');
    await waitUntil('the pollers to count the deletes', () => (source.stats().deleted >= outgoing.length ? true : undefined), 5_000);
    expect(source.stats()).toMatchObject({ received: 24, deleted: 24, failed: 0, batches: events.length });
  });

  it('deletes what the handler did not report and redelivers the reported failures of a group, in order', async () => {
    // Prepare
    const queue = await freshQueue('partial');
    const outgoing: Outgoing[] = [
      { group: 'a', body: 'a-1' },
      { group: 'b', body: 'b-1' },
      { group: 'a', body: 'a-2' },
      { group: 'b', body: 'b-2' },
      { group: 'a', body: 'a-3' },
      { group: 'a', body: 'a-4' },
      { group: 'b', body: 'b-3' },
    ];
    await sendInOrder(queue.client, queue.queueUrl, outgoing);
    const deliveries: { body: string; receiveCount: number; outcome: 'ok' | 'failed' }[] = [];
    // Powertools' FIFO processor: the first failure of a group fails the rest of that group in the batch.
    const handler = async (event: SQSEvent): Promise<SQSBatchResponse> => {
      const failedGroups = new Set<string>();
      const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
      for (const record of event.Records) {
        const group = record.attributes.MessageGroupId ?? '';
        const receiveCount = Number(record.attributes.ApproximateReceiveCount);
        const fails = failedGroups.has(group) || (record.body === 'a-2' && receiveCount === 1);
        deliveries.push({ body: record.body, receiveCount, outcome: fails ? 'failed' : 'ok' });
        if (fails) {
          failedGroups.add(group);
          batchItemFailures.push({ itemIdentifier: record.messageId });
        }
      }
      return { batchItemFailures };
    };

    // Act
    const source = startSource({ client: queue.client, queueUrl: queue.queueUrl, region: queue.region, visibilityTimeoutS: 1, handler });
    const succeeded = () => deliveries.filter((delivery) => delivery.outcome === 'ok').map((delivery) => delivery.body);
    await waitUntil('every message to succeed once', () => (succeeded().length >= outgoing.length ? true : undefined), 20_000);
    await waitUntilDrained(queue.client, queue.queueUrl);

    // Assess: each message succeeded exactly once, in group order, and the queue is empty, so
    // nothing that succeeded can come back.
    expect([...succeeded()].sort()).toEqual(outgoing.map((message) => message.body).sort());
    for (const group of ['a', 'b']) {
      expect(succeeded().filter((body) => body.startsWith(`${group}-`))).toEqual(outgoing.filter((message) => message.group === group).map((message) => message.body));
    }
    const ofA2 = deliveries.filter((delivery) => delivery.body === 'a-2');
    expect(ofA2[0]).toEqual({ body: 'a-2', receiveCount: 1, outcome: 'failed' });
    expect(ofA2.at(-1)).toMatchObject({ outcome: 'ok' });
    expect(ofA2.at(-1)?.receiveCount).toBeGreaterThanOrEqual(2);
    for (const failure of deliveries.filter((delivery) => delivery.outcome === 'failed')) {
      const later = deliveries.filter((delivery) => delivery.body === failure.body && delivery.receiveCount > failure.receiveCount);
      expect(later.length, `${failure.body} is redelivered after failing`).toBeGreaterThan(0);
    }
    for (const body of ['a-1', 'b-1', 'b-2', 'b-3']) {
      expect(deliveries.filter((delivery) => delivery.body === body)).toEqual([{ body, receiveCount: 1, outcome: 'ok' }]);
    }
    // The emulator drops a message before the delete call returns and the counter moves: wait for it.
    await waitUntil('the pollers to count the deletes', () => (source.stats().deleted >= outgoing.length ? true : undefined), 5_000);
    const stats = source.stats();
    expect(stats.deleted).toBe(outgoing.length);
    expect(stats.failed).toBe(deliveries.filter((delivery) => delivery.outcome === 'failed').length);
  });

  it('lets SQS move a poison message to the DLQ after maxReceiveCount receives, then goes on with its group', async () => {
    // Prepare
    const queue = await freshQueue('poison', region, 2);
    await sendInOrder(queue.client, queue.queueUrl, [
      { group: 'p', body: 'p-1' },
      { group: 'q', body: 'q-1' },
      { group: 'p', body: 'p-2' },
    ]);
    const deliveries: { body: string; receiveCount: number }[] = [];
    const handler = async (event: SQSEvent): Promise<SQSBatchResponse> => {
      for (const record of event.Records) deliveries.push({ body: record.body, receiveCount: Number(record.attributes.ApproximateReceiveCount) });
      return { batchItemFailures: event.Records.filter((record) => record.body === 'p-1').map((record) => ({ itemIdentifier: record.messageId })) };
    };

    // Act
    const source = startSource({ client: queue.client, queueUrl: queue.queueUrl, region: queue.region, visibilityTimeoutS: 1, handler });
    const dead = await waitUntil(
      'the poison message in the DLQ',
      async () => {
        const output = await queue.client.send(new ReceiveMessageCommand({ QueueUrl: queue.dlqUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, MessageSystemAttributeNames: ['All'] }));
        return output.Messages?.length ? output.Messages : undefined;
      },
      15_000,
    );
    await waitUntil('p-2 to be handled', () => (deliveries.some((delivery) => delivery.body === 'p-2') ? true : undefined), 10_000);
    await waitUntilDrained(queue.client, queue.queueUrl);

    // Assess
    expect(dead.map((message) => message.Body)).toEqual(['p-1']);
    expect(dead[0]?.Attributes?.MessageGroupId).toBe('p');
    expect(deliveries.filter((delivery) => delivery.body === 'p-1').map((delivery) => delivery.receiveCount)).toEqual([1, 2]);
    expect(deliveries.filter((delivery) => delivery.body !== 'p-1')).toEqual([
      { body: 'q-1', receiveCount: 1 },
      { body: 'p-2', receiveCount: 1 },
    ]);
    // The emulator drops a message before the delete call returns and the counter moves: wait for it.
    await waitUntil('the poller to count the deletes', () => (source.stats().deleted >= 2 ? true : undefined), 5_000);
    expect(source.stats()).toMatchObject({ failed: 2, deleted: 2 });
  });

  it('with dropRate 1 deletes every message without calling the handler', async () => {
    // Prepare
    const queue = await freshQueue('drop');
    await sendInOrder(queue.client, queue.queueUrl, ['a', 'b', 'c', 'd', 'e'].map((group) => ({ group, body: `${group}-1` })));
    let handlerCalls = 0;

    // Act
    const source = startSource(
      { client: queue.client, queueUrl: queue.queueUrl, region: queue.region, seed: 1, handler: async () => void (handlerCalls += 1) },
      { dropRate: 1 },
    );
    await waitUntil('every message to be dropped', () => (source.stats().dropped === 5 ? true : undefined), 10_000);
    await waitUntilDrained(queue.client, queue.queueUrl);

    // Assess
    expect(handlerCalls).toBe(0);
    expect(source.stats()).toMatchObject({ received: 5, dropped: 5, batches: 0, deleted: 0, failed: 0 });
  });

  it('with duplicateRate 1 puts each record twice in its event and still deletes each message once', async () => {
    // Prepare
    const queue = await freshQueue('duplicate');
    await sendInOrder(queue.client, queue.queueUrl, ['a', 'b', 'c', 'd'].map((group) => ({ group, body: `${group}-1` })));
    const events: SQSEvent[] = [];

    // Act
    const source = startSource(
      { client: queue.client, queueUrl: queue.queueUrl, region: queue.region, seed: 2, handler: async (event) => void events.push(event) },
      { duplicateRate: 1 },
    );
    await waitUntil('every message to be handled', () => (new Set(bodiesOf(events)).size === 4 ? true : undefined), 10_000);
    await waitUntilDrained(queue.client, queue.queueUrl);

    // Assess
    for (const event of events) {
      const ids = event.Records.map((record) => record.messageId);
      expect(ids.length % 2).toBe(0);
      for (let index = 0; index < ids.length; index += 2) expect(ids[index + 1]).toBe(ids[index]);
    }
    expect(bodiesOf(events).sort()).toEqual(['a-1', 'a-1', 'b-1', 'b-1', 'c-1', 'c-1', 'd-1', 'd-1']);
    await waitUntil('the pollers to count the deletes', () => (source.stats().deleted >= 4 ? true : undefined), 5_000);
    expect(source.stats()).toMatchObject({ received: 4, duplicated: 4, deleted: 4, failed: 0 });
  });

  it('with reorder shuffles the records of an event the same way for the same seed', async () => {
    // Prepare: ten groups of one message each, all sent before the source starts, arrive in one event.
    const bodies = Array.from({ length: 10 }, (_, index) => `m-${index}`);
    async function firstEventWith(seed: number): Promise<{ order: string[]; reordered: number }> {
      const queue = await freshQueue('reorder');
      await sendInOrder(queue.client, queue.queueUrl, bodies.map((body) => ({ group: body, body })));
      const events: SQSEvent[] = [];
      const source = startSource({ client: queue.client, queueUrl: queue.queueUrl, region: queue.region, seed, handler: async (event) => void events.push(event) }, { reorder: true });
      const first = await waitUntil('the first event', () => events[0], 10_000);
      await waitUntilDrained(queue.client, queue.queueUrl);
      await source.stop();
      return { order: first.Records.map((record) => record.body), reordered: source.stats().reordered };
    }

    // Act
    const once = await firstEventWith(42);
    const twice = await firstEventWith(42);

    // Assess
    expect(once.order).toHaveLength(10);
    expect([...once.order].sort()).toEqual(bodies);
    expect(once.order).not.toEqual(bodies);
    expect(twice.order).toEqual(once.order);
    expect(once.reordered).toBe(1);
  });

  it('with delayMs holds each event back before the handler, and refuses rates outside [0, 1]', async () => {
    // Prepare
    const queue = await freshQueue('delay');
    await sendInOrder(queue.client, queue.queueUrl, [{ group: 'a', body: 'a-1' }]);
    const handledAtMs: number[] = [];

    // Act
    const startedAtMs = Date.now();
    const source = startSource({ client: queue.client, queueUrl: queue.queueUrl, region: queue.region, handler: async () => void handledAtMs.push(Date.now()) }, { delayMs: 300 });
    const firstMs = await waitUntil('the event', () => handledAtMs[0], 10_000);

    // Assess
    expect(firstMs - startedAtMs).toBeGreaterThanOrEqual(290);
    expect(source.stats()).toMatchObject({ batches: 1, delayed: 1 });
    expect(() => source.setFaults({ dropRate: 1.5 })).toThrow(AssertionError);
    expect(() => source.setFaults({ duplicateRate: -0.1 })).toThrow(AssertionError);
    expect(source.faults()).toEqual({ dropRate: 0, duplicateRate: 0, reorder: false, delayMs: 300 });
  });

  it('with pollers 2 handles another group while a batch is in flight, and never a group\'s next message before its batch is done', async () => {
    // Prepare: a-1 alone, so that the first batch holds only group a.
    const queue = await freshQueue('pollers');
    await sendInOrder(queue.client, queue.queueUrl, [{ group: 'a', body: 'a-1' }]);
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const handled: string[] = [];
    const inFlightGroups = new Set<string>();
    const overlaps: string[] = [];
    const source = startSource({
      client: queue.client,
      queueUrl: queue.queueUrl,
      region: queue.region,
      pollers: 2,
      // Long enough that a-1 never times out while the test holds it.
      visibilityTimeoutS: 30,
      handler: async (event) => {
        const groups = [...new Set(event.Records.map((record) => record.attributes.MessageGroupId ?? ''))];
        for (const group of groups) {
          if (inFlightGroups.has(group)) overlaps.push(group);
          inFlightGroups.add(group);
        }
        handled.push(...event.Records.map((record) => record.body));
        if (event.Records.some((record) => record.body === 'a-1')) await gate;
        for (const group of groups) inFlightGroups.delete(group);
      },
    });
    await waitUntil('a-1 to be in the handler', () => (handled.includes('a-1') ? true : undefined), 10_000);

    // Act: while a-1's batch is held, a-2 (same group) and b-1 (another group) arrive.
    await sendInOrder(queue.client, queue.queueUrl, [
      { group: 'a', body: 'a-2' },
      { group: 'b', body: 'b-1' },
    ]);
    await waitUntil('b-1 to be handled by the other poller', () => (handled.includes('b-1') ? true : undefined), 10_000);
    const handledWhileHeld = [...handled];
    release();
    await waitUntil('a-2 to be handled', () => (handled.includes('a-2') ? true : undefined), 10_000);
    await waitUntilDrained(queue.client, queue.queueUrl);

    // Assess
    expect(handledWhileHeld).toEqual(['a-1', 'b-1']);
    expect(handled.filter((body) => body.startsWith('a-'))).toEqual(['a-1', 'a-2']);
    expect(overlaps).toEqual([]);
    await waitUntil('the pollers to count the deletes', () => (source.stats().deleted === 3 ? true : undefined), 5_000);
    expect(source.stats()).toMatchObject({ received: 3, deleted: 3, failed: 0 });
    expect(() => createEventSource({ client: queue.client, queueUrl: queue.queueUrl, region: queue.region, pollers: 0, handler: async () => {} })).toThrow(AssertionError);
  });

  it('sends its next receive while the last batch\'s delete is on its way, and hands out a group\'s next message only after that delete', async () => {
    // Prepare: one group of 6 messages, handed out one per receive.
    const queue = await freshQueue('pipelined');
    await sendInOrder(queue.client, queue.queueUrl, [1, 2, 3, 4, 5, 6].map((index) => ({ group: 'a', body: `a-${index}` })));
    const requests: AwsRequestRecord[] = [];
    const stopObserving = observeAwsRequests((record) => {
      if (record.input.QueueUrl === queue.queueUrl && (record.operation === 'ReceiveMessage' || record.operation === 'DeleteMessageBatch')) requests.push(record);
    });
    const handlerStartsMs: number[] = [];
    const handled: string[] = [];

    // Act
    const source = startSource({
      client: queue.client,
      queueUrl: queue.queueUrl,
      region: queue.region,
      pollers: 1,
      handler: async (event) => {
        handlerStartsMs.push(performance.now());
        handled.push(...event.Records.map((record) => record.body));
      },
    });
    await waitUntil('every message to be handled', () => (handled.length === 6 ? true : undefined), 10_000);
    await source.stop();
    stopObserving();

    // Assess: in order; a receive went out before some delete had settled; and each handler call
    // came after the delete of the batch before it was sent (SQS answers it when that delete lands).
    expect(handled).toEqual(['a-1', 'a-2', 'a-3', 'a-4', 'a-5', 'a-6']);
    const deletes = requests.filter((record) => record.operation === 'DeleteMessageBatch');
    const receives = requests.filter((record) => record.operation === 'ReceiveMessage');
    expect(deletes).toHaveLength(6);
    expect(deletes.some((del) => receives.some((receive) => receive.startMs >= del.startMs && receive.startMs < del.endMs))).toBe(true);
    for (const [position, startMs] of handlerStartsMs.entries()) {
      if (position > 0) expect(startMs).toBeGreaterThan((deletes[position - 1] as AwsRequestRecord).startMs);
    }
    expect(source.stats()).toMatchObject({ received: 6, deleted: 6, failed: 0 });
  });

  it('keeps each group in order with four pollers and handlers of varying duration', async () => {
    // Prepare
    const queue = await freshQueue('pollers-order');
    const outgoing: Outgoing[] = [];
    for (let index = 1; index <= 8; index += 1) for (const group of ['a', 'b', 'c', 'd', 'e']) outgoing.push({ group, body: `${group}-${index}` });
    const handled: string[] = [];
    const inFlightGroups = new Set<string>();
    const overlaps: string[] = [];
    let calls = 0;

    // Act
    const source = startSource({
      client: queue.client,
      queueUrl: queue.queueUrl,
      region: queue.region,
      pollers: 4,
      visibilityTimeoutS: 30,
      handler: async (event) => {
        calls += 1;
        const groups = [...new Set(event.Records.map((record) => record.attributes.MessageGroupId ?? ''))];
        for (const group of groups) {
          if (inFlightGroups.has(group)) overlaps.push(group);
          inFlightGroups.add(group);
        }
        // 0-30 ms, differing between calls, so that batches finish out of order.
        await new Promise((resolve) => setTimeout(resolve, (calls * 7) % 31));
        handled.push(...event.Records.map((record) => record.body));
        for (const group of groups) inFlightGroups.delete(group);
      },
    });
    await sendInOrder(queue.client, queue.queueUrl, outgoing);
    await waitUntil('every message to be handled', () => (handled.length >= outgoing.length ? true : undefined), 20_000);
    await waitUntilDrained(queue.client, queue.queueUrl);

    // Assess
    expect(overlaps).toEqual([]);
    for (const group of ['a', 'b', 'c', 'd', 'e']) {
      expect(handled.filter((body) => body.startsWith(`${group}-`))).toEqual(outgoing.filter((message) => message.group === group).map((message) => message.body));
    }
    await waitUntil('the pollers to count the deletes', () => (source.stats().deleted === outgoing.length ? true : undefined), 5_000);
    expect(source.stats()).toMatchObject({ received: outgoing.length, failed: 0 });
  });

  it('stops promptly while long-polling, and no batch is handled after stop()', async () => {
    // Prepare
    const queue = await freshQueue('stop');
    const waitTimeS = 2;
    let handlerCalls = 0;
    const source = startSource({ client: queue.client, queueUrl: queue.queueUrl, queueArn: queue.queueArn, region: queue.region, waitTimeS, handler: async () => void (handlerCalls += 1) });
    expect(source.running()).toBe(true);

    // Act
    const stopStartedMs = Date.now();
    await source.stop();
    const stopDurationMs = Date.now() - stopStartedMs;
    await sendInOrder(queue.client, queue.queueUrl, [{ group: 'a', body: 'after-stop' }]);

    // Assess: the message sent after stop() is still unreceived when the test takes it.
    expect(stopDurationMs).toBeLessThan(waitTimeS * 1000 + 2000);
    expect(source.running()).toBe(false);
    const taken = await waitUntil(
      'the message sent after stop',
      async () => (await queue.client.send(new ReceiveMessageCommand({ QueueUrl: queue.queueUrl, WaitTimeSeconds: 1, MessageSystemAttributeNames: ['All'] }))).Messages?.[0],
      5_000,
    );
    expect(taken.Body).toBe('after-stop');
    expect(taken.Attributes?.ApproximateReceiveCount).toBe('1');
    expect(handlerCalls).toBe(0);
    expect(source.stats().received).toBe(0);
  });

  it('stop() waits for the batch in flight, which is deleted before stop() resolves', async () => {
    // Prepare
    const queue = await freshQueue('inflight');
    await sendInOrder(queue.client, queue.queueUrl, [{ group: 'a', body: 'a-1' }]);
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let handlerCalls = 0;
    const source = startSource({
      client: queue.client,
      queueUrl: queue.queueUrl,
      region: queue.region,
      handler: async () => {
        handlerCalls += 1;
        await gate;
      },
    });
    await waitUntil('the handler to be running', () => (handlerCalls === 1 ? true : undefined), 10_000);

    // Act
    let stopped = false;
    const stopping = source.stop().then(() => (stopped = true));
    await new Promise((resolve) => setImmediate(resolve));
    const stoppedBeforeRelease = stopped;
    release();
    await stopping;

    // Assess
    expect(stoppedBeforeRelease).toBe(false);
    expect(await messagesInQueue(queue.client, queue.queueUrl)).toBe(0);
    expect(source.stats()).toMatchObject({ batches: 1, deleted: 1 });
    await sendInOrder(queue.client, queue.queueUrl, [{ group: 'a', body: 'a-2' }]);
    const taken = await waitUntil(
      'the message sent after stop',
      async () => (await queue.client.send(new ReceiveMessageCommand({ QueueUrl: queue.queueUrl, WaitTimeSeconds: 1, MessageSystemAttributeNames: ['All'] }))).Messages?.[0],
      5_000,
    );
    expect(taken.Attributes?.ApproximateReceiveCount).toBe('1');
    expect(handlerCalls).toBe(1);
  });
});
