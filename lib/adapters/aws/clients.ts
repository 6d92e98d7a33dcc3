import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';

/**
 * DynamoDB Local keeps separate tables per access key and region, so every local process
 * must present the same key. On AWS (no endpoint) the standard credential chain is used.
 */
export const localCredentials = { accessKeyId: 'epochkvlocal', secretAccessKey: 'epochkvlocal' } as const;

export interface ClientOptions {
  region: string;
  /** Emulator endpoint (DynamoDB Local); omitted on AWS. */
  endpoint?: string | undefined;
}

export function makeDynamoClient({ region, endpoint }: ClientOptions): DynamoDBDocumentClient {
  const client = new DynamoDBClient({
    region,
    // The adapters retry lost races themselves with jittered backoff; the SDK retries only
    // throttling and transient network errors, a bounded number of times.
    maxAttempts: 3,
    ...(endpoint === undefined ? {} : { endpoint, credentials: localCredentials }),
  });
  return DynamoDBDocumentClient.from(client, {
    marshallOptions: { removeUndefinedValues: true, convertEmptyValues: false },
    unmarshallOptions: { wrapNumbers: false },
  });
}

/** SQS client for a region; on the local cloud it points at the emulator with the local key. */
export function makeSqsClient({ region, endpoint }: ClientOptions): SQSClient {
  return new SQSClient({ region, maxAttempts: 3, ...(endpoint === undefined ? {} : { endpoint, credentials: localCredentials }) });
}
