import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { InfraConfig } from './config.ts';
import { replicationQueueNames } from './names.ts';
import { replicationQueueDefinition, tableDefinitions, tableNames, type AttributeType, type TableDefinition } from './schema.ts';

/** The three tables of a region, by their role. */
export type TableRole = TableDefinition['suffix'];
export type TableSet = Record<TableRole, dynamodb.ITable>;

/**
 * Logical IDs of the stateful resources, pinned: a changed logical ID would make CloudFormation
 * replace the table or queue (a new, empty one). A test holds them.
 */
export const statefulLogicalIds = {
  tables: { control: 'ControlTable', log: 'LogTable', kv: 'KvTable' } satisfies Record<TableRole, string>,
  queue: 'ReplicationQueue',
  deadLetterQueue: 'ReplicationDeadLetterQueue',
} as const;

const attributeTypes: Record<AttributeType, dynamodb.AttributeType> = {
  S: dynamodb.AttributeType.STRING,
  N: dynamodb.AttributeType.NUMBER,
  B: dynamodb.AttributeType.BINARY,
};

function removalPolicyOf(config: InfraConfig): RemovalPolicy {
  return config.deletionProtection ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;
}

/**
 * A region's `control`, `log` and `kv` tables from the shared definitions (`schema.ts`), the same
 * ones the local cloud creates. On-demand, point-in-time recovery, encrypted with the AWS
 * managed key (`aws/dynamodb`), TTL on the log's `expiresAt` for trimmed entries.
 */
export class ClusterTables extends Construct {
  readonly tables: Record<TableRole, dynamodb.Table>;

  constructor(scope: Construct, id: string, props: { config: InfraConfig }) {
    super(scope, id);
    const names = tableNames(props.config.prefix);
    const tables: Partial<Record<TableRole, dynamodb.Table>> = {};
    for (const definition of tableDefinitions) {
      const table = new dynamodb.Table(this, statefulLogicalIds.tables[definition.suffix], {
        tableName: names[definition.suffix],
        partitionKey: { name: definition.partitionKey.name, type: attributeTypes[definition.partitionKey.type] },
        sortKey: { name: definition.sortKey.name, type: attributeTypes[definition.sortKey.type] },
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        // AWS managed key: encrypted at rest with key use in CloudTrail, no key policy to keep in
        // step across regions (writers in other regions use the home tables) and no monthly key fee.
        encryption: dynamodb.TableEncryption.AWS_MANAGED,
        ...(definition.timeToLiveAttribute === undefined ? {} : { timeToLiveAttribute: definition.timeToLiveAttribute }),
        deletionProtection: props.config.deletionProtection,
        removalPolicy: removalPolicyOf(props.config),
      });
      (table.node.defaultChild as dynamodb.CfnTable).overrideLogicalId(statefulLogicalIds.tables[definition.suffix]);
      tables[definition.suffix] = table;
    }
    this.tables = tables as Record<TableRole, dynamodb.Table>;
  }
}

/** The apply function's timeout: a batch of 10 entries, or a pull of a missing range from home. */
export const applyTimeout = Duration.seconds(20);
/**
 * The replication queue's visibility timeout: six times the apply timeout, as AWS advises for
 * an SQS event source (room for the retries of a throttled batch). A failed message blocks its
 * shard's message group this long; the replica heartbeat's pull repair does not wait for it.
 */
export const replicationVisibilityTimeout = Duration.seconds(applyTimeout.toSeconds() * 6);

/**
 * A replica region's replication FIFO queue and its FIFO dead-letter queue, from the definition
 * the local cloud uses. SQS-managed encryption (no key to share with the writers in other
 * regions), TLS required.
 */
export class ReplicationQueue extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: { config: InfraConfig }) {
    super(scope, id);
    const names = replicationQueueNames(props.config.prefix);
    const definition = replicationQueueDefinition;
    const common = {
      fifo: definition.fifo,
      contentBasedDeduplication: definition.contentBasedDeduplication,
      maxMessageSizeBytes: definition.messageBytesMax,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      removalPolicy: removalPolicyOf(props.config),
    };
    this.deadLetterQueue = new sqs.Queue(this, statefulLogicalIds.deadLetterQueue, {
      ...common,
      queueName: names.dlq,
      retentionPeriod: Duration.seconds(definition.deadLetterRetentionS),
    });
    (this.deadLetterQueue.node.defaultChild as sqs.CfnQueue).overrideLogicalId(statefulLogicalIds.deadLetterQueue);
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'Serverless-SQSRedrivePolicy',
      reason: 'This queue is the dead-letter queue of the replication queue: its messages are kept for inspection (the DeadLetters alarm), and a dead-letter queue of the dead-letter queue would only move them again.',
    });
    this.queue = new sqs.Queue(this, statefulLogicalIds.queue, {
      ...common,
      queueName: names.queue,
      retentionPeriod: Duration.seconds(definition.retentionS),
      visibilityTimeout: replicationVisibilityTimeout,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: definition.maxReceiveCount },
    });
    (this.queue.node.defaultChild as sqs.CfnQueue).overrideLogicalId(statefulLogicalIds.queue);
  }
}
