import { randomBytes } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { inject } from 'vitest';
import { localCredentials, makeDynamoClient } from '../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../lib/adapters/aws/dynamo-store.ts';
import { shardOf } from '../lib/core/shard.ts';
import { tableNames, type TableNames } from '../lib/infra/schema.ts';
import { ensureTables } from '../lib/local/tables.ts';
import type { LocalCloud, LocalCloudOptions } from '../lib/local/cloud.ts';
import { waitUntil as waitFor } from '../lib/wait.ts';

export const region = 'us-east-1';

/** A table prefix no other test uses. */
export function uniquePrefix(label: string): string {
  return `t-${label}-${randomBytes(4).toString('hex')}`;
}

export async function createStore(prefix: string, shardCount = 8): Promise<{ store: DynamoStore; tables: TableNames; endpoint: string }> {
  const endpoint = inject('dynamoEndpoint');
  const tables = tableNames(prefix);
  const admin = new DynamoDBClient({ region, endpoint, credentials: localCredentials });
  try {
    await ensureTables(admin, tables);
  } finally {
    admin.destroy();
  }
  return { store: new DynamoStore(makeDynamoClient({ region, endpoint }), tables, shardCount), tables, endpoint };
}

/** The same tables in a replica region (DynamoDB Local keeps tables per region), and a client there. */
export async function createReplicaRegion(prefix: string, replicaRegion: string): Promise<{ client: ReturnType<typeof makeDynamoClient>; tables: TableNames }> {
  const endpoint = inject('dynamoEndpoint');
  const tables = tableNames(prefix);
  const admin = new DynamoDBClient({ region: replicaRegion, endpoint, credentials: localCredentials });
  try {
    await ensureTables(admin, tables);
  } finally {
    admin.destroy();
  }
  return { client: makeDynamoClient({ region: replicaRegion, endpoint }), tables };
}

export { waitUntil } from '../lib/wait.ts';

/** A key that hashes to `shard`, so a test can aim at one shard's leader. */
export function keyInShard(shard: number, shardCount: number, label = 'k'): string {
  for (let attempt = 0; attempt < 100_000; attempt += 1) {
    const key = `${label}-${attempt}`;
    if (shardOf(key, shardCount) === shard) return key;
  }
  throw new Error(`no key found for shard ${shard}`);
}

/**
 * A local cloud of its own (own tables, any free ports) on the run's emulators, returned once
 * every shard has a live leader: what a user's first write waits for.
 */
export async function startLedCloud(label: string, options: Partial<LocalCloudOptions> = {}): Promise<LocalCloud> {
  // Loaded here, not at the top: the unit tests that use this module need none of the local cloud.
  const { startLocalCloud } = await import('../lib/local/cloud.ts');
  const cloud = await startLocalCloud({ basePort: 0, dynamoEndpoint: inject('dynamoEndpoint'), sqsEndpoint: inject('sqsEndpoint'), tablePrefix: uniquePrefix(label), log: () => undefined, ...options });
  await waitFor(
    'every shard led',
    async () => {
      const status = (await (await fetch(`${cloud.apiUrl}/cluster`)).json()) as { shards: { live: boolean }[] };
      return status.shards.every((shard) => shard.live) ? true : undefined;
    },
    60_000,
  );
  return cloud;
}
