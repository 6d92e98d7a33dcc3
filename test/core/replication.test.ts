import { describe, expect, it } from 'vitest';
import { decideApply, isFencedOff } from '../../lib/core/apply.ts';
import { genesisHash, sealEntry } from '../../lib/core/log.ts';
import {
  ackMet,
  ackRequirement,
  clusterEpochOf,
  clusterEpochStride,
  firstShardEpoch,
  isReplicationMode,
  modeStrength,
  nextInSync,
  promotionReachNeeded,
  quorumReplicas,
  type InSyncBounds,
} from '../../lib/core/replication.ts';

const bounds: InSyncBounds = { lagEntriesMax: 100, reportAgeMsMax: 4_000, rejoinLagEntriesMax: 5 };
const regions = ['eu', 'ap', 'sa'];

describe('Module: replication modes', () => {
  it('orders the modes and recognises only the three names', () => {
    expect(modeStrength('async')).toBeLessThan(modeStrength('quorum'));
    expect(modeStrength('quorum')).toBeLessThan(modeStrength('all'));
    expect(['async', 'quorum', 'all', 'majority', ''].map(isReplicationMode)).toEqual([true, true, true, false, false]);
  });

  it('needs home plus quorumReplicas to be a majority of all regions', () => {
    // Regions = replicas + 1; a majority of them, minus home.
    expect([0, 1, 2, 3, 4, 5].map(quorumReplicas)).toEqual([0, 1, 1, 2, 2, 3]);
    for (let replicas = 0; replicas <= 8; replicas += 1) {
      const regionsTotal = replicas + 1;
      expect(2 * (1 + quorumReplicas(replicas))).toBeGreaterThan(regionsTotal);
      expect(2 * quorumReplicas(replicas)).toBeLessThanOrEqual(regionsTotal);
    }
  });

  it('turns a mode into what the queues must have accepted', () => {
    expect(ackRequirement('async', ['eu', 'ap'], ['eu'])).toEqual({ type: 'none' });
    expect(ackRequirement('quorum', ['eu', 'ap'], ['eu'])).toEqual({ type: 'count', count: 1 });
    expect(ackRequirement('quorum', [], [])).toEqual({ type: 'none' });
    expect(ackRequirement('all', ['eu', 'ap'], ['ap', 'gone'])).toEqual({ type: 'every', regions: ['ap'] });
  });

  it('says what is missing when the acceptances fall short', () => {
    expect(ackMet({ type: 'count', count: 1 }, ['ap'])).toEqual({ met: true, missing: '' });
    expect(ackMet({ type: 'count', count: 2 }, ['ap'])).toEqual({ met: false, missing: 'the entry in at least 2 replica region(s)' });
    expect(ackMet({ type: 'every', regions: ['eu', 'ap'] }, ['eu'])).toEqual({ met: false, missing: 'the entry in in-sync replica region(s) ap' });
    expect(ackMet({ type: 'every', regions: [] }, []).met).toBe(true);
  });
});

describe('Function: nextInSync', () => {
  const standing = (region: string, appliedIndex: number, reportAgeMs = 100) => ({ region, appliedIndex, reportAgeMs });

  it('drops a member that stopped reporting or lags past the bound, keeping the others', () => {
    // 4 replicas: quorum needs 2, so two may leave.
    const four = [...regions, 'us'];
    const next = nextInSync(four, four, 1_000, [standing('eu', 1_000), standing('ap', 1_000, 5_000), standing('sa', 850), standing('us', 999)], bounds);
    expect(next).toEqual(['eu', 'us']);
  });

  it('re-admits a region only once it is within the rejoin bound (hysteresis)', () => {
    const lagging = nextInSync(['eu'], regions, 1_000, [standing('eu', 1_000), standing('ap', 990), standing('sa', 996)], bounds);
    expect(lagging).toEqual(['eu', 'sa']);
    // A member 10 behind stays; a non-member 10 behind does not join.
    expect(nextInSync(['eu', 'sa'], regions, 1_000, [standing('eu', 990), standing('ap', 990), standing('sa', 990)], bounds)).toEqual(['eu', 'sa']);
  });

  it('never shrinks below the quorum count: the most advanced failing members stay', () => {
    // 3 replicas: quorum needs 2; every replica is silent.
    const next = nextInSync(regions, regions, 50, [standing('eu', 10, 9_000), standing('ap', 40, 9_000), standing('sa', 30, 9_000)], bounds);
    expect(next).toEqual(['ap', 'sa']);
  });

  it('ignores regions that are not replicas any more', () => {
    expect(nextInSync(['eu', 'old'], ['eu', 'ap'], 10, [standing('eu', 10), standing('old', 10), standing('ap', 10)], bounds)).toEqual(['eu', 'ap']);
  });
});

describe('Cluster epochs and the promotion fence', () => {
  it('puts the cluster epoch in the high part of every shard epoch', () => {
    expect(firstShardEpoch(0)).toBe(0);
    expect(firstShardEpoch(2)).toBe(2 * clusterEpochStride);
    expect(clusterEpochOf(firstShardEpoch(2) + 1)).toBe(2);
    expect(clusterEpochOf(clusterEpochStride - 1)).toBe(0);
    expect(() => firstShardEpoch(10_000_000)).toThrow(/out of range/);
  });

  it('needs every replica but the quorum count minus one after losing home in quorum mode', () => {
    expect(promotionReachNeeded('quorum', 2)).toBe(2);
    expect(promotionReachNeeded('all', 2)).toBe(2);
    expect(promotionReachNeeded('quorum', 4)).toBe(3);
    expect(promotionReachNeeded('async', 4)).toBe(1);
  });

  it('refuses old-cluster-epoch entries only after the fence index', () => {
    const first = sealEntry(undefined, { shard: 0, index: 1, epoch: 7, ops: [], requestId: 'a', committedAtMs: 1 });
    const zombie = sealEntry(first, { shard: 0, index: 2, epoch: 7, ops: [], requestId: 'b', committedAtMs: 2 });
    const fresh = sealEntry(first, { shard: 0, index: 2, epoch: firstShardEpoch(1) + 1, ops: [], requestId: 'c', committedAtMs: 3 });
    const fence = { clusterEpoch: 1, index: 1 };
    expect([isFencedOff(fence, first), isFencedOff(fence, zombie), isFencedOff(fence, fresh), isFencedOff(undefined, zombie)]).toEqual([false, true, false, false]);
    const progress = { appliedIndex: 1, appliedHash: first.hash, fence };
    expect(decideApply(progress, zombie)).toMatchObject({ type: 'refuse' });
    expect(decideApply(progress, fresh)).toEqual({ type: 'apply' });
    expect(decideApply({ appliedIndex: 0, appliedHash: genesisHash, fence }, first)).toEqual({ type: 'apply' });
  });
});
