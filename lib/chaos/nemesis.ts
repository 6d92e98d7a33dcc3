import type { LocalCloud } from '../local/cloud.ts';
import { between, pick } from '../random.ts';
import type { ClusterStatus } from '../service/cluster-status.ts';
import { limits } from '../core/limits.ts';

export const nemesisKinds = ['kill', 'pause', 'api-pause', 'api-kill', 'skew', 'blackhole', 'replication', 'poller', 'sqs-restart', 'region-loss'] as const;
export type NemesisKind = (typeof nemesisKinds)[number];
/** Faults of the nodes and the API (a blackhole stalls those first); the others are faults of replication. */
export const nodeNemeses: readonly NemesisKind[] = ['kill', 'pause', 'api-pause', 'api-kill', 'skew', 'blackhole'];

export interface FaultRecord {
  kind: NemesisKind;
  startedMs: number;
  endedMs: number;
  detail: string;
}

/** One blackhole of DynamoDB and SQS, as a client and the cluster saw it. */
export interface BlackholeRecord {
  durationMs: number;
  /** A write sent once the blackhole began: its status (0: no answer within the deadline) and how long it took. */
  probeStatus: number;
  probeError: string | undefined;
  probeMs: number;
  /** Healed → every shard led by a live leader again (null: not within the deadline). */
  recoveredMs: number | null;
  /** Shards whose epoch rose across the blackhole: their leader stepped down and another took over. */
  shardsNewEpoch: number;
  shards: number;
}

export interface NemesisLog {
  faults: FaultRecord[];
  /** Kill → a live leader at a higher epoch for the killed leader's shard, in ms. */
  failoverMs: number[];
  blackholes: BlackholeRecord[];
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function cluster(cloud: LocalCloud): Promise<ClusterStatus> {
  return (await (await fetch(`${cloud.apiUrl}/cluster`)).json()) as ClusterStatus;
}

/** A shard with a live leader, chosen at random (among `among` when given). */
async function ledShard(cloud: LocalCloud, random: () => number, among?: readonly number[]): Promise<{ shard: number; leader: string; epoch: number } | undefined> {
  const status = await cluster(cloud);
  const live = status.shards.filter(
    (shard) => shard.live && shard.leader !== null && cloud.nodes().find((node) => node.id === shard.leader)?.state === 'running' && (among === undefined || among.includes(shard.shard)),
  );
  if (live.length === 0) return undefined;
  const chosen = pick(live, random);
  return { shard: chosen.shard, leader: chosen.leader as string, epoch: chosen.epoch };
}

/** Polls /cluster until `shard` has a live leader at an epoch above `epoch`; the elapsed ms, or undefined at the deadline. */
async function timeToNewLeader(cloud: LocalCloud, shard: number, epoch: number, sinceMs: number, timeoutMs: number): Promise<number | undefined> {
  while (Date.now() - sinceMs < timeoutMs) {
    const status = (await cluster(cloud)).shards[shard];
    if (status !== undefined && status.live && status.epoch > epoch) return Date.now() - sinceMs;
    await sleep(20);
  }
  return undefined;
}

/** Polls /cluster until every shard has a live leader; the elapsed ms and that status, or undefined at the deadline. */
async function timeToAllLive(cloud: LocalCloud, sinceMs: number, timeoutMs: number): Promise<{ ms: number; status: ClusterStatus } | undefined> {
  while (Date.now() - sinceMs < timeoutMs) {
    const status = await cluster(cloud).catch(() => undefined);
    if (status?.shards?.every((shard) => shard.live) === true) return { ms: Date.now() - sinceMs, status };
    await sleep(20);
  }
  return undefined;
}

/**
 * The faults of the local cloud, each applied and healed by one call, so a schedule is a
 * sequence of calls drawn from a seeded random source and can be replayed.
 */
export class Nemesis {
  readonly log: NemesisLog = { faults: [], failoverMs: [], blackholes: [] };
  #probes = 0;

  constructor(
    private readonly cloud: LocalCloud,
    private readonly random: () => number,
    private readonly print: (line: string) => void,
    /** Shards the workload writes to: a frozen writer is only interesting where writes happen. */
    private readonly busyShards: readonly number[],
  ) {}

  async inject(kind: NemesisKind): Promise<void> {
    const startedMs = Date.now();
    const detail = await this.#run(kind);
    if (detail === undefined) return;
    this.log.faults.push({ kind, startedMs, endedMs: Date.now(), detail });
    this.print(`nemesis ${kind}: ${detail}`);
  }

  /** Undoes every fault that may still be active: the end of a run. */
  async healAll(): Promise<void> {
    this.cloud.setBeforeCommit(undefined);
    if (this.cloud.faultProxy) this.cloud.blackhole(false);
    for (const node of this.cloud.nodes()) {
      if (node.state === 'paused') this.cloud.resume(node.id);
      if (node.state === 'killed' || node.state === 'exited') this.cloud.start(node.id);
    }
    for (const replica of this.cloud.replicas) {
      replica.eventSource.setFaults({ dropRate: 0, duplicateRate: 0, reorder: false, delayMs: 0 });
      if (!replica.eventSource.running()) replica.eventSource.start();
    }
  }

  /** A PUT as a client sends it: its status (0 when it got no answer within timeoutMs), error code and time. */
  async #probeWrite(key: string, timeoutMs: number): Promise<{ status: number; error: string | undefined; ms: number }> {
    const startMs = Date.now();
    try {
      const response = await fetch(`${this.cloud.apiUrl}/kv/${key}`, { method: 'PUT', body: 'probe', signal: AbortSignal.timeout(timeoutMs) });
      const body = (await response.json().catch(() => ({}))) as { error?: string };
      return { status: response.status, error: body.error, ms: Date.now() - startMs };
    } catch (error) {
      return { status: 0, error: (error as Error).name, ms: Date.now() - startMs };
    }
  }

  async #run(kind: NemesisKind): Promise<string | undefined> {
    const { cloud, random } = this;
    const leaseMs = cloud.config.leaseMs;
    switch (kind) {
      case 'kill': {
        const target = await ledShard(cloud, random);
        if (target === undefined) return undefined;
        const killedMs = Date.now();
        cloud.kill(target.leader);
        const failover = await timeToNewLeader(cloud, target.shard, target.epoch, killedMs, 6 * leaseMs);
        if (failover !== undefined) this.log.failoverMs.push(failover);
        await sleep(between(500, 2_000, random));
        cloud.start(target.leader);
        return `killed ${target.leader} (leader of shard ${target.shard} at epoch ${target.epoch}); new leader after ${failover ?? 'more than ' + 6 * leaseMs} ms; restarted`;
      }
      case 'pause': {
        const target = await ledShard(cloud, random);
        if (target === undefined) return undefined;
        const pauseMs = between(Math.round(1.5 * leaseMs), Math.round(2.5 * leaseMs), random);
        cloud.pause(target.leader);
        await sleep(pauseMs);
        cloud.resume(target.leader);
        return `paused ${target.leader} (leader of shard ${target.shard} at epoch ${target.epoch}) for ${pauseMs} ms, past its lease, then resumed it (a zombie)`;
      }
      case 'api-pause': {
        // Freeze the API's writes to one shard after they read the lease and before they
        // commit, move the shard's leadership meanwhile, then let them go: fencing must refuse
        // every one of them.
        const target = await ledShard(cloud, random, this.busyShards);
        if (target === undefined) return undefined;
        let release!: () => void;
        const released = new Promise<void>((resolve) => (release = resolve));
        let held = 0;
        // Every home API service: in the Lambda model each execution environment has its own.
        cloud.setBeforeCommit(async (shard, epoch) => {
          if (shard !== target.shard || epoch > target.epoch) return;
          held += 1;
          await released;
        });
        const killedMs = Date.now();
        cloud.kill(target.leader);
        const failover = await timeToNewLeader(cloud, target.shard, target.epoch, killedMs, 6 * leaseMs);
        if (failover !== undefined) this.log.failoverMs.push(failover);
        // Give the new leader's writes a moment to land first.
        await sleep(between(200, 600, random));
        cloud.setBeforeCommit(undefined);
        release();
        cloud.start(target.leader);
        return `held ${held} writes of shard ${target.shard} at epoch ${target.epoch} between lease read and commit while ${target.leader} was killed (new leader after ${failover ?? '?'} ms), then released them`;
      }
      case 'api-kill': {
        // Crash home API execution environments in the middle of requests (Lambda's model):
        // a write may be mid-commit or waiting in its shard's intake. Its client gets API
        // Gateway's 502; the write may land or not, but never twice, and never half.
        if (cloud.apiModel.kind !== 'lambda') return undefined;
        const killed: string[] = [];
        const deadlineMs = Date.now() + 2_000;
        const wanted = 1 + Math.floor(random() * 3);
        while (killed.length < wanted && Date.now() < deadlineMs) {
          const victim = cloud.killApiEnvironment();
          if (victim !== undefined) killed.push(victim.environmentId);
          await sleep(between(20, 200, random));
        }
        if (killed.length === 0) return undefined;
        return `killed ${killed.length} busy API environment${killed.length === 1 ? '' : 's'} mid-request (${killed.join(', ')})`;
      }
      case 'blackhole': {
        // DynamoDB and SQS accept connections and never answer, for two to three leases: every
        // SDK call times out (lib/core/limits.ts). Leaders cannot renew and step down, writes
        // answer 503 within the API's bounds, and once it heals the cluster elects and serves
        // again by itself.
        if (!cloud.faultProxy) return undefined;
        // /cluster may answer an error (no `shards`) while the cluster is still settling.
        const before = await cluster(cloud).then((status) => (Array.isArray(status.shards) ? status : undefined)).catch(() => undefined);
        const durationMs = between(2 * leaseMs, 3 * leaseMs, random);
        cloud.blackhole(true);
        const probe = this.#probeWrite(`blackhole-probe-${(this.#probes += 1)}`, limits.apiGatewayTimeoutMs + 5_000);
        await sleep(durationMs);
        cloud.blackhole(false);
        const healedMs = Date.now();
        const answer = await probe;
        const after = await timeToAllLive(cloud, healedMs, 10 * leaseMs);
        const shardsNewEpoch =
          before === undefined || after === undefined ? 0 : after.status.shards.filter((shard) => shard.epoch > (before.shards[shard.shard]?.epoch ?? 0)).length;
        const record: BlackholeRecord = {
          durationMs,
          probeStatus: answer.status,
          probeError: answer.error,
          probeMs: answer.ms,
          recoveredMs: after?.ms ?? null,
          shardsNewEpoch,
          shards: cloud.config.shardCount,
        };
        this.log.blackholes.push(record);
        return `DynamoDB and SQS blackholed for ${durationMs} ms: a write sent meanwhile answered ${answer.status}${answer.error === undefined ? '' : ` ${answer.error}`} after ${answer.ms} ms; every shard led again ${record.recoveredMs ?? 'more than ' + 10 * leaseMs} ms after healing (${shardsNewEpoch} of ${record.shards} at a new epoch)`;
      }
      case 'skew': {
        const node = pick(cloud.nodes().filter((candidate) => candidate.state === 'running'), random);
        const skewMs = (random() < 0.5 ? -1 : 1) * between(Math.round(1.5 * leaseMs), 3 * leaseMs, random);
        cloud.kill(node.id);
        cloud.start(node.id, { clockSkewMs: skewMs });
        await sleep(between(leaseMs, 2 * leaseMs, random));
        cloud.kill(node.id);
        cloud.start(node.id);
        return `restarted ${node.id} with its wall clock ${skewMs > 0 ? 'ahead' : 'behind'} by ${Math.abs(skewMs)} ms for a while`;
      }
      case 'replication': {
        const replica = pick(cloud.replicas, random);
        const faults = { dropRate: 0.3, duplicateRate: 0.3, reorder: true, delayMs: between(0, 300, random) };
        replica.eventSource.setFaults(faults);
        await sleep(between(1_000, 3_000, random));
        replica.eventSource.setFaults({ dropRate: 0, duplicateRate: 0, reorder: false, delayMs: 0 });
        return `${replica.region}: dropped 30%, duplicated 30%, reordered, delayed ${faults.delayMs} ms for a while`;
      }
      case 'poller': {
        const replica = pick(cloud.replicas, random);
        await replica.eventSource.stop();
        const stoppedMs = between(1_000, 3_000, random);
        await sleep(stoppedMs);
        replica.eventSource.start();
        return `${replica.region}: poller stopped for ${stoppedMs} ms`;
      }
      case 'sqs-restart': {
        await cloud.restartSqs();
        return 'restarted the SQS emulator: every message in flight lost';
      }
      case 'region-loss':
        // Scheduled by the run itself (lib/chaos/run.ts): it happens once and rewires the cloud.
        return undefined;
    }
  }
}
