import { describe, expect, it } from 'vitest';
import { checkLock, type LockLogEntry, type LockRun } from '../../lib/chaos/checker.ts';

const lockKey = '__epochkv/lock/l';
const keys = { sameShard: 'same', crossShard: 'cross' };

const acquire = (index: number): LockLogEntry => ({ index, ops: [{ type: 'put', key: lockKey, value: '{"leaseId":"x"}' }] });
const release = (index: number): LockLogEntry => ({ index, ops: [{ type: 'delete', key: lockKey }] });
const append = (index: number, key: string, value: string): LockLogEntry => ({ index, ops: [{ type: 'put', key, value }] });

/** Client 0 holds token 1 and appends to both keys, releases; client 1 takes token 4 and appends; client 0, paused, writes with token 1 and is refused. */
function goodRun(): { run: LockRun; lockLog: LockLogEntry[]; crossLog: LockLogEntry[] } {
  const run: LockRun = {
    keys,
    acquisitions: [
      { client: 0, token: 1, status: 'ok', callMs: 0, returnMs: 10 },
      { client: 1, token: null, status: 'fail', callMs: 5, returnMs: 15 },
      { client: 1, token: 4, status: 'ok', callMs: 40, returnMs: 50 },
    ],
    observations: [{ client: 1, token: 1, callMs: 5, returnMs: 15 }, { client: 0, token: 4, callMs: 60, returnMs: 65 }],
    releases: [
      { client: 0, token: 1, stale: false, status: 'ok', callMs: 30, returnMs: 35 },
      { client: 0, token: 1, stale: true, status: 'fail', reason: 'FenceRejected', callMs: 80, returnMs: 85 },
    ],
    writes: [
      { client: 0, key: 'same', token: 1, element: 'c0.t1.s1', stale: false, status: 'ok', callMs: 11, returnMs: 20 },
      { client: 0, key: 'cross', token: 1, element: 'c0.t1.s2', stale: false, status: 'ok', callMs: 21, returnMs: 29 },
      { client: 1, key: 'same', token: 4, element: 'c1.t4.s1', stale: false, status: 'ok', callMs: 51, returnMs: 58 },
      { client: 0, key: 'same', token: 1, element: 'c0.t1.s3.stale', stale: true, status: 'fail', reason: 'FenceRejected', callMs: 70, returnMs: 75 },
    ],
  };
  const lockLog = [acquire(1), append(2, 'same', 'c0.t1.s1'), release(3), acquire(4), append(5, 'same', 'c0.t1.s1,c1.t4.s1')];
  const crossLog = [append(1, 'cross', 'c0.t1.s2')];
  return { run, lockLog, crossLog };
}

const logsOf = (lockLog: LockLogEntry[], crossLog: LockLogEntry[]) => new Map([['same', lockLog], ['cross', crossLog]]);

describe('Function: checkLock', () => {
  it('accepts a history where every committed append had the current token and the stale write was refused', () => {
    // Act
    const { run, lockLog, crossLog } = goodRun();
    const verdict = checkLock(run, lockKey, lockLog, logsOf(lockLog, crossLog));

    // Assess
    expect(verdict.samples).toEqual([]);
    expect(verdict).toMatchObject({ violations: 0, tokensInLog: 2, committedWrites: 3, stale: { sent: 1, refused: 1, accepted: 0, releasesRefused: 1 } });
  });

  it('catches an append committed on the lock\'s shard while another token held the lock', () => {
    // Prepare: the paused holder's token-1 append lands after token 4 was granted.
    const { run, lockLog, crossLog } = goodRun();
    lockLog.push(append(6, 'same', 'c0.t1.s1,c1.t4.s1,c0.t1.s3.stale'));

    // Act
    const verdict = checkLock(run, lockKey, lockLog, logsOf(lockLog, crossLog));

    // Assess
    expect(verdict.violations).toBeGreaterThanOrEqual(2);
    expect(verdict.samples.join('\n')).toMatch(/committed at index 6 while the lock was at token 4/);
    expect(verdict.samples.join('\n')).toMatch(/after an append with token 4/);
    expect(verdict.samples.join('\n')).toMatch(/refused \(FenceRejected\) but is in the log/);
  });

  it('catches a stale write answered 200 on the other shard, where only real time orders it', () => {
    // Prepare
    const { run, lockLog } = goodRun();
    const writes = run.writes.map((write) => (write.stale ? { ...write, key: 'cross', status: 'ok' as const } : write));

    // Act
    const verdict = checkLock({ ...run, writes }, lockKey, lockLog, logsOf(lockLog, [append(1, 'cross', 'c0.t1.s2')]));

    // Assess
    expect(verdict.stale.accepted).toBe(1);
    expect(verdict.samples.join('\n')).toMatch(/stale append c0\.t1\.s3\.stale to cross answered 200/);
  });

  it('catches two holders at once and a token answered that the log never granted', () => {
    // Prepare: token 4 granted while token 1 still held; client 1 told token 7.
    const { run, crossLog } = goodRun();
    const lockLog = [acquire(1), append(2, 'same', 'c0.t1.s1'), acquire(4)];
    const acquisitions = [...run.acquisitions, { client: 1, token: 7, status: 'ok' as const, callMs: 90, returnMs: 95 }];

    // Act
    const verdict = checkLock({ ...run, acquisitions }, lockKey, lockLog, logsOf(lockLog, crossLog));

    // Assess
    expect(verdict.samples.join('\n')).toMatch(/lock acquired at index 4 while token 1 still held it/);
    expect(verdict.samples.join('\n')).toMatch(/token 7, which is not an acquisition in the lock's log/);
  });

  it('catches tokens that go back in real time and a release answered 200 after its token ended', () => {
    // Prepare: token 4's acquisition returned before token 1's was sent; the stale release was accepted.
    const { run, lockLog, crossLog } = goodRun();
    const acquisitions = [{ client: 1, token: 4, status: 'ok' as const, callMs: 0, returnMs: 2 }, { client: 0, token: 1, status: 'ok' as const, callMs: 3, returnMs: 10 }];
    const releases = run.releases.map((entry) => (entry.stale ? { ...entry, status: 'ok' as const } : entry));

    // Act
    const verdict = checkLock({ ...run, acquisitions, releases }, lockKey, lockLog, logsOf(lockLog, crossLog));

    // Assess
    expect(verdict.samples.join('\n')).toMatch(/token 1 acquired after token 4 had been answered/);
    expect(verdict.samples.join('\n')).toMatch(/release of token 1 by client 0 answered 200 after the token had ended/);
  });
});
