import { DescribeTableCommand, DescribeTimeToLiveCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetQueueAttributesCommand, GetQueueUrlCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { localCredentials, makeSqsClient } from '../../lib/adapters/aws/clients.ts';
import { tableNames } from '../../lib/infra/names.ts';
import { tableDefinitions } from '../../lib/infra/schema.ts';
import { ensureReplicationQueue } from '../../lib/local/queues.ts';
import { ensureTables } from '../../lib/local/tables.ts';
import { uniquePrefix } from '../support.ts';
import { synthesizeCluster, type SynthesizedCluster } from './synth.ts';

/**
 * The local cloud and the CDK stacks take their tables and queues from the same definitions
 * (lib/infra/schema.ts). This proves they agree where it matters: every table and queue in the
 * synthesized templates is created by the local cloud's own functions (ensureTables,
 * ensureReplicationQueue) in DynamoDB Local and the SQS emulator, and what those engines report
 * back matches the template: keys, attribute types, billing, TTL; FIFO, deduplication, message
 * size, retention, DLQ and receive count.
 */

type Properties = Record<string, unknown>;
let cluster: SynthesizedCluster;
const dynamo = new Map<string, DynamoDBClient>();
const sqs = new Map<string, SQSClient>();

function dynamoIn(region: string): DynamoDBClient {
  let client = dynamo.get(region);
  if (client === undefined) {
    client = new DynamoDBClient({ region, endpoint: inject('dynamoEndpoint'), credentials: localCredentials });
    dynamo.set(region, client);
  }
  return client;
}

function sqsIn(region: string): SQSClient {
  let client = sqs.get(region);
  if (client === undefined) {
    client = makeSqsClient({ region, endpoint: inject('sqsEndpoint') });
    sqs.set(region, client);
  }
  return client;
}

/** Every resource of a type across all templates, with the region of its stack. */
function synthesized(type: string): { region: string; stack: string; logicalId: string; properties: Properties; all: Record<string, { Properties?: Properties }> }[] {
  return cluster.stacks.all.flatMap((stack) => {
    const resources = cluster.templates.get(stack.stackName)?.toJSON().Resources as Record<string, { Type: string; Properties?: Properties }>;
    return Object.entries(resources)
      .filter(([, resource]) => resource.Type === type)
      .map(([logicalId, resource]) => ({ region: stack.region, stack: stack.stackName, logicalId, properties: resource.Properties ?? {}, all: resources }));
  });
}

const sortByName = <T extends { AttributeName?: string | undefined }>(list: T[]) => [...list].sort((a, b) => String(a.AttributeName).localeCompare(String(b.AttributeName)));

beforeAll(async () => {
  const prefix = uniquePrefix('drift');
  // No function code is read here: skip bundling.
  cluster = synthesizeCluster({ prefix }, { bundle: false });
  const { config } = cluster;
  // What the local cloud does at start (lib/local/cloud.ts): every region's tables, every region's queues (any region can become a replica).
  await Promise.all(
    [config.homeRegion, ...config.replicaRegions].map(async (region) => {
      await ensureTables(dynamoIn(region), tableNames(prefix));
      await ensureReplicationQueue(sqsIn(region), prefix);
    }),
  );
});

afterAll(() => {
  for (const client of [...dynamo.values(), ...sqs.values()]) client.destroy();
});

describe('Local cloud and CDK stacks: one definition of tables and queues', () => {
  it('every table in the templates exists locally with the same keys, attribute types, billing and TTL', async () => {
    const tables = synthesized('AWS::DynamoDB::Table');
    const regions = [cluster.config.homeRegion, ...cluster.config.replicaRegions];
    expect(tables).toHaveLength(regions.length * tableDefinitions.length);
    for (const { region, properties } of tables) {
      const name = String(properties.TableName);
      const local = (await dynamoIn(region).send(new DescribeTableCommand({ TableName: name }))).Table;
      expect(local, `${region}/${name} in DynamoDB Local`).toBeDefined();
      expect(local?.KeySchema, `${region}/${name} keys`).toEqual(properties.KeySchema);
      expect(sortByName(local?.AttributeDefinitions ?? []), `${region}/${name} attribute types`).toEqual(sortByName(properties.AttributeDefinitions as { AttributeName: string }[]));
      expect(local?.BillingModeSummary?.BillingMode, `${region}/${name} billing`).toBe(properties.BillingMode);
      const ttl = (await dynamoIn(region).send(new DescribeTimeToLiveCommand({ TableName: name }))).TimeToLiveDescription;
      const synthesizedTtl = properties.TimeToLiveSpecification as { AttributeName: string; Enabled: boolean } | undefined;
      if (synthesizedTtl === undefined) {
        expect(ttl?.TimeToLiveStatus ?? 'DISABLED', `${region}/${name} has no TTL`).toBe('DISABLED');
      } else {
        expect({ attribute: ttl?.AttributeName, status: ttl?.TimeToLiveStatus }, `${region}/${name} TTL`).toEqual({ attribute: synthesizedTtl.AttributeName, status: 'ENABLED' });
      }
    }
  });

  it('every queue in the templates exists locally, FIFO, with the same deduplication, message size, retention and DLQ', async () => {
    const queues = synthesized('AWS::SQS::Queue');
    expect(queues).toHaveLength((1 + cluster.config.replicaRegions.length) * 2);
    for (const { region, properties, all } of queues) {
      const name = String(properties.QueueName);
      const client = sqsIn(region);
      const url = (await client.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl;
      const local = (await client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['All'] }))).Attributes ?? {};
      expect(
        {
          fifo: local.FifoQueue === 'true',
          contentBasedDeduplication: local.ContentBasedDeduplication === 'true',
          maximumMessageSize: Number(local.MaximumMessageSize),
          retentionS: Number(local.MessageRetentionPeriod),
        },
        `${region}/${name}`,
      ).toEqual({
        fifo: properties.FifoQueue,
        contentBasedDeduplication: properties.ContentBasedDeduplication,
        maximumMessageSize: properties.MaximumMessageSize,
        retentionS: properties.MessageRetentionPeriod,
      });
      const redrive = properties.RedrivePolicy as { deadLetterTargetArn: { 'Fn::GetAtt': [string, string] }; maxReceiveCount: number } | undefined;
      if (redrive === undefined) {
        expect(local.RedrivePolicy, `${region}/${name} is a DLQ`).toBeUndefined();
        continue;
      }
      const dlqName = String(all[redrive.deadLetterTargetArn['Fn::GetAtt'][0]]?.Properties?.QueueName);
      const localRedrive = JSON.parse(local.RedrivePolicy ?? '{}') as { deadLetterTargetArn?: string; maxReceiveCount?: number | string };
      expect({ dlq: localRedrive.deadLetterTargetArn?.split(':').at(-1), maxReceiveCount: Number(localRedrive.maxReceiveCount) }, `${region}/${name} redrive`).toEqual({
        dlq: dlqName,
        maxReceiveCount: redrive.maxReceiveCount,
      });
    }
  });

  it('has no table or queue on either side that the other lacks', () => {
    const { config } = cluster;
    const synthesizedNames = new Set([...synthesized('AWS::DynamoDB::Table'), ...synthesized('AWS::SQS::Queue')].map(({ region, properties }) => `${region}/${String(properties.TableName ?? properties.QueueName)}`));
    const localNames = new Set<string>();
    for (const region of [config.homeRegion, ...config.replicaRegions]) {
      for (const name of Object.values(tableNames(config.prefix))) localNames.add(`${region}/${name}`);
      for (const name of [`${config.prefix}-replication.fifo`, `${config.prefix}-replication-dlq.fifo`]) localNames.add(`${region}/${name}`);
    }
    expect([...synthesizedNames].sort()).toEqual([...localNames].sort());
  });
});
