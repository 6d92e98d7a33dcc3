import { describe, expect, it } from 'vitest';
import { decideCompaction, holdBoundsFor, mergeSnapshot, replicaCompactionPoint, type CompactionInput, type HoldBounds, type RetentionPolicy } from '../../lib/core/compaction.ts';
import { sealEntry, type LogEntry, type Operation } from '../../lib/core/log.ts';

const policy: RetentionPolicy = { retainEntries: 50, retainAgeMs: 60_000 };
const hold: HoldBounds = { reportAgeMsMax: 10_000, lagEntriesMax: 200 };
const nowMs = 1_700_000_000_000;

/** A shard at head 500, nothing compacted, young entries, two replicas caught up. */
function input(overrides: Partial<CompactionInput> = {}): CompactionInput {
  return {
    headIndex: 500,
    compactedThrough: 0,
    oldest: [],
    replicaRegions: ['eu-west-1', 'ap-southeast-2'],
    standings: [
      { region: 'eu-west-1', appliedIndex: 500, reportAgeMs: 100 },
      { region: 'ap-southeast-2', appliedIndex: 500, reportAgeMs: 100 },
    ],
    inSyncRegions: [],
    nowMs,
    ...overrides,
  };
}

const text = (value: string): Uint8Array => new TextEncoder().encode(value);

function chain(opsByEntry: readonly Operation[][], from = 1): LogEntry[] {
  const entries: LogEntry[] = [];
  // A stand-in for the entry before `from` (only its index and hash are chained onto).
  const before = { index: from - 1, hash: 'f'.repeat(64) };
  for (const [position, ops] of opsByEntry.entries()) {
    const index = from + position;
    entries.push(sealEntry(entries.at(-1) ?? (from === 1 ? undefined : before), { shard: 3, index, epoch: 2, ops, requestId: `r-${index}`, committedAtMs: nowMs + index }));
  }
  return entries;
}

describe('Function: decideCompaction', () => {
  it('keeps the last retainEntries entries when every replica has applied the head', () => {
    // Act
    const decision = decideCompaction(input(), policy, hold);

    // Assess
    expect(decision).toEqual({ compactedThrough: 450, wanted: 450, heldBy: [], leftBehind: [] });
  });

  it('never trims past what a reporting replica has applied', () => {
    // Act
    const decision = decideCompaction(input({ standings: [{ region: 'eu-west-1', appliedIndex: 420, reportAgeMs: 100 }, { region: 'ap-southeast-2', appliedIndex: 500, reportAgeMs: 100 }] }), policy, hold);

    // Assess
    expect(decision.compactedThrough).toBe(420);
    expect(decision.heldBy).toEqual(['eu-west-1']);
  });

  it('leaves a silent replica behind once its report is older than the bound', () => {
    // Act
    const decision = decideCompaction(input({ standings: [{ region: 'eu-west-1', appliedIndex: 100, reportAgeMs: 10_001 }, { region: 'ap-southeast-2', appliedIndex: 500, reportAgeMs: 100 }] }), policy, hold);

    // Assess
    expect(decision.compactedThrough).toBe(450);
    expect(decision.leftBehind).toEqual(['eu-west-1']);
  });

  it('leaves a reporting replica behind once it lags more than lagEntriesMax', () => {
    // Act
    const held = decideCompaction(input({ standings: [{ region: 'eu-west-1', appliedIndex: 300, reportAgeMs: 0 }] , replicaRegions: ['eu-west-1'] }), policy, hold);
    const left = decideCompaction(input({ standings: [{ region: 'eu-west-1', appliedIndex: 299, reportAgeMs: 0 }], replicaRegions: ['eu-west-1'] }), policy, hold);

    // Assess
    expect(held.compactedThrough).toBe(300);
    expect(left).toMatchObject({ compactedThrough: 450, leftBehind: ['eu-west-1'] });
  });

  it('holds for an in-sync region whatever its report age, and at the recorded point when it has no report', () => {
    // Act
    const stale = decideCompaction(input({ standings: [{ region: 'eu-west-1', appliedIndex: 400, reportAgeMs: 1_000_000 }], replicaRegions: ['eu-west-1'], inSyncRegions: ['eu-west-1'] }), policy, hold);
    const unreported = decideCompaction(input({ compactedThrough: 30, standings: [], replicaRegions: ['eu-west-1'], inSyncRegions: ['eu-west-1'] }), policy, hold);

    // Assess
    expect(stale.compactedThrough).toBe(400);
    expect(unreported.compactedThrough).toBe(30);
  });

  it('ignores regions that are not replicas of the cluster (a report left by a removed region)', () => {
    // Act
    const decision = decideCompaction(input({ replicaRegions: [], standings: [{ region: 'eu-west-1', appliedIndex: 1, reportAgeMs: 0 }] }), policy, hold);

    // Assess
    expect(decision.compactedThrough).toBe(450);
  });

  it('always keeps the head entry, even with retention 1 or an old head', () => {
    // Act
    const byCount = decideCompaction(input(), { retainEntries: 1, retainAgeMs: 60_000 }, hold);
    const byAge = decideCompaction(
      input({ headIndex: 3, standings: [], replicaRegions: [], oldest: [1, 2, 3].map((index) => ({ index, committedAtMs: nowMs - 3_600_000 })) }),
      policy,
      hold,
    );

    // Assess
    expect(byCount.compactedThrough).toBe(499);
    expect(byAge.compactedThrough).toBe(2);
  });

  it('trims by age the run of oldest entries older than retainAgeMs, stopping at the first young one', () => {
    // Arrange
    const oldest = [
      { index: 11, committedAtMs: nowMs - 120_000 },
      { index: 12, committedAtMs: nowMs - 61_000 },
      { index: 13, committedAtMs: nowMs - 1_000 },
      { index: 14, committedAtMs: nowMs - 90_000 },
    ];

    // Act
    const decision = decideCompaction(input({ headIndex: 20, compactedThrough: 10, oldest }), policy, hold);

    // Assess
    expect(decision.compactedThrough).toBe(12);
  });

  it('never moves the point back (a leader with a stale head, a replica whose report went back)', () => {
    // Act
    const decision = decideCompaction(input({ compactedThrough: 480, standings: [{ region: 'eu-west-1', appliedIndex: 470, reportAgeMs: 0 }], replicaRegions: ['eu-west-1'] }), policy, hold);

    // Assess
    expect(decision.compactedThrough).toBe(480);
  });

  it('trims nothing on an empty or short log', () => {
    // Assess
    expect(decideCompaction(input({ headIndex: 0, standings: [] }), policy, hold).compactedThrough).toBe(0);
    expect(decideCompaction(input({ headIndex: 40 }), policy, hold).compactedThrough).toBe(0);
  });

  it('refuses a retention below one entry', () => {
    // Assess
    expect(() => decideCompaction(input(), { retainEntries: 0, retainAgeMs: 1 }, hold)).toThrow(/retainEntries/);
  });
});

describe('Function: replicaCompactionPoint', () => {
  it("follows the home's point but keeps the region's own head and never goes back", () => {
    // Assess
    expect(replicaCompactionPoint(450, 500, 0)).toBe(450);
    expect(replicaCompactionPoint(450, 300, 0)).toBe(299);
    expect(replicaCompactionPoint(100, 500, 200)).toBe(200);
    expect(replicaCompactionPoint(0, 0, 0)).toBe(0);
  });
});

describe('Function: holdBoundsFor', () => {
  it('scales with the timing and the retention', () => {
    // Assess
    expect(holdBoundsFor({ tickMs: 250, leaseMs: 2_000 }, policy)).toEqual({ reportAgeMsMax: 20_000, lagEntriesMax: 200 });
    expect(holdBoundsFor({ tickMs: 1_000, leaseMs: 6_000 }, policy)).toEqual({ reportAgeMsMax: 60_000, lagEntriesMax: 200 });
  });
});

describe('Function: mergeSnapshot', () => {
  it('takes the scan for untouched keys and the entries’ net effect for touched ones', () => {
    // Arrange: the scan saw a at 4, b at 5 and c at 7 while the log moved from 5 to 8.
    const entries = chain(
      [
        [{ type: 'put', key: 'c', value: text('c7') }],
        [{ type: 'delete', key: 'b' }],
        [{ type: 'put', key: 'd', value: text('d9') }, { type: 'leader', node: 'node-a', epoch: 2, previousEpoch: 1 }],
      ],
      6,
    );
    const scanned = [
      { key: 'a', value: text('a4'), version: 4, epoch: 1, index: 4 },
      { key: 'b', value: text('b5'), version: 5, epoch: 1, index: 5 },
      { key: 'c', value: text('c7'), version: 6, epoch: 2, index: 6 },
    ];

    // Act
    const snapshot = mergeSnapshot(scanned, 5, entries);

    // Assess
    expect(snapshot.map((item) => [item.key, new TextDecoder().decode(item.value), item.version])).toEqual([
      ['a', 'a4', 4],
      ['c', 'c7', 6],
      ['d', 'd9', 8],
    ]);
  });

  it('refuses entries that are not the dense range after the base', () => {
    // Arrange
    const entries = chain([[{ type: 'put', key: 'a', value: text('1') }]], 7);

    // Assess
    expect(() => mergeSnapshot([], 5, entries)).toThrow(/dense from 6/);
  });
});
