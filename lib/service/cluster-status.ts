import type { Clock } from '../clock.ts';
import type { ClusterConfig } from '../config.ts';
import type { NodeStatus } from '../core/failure-detector.ts';
import { limits } from '../core/limits.ts';
import { clusterEpochOf, type ReplicationMode } from '../core/replication.ts';
import type { Store } from '../ports/store.ts';

export interface ClusterStatus {
  region: string;
  homeRegion: string;
  replicaRegions: string[];
  /** The cluster's replication mode (a write may ask for a stronger one). */
  replication: ReplicationMode;
  /** Bumped by every promotion: the high part of the shard epochs. */
  clusterEpoch: number;
  leaseMs: number;
  tickMs: number;
  nodes: { id: string; status: NodeStatus; lastHeartbeatAgeMs: number | null; incarnation: string | null; seq: number | null }[];
  shards: {
    shard: number;
    leader: string | null;
    epoch: number;
    headIndex: number;
    leaseAgeMs: number | null;
    live: boolean;
    /** Replica regions an `all` write must reach, as the shard's leader last wrote them (null: none written yet, so every replica). */
    inSync: string[] | null;
  }[];
  replicas: {
    region: string;
    shard: number;
    appliedIndex: number;
    lagEntries: number;
    /** Age of the oldest entry the replica has not applied (0 when caught up). */
    lagMs: number;
    /** Commit → apply time of the last entry it applied. */
    lastApplyLagMs: number;
    reportAgeMs: number;
  }[];
}

/**
 * A snapshot for people and dashboards. The API is stateless, so node health here compares
 * heartbeat stamps with this process's clock (display only; the nodes' own failure detectors
 * use local elapsed time and never compare clocks).
 */
export async function clusterStatus(store: Store, config: ClusterConfig, clock: Clock): Promise<ClusterStatus> {
  const [heartbeats, leases, heads, reports, inSync] = await Promise.all([
    store.readHeartbeats(),
    store.readLeases(),
    Promise.all(Array.from({ length: config.shardCount }, (_, shard) => store.readHead(shard))),
    store.readReplicaReports(),
    store.readInSyncSets(),
  ]);
  const now = clock.wallMs();
  const ids = [...new Set([...config.nodeIds, ...heartbeats.map((heartbeat) => heartbeat.node)])].sort();
  const nodes = ids.map((id) => {
    const heartbeat = heartbeats.find((candidate) => candidate.node === id);
    const ageMs = heartbeat === undefined ? null : Math.max(0, now - heartbeat.atMs);
    const status: NodeStatus =
      ageMs === null || ageMs >= limits.deadAfterTicks * config.tickMs ? 'dead' : ageMs >= limits.suspectAfterTicks * config.tickMs ? 'suspected' : 'alive';
    return { id, status, lastHeartbeatAgeMs: ageMs, incarnation: heartbeat?.incarnation ?? null, seq: heartbeat?.seq ?? null };
  });
  const shards = Array.from({ length: config.shardCount }, (_, shard) => {
    const lease = leases.find((candidate) => candidate.shard === shard);
    const leaseAgeMs = lease === undefined ? null : Math.max(0, now - lease.renewedAtMs);
    return {
      shard,
      leader: lease?.holder ?? null,
      epoch: lease?.epoch ?? 0,
      headIndex: heads[shard]?.index ?? 0,
      leaseAgeMs,
      live: lease?.holder !== undefined && leaseAgeMs !== null && leaseAgeMs <= config.leaseMs + limits.leaseSkewToleranceMs,
      inSync: inSync.find((set) => set.shard === shard)?.regions ?? null,
    };
  });
  const replicas = await Promise.all(
    reports
      .filter((report) => config.replicaRegions.includes(report.region) && report.shard < config.shardCount)
      .sort((a, b) => a.region.localeCompare(b.region) || a.shard - b.shard)
      .map(async (report) => {
        const headIndex = heads[report.shard]?.index ?? 0;
        const lagEntries = Math.max(0, headIndex - report.appliedIndex);
        const oldestUnapplied = lagEntries === 0 ? undefined : await store.readLogEntry(report.shard, report.appliedIndex + 1);
        return {
          region: report.region,
          shard: report.shard,
          appliedIndex: report.appliedIndex,
          lagEntries,
          lagMs: oldestUnapplied === undefined ? 0 : Math.max(0, now - oldestUnapplied.committedAtMs),
          lastApplyLagMs: report.lastLagMs,
          reportAgeMs: Math.max(0, now - report.reportedAtMs),
        };
      }),
  );
  return {
    region: config.region,
    homeRegion: config.homeRegion,
    replicaRegions: config.replicaRegions,
    replication: config.replication,
    clusterEpoch: Math.max(0, ...leases.map((lease) => clusterEpochOf(lease.epoch))),
    leaseMs: config.leaseMs,
    tickMs: config.tickMs,
    nodes,
    shards,
    replicas,
  };
}
