/**
 * The tables every region has, with the same schema everywhere so a replica can be promoted
 * without migration. The local cloud creates them from these definitions and the CDK stacks
 * declare them from the same ones.
 */
export type AttributeType = 'S' | 'N' | 'B';

export interface TableDefinition {
  /** Suffix of the physical name: `<prefix>-<suffix>`. */
  suffix: 'control' | 'log' | 'kv';
  partitionKey: { name: string; type: AttributeType };
  sortKey: { name: string; type: AttributeType };
  /** Attribute that DynamoDB TTL expires items on (trimmed log entries). */
  timeToLiveAttribute?: string;
}

export const controlTable: TableDefinition = {
  suffix: 'control',
  // pk 'lease' / sk shard: all leases in one partition, read with one consistent Query.
  // pk 'node' / sk node id: heartbeats.
  // pk 'replica' / sk region#shard: replica progress reports (replicaReportPartition).
  // pk 'idempotency' / sk Idempotency-Key: a write's first answer, for 24 h (expiresAt, TTL).
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  timeToLiveAttribute: 'expiresAt',
};

/** The control partition of replica progress reports: the only one replica heartbeats may write. */
export const replicaReportPartition = 'replica';

/** The control partition of each shard's log compaction point (lib/adapters/aws/log-compaction.ts): the only one of home `control` replica heartbeats may read. */
export const compactionPartition = 'compaction';

export const logTable: TableDefinition = {
  suffix: 'log',
  partitionKey: { name: 'shard', type: 'N' },
  sortKey: { name: 'index', type: 'N' },
  timeToLiveAttribute: 'expiresAt',
};

export const kvTable: TableDefinition = {
  suffix: 'kv',
  // Keyed by shard first so a prefix listing is one ordered Query per shard.
  partitionKey: { name: 'shard', type: 'N' },
  sortKey: { name: 'key', type: 'S' },
};

export const tableDefinitions = [controlTable, logTable, kvTable] as const;

/** On-demand everywhere: an idle cluster pays per request, never for provisioned capacity. */
export const tableBillingMode = 'PAY_PER_REQUEST' as const;

export interface TableNames {
  control: string;
  log: string;
  kv: string;
}

export function tableNames(prefix: string): TableNames {
  return { control: `${prefix}-control`, log: `${prefix}-log`, kv: `${prefix}-kv` };
}

/**
 * The replication queue every replica region has (and its dead-letter queue): the local cloud
 * creates them from this definition and the CDK stacks declare them from it, so the two agree
 * on everything that matters to the writers and the apply function. Names come from
 * `replicationQueueNames` in `./names.ts` (the convention the writers use).
 */
export interface ReplicationQueueDefinition {
  /** FIFO: a shard's entries stay in order (`MessageGroupId` = shard). */
  fifo: true;
  /** Deduplication ids come from the sender (`shard:index`), never from the body. */
  contentBasedDeduplication: false;
  /**
   * SQS raised its message limit to 1 MiB (2025). Said explicitly: defaults differ by tool.
   * fauxqs 1.9 and aws-cdk-lib 2.276's `maxMessageSizeBytes` both accept 1024..1048576.
   */
  messageBytesMax: number;
  /** Four days, the SQS default, said explicitly. */
  retentionS: number;
  /**
   * The DLQ keeps poison messages for the SQS maximum (14 days): an operator must have time to
   * look at them, and AWS advises a DLQ retention longer than its source queue's.
   */
  deadLetterRetentionS: number;
  /** Receives before SQS moves a message to the DLQ. */
  maxReceiveCount: number;
}

export const replicationQueueDefinition: ReplicationQueueDefinition = {
  fifo: true,
  contentBasedDeduplication: false,
  messageBytesMax: 1024 * 1024,
  retentionS: 4 * 24 * 60 * 60,
  deadLetterRetentionS: 14 * 24 * 60 * 60,
  maxReceiveCount: 5,
};
