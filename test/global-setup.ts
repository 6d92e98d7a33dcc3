import type { TestProject } from 'vitest/node';
import { startDynamoLocal, startSqsEmulator } from '../lib/local/emulators.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    dynamoEndpoint: string;
    sqsEndpoint: string;
  }
}

/**
 * One DynamoDB Local (a JVM) and one SQS emulator for the whole run: a JVM start per test
 * file would cost seconds each. Every test uses its own table and queue names.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const startedMs = Date.now();
  const [dynamo, sqs] = await Promise.all([startDynamoLocal(), startSqsEmulator()]);
  console.log(`global setup: DynamoDB Local ${dynamo.endpoint}, SQS emulator ${sqs.endpoint} (${Date.now() - startedMs} ms)`);
  project.provide('dynamoEndpoint', dynamo.endpoint);
  project.provide('sqsEndpoint', sqs.endpoint);
  return async () => {
    await Promise.all([dynamo.stop(), sqs.stop()]);
  };
}
