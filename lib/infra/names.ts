import { replicationQueueName } from '../adapters/aws/replication.ts';
import { assert } from '../core/assert.ts';
import { tableNames, type TableNames } from './schema.ts';

/**
 * Physical names by convention: every region derives the names of every other region's tables
 * and queues from the cluster prefix, so no stack needs another region's outputs (which would
 * take custom resources across regions).
 */

/** SQS queue names are 1..80 characters including the `.fifo` suffix. */
export const queueNameLengthMax = 80;

export function replicationQueueNames(prefix: string): { queue: string; dlq: string } {
  // The queue name is the convention the writers and leaders use to find it in each region.
  const names = { queue: replicationQueueName(prefix), dlq: `${prefix}-replication-dlq.fifo` };
  for (const name of Object.values(names)) {
    assert(
      name.length <= queueNameLengthMax && /^[A-Za-z0-9_-]+\.fifo$/.test(name),
      `queue name ${name} must be at most ${queueNameLengthMax} characters of letters, digits, '-' and '_'`,
    );
  }
  return names;
}

/** Lambda function names are per region: every region uses the same `<prefix>-<name>`. */
export function functionName(prefix: string, name: string): string {
  return `${prefix}-${name}`;
}

/** Lambda function names are at most 64 characters. */
export const functionNameLengthMax = 64;

export { tableNames, type TableNames };
