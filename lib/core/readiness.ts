import type { LeaseRecord } from './lease.ts';

/**
 * Whether a region can serve, from what its tables say (pure: the reads and the time come in,
 * the reasons it cannot go out; an empty list means ready). `GET /health` answers 200 only with
 * no reason, so a client that waited for it can write at once.
 */

/**
 * At home: every shard has a leader whose lease a writer would accept now — a holder, its
 * leader marker in the log, and a renewal within the last lease by the reader's clock (stricter
 * than the API's gate, which adds a skew tolerance, so "ready" is not said on the edge).
 */
export function homeUnreadyReasons(input: { shardCount: number; leaseMs: number; nowMs: number; leases: readonly LeaseRecord[] }): string[] {
  const reasons: string[] = [];
  for (let shard = 0; shard < input.shardCount; shard += 1) {
    const lease = input.leases.find((candidate) => candidate.shard === shard);
    if (lease === undefined || lease.holder === undefined) {
      reasons.push(`shard ${shard} has no leader yet`);
      continue;
    }
    if (lease.movedTo !== undefined) {
      reasons.push(`shard ${shard} moved to ${lease.movedTo} (this region is no longer home)`);
      continue;
    }
    const ageMs = input.nowMs - lease.renewedAtMs;
    if (ageMs > input.leaseMs) {
      reasons.push(`shard ${shard} has no live leader: ${lease.holder} last renewed its lease ${Math.round(ageMs)} ms ago (lease ${input.leaseMs} ms)`);
    } else if (lease.markerPending === true) {
      reasons.push(`shard ${shard}: ${lease.holder} is taking over (epoch ${lease.epoch}; its leader entry is not in the log yet)`);
    }
  }
  return reasons;
}

/**
 * At a replica: its applier runs (the replica heartbeat reported every shard recently) and its
 * lag is known (those reports and the home heads were read). `reportAgeMsMax` is how old a
 * report may be while the heartbeat still runs.
 */
export function replicaUnreadyReasons(input: {
  region: string;
  shardCount: number;
  nowMs: number;
  reportAgeMsMax: number;
  reports: readonly { region: string; shard: number; reportedAtMs: number }[];
}): string[] {
  const reasons: string[] = [];
  const missing: number[] = [];
  const stale: string[] = [];
  for (let shard = 0; shard < input.shardCount; shard += 1) {
    const report = input.reports.find((candidate) => candidate.region === input.region && candidate.shard === shard);
    if (report === undefined) missing.push(shard);
    else if (input.nowMs - report.reportedAtMs > input.reportAgeMsMax) stale.push(`${shard} (${Math.round(input.nowMs - report.reportedAtMs)} ms ago)`);
  }
  if (missing.length > 0) reasons.push(`the replica heartbeat of ${input.region} has not reported shards ${missing.join(', ')} yet: its lag is unknown`);
  if (stale.length > 0) reasons.push(`the replica heartbeat of ${input.region} last reported shards ${stale.join(', ')}, more than ${input.reportAgeMsMax} ms ago: its applier is not running`);
  return reasons;
}

/**
 * A replica heartbeat reports every shard at least every 10 ticks; older than 15 ticks (or two
 * leases) it has stopped. The same bound as the in-sync set's (functions/node.ts inSyncBounds).
 */
export function replicaReportAgeMsMax(timings: { tickMs: number; leaseMs: number }): number {
  return Math.max(15 * timings.tickMs, 2 * timings.leaseMs);
}
