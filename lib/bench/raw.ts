/**
 * The storage's own limit: the exact transaction a write commits (ConditionCheck on the
 * shard's lease epoch + Put of the log entry with `attribute_not_exists` + Put of the kv item),
 * through the same adapter (`DynamoStore.commit`) and SDK client setup, with none of the
 * system around it: no HTTP, no lease or head reads, no retries on lost races (each worker
 * takes its own log index, so there are none), no replication.
 */
import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { localCredentials, makeDynamoClient } from '../adapters/aws/clients.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { sealEntry, type LogEntry } from '../core/log.ts';
import { shardOf } from '../core/shard.ts';
import { tableNames } from '../infra/schema.ts';
import { ensureTables } from '../local/tables.ts';
import type { Outcome } from './load.ts';

export class RawTransactions {
  readonly #heads: ({ index: number; hash: string } | undefined)[];

  private constructor(
    private readonly store: DynamoStore,
    private readonly client: ReturnType<typeof makeDynamoClient>,
    readonly shardCount: number,
  ) {
    this.#heads = Array.from({ length: shardCount }, () => undefined);
  }

  /** Tables `<prefix>-control|log|kv` in the home region, with a held lease (epoch 1) per shard. */
  static async create(options: { dynamoEndpoint: string; region: string; prefix: string; shardCount: number }): Promise<RawTransactions> {
    const tables = tableNames(options.prefix);
    const admin = new DynamoDBClient({ region: options.region, endpoint: options.dynamoEndpoint, credentials: localCredentials });
    try {
      await ensureTables(admin, tables);
    } finally {
      admin.destroy();
    }
    const client = makeDynamoClient({ region: options.region, endpoint: options.dynamoEndpoint });
    for (let shard = 0; shard < options.shardCount; shard += 1) {
      await client.send(
        new PutCommand({
          TableName: tables.control,
          Item: { pk: 'lease', sk: String(shard).padStart(4, '0'), shard, holder: 'bench', incarnation: 'bench', epoch: 1, version: 1, renewedAtMs: Date.now() },
        }),
      );
    }
    return new RawTransactions(new DynamoStore(client, tables, options.shardCount), client, options.shardCount);
  }

  /** Commits one put of `key` the way a write does; the log index is taken, never raced. */
  async put(key: string, value: Uint8Array): Promise<Outcome> {
    const shard = shardOf(key, this.shardCount);
    const head = this.#heads[shard];
    const entry: LogEntry = sealEntry(head, {
      shard,
      index: (head?.index ?? 0) + 1,
      epoch: 1,
      ops: [{ type: 'put', key, value }],
      requestId: randomUUID(),
      committedAtMs: Date.now(),
    });
    this.#heads[shard] = { index: entry.index, hash: entry.hash };
    await this.store.commit({ entry, kv: { change: { type: 'put', key, value }, precondition: {} } });
    return { ok: true };
  }

  destroy(): void {
    this.client.destroy();
  }
}
