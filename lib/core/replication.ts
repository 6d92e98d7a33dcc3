import { assert } from './assert.ts';

/**
 * Replication modes and the decisions around them: how many replica regions must hold an
 * entry before a write is acknowledged, which replicas are in sync, and the cluster epoch that
 * fences a home region after a promotion. Pure: inputs in, decisions out.
 */
export type ReplicationMode = 'async' | 'quorum' | 'all';
export const replicationModes: readonly ReplicationMode[] = ['async', 'quorum', 'all'];

/** async < quorum < all: a write may ask for more than the cluster's mode, never for less. */
export function modeStrength(mode: ReplicationMode): number {
  return replicationModes.indexOf(mode);
}

export function isReplicationMode(raw: string): raw is ReplicationMode {
  return (replicationModes as readonly string[]).includes(raw);
}

/**
 * Replica regions that must have accepted an entry in `quorum` mode: home plus that many form a
 * majority of all regions (1 of 2 replicas with 3 regions, 2 of 4 with 5).
 */
export function quorumReplicas(replicaCount: number): number {
  const regions = replicaCount + 1;
  return Math.floor(regions / 2) + 1 - 1;
}

export type AckRequirement =
  | { type: 'none' }
  /** At least `count` of any replica regions. */
  | { type: 'count'; count: number }
  /** Every one of these regions (the in-sync set). */
  | { type: 'every'; regions: string[] };

export function ackRequirement(mode: ReplicationMode, replicaRegions: readonly string[], inSync: readonly string[]): AckRequirement {
  switch (mode) {
    case 'async':
      return { type: 'none' };
    case 'quorum': {
      const count = quorumReplicas(replicaRegions.length);
      return count === 0 ? { type: 'none' } : { type: 'count', count };
    }
    case 'all':
      return { type: 'every', regions: inSync.filter((region) => replicaRegions.includes(region)) };
  }
}

/** Whether the regions whose queue accepted the entry meet the requirement, and what is missing. */
export function ackMet(requirement: AckRequirement, accepted: readonly string[]): { met: boolean; missing: string } {
  switch (requirement.type) {
    case 'none':
      return { met: true, missing: '' };
    case 'count':
      return accepted.length >= requirement.count
        ? { met: true, missing: '' }
        : { met: false, missing: `the entry in at least ${requirement.count} replica region(s)` };
    case 'every': {
      const absent = requirement.regions.filter((region) => !accepted.includes(region));
      return absent.length === 0 ? { met: true, missing: '' } : { met: false, missing: `the entry in in-sync replica region(s) ${absent.join(', ')}` };
    }
  }
}

/** What the shard leader knows of one replica region's progress on a shard. */
export interface ReplicaStanding {
  region: string;
  appliedIndex: number;
  /** How old its last report is, in ms (leader's clock minus the report's stamp: liveness only). */
  reportAgeMs: number;
}

export interface InSyncBounds {
  /** A replica further behind the head than this leaves the in-sync set. */
  lagEntriesMax: number;
  /** A replica whose report is older than this leaves it (it failed or is cut off). */
  reportAgeMsMax: number;
  /** A replica re-enters once it is at most this far behind (hysteresis: lagEntriesMax > this). */
  rejoinLagEntriesMax: number;
}

/**
 * The next in-sync set of one shard. A member stays while it reports and keeps up; a
 * non-member joins once it reports and has caught up. The result is in `replicaRegions` order.
 */
export function nextInSync(current: readonly string[], replicaRegions: readonly string[], headIndex: number, standings: readonly ReplicaStanding[], bounds: InSyncBounds): string[] {
  assert(bounds.rejoinLagEntriesMax <= bounds.lagEntriesMax, 'a replica must rejoin the in-sync set closer to the head than it leaves it');
  const keeps = (region: string): boolean => {
    const standing = standings.find((candidate) => candidate.region === region);
    if (standing === undefined || standing.reportAgeMs > bounds.reportAgeMsMax) return false;
    const lag = Math.max(0, headIndex - standing.appliedIndex);
    return current.includes(region) ? lag <= bounds.lagEntriesMax : lag <= bounds.rejoinLagEntriesMax;
  };
  const next = replicaRegions.filter(keeps);
  // Never fewer members than quorum needs: `all` stays at least as strong as `quorum`, and a
  // promotion can count on it. Failing members are kept (writes in `all` then get 503) in
  // the order of their progress.
  const floor = quorumReplicas(replicaRegions.length);
  if (next.length < floor) {
    const progressOf = (region: string) => standings.find((candidate) => candidate.region === region)?.appliedIndex ?? -1;
    const kept = current.filter((region) => replicaRegions.includes(region) && !next.includes(region)).sort((a, b) => progressOf(b) - progressOf(a));
    next.push(...kept.slice(0, floor - next.length));
  }
  return replicaRegions.filter((region) => next.includes(region));
}

/**
 * The cluster epoch is the high part of every shard epoch: a promotion moves every shard to
 * the next cluster epoch's range, so no number of failovers in a cut-off old home can reach
 * an epoch the new home uses.
 */
export const clusterEpochStride = 1_000_000_000;

export function clusterEpochOf(shardEpoch: number): number {
  return Math.floor(shardEpoch / clusterEpochStride);
}

/** The lease epoch a promotion seeds: the new leader's first epoch is one above it. */
export function firstShardEpoch(clusterEpoch: number): number {
  assert(Number.isSafeInteger(clusterEpoch * clusterEpochStride) && clusterEpoch >= 0, `cluster epoch ${clusterEpoch} is out of range`);
  return clusterEpoch * clusterEpochStride;
}

/**
 * Replica regions a promotion after the loss of the home region must reach so that it sees
 * every write acknowledged under `mode`: an acknowledged entry is in at least `quorumReplicas`
 * of them, so any `replicaCount - quorumReplicas + 1` include one that has it. `all` is at
 * least as strong as quorum (its in-sync set never shrinks below quorum's count).
 */
export function promotionReachNeeded(mode: ReplicationMode, replicaCount: number): number {
  if (mode === 'async') return 1;
  return replicaCount - quorumReplicas(replicaCount) + 1;
}
