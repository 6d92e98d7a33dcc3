/**
 * A node of the local cloud: one OS process per node identity, so it can be killed
 * (SIGKILL) or paused (SIGSTOP) like a crashed or frozen Lambda. It plays the EventBridge
 * schedule: it starts an invocation of the same `node` handler logic every `invocationMs`,
 * each running a lease longer than that, so consecutive invocations overlap and hand the
 * node's leases over exactly as on AWS (only shorter).
 */
import { makeDynamoClient, observeAwsRequests } from '../adapters/aws/clients.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { Shipper } from '../adapters/aws/replication.ts';
import { sleep, systemClock } from '../clock.ts';
import { configFromEnv } from '../config.ts';
import { newIncarnation, runNode } from '../../functions/node.ts';

const node = process.argv[2];
const invocationMs = Number(process.env.EPOCHKV_LOCAL_INVOCATION_MS ?? 20_000);
if (node === undefined) {
  console.error('usage: node-process <node-id>');
  process.exit(2);
}

const config = configFromEnv();
const clock = systemClock();
const store = new DynamoStore(makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint, role: 'node' }), config.tables, config.shardCount);
const shipper = config.replicaRegions.length === 0 ? undefined : new Shipper({ prefix: config.tablePrefix, regions: config.replicaRegions, endpoint: config.sqsEndpoint, from: config.region, role: 'node', log: (line) => process.stdout.write(`${line}\n`) });
const stop = new AbortController();
const running = new Set<Promise<unknown>>();

const shutdown = () => stop.abort();
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// The parent went away (even by SIGKILL): do not linger as an orphan.
process.on('disconnect', shutdown);

const log = (line: string) => process.stdout.write(`${line}\n`);

// The benchmark counts every AWS request of the cluster, the leaders' commits included: the
// parent asks over the IPC channel, the node answers with its counts per operation.
const requestCounts: Record<string, { calls: number; failed: number }> = {};
observeAwsRequests((record) => {
  const counts = (requestCounts[record.operation] ??= { calls: 0, failed: 0 });
  counts.calls += 1;
  if (record.error !== undefined) counts.failed += 1;
});
process.on('message', (message: unknown) => {
  if ((message as { type?: unknown } | null)?.type === 'requestCounts') process.send?.({ type: 'requestCounts', counts: requestCounts });
});

while (!stop.signal.aborted) {
  const incarnation = newIncarnation(clock);
  const invocation = runNode({ config, store, node, incarnation, budgetMs: invocationMs + config.leaseMs, clock, log, signal: stop.signal, ...(shipper === undefined ? {} : { shipper }) })
    .catch((error: unknown) => log(`${node} invocation ${incarnation} failed: ${String(error)}`))
    .finally(() => running.delete(invocation));
  running.add(invocation);
  const nextMs = clock.monotonicMs() + invocationMs;
  while (!stop.signal.aborted && clock.monotonicMs() < nextMs) await sleep(Math.min(100, nextMs - clock.monotonicMs()));
}
await Promise.allSettled([...running]);
shipper?.destroy();
process.exit(0);
