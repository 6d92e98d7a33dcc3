/**
 * The background a cluster pays for whether or not anyone writes: the node fleet (leases,
 * heartbeats, replica checks) and each replica region's heartbeat. In the local cloud the
 * nodes are child processes the request counter cannot see, so this runs the same handler
 * loops (`runNode`, `runReplicaHeartbeat`) in this process on a separate set of tables, and
 * counts their requests over a window: first the nodes alone, then with the replica
 * heartbeats (the difference is the heartbeats').
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { performance } from 'node:perf_hooks';
import { newIncarnation, runNode } from '../../functions/node.ts';
import { runReplicaHeartbeat } from '../../functions/replica-heartbeat.ts';
import { localCredentials, makeDynamoClient, makeSqsClient } from '../adapters/aws/clients.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import { Shipper } from '../adapters/aws/replication.ts';
import { sleep, systemClock } from '../clock.ts';
import type { ClusterConfig } from '../config.ts';
import { tableNames } from '../infra/schema.ts';
import { ensureReplicationQueue } from '../local/queues.ts';
import { ensureTables } from '../local/tables.ts';
import { ReplicaApplier } from '../service/replica-applier.ts';
import type { BackgroundMeasurement } from './cost.ts';
import { diffSnapshots, filterSnapshot, scaleSnapshot, subtractBackground, type Meter, type MeterSnapshot } from './meter.ts';

export interface BackgroundOptions {
  meter: Meter;
  dynamoEndpoint: string;
  sqsEndpoint: string;
  prefix: string;
  homeRegion: string;
  replicaRegions: string[];
  shardCount: number;
  nodeIds: string[];
  leaseMs: number;
  tickMs: number;
  windowMs: number;
  modelTickMs: number;
  progress: (line: string) => void;
}

export async function measureBackground(options: BackgroundOptions): Promise<BackgroundMeasurement & { windowMs: number; nodesPerSecond: MeterSnapshot }> {
  const { meter, prefix } = options;
  const config: ClusterConfig = {
    region: options.homeRegion,
    homeRegion: options.homeRegion,
    replicaRegions: options.replicaRegions,
    replication: 'async',
    tablePrefix: prefix,
    tables: tableNames(prefix),
    shardCount: options.shardCount,
    leaseMs: options.leaseMs,
    tickMs: options.tickMs,
    nodeIds: options.nodeIds,
    dynamoEndpoint: options.dynamoEndpoint,
    sqsEndpoint: options.sqsEndpoint,
    local: true,
  };
  for (const region of [options.homeRegion, ...options.replicaRegions]) {
    const admin = new DynamoDBClient({ region, endpoint: options.dynamoEndpoint, credentials: localCredentials });
    try {
      await ensureTables(admin, config.tables);
    } finally {
      admin.destroy();
    }
  }
  const closers: (() => void)[] = [];
  for (const region of options.replicaRegions) {
    const sqs = makeSqsClient({ region, endpoint: options.sqsEndpoint });
    closers.push(() => sqs.destroy());
    await ensureReplicationQueue(sqs, prefix, { visibilityTimeoutS: 2, maxReceiveCount: 5 });
  }
  const clock = systemClock();
  const quiet = () => undefined;
  const stopNodes = new AbortController();
  const stopHeartbeats = new AbortController();
  const homeClient = makeDynamoClient({ region: options.homeRegion, endpoint: options.dynamoEndpoint });
  closers.push(() => homeClient.destroy());
  const home = new DynamoStore(homeClient, config.tables, config.shardCount);
  const shipper = new Shipper({ prefix, regions: options.replicaRegions, endpoint: options.sqsEndpoint, log: quiet });
  closers.push(() => shipper.destroy());
  const loops: Promise<unknown>[] = options.nodeIds.map((node) =>
    runNode({ config, store: home, node, incarnation: newIncarnation(clock), budgetMs: 3_600_000, clock, log: quiet, signal: stopNodes.signal, shipper }),
  );
  try {
    // Steady state first: every shard led, every marker in.
    const deadline = performance.now() + 6 * options.leaseMs + 10_000;
    for (;;) {
      const leases = await home.readLeases();
      if (leases.length === options.shardCount && leases.every((lease) => lease.holder !== undefined && !lease.markerPending)) break;
      if (performance.now() > deadline) throw new Error('background measurement: the side cluster did not elect a leader for every shard');
      await sleep(50);
    }
    await sleep(2 * options.tickMs);
    const window = async (): Promise<MeterSnapshot> => {
      const before = meter.snapshot();
      const startMs = performance.now();
      await sleep(options.windowMs);
      const seconds = (performance.now() - startMs) / 1000;
      return scaleSnapshot(filterSnapshot(diffSnapshots(meter.snapshot(), before), { prefix }), 1 / seconds);
    };
    options.progress(`  background: ${options.nodeIds.length} nodes, ${options.shardCount} shards led; counting ${options.windowMs / 1000} s`);
    const nodesPerSecond = await window();
    for (const region of options.replicaRegions) {
      const replicaClient = makeDynamoClient({ region, endpoint: options.dynamoEndpoint });
      closers.push(() => replicaClient.destroy());
      const replica = new DynamoReplicaStore(replicaClient, config.tables);
      const applier = new ReplicaApplier(replica, home, clock);
      loops.push(runReplicaHeartbeat({ config: { ...config, region }, replica, home, applier, budgetMs: 3_600_000, clock, log: quiet, signal: stopHeartbeats.signal }));
    }
    // The heartbeats pull the leader markers (a shard idle behind the head) within a second or two.
    await sleep(Math.max(4 * options.tickMs, 1_000) + 1_500);
    options.progress(`  background: + ${options.replicaRegions.length} replica heartbeats; counting ${options.windowMs / 1000} s`);
    const withHeartbeats = await window();
    const heartbeats = subtractBackground(withHeartbeats, nodesPerSecond);
    return {
      nodes: nodesPerSecond,
      nodesPerSecond,
      heartbeatPerRegion: scaleSnapshot(heartbeats, 1 / Math.max(1, options.replicaRegions.length)),
      measuredTickMs: options.tickMs,
      modelTickMs: options.modelTickMs,
      nodeCount: options.nodeIds.length,
      windowMs: options.windowMs,
    };
  } finally {
    stopHeartbeats.abort();
    stopNodes.abort();
    await Promise.allSettled(loops);
    for (const close of closers) close();
  }
}
