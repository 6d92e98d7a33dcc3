import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  QueueNameExists,
  SetQueueAttributesCommand,
  type SQSClient,
  type QueueAttributeName,
} from '@aws-sdk/client-sqs';
import { queueNameLengthMax, replicationQueueNames } from '../infra/names.ts';
import { replicationQueueDefinition } from '../infra/schema.ts';
import { assert } from '../core/assert.ts';

/** The replication queue of one replica region, with its dead-letter queue. */
export interface ReplicationQueue {
  queueUrl: string;
  dlqUrl: string;
  region: string;
}

export interface ReplicationQueueOptions {
  /** Receives before SQS moves a message to the DLQ; default 5. */
  maxReceiveCount?: number;
  /** Default visibility timeout of the queue; default 30. */
  visibilityTimeoutS?: number;
}

/**
 * The bounds of the replication queues. What AWS must agree with (FIFO, message size,
 * retention, receives before the DLQ) comes from the definition the CDK stacks use
 * (`lib/infra/schema.ts`); what is local only (the default visibility timeout) is here.
 */
export const replicationQueueLimits = {
  messageBytesMax: replicationQueueDefinition.messageBytesMax,
  retentionS: replicationQueueDefinition.retentionS,
  dlqRetentionS: replicationQueueDefinition.deadLetterRetentionS,
  visibilityTimeoutSDefault: 30,
  maxReceiveCountDefault: replicationQueueDefinition.maxReceiveCount,
  maxReceiveCountMax: 1000,
  queueNameLengthMax,
} as const;

export { replicationQueueNames };

/**
 * Creates the region's replication FIFO queue and its FIFO DLQ; queues that exist are kept and
 * their settable attributes brought to the requested values, so a second call is harmless and
 * a changed option (a longer visibility timeout) takes effect.
 */
export async function ensureReplicationQueue(client: SQSClient, prefix: string, options: ReplicationQueueOptions = {}): Promise<ReplicationQueue> {
  const maxReceiveCount = options.maxReceiveCount ?? replicationQueueLimits.maxReceiveCountDefault;
  const visibilityTimeoutS = options.visibilityTimeoutS ?? replicationQueueLimits.visibilityTimeoutSDefault;
  assert(
    Number.isInteger(maxReceiveCount) && maxReceiveCount >= 1 && maxReceiveCount <= replicationQueueLimits.maxReceiveCountMax,
    `maxReceiveCount must be an integer in 1..${replicationQueueLimits.maxReceiveCountMax}, got ${maxReceiveCount}`,
  );
  assert(Number.isInteger(visibilityTimeoutS) && visibilityTimeoutS >= 0 && visibilityTimeoutS <= 43_200, `visibilityTimeoutS must be an integer in 0..43200, got ${visibilityTimeoutS}`);
  const names = replicationQueueNames(prefix);
  const region = await client.config.region();

  // Every attribute is said explicitly: the defaults of SQS and of the emulator may differ.
  // Deduplication ids come from the sender ((shard, index)), never from the body.
  const common = {
    ContentBasedDeduplication: String(replicationQueueDefinition.contentBasedDeduplication),
    MaximumMessageSize: String(replicationQueueLimits.messageBytesMax),
    VisibilityTimeout: String(visibilityTimeoutS),
  };
  const dlqUrl = await ensureQueue(client, names.dlq, { ...common, MessageRetentionPeriod: String(replicationQueueLimits.dlqRetentionS) });
  const dlqArn = (await client.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }))).Attributes?.QueueArn;
  assert(dlqArn !== undefined, `SQS returned no QueueArn for ${dlqUrl}`);
  const queueUrl = await ensureQueue(client, names.queue, {
    ...common,
    MessageRetentionPeriod: String(replicationQueueLimits.retentionS),
    // Key order is fixed: CreateQueue is idempotent only for identical attribute strings.
    RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount }),
  });
  return { queueUrl, dlqUrl, region };
}

/** CreateQueue, or on a name that exists with other attributes, SetQueueAttributes. */
async function ensureQueue(client: SQSClient, name: string, attributes: Partial<Record<QueueAttributeName, string>>): Promise<string> {
  try {
    const created = await client.send(new CreateQueueCommand({ QueueName: name, Attributes: { FifoQueue: String(replicationQueueDefinition.fifo), ...attributes } }));
    assert(created.QueueUrl !== undefined, `SQS returned no QueueUrl for ${name}`);
    return created.QueueUrl;
  } catch (error) {
    if (!isQueueNameExists(error)) throw error;
  }
  const found = await client.send(new GetQueueUrlCommand({ QueueName: name }));
  assert(found.QueueUrl !== undefined, `SQS returned no QueueUrl for ${name}`);
  // FifoQueue cannot change after creation; the name's `.fifo` suffix already guarantees it.
  await client.send(new SetQueueAttributesCommand({ QueueUrl: found.QueueUrl, Attributes: attributes }));
  return found.QueueUrl;
}

/**
 * SQS answers QueueNameExists with the query-compatible code `QueueAlreadyExists`, which the SDK
 * maps to its QueueNameExists class. fauxqs 1.9 sends `AWS.SimpleQueueService.QueueNameExists`
 * instead, which the SDK cannot map: it throws a generic error carrying that name.
 */
const queueNameExistsNames = new Set(['QueueNameExists', 'QueueAlreadyExists', 'AWS.SimpleQueueService.QueueNameExists']);

function isQueueNameExists(error: unknown): boolean {
  return error instanceof QueueNameExists || (error instanceof Error && queueNameExistsNames.has(error.name));
}
