import { DeleteMessageBatchCommand, GetQueueAttributesCommand, GetQueueUrlCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import type { DocumentClient } from '../adapters/aws/document-client.ts';
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { makeDynamoClient, makeSqsClient } from '../adapters/aws/clients.ts';
import { DynamoStore, fromLogEntry } from '../adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import { decodeEntryMessage } from '../adapters/aws/replication.ts';
import { within, type Clock } from '../clock.ts';
import { chunkRuns, isFencedOff, type ReplicaProgress } from '../core/apply.ts';
import { verifyChain, type LogEntry } from '../core/log.ts';
import { firstShardEpoch, promotionReachNeeded, type ReplicationMode } from '../core/replication.ts';
import type { TableNames } from '../infra/schema.ts';
import { replicationQueueNames } from '../infra/names.ts';
import type { ClusterState } from '../ports/store.ts';
import { ReplicaApplier } from './replica-applier.ts';
import { replicaSource, seedReplica } from './snapshot.ts';

export interface PromotionOptions {
  /** The cluster as configured now: its home and replica regions. */
  homeRegion: string;
  replicaRegions: string[];
  /** The replica region that becomes home. */
  target: string;
  tablePrefix: string;
  tables: TableNames;
  shardCount: number;
  /** The cluster's replication mode: it decides which regions an unplanned promotion must reach. */
  mode: ReplicationMode;
  dynamoEndpoint?: string | undefined;
  sqsEndpoint?: string | undefined;
  /** Promote even when too few regions are reachable to see every acknowledged write. */
  force?: boolean;
  /** How long a region may take to answer the reachability probe. */
  probeTimeoutMs?: number;
  clock: Clock;
  /** Progress lines (a promotion of a large log takes a while). */
  log: (line: string) => void;
}

export interface ShardPromotion {
  shard: number;
  /** The new home's head after the promotion. */
  index: number;
  hash: string;
  /** Entries the target applied during the promotion. */
  gathered: number;
  /** Highest index any reachable region knew of; above `index` means entries beyond a gap were unreachable. */
  highestKnown: number;
}

export interface PromotionReport {
  previousHome: string;
  home: string;
  planned: boolean;
  clusterEpoch: number;
  reached: string[];
  unreachable: string[];
  /** The replica regions of the cluster after the promotion (an unreachable region is left out: re-seed it before it rejoins). */
  replicaRegions: string[];
  shards: ShardPromotion[];
  /** Messages taken from replica queues (and DLQs) and staged before the gather. */
  drainedMessages: number;
  warnings: string[];
  steps: { step: string; ms: number }[];
  durationMs: number;
}

/** The promotion cannot go ahead: what to fix is in the message. Nothing was changed. */
export class PromotionRefusedError extends Error {
  override name = 'PromotionRefusedError';
}

interface RegionHandle {
  region: string;
  dynamo: DocumentClient;
  store: DynamoStore;
  replica: DynamoReplicaStore;
  sqs: SQSClient;
  tables: TableNames;
}

/** The longest a drain waits for in-flight messages to come back (the queue's visibility timeout on AWS is longer: re-run). */
const drainMsMax = 45_000;

/** Entries fetched per read while gathering. */
const gatherReadMax = 500;

/**
 * Makes a replica region the home region (runbook "Disaster recovery" in the README):
 *
 * 1. Reach every region. Home reachable → a planned switchover: fence the old home's leases
 *    (no writer there can append any more), then pull its log to the target up to its head
 *    and verify the hash. Home unreachable → unplanned: refuse unless enough replica regions
 *    answer to hold every write acknowledged under the cluster's mode.
 * 2. Unplanned: drain each reachable replica queue (and DLQ) into that region's log table,
 *    then extend the target's log from every reachable region's log copy, verifying the hash
 *    chain entry by entry, up to the highest index anyone has.
 * 3. Bump the cluster epoch: seed the target's leases at the new cluster epoch's base (every
 *    new leader's epoch is above any the old home can reach), fence every other reachable
 *    replica at it (they refuse the old home's entries), and record the new home everywhere.
 *
 * Idempotent in effect: re-running after a crash continues from what is stored. Moving the
 * functions (nodes, API writes, queues' apply) to the new home is the deployment's part.
 */
export async function promoteRegion(options: PromotionOptions): Promise<PromotionReport> {
  const { clock, log, target } = options;
  const startedMs = clock.monotonicMs();
  const steps: { step: string; ms: number }[] = [];
  const step = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    const beganMs = clock.monotonicMs();
    log(`promote: ${name}...`);
    const result = await work();
    steps.push({ step: name, ms: Math.round(clock.monotonicMs() - beganMs) });
    return result;
  };
  if (!options.replicaRegions.includes(target)) {
    throw new PromotionRefusedError(`${target} is not a replica region of this cluster; replica regions: ${options.replicaRegions.join(', ') || '(none)'}`);
  }
  const regions = [options.homeRegion, ...options.replicaRegions];
  // Every call is made from the target region: that is where the operator's promotion runs.
  const handles = new Map<string, RegionHandle>(
    regions.map((region) => {
      const dynamo = makeDynamoClient({ region, endpoint: options.dynamoEndpoint, from: target });
      return [
        region,
        {
          region,
          dynamo,
          store: new DynamoStore(dynamo, options.tables, options.shardCount),
          replica: new DynamoReplicaStore(dynamo, options.tables),
          // Its drain long-polls the queues.
          sqs: makeSqsClient({ region, endpoint: options.sqsEndpoint, from: target, role: 'long-poll' }),
          tables: options.tables,
        },
      ];
    }),
  );
  const handle = (region: string) => handles.get(region) as RegionHandle;
  try {
    const probeMs = options.probeTimeoutMs ?? 5_000;
    const states = await step('reach every region', () =>
      Promise.all(regions.map(async (region) => ({ region, state: await within(handle(region).store.readClusterState(), probeMs).then((state) => (state === 'timeout' ? { ok: false as const, error: new Error(`no answer within ${probeMs} ms`) } : { ok: true as const, state }), (error: unknown) => ({ ok: false as const, error })) }))),
    );
    const reached = states.filter((probe) => probe.state.ok).map((probe) => probe.region);
    const unreachable = regions.filter((region) => !reached.includes(region));
    if (!reached.includes(target)) throw new PromotionRefusedError(`${target} cannot be reached; promote a region whose tables answer`);
    for (const probe of states) if (!probe.state.ok) log(`promote: ${probe.region} unreachable (${String(probe.state.error)})`);
    const known = states.flatMap((probe) => (probe.state.ok && probe.state.state !== undefined ? [probe.state.state] : []));
    const latest = known.reduce<ClusterState | undefined>((best, state) => (best === undefined || state.clusterEpoch > best.clusterEpoch ? state : best), undefined);
    const currentHome = latest?.homeRegion ?? options.homeRegion;
    if (currentHome === target) throw new PromotionRefusedError(`${target} is already the home region (cluster epoch ${latest?.clusterEpoch ?? 0})`);
    if (currentHome !== options.homeRegion) {
      throw new PromotionRefusedError(`the tables say the home region is ${currentHome}, but this cluster is configured with home ${options.homeRegion}; deploy with the current home first`);
    }
    const clusterEpoch = (latest?.clusterEpoch ?? 0) + 1;
    const planned = reached.includes(currentHome);
    const warnings: string[] = [];
    const reachedReplicas = options.replicaRegions.filter((region) => reached.includes(region));
    if (!planned) {
      const needed = promotionReachNeeded(options.mode, options.replicaRegions.length);
      if (reachedReplicas.length < needed) {
        const message = `the home region ${currentHome} is unreachable and only ${reachedReplicas.length} of ${options.replicaRegions.length} replica regions answer (${reachedReplicas.join(', ')}); ${options.mode} mode needs ${needed} to be sure to hold every acknowledged write`;
        if (options.force !== true) throw new PromotionRefusedError(`${message}. Bring more regions back, or pass --force to accept losing writes`);
        warnings.push(`forced: ${message}`);
      }
      if (options.mode === 'async') warnings.push(`async mode: writes acknowledged by ${currentHome} but not yet shipped are lost (RPO: the replication lag at the time of the loss)`);
    }
    const base = firstShardEpoch(clusterEpoch);
    const targetHandle = handle(target);
    let drainedMessages = 0;
    const shards: ShardPromotion[] = [];
    if (planned) {
      const oldHome = handle(currentHome);
      await step(`fence ${currentHome}'s leases at epoch ${base}`, () => oldHome.store.fenceLeases(base, target));
      const applier = new ReplicaApplier(targetHandle.replica, oldHome.store, clock);
      await step(`pull ${currentHome}'s log to ${target} and verify`, async () => {
        for (let shard = 0; shard < options.shardCount; shard += 1) {
          const head = await oldHome.store.readHead(shard);
          const before = await targetHandle.replica.readProgress(shard);
          if (head !== undefined && before.appliedIndex < head.index) await applier.repair(shard, head.index);
          const after = await targetHandle.replica.readProgress(shard);
          if ((head?.index ?? 0) !== after.appliedIndex || (head !== undefined && head.hash !== after.appliedHash)) {
            throw new Error(`shard ${shard}: ${target} reached index ${after.appliedIndex} (${after.appliedHash.slice(0, 12)}), but ${currentHome}'s head is ${head?.index ?? 0} (${head?.hash.slice(0, 12) ?? '-'}); nothing is fenced on the replicas yet: re-run the promotion`);
          }
          shards.push({ shard, index: after.appliedIndex, hash: after.appliedHash, gathered: after.appliedIndex - before.appliedIndex, highestKnown: head?.index ?? 0 });
        }
      });
    } else {
      drainedMessages = await step('drain the reachable replica queues', async () => {
        const counts = await Promise.all(reachedReplicas.map((region) => drainQueues(handle(region), options.tablePrefix, log)));
        return counts.reduce((sum, count) => sum + count, 0);
      });
      await step(`gather every shard's log at ${target} from ${reachedReplicas.join(', ')}`, async () => {
        for (let shard = 0; shard < options.shardCount; shard += 1) {
          shards.push(await gatherShard(shard, targetHandle, reachedReplicas.map(handle), clock));
        }
      });
      for (const shard of shards) {
        if (shard.highestKnown > shard.index) warnings.push(`shard ${shard.shard}: entries ${shard.index + 1}..${shard.highestKnown} are known but a gap before them could not be filled; they are dropped (never acknowledged in quorum/all mode)`);
      }
    }
    await step(`seed ${target}'s leases at epoch ${base} (cluster epoch ${clusterEpoch})`, () => targetHandle.store.seedLeases(base));
    const followers = options.replicaRegions.filter((region) => region !== target && reached.includes(region));
    await step(`fence ${followers.join(', ') || 'no other replica'} at cluster epoch ${clusterEpoch}`, async () => {
      for (const region of followers) {
        for (const shard of shards) await handle(region).replica.fence(shard.shard, { clusterEpoch, index: shard.index });
      }
    });
    if (planned) {
      await step(`make ${currentHome} a replica of ${target}`, async () => {
        for (const shard of shards) await handle(currentHome).replica.seed(shard.shard, { index: shard.index, hash: shard.hash }, clusterEpoch, clock.wallMs());
      });
    }
    const replicaRegions = [...(planned ? [currentHome] : []), ...followers];
    const state: ClusterState = { homeRegion: target, clusterEpoch, replicaRegions, previousHome: currentHome, promotedAtMs: clock.wallMs() };
    await step('record the new home in every reachable region', async () => {
      // The target last: a crash before it leaves the promotion to be re-run, not half-visible.
      for (const region of [...reached.filter((region) => region !== target), target]) await handle(region).store.writeClusterState(state);
    });
    const report: PromotionReport = {
      previousHome: currentHome,
      home: target,
      planned,
      clusterEpoch,
      reached,
      unreachable,
      replicaRegions,
      shards,
      drainedMessages,
      warnings,
      steps,
      durationMs: Math.round(clock.monotonicMs() - startedMs),
    };
    for (const warning of warnings) log(`promote: WARNING ${warning}`);
    log(`promote: ${target} is home at cluster epoch ${clusterEpoch} (${planned ? 'planned switchover' : `unplanned: ${currentHome} lost`}) in ${report.durationMs} ms; replicas now ${replicaRegions.join(', ') || '(none)'}`);
    return report;
  } finally {
    for (const entry of handles.values()) {
      entry.dynamo.destroy();
      entry.sqs.destroy();
    }
  }
}

/**
 * Takes every message of a region's replication queue and DLQ and stages its entry in the
 * region's log table (a conditional put: an applied or staged copy is kept), then deletes it.
 * A FIFO queue hands out a group's next message only after the previous one is gone, so the
 * entries are made durable in the table before they leave the queue.
 */
async function drainQueues(region: RegionHandle, prefix: string, log: (line: string) => void): Promise<number> {
  const names = replicationQueueNames(prefix);
  const counts = await Promise.all([names.queue, names.dlq].map(async (name) => {
    const url = (await region.sqs.send(new GetQueueUrlCommand({ QueueName: name })).catch(() => undefined))?.QueueUrl;
    if (url === undefined) return 0;
    let staged = 0;
    const deadlineMs = Date.now() + drainMsMax;
    for (;;) {
      const received = await region.sqs.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 30 }));
      const messages = received.Messages ?? [];
      if (messages.length === 0) {
        // Empty for us is not empty: messages a stopped apply function received and did not
        // delete stay invisible until their visibility timeout ends. Wait for those too.
        const attributes = await region.sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }));
        const waiting = Number(attributes.Attributes?.ApproximateNumberOfMessages ?? 0) + Number(attributes.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0);
        if (waiting === 0) break;
        if (Date.now() > deadlineMs) {
          log(`promote: WARNING ${region.region}: ${waiting} messages of ${name} still invisible after ${drainMsMax} ms; re-run the promotion to take them`);
          break;
        }
        continue;
      }
      for (const message of messages) {
        let entry: LogEntry;
        try {
          entry = decodeEntryMessage(message.Body ?? '');
        } catch {
          continue;
        }
        await stageEntry(region, entry);
        staged += 1;
      }
      await region.sqs.send(new DeleteMessageBatchCommand({ QueueUrl: url, Entries: messages.map((message, index) => ({ Id: String(index), ReceiptHandle: message.ReceiptHandle as string })) }));
    }
    if (staged > 0) log(`promote: ${region.region}: staged ${staged} entries from ${name}`);
    return staged;
  }));
  return counts.reduce((sum, count) => sum + count, 0);
}

async function stageEntry(region: RegionHandle, entry: LogEntry): Promise<void> {
  await region.dynamo
    .send(new PutCommand({ TableName: region.tables.log, Item: fromLogEntry(entry), ConditionExpression: 'attribute_not_exists(#index)', ExpressionAttributeNames: { '#index': 'index' } }))
    .catch((error: unknown) => {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
    });
}

/**
 * Extends the target's copy of one shard's log as far as any reachable region's log table
 * (applied copies and staged entries) continues its hash chain.
 */
async function gatherShard(shard: number, target: RegionHandle, sources: RegionHandle[], clock: Clock): Promise<ShardPromotion> {
  const start = await target.replica.readProgress(shard);
  let progress: ReplicaProgress = start;
  let highestKnown = start.appliedIndex;
  let seeded = false;
  for (;;) {
    // The longest verified continuation any source offers from the current progress.
    let best: LogEntry[] = [];
    let compactedPast = false;
    for (const source of sources) {
      const entries = await source.store.readLog(shard, progress.appliedIndex + 1, gatherReadMax);
      if (entries.length > 0) highestKnown = Math.max(highestKnown, (entries.at(-1) as LogEntry).index);
      // A copy compacted past the target's progress cannot continue it entry by entry.
      if (entries[0] !== undefined && entries[0].index > progress.appliedIndex + 1) compactedPast = true;
      const continuation = longestVerifiedPrefix(entries, progress);
      if (continuation.length > best.length) best = continuation;
    }
    if (best.length === 0 && compactedPast && !seeded) {
      // The target is behind what the other copies kept: seed it from the one furthest ahead
      // (its items at its applied index), then go on gathering from the log copies.
      seeded = true;
      const ahead = await furthestAhead(shard, sources.filter((source) => source !== target));
      if (ahead !== undefined && ahead.appliedIndex > progress.appliedIndex) {
        progress = (await seedReplica(target.replica, replicaSource(ahead.source.region, ahead.source.store, ahead.source.replica), shard, progress, clock)).progress;
        continue;
      }
    }
    if (best.length === 0) break;
    for (const run of chunkRuns(best)) progress = await target.replica.applyRun(shard, progress, run, clock.wallMs());
  }
  return { shard, index: progress.appliedIndex, hash: progress.appliedHash, gathered: progress.appliedIndex - start.appliedIndex, highestKnown: Math.max(highestKnown, progress.appliedIndex) };
}

/** The source region whose copy of the shard has applied the most. */
async function furthestAhead(shard: number, sources: RegionHandle[]): Promise<{ source: RegionHandle; appliedIndex: number } | undefined> {
  let best: { source: RegionHandle; appliedIndex: number } | undefined;
  for (const source of sources) {
    const { appliedIndex } = await source.replica.readProgress(shard);
    if (best === undefined || appliedIndex > best.appliedIndex) best = { source, appliedIndex };
  }
  return best;
}

function longestVerifiedPrefix(entries: LogEntry[], from: ReplicaProgress): LogEntry[] {
  const prefix: LogEntry[] = [];
  let previous = { index: from.appliedIndex, hash: from.appliedHash };
  for (const entry of entries) {
    if (isFencedOff(from.fence, entry) || !verifyChain([entry], previous).ok) break;
    prefix.push(entry);
    previous = { index: entry.index, hash: entry.hash };
  }
  return prefix;
}
