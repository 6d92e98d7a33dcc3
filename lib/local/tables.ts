import {
  CreateTableCommand,
  DescribeTableCommand,
  ResourceInUseException,
  UpdateTimeToLiveCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { tableBillingMode, tableDefinitions, type TableNames } from '../infra/schema.ts';
import { waitFor } from './emulators.ts';

/** Creates the region's tables from the shared definitions; tables that exist are kept. */
export async function ensureTables(client: DynamoDBClient, names: TableNames): Promise<void> {
  for (const definition of tableDefinitions) {
    const tableName = names[definition.suffix];
    try {
      await client.send(
        new CreateTableCommand({
          TableName: tableName,
          BillingMode: tableBillingMode,
          KeySchema: [
            { AttributeName: definition.partitionKey.name, KeyType: 'HASH' },
            { AttributeName: definition.sortKey.name, KeyType: 'RANGE' },
          ],
          AttributeDefinitions: [
            { AttributeName: definition.partitionKey.name, AttributeType: definition.partitionKey.type },
            { AttributeName: definition.sortKey.name, AttributeType: definition.sortKey.type },
          ],
        }),
      );
      if (definition.timeToLiveAttribute !== undefined) {
        await client.send(
          new UpdateTimeToLiveCommand({ TableName: tableName, TimeToLiveSpecification: { AttributeName: definition.timeToLiveAttribute, Enabled: true } }),
        );
      }
    } catch (error) {
      if (!(error instanceof ResourceInUseException)) throw error;
    }
    await waitFor(
      `table ${tableName} to become ACTIVE`,
      async () => (await client.send(new DescribeTableCommand({ TableName: tableName }))).Table?.TableStatus === 'ACTIVE',
      30_000,
      50,
    );
  }
}
