/**
 * `npm run test:localstack`: an end-to-end check of the stacks deployed by
 * `npm run deploy:localstack`. It skips (exit 0) with the reason when LocalStack is not
 * reachable; it fails (exit 1) when LocalStack runs but the stacks are not deployed or a check
 * fails. Every wait is a poll with a deadline.
 *
 * What it checks, through the deployed REST APIs (with the typed client, SigV4-signed as their
 * AWS_IAM methods require) and the AWS SDK against LocalStack:
 *   1. every region's API answers /cluster as its own region;
 *   2. the scheduled node functions elect a live leader for every shard (EventBridge rules fire
 *      once a minute, so this may take two minutes);
 *   3. a write at home reads back byte for byte (strong read), and a write sent to a replica
 *      region's API lands at home;
 *   4. both writes reach every replica (eventual reads there) through SQS and the apply function;
 *   5. every replica heartbeat reports its progress to home (/cluster shows each region);
 *   6. no dead letters in any replica region;
 *   7. every region's tables exist with the keys of the shared definitions.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetQueueAttributesCommand, GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import { EpochKv } from '../../client/index.ts';
import { apiOutputs, apiStageName } from '../api.ts';
import type { InfraConfig } from '../config.ts';
import { replicationQueueNames, tableNames } from '../names.ts';
import { tableDefinitions } from '../schema.ts';
import { stackNames } from '../stacks.ts';
import { localstack, outputsFile, probeLocalstack, readDeployment } from './target.ts';

const prefix = 'test:localstack';

const probe = await probeLocalstack(localstack.endpoint);
if (!probe.reachable) {
  console.log(
    `${prefix}: SKIPPED: LocalStack is not reachable (${probe.reason}).\n` +
      `${prefix}: to run it: docker compose -f ${localstack.composeFile} up -d && npm run deploy:localstack && npm run test:localstack`,
  );
  process.exit(0);
}

const deployment = readDeployment();
if (deployment === undefined) fail(`LocalStack is running but nothing was deployed from here; run npm run deploy:localstack first`);
const config: InfraConfig = deployment.config;
const outputs = JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, Record<string, string>>;
const regions = [config.homeRegion, ...config.replicaRegions];

function fail(message: string): never {
  console.error(`${prefix}: FAILED: ${message}`);
  process.exit(1);
}

function apiIdOf(region: string): string {
  const stack = region === config.homeRegion ? stackNames.home(config) : stackNames.replica(config, region);
  const id = outputs[stack]?.[apiOutputs.id];
  if (id === undefined) fail(`no ${apiOutputs.id} output for stack ${stack} in ${outputsFile}; redeploy with npm run deploy:localstack`);
  return id;
}

/** The typed client (lib/client) on a region's REST API, SigV4-signed as its AWS_IAM methods require. */
function clientOf(region: string): EpochKv {
  // LocalStack's path-style execute-api URL of the stage.
  const endpoint = `${localstack.endpoint}/restapis/${apiIdOf(region)}/${apiStageName}/_user_request_`;
  return new EpochKv({ endpoint, region, credentials: localstack.credentials, timeoutMs: 30_000 });
}

/** Polls `probe` until it returns a value, or fails with what it last saw. */
async function within<T>(what: string, timeoutMs: number, probeOnce: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probeOnce();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) fail(`${what}: not within ${Math.round(timeoutMs / 1000)} s${last === undefined ? '' : ` (last error: ${String(last)})`}`);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  }
}

const checks: { name: string; run: () => Promise<string | void> }[] = [];
const check = (name: string, run: () => Promise<string | void>) => checks.push({ name, run });

interface ClusterStatus {
  region: string;
  shards: { shard: number; leader: string | null; live: boolean }[];
  replicas: { region: string; shard: number; appliedIndex: number; lagEntries: number }[];
}

const keys = { home: `e2e/${randomBytes(4).toString('hex')}/home`, replica: `e2e/${randomBytes(4).toString('hex')}/replica` };
const values = { home: randomBytes(64), replica: Buffer.from(`written through ${config.replicaRegions[0] ?? config.homeRegion}`) };

check('every region answers /cluster from its own region', async () => {
  for (const region of regions) {
    const status = await within(`/cluster in ${region}`, 60_000, async () => (await clientOf(region).status()) as unknown as ClusterStatus);
    if (status.region !== region) fail(`/cluster in ${region} says region ${status.region}`);
  }
  return regions.join(', ');
});

check('the scheduled nodes lead every shard', async () => {
  const home = clientOf(config.homeRegion);
  const status = await within('a live leader for every shard (nodes start on the next minute)', 240_000, async () => {
    const body = (await home.status()) as unknown as ClusterStatus;
    return body.shards.length === config.shardCount && body.shards.every((shard) => shard.live) ? body : undefined;
  });
  return [...new Set(status.shards.map((shard) => shard.leader))].join(', ');
});

check('a write at home reads back byte for byte', async () => {
  const home = clientOf(config.homeRegion);
  const written = await home.put(keys.home, values.home);
  const read = await home.get(keys.home, { consistency: 'strong' });
  if (read === undefined || !Buffer.from(read.value).equals(values.home)) fail(`strong read of ${keys.home} gave ${read === undefined ? 'nothing' : `${read.value.length} other bytes`}`);
  return `version ${written.version}, epoch ${written.epoch}`;
});

check('a write sent to a replica region lands at home', async () => {
  const region = config.replicaRegions[0];
  if (region === undefined) return 'no replica regions';
  await clientOf(region).put(keys.replica, values.replica);
  const read = await clientOf(config.homeRegion).get(keys.replica, { consistency: 'strong' });
  if (read === undefined || !Buffer.from(read.value).equals(values.replica)) fail(`home does not have the write sent through ${region}`);
  return region;
});

check('both writes reach every replica through SQS and apply', async () => {
  for (const region of config.replicaRegions) {
    const replica = clientOf(region);
    for (const name of ['home', 'replica'] as const) {
      await within(`${keys[name]} in ${region}`, 180_000, async () => {
        const read = await replica.get(keys[name], { consistency: 'eventual' });
        return read !== undefined && Buffer.from(read.value).equals(values[name]) && read.servedBy === 'replica' ? true : undefined;
      });
    }
  }
  return config.replicaRegions.join(', ') || 'no replica regions';
});

check('every replica heartbeat reports to home', async () => {
  const home = clientOf(config.homeRegion);
  await within('replica reports for every region and shard', 180_000, async () => {
    const status = (await home.status()) as unknown as ClusterStatus;
    return config.replicaRegions.every((region) => status.replicas.filter((report) => report.region === region).length === config.shardCount) ? status : undefined;
  });
});

check('no dead letters in any replica region', async () => {
  const dlq = replicationQueueNames(config.prefix).dlq;
  for (const region of config.replicaRegions) {
    const sqs = new SQSClient({ region, endpoint: localstack.endpoint, credentials: localstack.credentials });
    try {
      const url = (await sqs.send(new GetQueueUrlCommand({ QueueName: dlq }))).QueueUrl;
      const attributes = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'FifoQueue'] }))).Attributes ?? {};
      if (attributes.FifoQueue !== 'true') fail(`${region}/${dlq} is not FIFO`);
      if (Number(attributes.ApproximateNumberOfMessages) !== 0) fail(`${region}/${dlq} holds ${attributes.ApproximateNumberOfMessages} messages`);
    } finally {
      sqs.destroy();
    }
  }
});

check('every region has the tables of the shared definitions', async () => {
  for (const region of regions) {
    const dynamo = new DynamoDBClient({ region, endpoint: localstack.endpoint, credentials: localstack.credentials });
    try {
      for (const definition of tableDefinitions) {
        const name = tableNames(config.prefix)[definition.suffix];
        const table = (await dynamo.send(new DescribeTableCommand({ TableName: name }))).Table;
        const keySchema = (table?.KeySchema ?? []).map((key) => `${key.AttributeName}:${key.KeyType}`).join(',');
        const expected = `${definition.partitionKey.name}:HASH,${definition.sortKey.name}:RANGE`;
        if (keySchema !== expected) fail(`${region}/${name} keys are ${keySchema}, expected ${expected}`);
      }
    } finally {
      dynamo.destroy();
    }
  }
});

console.log(`${prefix}: LocalStack at ${localstack.endpoint}; cluster ${config.prefix} deployed ${deployment.deployedAt} (home ${config.homeRegion}, replicas ${config.replicaRegions.join(', ') || 'none'})`);
const startedMs = Date.now();
for (const { name, run } of checks) {
  const checkStartedMs = Date.now();
  const detail = await run();
  console.log(`${prefix}: ok   ${name} (${Math.round((Date.now() - checkStartedMs) / 1000)} s${detail ? `; ${detail}` : ''})`);
}
console.log(`${prefix}: all ${checks.length} checks passed in ${Math.round((Date.now() - startedMs) / 1000)} s`);
