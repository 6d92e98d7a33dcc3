import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { describe, expect, inject, it } from 'vitest';
import { cutOffRegion, makeSqsClient, observeAwsRequests, reconnectRegion, RegionUnreachableError, type AwsRequestRecord } from '../../lib/adapters/aws/clients.ts';
import { ensureReplicationQueue } from '../../lib/local/queues.ts';
import { uniquePrefix } from '../support.ts';

describe('SQS clients (cached middleware stack, SQS emulator)', () => {
  it('resolve the middleware once, yet see observers and cut-off regions that change after the first request', async () => {
    // Prepare: a queue in eu-west-1, and a client calling it from us-east-1 that has sent once.
    const prefix = uniquePrefix('clients');
    const endpoint = inject('sqsEndpoint');
    const queue = await ensureReplicationQueue(makeSqsClient({ region: 'eu-west-1', endpoint }), prefix);
    const client = makeSqsClient({ region: 'eu-west-1', endpoint, from: 'us-east-1' });
    expect(client.config.cacheMiddleware).toBe(true);
    let sent = 0;
    const send = () => {
      sent += 1;
      return client.send(new SendMessageBatchCommand({ QueueUrl: queue.queueUrl, Entries: [{ Id: '0', MessageBody: `m${sent}`, MessageGroupId: '0', MessageDeduplicationId: `m${sent}` }] }));
    };
    await send();

    // Act + Assert: an observer registered after the first request sees the next one.
    const records: AwsRequestRecord[] = [];
    const stop = observeAwsRequests((record) => records.push(record));
    try {
      await send();
    } finally {
      stop();
    }
    expect(records.map((record) => `${record.service} ${record.region} ${record.operation}`)).toEqual(['sqs eu-west-1 SendMessageBatch']);

    // A region cut off after the first request is unreachable at once, and reachable again after.
    cutOffRegion('eu-west-1');
    try {
      await expect(send()).rejects.toBeInstanceOf(RegionUnreachableError);
    } finally {
      reconnectRegion('eu-west-1');
    }
    const output = await send();
    expect(output.Successful).toHaveLength(1);
  });
});
