import { createHash } from 'node:crypto';
import { GetQueueUrlCommand, SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { LogEntry, Operation } from '../../core/log.ts';
import { makeSqsClient, type ClientRole } from './clients.ts';

/** A replication message that cannot be read back into a log entry: it goes to the DLQ. */
export class PoisonMessageError extends Error {
  override name = 'PoisonMessageError';
}

interface WireOperation {
  type: string;
  key?: string;
  value?: string;
  node?: string;
  epoch?: number;
  previousEpoch?: number;
}

/** The message body: the entry as JSON, values base64 (SQS bodies are text). */
export function encodeEntryMessage(entry: LogEntry): string {
  const ops: WireOperation[] = entry.ops.map((op) => (op.type === 'put' ? { ...op, value: Buffer.from(op.value).toString('base64') } : { ...op }));
  return JSON.stringify({ v: 1, entry: { ...entry, ops } });
}

export function decodeEntryMessage(body: string): LogEntry {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new PoisonMessageError('replication message is not JSON');
  }
  const wire = (parsed as { v?: unknown; entry?: Record<string, unknown> } | null)?.entry;
  if ((parsed as { v?: unknown } | null)?.v !== 1 || typeof wire !== 'object' || wire === null || !Array.isArray(wire.ops)) {
    throw new PoisonMessageError('replication message is not a version-1 log entry');
  }
  const number = (name: string): number => {
    const value = wire[name];
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new PoisonMessageError(`replication message field ${name} is not an integer`);
    return value;
  };
  const string = (name: string): string => {
    const value = wire[name];
    if (typeof value !== 'string') throw new PoisonMessageError(`replication message field ${name} is not a string`);
    return value;
  };
  const ops: Operation[] = (wire.ops as (WireOperation | null)[]).map((op) => {
    if (op === null || typeof op !== 'object') throw new PoisonMessageError('replication message has an operation that is not an object');
    if (op.type === 'put' && typeof op.key === 'string' && typeof op.value === 'string') return { type: 'put', key: op.key, value: new Uint8Array(Buffer.from(op.value, 'base64')) };
    if (op.type === 'delete' && typeof op.key === 'string') return { type: 'delete', key: op.key };
    if (op.type === 'leader' && typeof op.node === 'string' && typeof op.epoch === 'number' && typeof op.previousEpoch === 'number') {
      return { type: 'leader', node: op.node, epoch: op.epoch, previousEpoch: op.previousEpoch };
    }
    throw new PoisonMessageError(`replication message has an unknown operation ${String(op.type)}`);
  });
  return {
    shard: number('shard'),
    index: number('index'),
    epoch: number('epoch'),
    ops,
    prevHash: string('prevHash'),
    hash: string('hash'),
    requestId: string('requestId'),
    committedAtMs: number('committedAtMs'),
    ...(wire.txn === undefined ? {} : { txn: decodeTxn(wire.txn) }),
  };
}

function decodeTxn(raw: unknown): { id: string; parts: { shard: number; index: number }[] } {
  const txn = raw as { id?: unknown; parts?: unknown } | null;
  if (typeof txn?.id !== 'string' || !Array.isArray(txn.parts)) throw new PoisonMessageError('replication message field txn is not {id, parts}');
  return {
    id: txn.id,
    parts: (txn.parts as { shard?: unknown; index?: unknown }[]).map((part) => {
      if (!Number.isSafeInteger(part?.shard) || !Number.isSafeInteger(part?.index)) throw new PoisonMessageError('replication message field txn.parts is not [{shard, index}]');
      return { shard: part.shard as number, index: part.index as number };
    }),
  };
}

export function replicationQueueName(prefix: string): string {
  return `${prefix}-replication.fifo`;
}

/** SendMessageBatch takes at most 10 messages; keep a batch's payload well under the 1 MiB cap. */
const batchMessagesMax = 10;
const batchBytesMax = 900 * 1024;
/** How long the first message of a batch waits for company: concurrent writes share one request. */
const batchWindowMs = 2;

interface Pending {
  entry: LogEntry;
  deduplicationId: string;
  resolve: (sent: boolean) => void;
}

interface Target {
  region: string;
  client: SQSClient;
  queueUrl: Promise<string> | undefined;
  pending: Pending[];
  timer: NodeJS.Timeout | undefined;
}

export interface ShipOutcome {
  /** Regions whose queue accepted the entry. */
  accepted: string[];
  /** Regions it did not reach now; the replica's pull repair or the leader's re-ship covers them. */
  missed: string[];
}

/**
 * Sends committed entries to every replica region's FIFO queue: `MessageGroupId` = shard so a
 * shard's entries stay ordered, `MessageDeduplicationId` = `shard:index` so a retried send is
 * dropped by SQS. Concurrent writes are batched per queue. A failed send loses nothing: the
 * replica repairs the gap from the home log.
 */
export class Shipper {
  readonly #targets: Target[];

  constructor(
    private readonly options: {
      prefix: string;
      regions: string[];
      endpoint?: string | undefined;
      log?: (line: string) => void;
      from?: string | undefined;
      /** Local cloud only: see ClientOptions.alive. */
      alive?: (() => boolean) | undefined;
      /** Whose sends these are, which bounds how long one may hang (see ClientRole); default worker. */
      role?: ClientRole | undefined;
    },
  ) {
    this.#targets = options.regions.map((region) => ({
      region,
      client: makeSqsClient({ region, endpoint: options.endpoint, from: options.from, alive: options.alive, role: options.role }),
      queueUrl: undefined,
      pending: [],
      timer: undefined,
    }));
  }

  regions(): string[] {
    return this.#targets.map((target) => target.region);
  }

  /** Ships one entry to every region; resolves when each queue accepted or refused it. */
  async ship(entry: LogEntry): Promise<ShipOutcome> {
    return this.#send(entry, `${entry.shard}:${entry.index}`, this.#targets);
  }

  /**
   * Sends entries again to one region (the leader's duty for a stuck replica). A fresh
   * deduplication id, because SQS drops a repeated id for five minutes; apply is idempotent.
   */
  async reship(region: string, entries: LogEntry[], attempt: string): Promise<number> {
    const targets = this.#targets.filter((target) => target.region === region);
    let accepted = 0;
    for (const entry of entries) {
      const outcome = await this.#send(entry, dedupId(`${entry.shard}:${entry.index}:${attempt}`), targets);
      accepted += outcome.accepted.length;
    }
    return accepted;
  }

  async #send(entry: LogEntry, deduplicationId: string, targets: Target[]): Promise<ShipOutcome> {
    const results = await Promise.all(
      targets.map(
        (target) =>
          new Promise<boolean>((resolve) => {
            target.pending.push({ entry, deduplicationId, resolve });
            if (target.pending.length >= batchMessagesMax) this.#flush(target);
            else target.timer ??= setTimeout(() => this.#flush(target), batchWindowMs);
          }),
      ),
    );
    return {
      accepted: targets.filter((_, position) => results[position]).map((target) => target.region),
      missed: targets.filter((_, position) => !results[position]).map((target) => target.region),
    };
  }

  #flush(target: Target): void {
    if (target.timer !== undefined) clearTimeout(target.timer);
    target.timer = undefined;
    while (target.pending.length > 0) {
      const batch: { pending: Pending; body: string }[] = [];
      let bytes = 0;
      while (target.pending.length > 0 && batch.length < batchMessagesMax) {
        const next = target.pending[0] as Pending;
        const body = encodeEntryMessage(next.entry);
        if (batch.length > 0 && bytes + body.length > batchBytesMax) break;
        target.pending.shift();
        batch.push({ pending: next, body });
        bytes += body.length;
      }
      void this.#sendBatch(target, batch);
    }
  }

  async #sendBatch(target: Target, batch: { pending: Pending; body: string }[]): Promise<void> {
    try {
      target.queueUrl ??= target.client
        .send(new GetQueueUrlCommand({ QueueName: replicationQueueName(this.options.prefix) }))
        .then((result) => result.QueueUrl as string);
      const queueUrl = await target.queueUrl;
      const result = await target.client.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: batch.map(({ pending, body }, position) => ({
            Id: String(position),
            MessageBody: body,
            MessageGroupId: String(pending.entry.shard),
            MessageDeduplicationId: pending.deduplicationId,
          })),
        }),
      );
      const failed = new Set((result.Failed ?? []).map((failure) => failure.Id));
      for (const [position, { pending }] of batch.entries()) pending.resolve(!failed.has(String(position)));
      if (failed.size > 0) this.options.log?.(`replication: ${failed.size} of ${batch.length} messages to ${target.region} refused; the replica will repair`);
    } catch (error) {
      target.queueUrl = undefined;
      this.options.log?.(`replication: send to ${target.region} failed (${String(error)}); the replica will repair`);
      for (const { pending } of batch) pending.resolve(false);
    }
  }

  destroy(): void {
    for (const target of this.#targets) {
      if (target.timer !== undefined) clearTimeout(target.timer);
      target.client.destroy();
    }
  }
}

/** Deduplication ids are at most 128 characters. */
function dedupId(raw: string): string {
  return raw.length <= 128 ? raw : createHash('sha256').update(raw).digest('hex');
}
