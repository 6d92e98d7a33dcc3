import { randomBytes, randomUUID } from 'node:crypto';
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type Message,
  type MessageAttributeValue,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent, SQSMessageAttributes, SQSRecord } from 'aws-lambda';
import { assert } from '../core/assert.ts';
import { mulberry32, shuffle } from '../random.ts';

/** Faults the event source injects between receive and handler; rates are probabilities per message. */
export interface FaultSettings {
  /** A dropped message is deleted without reaching the handler: a lost message. */
  dropRate: number;
  /** A duplicated message appears twice in the same event, right after itself. */
  duplicateRate: number;
  /** Shuffles the records of each event. */
  reorder: boolean;
  /** Sleeps this long between receive and handler, as a slow or cold function would. */
  delayMs: number;
}

export interface EventSourceStats {
  /** Handler invocations. */
  batches: number;
  /** Messages received from SQS, before any fault. */
  received: number;
  /** Messages the handler acknowledged and that were deleted. */
  deleted: number;
  /** Messages left for redelivery: reported in batchItemFailures, or in a batch whose handler threw. */
  failed: number;
  /** Messages deleted by the drop fault without reaching the handler. */
  dropped: number;
  /** Messages the duplicate fault put twice in an event. */
  duplicated: number;
  /** Events whose record order the reorder fault changed. */
  reordered: number;
  /** Events the delay fault held back. */
  delayed: number;
}

export interface EventSourceOptions {
  client: SQSClient;
  queueUrl: string;
  /** The queue's ARN for `eventSourceARN`; read from SQS when omitted. */
  queueArn?: string;
  /** `awsRegion` of the records: the region the queue lives in. */
  region: string;
  handler: (event: SQSEvent) => Promise<SQSBatchResponse | void>;
  /** Messages per event; default 10, at most 10 (the SQS ReceiveMessage maximum). */
  batchSize?: number;
  /** Long-poll seconds; default 1, so that stop() is fast. */
  waitTimeS?: number;
  /** Visibility timeout given on ReceiveMessage; default 5. */
  visibilityTimeoutS?: number;
  /**
   * Concurrent poll loops, as Lambda's mapping scales its pollers with the backlog; default 2,
   * at most 10. A FIFO queue keeps a message group locked while any of its messages is in
   * flight, so concurrent receivers never hold two batches of one group: per-group order holds.
   */
  pollers?: number;
  /**
   * Seeds the fault RNG; a random seed is chosen, logged and kept in `seed` when omitted. The
   * poll loops draw from one RNG in the order their batches arrive.
   */
  seed?: number;
  log?: (line: string) => void;
}

export interface EventSource {
  /** The seed of the fault RNG: pass it back in `options.seed` to replay the same faults. */
  readonly seed: number;
  start(): void;
  /** Ends the poll loops and waits for the batches and deletes in flight; no batch is handled after it resolves. */
  stop(): Promise<void>;
  running(): boolean;
  setFaults(faults: Partial<FaultSettings>): FaultSettings;
  faults(): FaultSettings;
  stats(): EventSourceStats;
}

const eventSourceLimits = {
  batchSizeMax: 10,
  pollersMax: 10,
  /** The SQS bounds of WaitTimeSeconds and VisibilityTimeout. */
  waitTimeSMax: 20,
  visibilityTimeoutSMax: 43_200,
  delayMsMax: 60_000,
  /** Errors talking to SQS back off exponentially between these bounds. */
  backoffMsBase: 100,
  backoffMsMax: 2_000,
} as const;

const noFaults: FaultSettings = { dropRate: 0, duplicateRate: 0, reorder: false, delayMs: 0 };

/**
 * Plays the Lambda event source mapping of one SQS FIFO queue with partial batch responses
 * (`ReportBatchItemFailures`): `pollers` poll loops, each one batch at a time. A message group
 * is never handled concurrently: a FIFO queue hands out no message of a group while an earlier
 * one is in flight (received, neither deleted nor timed out), whichever loop holds it, so a
 * group's messages reach the handler one batch after another, in order. fauxqs does the same:
 * its receive skips a group with a message in flight. Like Lambda it deletes what the handler
 * did not report as failed and leaves failed messages alone: they reappear after the
 * visibility timeout and, after maxReceiveCount receives, SQS moves them to the DLQ.
 */
export function createEventSource(options: EventSourceOptions): EventSource {
  const { client, queueUrl, region, handler } = options;
  const batchSize = options.batchSize ?? 10;
  const waitTimeS = options.waitTimeS ?? 1;
  const visibilityTimeoutS = options.visibilityTimeoutS ?? 5;
  const pollers = options.pollers ?? 2;
  const seed = options.seed ?? randomBytes(4).readUInt32LE(0);
  const log = options.log ?? (() => {});
  assert(Number.isInteger(batchSize) && batchSize >= 1 && batchSize <= eventSourceLimits.batchSizeMax, `batchSize must be an integer in 1..10, got ${batchSize}`);
  assert(Number.isInteger(waitTimeS) && waitTimeS >= 0 && waitTimeS <= eventSourceLimits.waitTimeSMax, `waitTimeS must be an integer in 0..20, got ${waitTimeS}`);
  assert(
    Number.isInteger(visibilityTimeoutS) && visibilityTimeoutS >= 0 && visibilityTimeoutS <= eventSourceLimits.visibilityTimeoutSMax,
    `visibilityTimeoutS must be an integer in 0..43200, got ${visibilityTimeoutS}`,
  );
  assert(Number.isInteger(pollers) && pollers >= 1 && pollers <= eventSourceLimits.pollersMax, `pollers must be an integer in 1..${eventSourceLimits.pollersMax}, got ${pollers}`);
  assert(Number.isInteger(seed) && seed >= 0 && seed <= 0xffff_ffff, `seed must be an unsigned 32-bit integer, got ${seed}`);

  const random = mulberry32(seed);
  const label = queueUrl.slice(queueUrl.lastIndexOf('/') + 1);
  log(`event source ${label}: fault seed ${seed}`);
  let faultSettings: FaultSettings = { ...noFaults };
  const counters: EventSourceStats = { batches: 0, received: 0, deleted: 0, failed: 0, dropped: 0, duplicated: 0, reordered: 0, delayed: 0 };
  let queueArn = options.queueArn;
  let loop: Promise<void> | undefined;
  let stopping = false;
  // Each resolves one loop's backoff pause early when stop() is called.
  const wakers = new Set<() => void>();
  // Deletes the poll loops sent and did not wait for (handleBatch); stop() waits for them.
  const deletesInFlight = new Set<Promise<void>>();

  async function pause(durationMs: number): Promise<void> {
    let wake: (() => void) | undefined;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, durationMs);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
      wakers.add(wake);
    });
    if (wake !== undefined) wakers.delete(wake);
  }

  async function resolveQueueArn(): Promise<string> {
    if (queueArn !== undefined) return queueArn;
    const attributes = (await client.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }))).Attributes;
    assert(attributes?.QueueArn !== undefined, `SQS returned no QueueArn for ${queueUrl}`);
    queueArn = attributes.QueueArn;
    return queueArn;
  }

  async function receive(): Promise<Message[]> {
    const output = await client.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: batchSize,
        WaitTimeSeconds: waitTimeS,
        VisibilityTimeout: visibilityTimeoutS,
        MessageSystemAttributeNames: ['All'],
        MessageAttributeNames: ['All'],
        // The SDK retries a receive with the same input: on a FIFO queue the same attempt id
        // returns the same messages instead of hiding them for a visibility timeout.
        ReceiveRequestAttemptId: randomUUID(),
      }),
    );
    return output.Messages ?? [];
  }

  /** Deletes by receipt handle, ten per request; failures are logged (the messages come back). */
  async function deleteMessages(messages: readonly Message[]): Promise<number> {
    let deletedCount = 0;
    for (let start = 0; start < messages.length; start += eventSourceLimits.batchSizeMax) {
      const chunk = messages.slice(start, start + eventSourceLimits.batchSizeMax);
      const output = await client.send(
        new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: chunk.map((message, index) => ({ Id: String(index), ReceiptHandle: receiptHandleOf(message) })) }),
      );
      deletedCount += output.Successful?.length ?? 0;
      for (const failure of output.Failed ?? []) {
        log(`event source ${label}: delete failed (${failure.Code}: ${failure.Message}); the message will be redelivered`);
      }
    }
    return deletedCount;
  }

  /** Gives back messages received while stopping, at the front of their groups. */
  async function release(messages: readonly Message[]): Promise<void> {
    if (messages.length === 0) return;
    await client.send(
      new ChangeMessageVisibilityBatchCommand({
        QueueUrl: queueUrl,
        Entries: messages.map((message, index) => ({ Id: String(index), ReceiptHandle: receiptHandleOf(message), VisibilityTimeout: 0 })),
      }),
    );
  }

  async function handleBatch(messages: readonly Message[], eventSourceArn: string): Promise<void> {
    const faults = faultSettings;
    const kept: Message[] = [];
    const droppedMessages: Message[] = [];
    for (const message of messages) {
      if (faults.dropRate > 0 && random() < faults.dropRate) droppedMessages.push(message);
      else kept.push(message);
    }
    if (droppedMessages.length > 0) {
      // Not `counters.dropped += await ...`: that reads the counter before the await, and another
      // poll loop's update in between would be lost.
      const droppedCount = await deleteMessages(droppedMessages);
      counters.dropped += droppedCount;
      log(`event source ${label}: dropped ${droppedMessages.length} of ${messages.length} messages`);
    }
    // Lambda never invokes a function with an empty event.
    if (kept.length === 0) return;

    let records = kept.map((message) => toRecord(message, eventSourceArn, region));
    if (faults.duplicateRate > 0) {
      const withDuplicates: SQSRecord[] = [];
      for (const record of records) {
        withDuplicates.push(record);
        if (random() < faults.duplicateRate) {
          withDuplicates.push({ ...record, attributes: { ...record.attributes } });
          counters.duplicated += 1;
        }
      }
      records = withDuplicates;
    }
    if (faults.reorder && records.length > 1) {
      const shuffled = shuffle(records, random);
      if (shuffled.some((record, index) => record !== records[index])) counters.reordered += 1;
      records = shuffled;
    }
    if (faults.delayMs > 0) {
      counters.delayed += 1;
      await new Promise((resolve) => setTimeout(resolve, faults.delayMs));
    }

    counters.batches += 1;
    const failedIds = await invoke({ Records: records });
    const succeeded = kept.filter((message) => !failedIds.has(messageIdOf(message)));
    counters.failed += kept.length - succeeded.length;
    if (succeeded.length > 0) {
      // Not awaited: the loop's next receive goes out while the delete is on its way, as a
      // pipelined poller's would. SQS keeps the batch's groups locked until the delete lands, so
      // that receive cannot get their next messages any earlier; a long poll waiting for them is
      // answered when the delete unlocks them. It saves the receive a round trip.
      const deleting: Promise<void> = deleteMessages(succeeded)
        .then(
          (deletedCount) => {
            counters.deleted += deletedCount;
          },
          (error: unknown) => log(`event source ${label}: delete of ${succeeded.length} messages failed, they will be redelivered: ${String(error)}`),
        )
        .finally(() => deletesInFlight.delete(deleting));
      deletesInFlight.add(deleting);
    }
  }

  /** Calls the handler; returns the ids of the messages to leave for redelivery. */
  async function invoke(event: SQSEvent): Promise<Set<string>> {
    const batchIds = new Set(event.Records.map((record) => record.messageId));
    let response: SQSBatchResponse | void;
    try {
      response = await handler(event);
    } catch (error) {
      log(`event source ${label}: handler threw, the whole batch of ${batchIds.size} will be redelivered: ${String(error)}`);
      return batchIds;
    }
    const failedIds = new Set<string>();
    for (const failure of response?.batchItemFailures ?? []) {
      // Lambda fails the whole batch when a reported identifier is empty or not in the batch.
      if (typeof failure.itemIdentifier !== 'string' || !batchIds.has(failure.itemIdentifier)) {
        log(`event source ${label}: batchItemFailures names ${JSON.stringify(failure.itemIdentifier)}, not in the batch; the whole batch fails`);
        return batchIds;
      }
      failedIds.add(failure.itemIdentifier);
    }
    return failedIds;
  }

  async function run(): Promise<void> {
    let errorCount = 0;
    while (!stopping) {
      try {
        const eventSourceArn = await resolveQueueArn();
        const messages = await receive();
        counters.received += messages.length;
        if (stopping) {
          // The caller may be tearing down what the handler needs: hand the messages back now
          // rather than after a visibility timeout (their receive count has gone up by one).
          await release(messages);
          break;
        }
        if (messages.length > 0) await handleBatch(messages, eventSourceArn);
        errorCount = 0;
      } catch (error) {
        errorCount += 1;
        const backoffMs = Math.min(eventSourceLimits.backoffMsMax, eventSourceLimits.backoffMsBase * 2 ** Math.min(errorCount - 1, 10));
        log(`event source ${label}: SQS error #${errorCount}, retrying in ${backoffMs} ms: ${String(error)}`);
        if (!stopping) await pause(backoffMs);
      }
    }
  }

  return {
    seed,
    start() {
      if (loop !== undefined) return;
      stopping = false;
      const current = Promise.all(Array.from({ length: pollers }, () => run())).then(() => {}).finally(() => {
        if (loop === current) loop = undefined;
      });
      loop = current;
    },
    async stop() {
      stopping = true;
      for (const wake of wakers) wake();
      // A long poll in progress is not aborted: an aborted receive would still take the
      // messages on the server and hide them for a visibility timeout. It ends within waitTimeS.
      await loop;
      await Promise.all([...deletesInFlight]);
    },
    running() {
      return loop !== undefined && !stopping;
    },
    setFaults(faults) {
      const next = { ...faultSettings, ...faults };
      for (const name of ['dropRate', 'duplicateRate'] as const) {
        assert(Number.isFinite(next[name]) && next[name] >= 0 && next[name] <= 1, `${name} must be in [0, 1], got ${next[name]}`);
      }
      assert(Number.isInteger(next.delayMs) && next.delayMs >= 0 && next.delayMs <= eventSourceLimits.delayMsMax, `delayMs must be an integer in 0..${eventSourceLimits.delayMsMax}, got ${next.delayMs}`);
      faultSettings = next;
      log(`event source ${label}: faults ${JSON.stringify(next)} (seed ${seed})`);
      return { ...next };
    },
    faults() {
      return { ...faultSettings };
    },
    stats() {
      return { ...counters };
    },
  };
}

function messageIdOf(message: Message): string {
  assert(message.MessageId !== undefined, 'SQS returned a message without MessageId');
  return message.MessageId;
}

function receiptHandleOf(message: Message): string {
  assert(message.ReceiptHandle !== undefined, `SQS returned message ${message.MessageId} without ReceiptHandle`);
  return message.ReceiptHandle;
}

/** The record Lambda builds from a received message. */
function toRecord(message: Message, eventSourceArn: string, region: string): SQSRecord {
  const attributes = message.Attributes ?? {};
  const record: SQSRecord = {
    messageId: messageIdOf(message),
    receiptHandle: receiptHandleOf(message),
    body: message.Body ?? '',
    attributes: {
      ...attributes,
      ApproximateReceiveCount: attributes.ApproximateReceiveCount ?? '',
      SentTimestamp: attributes.SentTimestamp ?? '',
      SenderId: attributes.SenderId ?? '',
      ApproximateFirstReceiveTimestamp: attributes.ApproximateFirstReceiveTimestamp ?? '',
    },
    messageAttributes: toRecordAttributes(message.MessageAttributes ?? {}),
    md5OfBody: message.MD5OfBody ?? '',
    eventSource: 'aws:sqs',
    eventSourceARN: eventSourceArn,
    awsRegion: region,
  };
  if (message.MD5OfMessageAttributes !== undefined) record.md5OfMessageAttributes = message.MD5OfMessageAttributes;
  return record;
}

/** Lambda spells message attributes in camel case and gives binary values in base64. */
function toRecordAttributes(attributes: Record<string, MessageAttributeValue>): SQSMessageAttributes {
  const result: SQSMessageAttributes = {};
  for (const [name, value] of Object.entries(attributes)) {
    result[name] = {
      dataType: value.DataType ?? 'String',
      stringListValues: value.StringListValues ?? [],
      binaryListValues: (value.BinaryListValues ?? []).map((bytes) => Buffer.from(bytes).toString('base64')),
      ...(value.StringValue === undefined ? {} : { stringValue: value.StringValue }),
      ...(value.BinaryValue === undefined ? {} : { binaryValue: Buffer.from(value.BinaryValue).toString('base64') }),
    };
  }
  return result;
}

