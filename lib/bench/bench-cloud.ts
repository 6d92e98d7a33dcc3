import { startLocalCloud, type LocalCloud } from '../local/cloud.ts';
import { startDynamoLocal, startSqsEmulator } from '../local/emulators.ts';

/**
 * A home-only local cloud on its own DynamoDB Local and SQS emulator, with the AWS latency model
 * on and no local rate limit (the benchmark is the load), torn down after `work`.
 */
export async function withBenchCloud<T>(tablePrefix: string, shardCount: number, work: (cloud: LocalCloud) => Promise<T>): Promise<T> {
  const dynamo = await startDynamoLocal({});
  const sqs = await startSqsEmulator({ port: 0 });
  try {
    const cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: dynamo.endpoint,
      sqsEndpoint: sqs.endpoint,
      tablePrefix,
      replicaRegions: [],
      shardCount,
      awsLatency: true,
      rateLimitPerSecond: 1_000_000,
      log: () => undefined,
    });
    try {
      await cloud.waitForLeaders(30_000);
      return await work(cloud);
    } finally {
      await cloud.stop();
    }
  } finally {
    await sqs.stop();
    await dynamo.stop();
  }
}
