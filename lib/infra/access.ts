import { ArnFormat, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { InfraConfig } from './config.ts';
import type { TableRole, TableSet } from './data.ts';
import { replicationQueueNames } from './names.ts';
import { compactionPartition, replicaReportPartition, tableDefinitions, tableNames } from './schema.ts';

/**
 * The DynamoDB actions the store adapters issue (`lib/adapters/aws`), grouped by what a handler
 * does with a table. There is no IAM action for TransactWriteItems: each of its parts is
 * authorized as the single-item action it performs (ConditionCheck, Put, Update, Delete).
 * Scan, BatchGetItem, DescribeTable and streams are never used, so never granted; BatchWriteItem
 * only to replica heartbeats, for their reports, and only in the reports' partition, and to the
 * log trims (deletes of compacted entries) on `log` tables.
 */
export const dynamoActions = {
  /** GetItem and Query (consistent or not). */
  read: ['dynamodb:GetItem', 'dynamodb:Query'],
  /** Everything a TransactWriteItems (and the single-item writes) can do. */
  transactWrite: ['dynamodb:ConditionCheckItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
  /** Replica progress reports: PutItem and BatchWriteItem on the home `control` table's report partition. */
  replicaReports: ['dynamodb:BatchWriteItem', 'dynamodb:PutItem'],
  /** Log compaction: the trim deletes compacted entries 25 to a BatchWriteItem. */
  logTrim: ['dynamodb:BatchWriteItem'],
} as const;

/** Log compaction: BatchWriteItem on a `log` table, whose items are all log entries. */
export function grantLogTrim(grantee: iam.IGrantable, log: dynamodb.ITable): void {
  log.grant(grantee, ...dynamoActions.logTrim);
}

/** A replica region follows the home's compaction points: a Query of that partition of home `control`, nothing else of it. */
export function grantCompactionRead(grantee: iam.IGrantable, control: dynamodb.ITable): void {
  grantee.grantPrincipal.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: ['dynamodb:Query'],
      resources: [control.tableArn],
      conditions: { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [compactionPartition] } },
    }),
  );
}

export function grantTableRead(grantee: iam.IGrantable, ...tables: dynamodb.ITable[]): void {
  for (const table of tables) table.grant(grantee, ...dynamoActions.read);
}

export function grantTableTransactWrite(grantee: iam.IGrantable, ...tables: dynamodb.ITable[]): void {
  for (const table of tables) table.grant(grantee, ...dynamoActions.transactWrite);
}

/**
 * Replica heartbeats write their progress reports with BatchWriteItem, which could also delete
 * any item: the `dynamodb:LeadingKeys` condition keeps them to the reports' partition, so a
 * heartbeat can never touch a lease, a node heartbeat or the cluster record.
 */
export function grantReplicaReports(grantee: iam.IGrantable, control: dynamodb.ITable): void {
  grantee.grantPrincipal.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: [...dynamoActions.replicaReports],
      resources: [control.tableArn],
      conditions: { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [replicaReportPartition] } },
    }),
  );
}

/** A region's own stateful resources, by construct reference (from its data stack). */
export interface RegionData {
  tables: TableSet;
  /** The region's replication queue (replica regions only). */
  queue?: sqs.IQueue;
}

/**
 * The cluster's tables and queues as one stack sees them: its own region's by reference, every
 * other region's by naming convention (an imported construct over an ARN built for that region),
 * so no stack reads another region's outputs and no cross-region custom resource is needed.
 */
export class ClusterReferences extends Construct {
  /** The authoritative tables: leases, the log, the kv items. */
  readonly homeTables: TableSet;
  /** This region's tables (the home tables in the home region). */
  readonly localTables: TableSet;
  /** Every replica region's replication queue, in `config.replicaRegions` order. */
  readonly replicaQueues: sqs.IQueue[];

  constructor(scope: Construct, id: string, props: { config: InfraConfig; local: RegionData }) {
    super(scope, id);
    const { config, local } = props;
    const stack = Stack.of(this);
    this.localTables = local.tables;
    this.homeTables = stack.region === config.homeRegion ? local.tables : this.#importTables(config, config.homeRegion);
    const queueName = replicationQueueNames(config.prefix).queue;
    this.replicaQueues = config.replicaRegions.map((region) => {
      if (region === stack.region) {
        if (local.queue === undefined) throw new Error(`the ${region} stack was given no replication queue for its own region`);
        return local.queue;
      }
      const queueArn = stack.formatArn({ service: 'sqs', region, resource: queueName, arnFormat: ArnFormat.NO_RESOURCE_NAME });
      return sqs.Queue.fromQueueAttributes(this, `ReplicationQueue-${region}`, { queueArn, queueName, fifo: true });
    });
  }

  #importTables(config: InfraConfig, region: string): TableSet {
    const stack = Stack.of(this);
    const names = tableNames(config.prefix);
    const tables: Partial<Record<TableRole, dynamodb.ITable>> = {};
    for (const definition of tableDefinitions) {
      const tableArn = stack.formatArn({ service: 'dynamodb', region, resource: 'table', resourceName: names[definition.suffix] });
      // No indexes exist, so no `/index/*` grants are made (grantIndexPermissions stays off).
      tables[definition.suffix] = dynamodb.Table.fromTableAttributes(this, `Table-${region}-${definition.suffix}`, { tableArn });
    }
    return tables as TableSet;
  }
}
