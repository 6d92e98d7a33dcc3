import { DescribeTableCommand, DynamoDBClient, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, DeleteCommand, DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, ScanCommand, TransactWriteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, inject, it } from 'vitest';
import { localCredentials, makeDynamoClient, observeAwsRequests, type AwsRequestRecord } from '../../lib/adapters/aws/clients.ts';
import type { DocumentClient } from '../../lib/adapters/aws/document-client.ts';
import { tableNames } from '../../lib/infra/schema.ts';
import { ensureTables } from '../../lib/local/tables.ts';
import { region, uniquePrefix } from '../support.ts';

/** The output without the request metadata, which differs between any two calls. */
function body(output: unknown): unknown {
  const { $metadata: _metadata, ...rest } = output as Record<string, unknown>;
  return rest;
}

/** The same steps through a client, on the kv table of its own prefix; every output in order. */
async function script(client: DocumentClient, table: string): Promise<unknown[]> {
  const outputs: unknown[] = [];
  const record = async (output: Promise<unknown>) => outputs.push(body(await output));
  await record(client.send(new PutCommand({ TableName: table, Item: { shard: 1, key: 'a', value: 'x', nested: { list: [1, 'two', true, null], empty: '' }, version: 1, gone: undefined } })));
  await record(client.send(new PutCommand({ TableName: table, Item: { shard: 1, key: 'b', value: 'y', version: 2 }, ReturnValues: 'ALL_OLD' })));
  await record(client.send(new PutCommand({ TableName: table, Item: { shard: 1, key: 'b', value: 'z', version: 3 }, ReturnValues: 'ALL_OLD' })));
  await record(client.send(new GetCommand({ TableName: table, Key: { shard: 1, key: 'a' }, ConsistentRead: true })));
  await record(client.send(new GetCommand({ TableName: table, Key: { shard: 1, key: 'missing' }, ConsistentRead: true })));
  await record(
    client.send(
      new UpdateCommand({
        TableName: table,
        Key: { shard: 1, key: 'a' },
        UpdateExpression: 'SET #version = #version + :one, #tags = :tags',
        ConditionExpression: '#version = :expected',
        ExpressionAttributeNames: { '#version': 'version', '#tags': 'tags' },
        ExpressionAttributeValues: { ':one': 1, ':expected': 1, ':tags': ['p', 'q'] },
        ReturnValues: 'ALL_NEW',
      }),
    ),
  );
  await record(
    client.send(
      new TransactWriteCommand({
        TransactItems: [
          { ConditionCheck: { TableName: table, Key: { shard: 1, key: 'a' }, ConditionExpression: '#version = :two', ExpressionAttributeNames: { '#version': 'version' }, ExpressionAttributeValues: { ':two': 2 } } },
          { Put: { TableName: table, Item: { shard: 2, key: 'c', value: 'w', version: 1 }, ConditionExpression: 'attribute_not_exists(#key)', ExpressionAttributeNames: { '#key': 'key' } } },
          { Update: { TableName: table, Key: { shard: 1, key: 'b' }, UpdateExpression: 'SET #value = :v', ExpressionAttributeNames: { '#value': 'value' }, ExpressionAttributeValues: { ':v': 'updated' } } },
          { Delete: { TableName: table, Key: { shard: 9, key: 'never' }, ConditionExpression: 'attribute_not_exists(#key)', ExpressionAttributeNames: { '#key': 'key' } } },
        ],
      }),
    ),
  );
  // A refused transaction: the cancellation reasons come back as DynamoDB sent them.
  const refused = await client
    .send(
      new TransactWriteCommand({
        TransactItems: [{ Put: { TableName: table, Item: { shard: 2, key: 'c', value: 'again' }, ConditionExpression: 'attribute_not_exists(#key)', ExpressionAttributeNames: { '#key': 'key' }, ReturnValuesOnConditionCheckFailure: 'ALL_OLD' } }],
      }),
    )
    .catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(TransactionCanceledException);
  outputs.push((refused as TransactionCanceledException).CancellationReasons);
  await record(
    client.send(
      new BatchWriteCommand({
        RequestItems: {
          [table]: [
            { PutRequest: { Item: { shard: 3, key: 'd', value: 'v1' } } },
            { PutRequest: { Item: { shard: 3, key: 'e', value: 'v2' } } },
            { DeleteRequest: { Key: { shard: 2, key: 'c' } } },
          ],
        },
      }),
    ),
  );
  // Page by page, so the continuation key goes back and forth in document form.
  let startKey: Record<string, unknown> | undefined;
  do {
    const page = await client.send(
      new QueryCommand({ TableName: table, KeyConditionExpression: '#shard = :shard', ExpressionAttributeNames: { '#shard': 'shard' }, ExpressionAttributeValues: { ':shard': 3 }, Limit: 1, ExclusiveStartKey: startKey, ConsistentRead: true }),
    );
    outputs.push(body(page));
    startKey = page.LastEvaluatedKey;
  } while (startKey !== undefined);
  await record(client.send(new DeleteCommand({ TableName: table, Key: { shard: 1, key: 'b' }, ReturnValues: 'ALL_OLD' })));
  return outputs;
}

describe('CachedDocumentClient (the document client of makeDynamoClient, DynamoDB Local)', () => {
  it('answers every command epochkv sends exactly as lib-dynamodb does', async () => {
    // Prepare: two copies of the tables, one per client.
    const endpoint = inject('dynamoEndpoint');
    const admin = new DynamoDBClient({ region, endpoint, credentials: localCredentials });
    const ours = tableNames(uniquePrefix('doc-ours'));
    const theirs = tableNames(uniquePrefix('doc-lib'));
    const reference = DynamoDBDocumentClient.from(new DynamoDBClient({ region, endpoint, credentials: localCredentials }), {
      marshallOptions: { removeUndefinedValues: true, convertEmptyValues: false },
      unmarshallOptions: { wrapNumbers: false },
    });
    const client = makeDynamoClient({ region, endpoint });
    try {
      await ensureTables(admin, ours);
      await ensureTables(admin, theirs);

      // Act
      const got = await script(client, ours.kv);
      const expected = await script(reference, theirs.kv);

      // Assert: the same outputs, with the table names told apart.
      expect(JSON.stringify(got).replaceAll(ours.kv, 'TABLE')).toBe(JSON.stringify(expected).replaceAll(theirs.kv, 'TABLE'));
      expect(got[3]).toEqual({ Item: { shard: 1, key: 'a', value: 'x', nested: { list: [1, 'two', true, null], empty: '' }, version: 1 } });
      expect((got.at(-1) as { Attributes: unknown }).Attributes).toEqual({ shard: 1, key: 'b', value: 'updated', version: 3 });
    } finally {
      admin.destroy();
      reference.destroy();
      client.destroy();
    }
  });

  it('reports document-form inputs to request observers, passes low-level commands through, and refuses a document command it cannot translate', async () => {
    const endpoint = inject('dynamoEndpoint');
    const admin = new DynamoDBClient({ region, endpoint, credentials: localCredentials });
    const tables = tableNames(uniquePrefix('doc-observe'));
    const client = makeDynamoClient({ region, endpoint });
    const records: AwsRequestRecord[] = [];
    const stop = observeAwsRequests((record) => records.push(record), { consumedCapacity: true });
    try {
      await ensureTables(admin, tables);
      await client.send(new PutCommand({ TableName: tables.kv, Item: { shard: 4, key: 'k', value: 'v' } }));
      const described = await client.send(new DescribeTableCommand({ TableName: tables.kv }));
      expect(described.Table?.TableName).toBe(tables.kv);
      await expect(client.send(new ScanCommand({ TableName: tables.kv }))).rejects.toThrow('CachedDocumentClient has no translation for ScanCommand');

      const put = records.find((record) => record.operation === 'PutItem');
      expect(put?.input).toEqual({ TableName: tables.kv, Item: { shard: 4, key: 'k', value: 'v' }, ReturnConsumedCapacity: 'TOTAL' });
      expect((put?.output?.ConsumedCapacity as { CapacityUnits?: number } | undefined)?.CapacityUnits).toBeGreaterThan(0);
      expect(records.map((record) => record.operation)).toEqual(['PutItem', 'DescribeTable']);
    } finally {
      stop();
      admin.destroy();
      client.destroy();
    }
  });
});
