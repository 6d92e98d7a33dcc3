/**
 * `npm start`: the embedded local cloud. No Docker, no AWS account.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { awsLatencyEnabled } from '../lib/local/aws-latency.ts';
import { startLocalCloud } from '../lib/local/cloud.ts';
import { removeDiscoveryFile, writeDiscoveryFile } from '../lib/local/discovery.ts';
import { isReplicationMode, replicationModes } from '../lib/core/replication.ts';
import { numberOption } from '../lib/cli-options.ts';
import { env } from '../lib/config.ts';

// The SDK warns that releases after January 2027 need Node 22; this project supports Node 20 today.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const usage = `usage: npm start -- [--in-memory] [--data <dir>] [--replication async|quorum|all]
                    [--single-process] [--aws-latency]
                    [--log-retain-entries N] [--log-retain-age-ms MS]

Starts the epochkv local cloud: DynamoDB Local and the SQS emulator on loopback, the
home region's tables, three node processes (node-a, node-b, node-c) and the API.

  --in-memory   keep nothing: DynamoDB Local runs in memory
  --data <dir>  where DynamoDB Local keeps its files (default .epochkv/dynamodb)
  --replication async|quorum|all
                what a write waits for before it is acknowledged (default async, or
                EPOCHKV_REPLICATION): the home commit; a majority of regions; every
                in-sync replica region
  --single-process
                one API service per region shared by every request, instead of
                Lambda's model (default): one request per execution environment,
                environments made on demand up to 1000 per function and region
  --aws-latency delay every AWS SDK call by what it takes on AWS (DynamoDB and SQS
                in the region, and the round trip between regions; figures and
                sources in lib/local/aws-latency.ts and docs/aws-model.md)
  --log-retain-entries N
                keep each shard's log to its last N entries (default 100000, or
                EPOCHKV_LOG_RETAIN_ENTRIES); older entries are trimmed by the shard
                leader once every replica region has applied them, and a watch from
                before them answers 410 Compacted
  --log-retain-age-ms MS
                and to entries younger than MS (default 7 days, or
                EPOCHKV_LOG_RETAIN_AGE_MS); the head entry always stays
  -h, --help    this text

Environment: EPOCHKV_BASE_PORT (default 8080) sets the home API port; the replica
regions' APIs listen on base+1 and base+2, DynamoDB Local on base+20 and the SQS
emulator on base+21. EPOCHKV_TOKEN (16+ characters) requires Authorization: Bearer
<token> on every request; EPOCHKV_RATE_LIMIT_RPS (default 2000) answers 429 beyond it;
EPOCHKV_LOCAL_AWS_LATENCY=1 turns the AWS latency model on as --aws-latency does.`;

let args;
try {
  args = parseArgs({
    options: {
      'in-memory': { type: 'boolean', default: false },
      data: { type: 'string' },
      replication: { type: 'string' },
      'single-process': { type: 'boolean', default: false },
      'aws-latency': { type: 'boolean', default: false },
      'log-retain-entries': { type: 'string' },
      'log-retain-age-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values;
} catch (error) {
  console.error(`${(error as Error).message}\n\n${usage}`);
  process.exit(2);
}
if (args.help) {
  console.log(usage);
  process.exit(0);
}

const basePortRaw = process.env.EPOCHKV_BASE_PORT ?? '8080';
const basePort = Number(basePortRaw);
if (!Number.isInteger(basePort) || basePort < 1 || basePort > 65_000) {
  console.error(`EPOCHKV_BASE_PORT must be a port number (1-65000), got "${basePortRaw}"`);
  process.exit(2);
}
// A shared dev machine need not be open: with EPOCHKV_TOKEN set, every request needs it.
const bearerToken = process.env.EPOCHKV_TOKEN || undefined;
if (bearerToken !== undefined && bearerToken.length < 16) {
  console.error('EPOCHKV_TOKEN must be at least 16 characters (try: export EPOCHKV_TOKEN=$(openssl rand -hex 16))');
  process.exit(2);
}
const rateRaw = process.env.EPOCHKV_RATE_LIMIT_RPS;
const rateLimitPerSecond = rateRaw === undefined ? undefined : Number(rateRaw);
if (rateLimitPerSecond !== undefined && (!Number.isInteger(rateLimitPerSecond) || rateLimitPerSecond < 1)) {
  console.error(`EPOCHKV_RATE_LIMIT_RPS must be a positive integer, got "${rateRaw}"`);
  process.exit(2);
}
const replication = args.replication ?? (process.env.EPOCHKV_REPLICATION || 'async');
if (!isReplicationMode(replication)) {
  console.error(`--replication must be one of ${replicationModes.join(', ')}, got "${replication}"\n\n${usage}`);
  process.exit(2);
}
/** A positive integer flag, or its environment variable, or undefined (the cluster's default). */
function retention(flag: string | undefined, name: string, variable: string): number | undefined {
  const raw = flag ?? (process.env[variable] || undefined);
  if (raw === undefined) return undefined;
  try {
    return numberOption(raw, name, { min: 1, max: Number.MAX_SAFE_INTEGER, integer: true });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${usage}`);
    process.exit(2);
  }
}
const logRetainEntries = retention(args['log-retain-entries'], 'log-retain-entries', env.logRetainEntries);
const logRetainAgeMs = retention(args['log-retain-age-ms'], 'log-retain-age-ms', env.logRetainAgeMs);
const dataDirectory = args['in-memory'] ? undefined : path.resolve(args.data ?? path.join('.epochkv', 'dynamodb'));

console.log(`epochkv local cloud: starting DynamoDB Local (${dataDirectory === undefined ? 'in memory' : `data in ${dataDirectory}`}) and the SQS emulator...`);
const startedMs = Date.now();
let cloud;
try {
  cloud = await startLocalCloud({
    basePort,
    dataDirectory,
    bearerToken,
    replication,
    singleProcess: args['single-process'],
    // Without the flag the cloud keeps this process's setting, which EPOCHKV_LOCAL_AWS_LATENCY=1 turns on.
    ...(args['aws-latency'] ? { awsLatency: true } : {}),
    ...(rateLimitPerSecond === undefined ? {} : { rateLimitPerSecond }),
    ...(logRetainEntries === undefined ? {} : { logRetainEntries }),
    ...(logRetainAgeMs === undefined ? {} : { logRetainAgeMs }),
  });
} catch (error) {
  console.error(`epochkv local cloud failed to start: ${(error as Error).message}`);
  process.exit(1);
}
const { config } = cloud;
console.log(`dynamodb ${cloud.dynamoEndpoint}`);
console.log(`sqs ${cloud.sqsEndpoint}`);
console.log(`nodes ${config.nodeIds.join(' ')} (${config.shardCount} shards, leaseMs ${config.leaseMs}, tickMs ${config.tickMs})`);
console.log(`home ${config.homeRegion}; replicas ${config.replicaRegions.join(' ') || '(none)'}; replication ${config.replication}`);
for (const region of cloud.regions) console.log(`api ${region.region} ${region.apiUrl}`);
// The epochkv CLI reads this file to find this cloud whatever its base port; gone at exit.
const discoveryFile = writeDiscoveryFile(process.cwd(), {
  pid: process.pid,
  apiUrl: cloud.apiUrl,
  regions: cloud.regions.map(({ region, role, apiUrl }) => ({ region, role, apiUrl })),
  dynamoEndpoint: cloud.dynamoEndpoint,
  sqsEndpoint: cloud.sqsEndpoint,
  startedAt: new Date().toISOString(),
});
process.on('exit', () => removeDiscoveryFile(discoveryFile));
const { apiModel } = cloud;
console.log(
  apiModel.kind === 'lambda'
    ? `api model: lambda (one request per environment, up to ${apiModel.concurrencyMax} concurrent per function and region; GET /_local/lambda)`
    : 'api model: single process (one service per region shares every request)',
);
console.log(`aws latency model: ${awsLatencyEnabled() ? 'on (lib/local/aws-latency.ts)' : 'off (emulators answer at loopback speed; --aws-latency to model AWS)'}`);
console.log(`dashboard ${cloud.apiUrl}/${bearerToken === undefined ? '' : '#token=<EPOCHKV_TOKEN>'}`);
if (bearerToken !== undefined) console.log('auth: every request needs Authorization: Bearer $EPOCHKV_TOKEN');
// Ctrl-C works while waiting for readiness too.
let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping nodes, API and emulators...`);
  const timer = setTimeout(() => {
    console.error('shutdown took longer than 15 s; exiting');
    process.exit(1);
  }, 15_000);
  await cloud.stop();
  clearTimeout(timer);
  console.log('stopped.');
  process.exit(0);
};
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));

// Ready means GET /health answers 200 in every region (asked over HTTP, as a client would):
// every shard has a live leader and the replicas' lag is known, so the first write after
// "ready" is not refused with 503 NoLeader. On a busy machine that can take a while: say why.
while (!stopping) {
  try {
    await cloud.waitForReady(15_000);
    break;
  } catch (error) {
    console.log(`not ready yet after ${Math.round((Date.now() - startedMs) / 1_000)} s (${(error as Error).message.replace(/^timed out after \d+ ms waiting for /, 'waiting for ')}); still waiting`);
  }
}
if (!stopping) console.log(`ready in ${Date.now() - startedMs} ms. Try: curl -X PUT --data-binary hello ${cloud.apiUrl}/kv/greeting. Ctrl-C stops everything.`);
