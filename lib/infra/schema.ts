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
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
};

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

export interface TableNames {
  control: string;
  log: string;
  kv: string;
}

export function tableNames(prefix: string): TableNames {
  return { control: `${prefix}-control`, log: `${prefix}-log`, kv: `${prefix}-kv` };
}
