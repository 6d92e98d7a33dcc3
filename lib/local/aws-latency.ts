import { env } from '../config.ts';

/**
 * The local cloud's model of how long an AWS SDK call takes on AWS: the emulators answer on
 * loopback in about a millisecond, AWS does not, and the time a write holds a shard or a
 * replica lags behind depends on it. When the model is on, the SDK middleware of
 * lib/adapters/aws/clients.ts waits this long per attempt (half before sending, half after
 * the answer: a round trip) on top of what the emulator takes, for clients with a local
 * endpoint only — never on AWS.
 *
 * The figures (docs/aws-model.md has the same table):
 *
 * | call | ms | source |
 * | --- | --- | --- |
 * | DynamoDB, same region (GetItem, PutItem, UpdateItem, Query, BatchWriteItem, ...) | 5 | "single-digit millisecond performance at any scale" (Amazon DynamoDB Developer Guide, What is Amazon DynamoDB: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Introduction.html) |
 * | DynamoDB transaction, same region (TransactWriteItems, TransactGetItems) | 8 | an estimate: a transaction reads or writes every item twice, prepare and commit ("two underlying reads or writes of every item", Amazon DynamoDB transactions: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html); still single-digit |
 * | SQS, same region (SendMessageBatch, ReceiveMessage, DeleteMessageBatch, ...) | 16 | 16 ms to send a 1 KB message in us-east-1, Amazon's own re-measurement in "Cloud Performance Benchmark Series: Amazon SQS", Stony Brook University, revised July 2012 (https://paperzz.com/doc/8847683/cloud-performance-benchmark-series) |
 * | us-east-1 ↔ eu-west-1, added per call | 80 | ping round trip between EC2 instances, 80.5 ms ("Latency Between AWS Global Regions", reproduced at https://acomputerscientistlearnsaws.blogspot.com/2017/04/aws-regions.html) |
 * | us-east-1 ↔ ap-southeast-2, added per call | 230 | the same table, 229.7–230 ms |
 * | eu-west-1 ↔ ap-southeast-2, added per call | 310 | the same table, 309.6 ms |
 * | any other pair of distinct regions | 150 | no source: a guess between the table's pairs |
 *
 * A call across regions costs the region pair's round trip plus the same-region figure of the
 * call (the service still has to do the work). The inter-region figures are 2017 measurements;
 * routes have improved since, so they err on the slow side.
 */
export const awsLatencyModel = {
  dynamodbCallMs: 5,
  dynamodbTransactionMs: 8,
  sqsCallMs: 16,
  /** Round trips between regions, keyed by the two names sorted and joined by a space. */
  roundTripMs: {
    'eu-west-1 us-east-1': 80,
    'ap-southeast-2 us-east-1': 230,
    'ap-southeast-2 eu-west-1': 310,
  } as Readonly<Record<string, number>>,
  roundTripMsDefault: 150,
} as const;

const transactionOperations = new Set(['TransactWriteItems', 'TransactGetItems']);

/** The round trip between two regions; 0 within one. */
export function roundTripMs(from: string, to: string): number {
  if (from === to) return 0;
  const key = [from, to].sort().join(' ');
  return awsLatencyModel.roundTripMs[key] ?? awsLatencyModel.roundTripMsDefault;
}

/** How long one attempt of `operation` (e.g. `GetItem`, `SendMessageBatch`) from region `from` to region `to` takes on AWS. */
export function awsCallMs(service: 'dynamodb' | 'sqs', operation: string, from: string, to: string): number {
  const serviceMs = service === 'sqs' ? awsLatencyModel.sqsCallMs : transactionOperations.has(operation) ? awsLatencyModel.dynamodbTransactionMs : awsLatencyModel.dynamodbCallMs;
  return serviceMs + roundTripMs(from, to);
}

/**
 * Process-wide, as the cut-off regions of clients.ts are: the environment variable is read here
 * and nowhere else (node processes the local cloud spawns get it from their environment), and
 * the local cloud switches it for its own process with `setAwsLatency`.
 */
let enabled = process.env[env.localAwsLatency] === '1';

export function awsLatencyEnabled(): boolean {
  return enabled;
}

/** LOCAL CLOUD ONLY: turns the model on or off for every client of this process (with a local endpoint), from the next call on. */
export function setAwsLatency(on: boolean): void {
  enabled = on;
}
