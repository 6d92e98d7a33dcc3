import { startLocalCloud, type LocalCloud } from '../local/cloud.ts';
import { startDynamoLocal, startSqsEmulator } from '../local/emulators.ts';

/**
 * A home-only local cloud on its own DynamoDB Local and SQS emulator, with the AWS latency model
 * on and no local rate limit (the benchmark is the load: the limit must not shape it), its
 * leaders elected. `stop` tears down the cloud and both emulators.
 */
export async function startBenchCloud(tablePrefix: string, shardCount: number): Promise<{ cloud: LocalCloud; stop: () => Promise<void> }> {
  const dynamo = await startDynamoLocal({});
  const sqs = await startSqsEmulator({ port: 0 });
  const stopEmulators = async () => {
    await sqs.stop();
    await dynamo.stop();
  };
  let cloud: LocalCloud | undefined;
  try {
    cloud = await startLocalCloud({
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
    await cloud.waitForLeaders(30_000);
  } catch (error) {
    await cloud?.stop();
    await stopEmulators();
    throw error;
  }
  const started = cloud;
  return {
    cloud: started,
    stop: async () => {
      await started.stop();
      await stopEmulators();
    },
  };
}
