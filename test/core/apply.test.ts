import { describe, expect, it } from 'vitest';
import { chunkRuns, decideApply, emptyProgress, netEffects, packRuns, runEntriesMax, runItemsMax, type KvEffect, type ReplicaProgress } from '../../lib/core/apply.ts';
import { limits } from '../../lib/core/limits.ts';
import { genesisHash, sealEntry, transactionBytesOf, type LogEntry, type Operation } from '../../lib/core/log.ts';

const textEncoder = new TextEncoder();
const text = (value: string): Uint8Array => textEncoder.encode(value);

/** Seals one entry per element of `opsByEntry` into a chain starting at index 1. */
function chainOf(opsByEntry: readonly Operation[][], shard = 2): LogEntry[] {
  const chain: LogEntry[] = [];
  for (const [position, ops] of opsByEntry.entries()) {
    const index = position + 1;
    chain.push(sealEntry(chain.at(-1), { shard, index, epoch: 1, ops, requestId: `request-${index}`, committedAtMs: 1_700_000_000_000 + index }));
  }
  return chain;
}

/** A chain of `count` entries, each a put of its own key. */
function simpleChain(count: number): LogEntry[] {
  return chainOf(Array.from({ length: count }, (_, position) => [{ type: 'put' as const, key: `key-${position + 1}`, value: text(`value-${position + 1}`) }]));
}

function entryAt(chain: readonly LogEntry[], index: number): LogEntry {
  const entry = chain[index - 1];
  if (entry === undefined) throw new Error(`no entry at index ${index}`);
  return entry;
}

function progressAt(chain: readonly LogEntry[], index: number): ReplicaProgress {
  return index === 0 ? emptyProgress : { appliedIndex: index, appliedHash: entryAt(chain, index).hash };
}

const leaderMarker: Operation = { type: 'leader', node: 'node-a', epoch: 1, previousEpoch: 0 };

describe('Constant: emptyProgress', () => {
  it('has applied nothing and points at the genesis hash', () => {
    // Assess
    expect(emptyProgress).toEqual({ appliedIndex: 0, appliedHash: genesisHash });
  });
});

describe('Function: decideApply', () => {
  const chain = simpleChain(8);

  it.each([1, 2, 3])('skips index %i when 3 is applied (a duplicate or re-ship)', (index) => {
    // Act
    const decision = decideApply(progressAt(chain, 3), entryAt(chain, index));

    // Assess
    expect(decision).toEqual({ type: 'skip' });
  });

  it('skips an applied index even when the delivered copy is corrupt', () => {
    // Prepare
    const tampered: LogEntry = { ...entryAt(chain, 2), hash: 'f'.repeat(64) };

    // Act
    const decision = decideApply(progressAt(chain, 3), tampered);

    // Assess
    expect(decision).toEqual({ type: 'skip' });
  });

  it('applies the first entry on an empty replica', () => {
    // Act
    const decision = decideApply(emptyProgress, entryAt(chain, 1));

    // Assess
    expect(decision).toEqual({ type: 'apply' });
  });

  it('applies the next entry when it continues the chain', () => {
    // Act
    const decision = decideApply(progressAt(chain, 4), entryAt(chain, 5));

    // Assess
    expect(decision).toEqual({ type: 'apply' });
  });

  it.each([
    [0, 2],
    [2, 5],
    [4, 8],
  ])('repairs [applied + 1, index] when %i is applied and %i arrives (a gap)', (applied, index) => {
    // Act
    const decision = decideApply(progressAt(chain, applied), entryAt(chain, index));

    // Assess
    expect(decision).toMatchObject({ type: 'repair', fromIndex: applied + 1, toIndex: index });
    expect(decision.type === 'repair' && decision.reason).toContain('gap');
  });

  it.each<[string, (entry: LogEntry) => LogEntry]>([
    ['a wrong prevHash', (entry) => ({ ...entry, prevHash: 'a'.repeat(64) })],
    ['a tampered value under the original hash', (entry) => ({ ...entry, ops: [{ type: 'put', key: 'key-5', value: text('forged') }] })],
    ['a tampered hash', (entry) => ({ ...entry, hash: 'b'.repeat(64) })],
    ['a tampered epoch', (entry) => ({ ...entry, epoch: entry.epoch + 1 })],
    ['a malformed operation', (entry) => ({ ...entry, ops: [{ type: 'put', key: 'key-5' } as unknown as Operation] })],
  ])('repairs exactly the next index for an entry with %s', (_, corrupt) => {
    // Prepare
    const entry = corrupt(entryAt(chain, 5));

    // Act
    const decision = decideApply(progressAt(chain, 4), entry);

    // Assess
    expect(decision).toMatchObject({ type: 'repair', fromIndex: 5, toIndex: 5 });
    expect(decision.type === 'repair' && decision.reason).toContain('corrupt');
  });

  it('repairs the next index when the replica holds a different history (its hash is not the prevHash)', () => {
    // Prepare: the replica applied 4 entries whose last hash differs from the home's.
    const progress: ReplicaProgress = { appliedIndex: 4, appliedHash: 'c'.repeat(64) };

    // Act
    const decision = decideApply(progress, entryAt(chain, 5));

    // Assess
    expect(decision).toMatchObject({ type: 'repair', fromIndex: 5, toIndex: 5 });
  });
});

describe('Function: netEffects', () => {
  it('keeps the last write per key, with the index and epoch of its entry', () => {
    // Prepare
    const chain = chainOf([
      [{ type: 'put', key: 'a', value: text('a1') }],
      [{ type: 'put', key: 'b', value: text('b1') }],
      [{ type: 'put', key: 'a', value: text('a2') }],
    ]);

    // Act
    const effects = netEffects(chain);

    // Assess
    expect(effects).toEqual([
      { type: 'put', key: 'b', value: text('b1'), index: 2, epoch: 1 },
      { type: 'put', key: 'a', value: text('a2'), index: 3, epoch: 1 },
    ]);
  });

  it('yields a delete for a delete after a put', () => {
    // Prepare
    const chain = chainOf([[{ type: 'put', key: 'a', value: text('a1') }], [{ type: 'delete', key: 'a' }]]);

    // Act
    const effects = netEffects(chain);

    // Assess
    expect(effects).toEqual([{ type: 'delete', key: 'a', index: 2, epoch: 1 }]);
  });

  it('yields a put for a put after a delete', () => {
    // Prepare
    const chain = chainOf([[{ type: 'delete', key: 'a' }], [{ type: 'put', key: 'a', value: text('a2') }]]);

    // Act
    const effects = netEffects(chain);

    // Assess
    expect(effects).toEqual([{ type: 'put', key: 'a', value: text('a2'), index: 2, epoch: 1 }]);
  });

  it('applies the operations of one entry in order', () => {
    // Prepare
    const chain = chainOf([
      [
        { type: 'put', key: 'a', value: text('first') },
        { type: 'delete', key: 'a' },
        { type: 'delete', key: 'b' },
        { type: 'put', key: 'b', value: text('second') },
      ],
    ]);

    // Act
    const effects = netEffects(chain);

    // Assess
    expect(effects).toEqual([
      { type: 'delete', key: 'a', index: 1, epoch: 1 },
      { type: 'put', key: 'b', value: text('second'), index: 1, epoch: 1 },
    ]);
  });

  it('produces nothing for leader markers', () => {
    // Prepare
    const chain = chainOf([[leaderMarker], [{ ...leaderMarker, epoch: 2, previousEpoch: 1 }]]);

    // Act
    const effects = netEffects(chain);

    // Assess
    expect(effects).toEqual([]);
  });

  it('produces nothing for an empty run', () => {
    // Assess
    expect(netEffects([])).toEqual([]);
  });

  it('yields one effect per key however often the run writes it (one action per transaction item)', () => {
    // Prepare: 40 entries over 3 keys, markers in between.
    const keys = ['a', 'b', 'c'];
    const chain = chainOf(
      Array.from({ length: 40 }, (_, position): Operation[] => {
        const key = keys[position % keys.length] ?? 'a';
        if (position % 7 === 0) return [leaderMarker];
        return position % 5 === 0 ? [{ type: 'delete', key }] : [{ type: 'put', key, value: text(`${key}-${position}`) }];
      }),
    );

    // Act
    const effects = netEffects(chain);

    // Assess
    const effectKeys = effects.map((effect) => effect.key);
    expect(new Set(effectKeys).size).toBe(effectKeys.length);
    expect(effectKeys.sort()).toEqual(keys);
  });
});

describe('Function: chunkRuns', () => {
  it.each([0, 1, runEntriesMax - 1, runEntriesMax, runEntriesMax + 1, 2 * runEntriesMax, 120])(
    'splits %i entries into runs of at most runEntriesMax, keeping their order',
    (count) => {
      // Prepare
      const chain = simpleChain(count);

      // Act
      const runs = chunkRuns(chain);

      // Assess
      expect(runs.length).toBe(Math.ceil(count / runEntriesMax));
      for (const run of runs) {
        expect(run.length).toBeGreaterThan(0);
        expect(run.length).toBeLessThanOrEqual(runEntriesMax);
      }
      expect(runs.flat()).toEqual(chain);
    },
  );

  it('fills every run but the last', () => {
    // Act
    const runs = chunkRuns(simpleChain(120));

    // Assess
    expect(runs.map((run) => run.length)).toEqual([runEntriesMax, runEntriesMax, 120 - 2 * runEntriesMax]);
  });
});

describe('Function: chunkRuns (bytes)', () => {
  it('ends a run before its values would pass the transaction byte bound', () => {
    // Prepare: 12 entries with the largest value: 4 MB of values, twice over, cannot be one transaction.
    const big = new Uint8Array(limits.valueBytesMax);
    const chain = chainOf(Array.from({ length: 12 }, (_, position) => [{ type: 'put' as const, key: `big-${position}`, value: big }]));

    // Act
    const runs = chunkRuns(chain);

    // Assess
    expect(runs.length).toBeGreaterThan(1);
    for (const run of runs) expect(run.reduce((sum, entry) => sum + transactionBytesOf(entry.ops), 0)).toBeLessThanOrEqual(limits.transactionBytesMax);
    expect(runs.flat()).toEqual(chain);
  });
});

describe('Function: packRuns', () => {
  const runOf = (shard: number, count: number) => ({ shard, entries: simpleChain(count) });

  it('packs small runs of several shards into one transaction, in order', () => {
    // Act
    const packs = packRuns([runOf(1, 3), runOf(2, 5), runOf(3, 1)]);

    // Assess
    expect(packs.map((pack) => pack.map((run) => run.shard))).toEqual([[1, 2, 3]]);
  });

  it('starts a new transaction where the next run would pass 100 items, never splitting a run', () => {
    // Prepare: 30 entries are 61 items; two such runs are 122.
    const runs = [runOf(1, 30), runOf(2, 30), runOf(3, 4), runOf(4, runEntriesMax)];

    // Act
    const packs = packRuns(runs);

    // Assess
    expect(packs.map((pack) => pack.map((run) => run.shard))).toEqual([[1], [2, 3], [4]]);
    for (const pack of packs) expect(pack.reduce((sum, run) => sum + runItemsMax(run.entries.length), 0)).toBeLessThanOrEqual(100);
  });

  it('keeps each transaction within a smaller item bound, a run bigger than the bound on its own', () => {
    // Prepare: 3, 7, 9, 3 and 61 items against a bound of 20.
    const runs = [runOf(1, 1), runOf(2, 3), runOf(3, 4), runOf(4, 1), runOf(5, 30)];

    // Act
    const packs = packRuns(runs, 20);

    // Assess
    expect(packs.map((pack) => pack.map((run) => run.shard))).toEqual([[1, 2, 3], [4], [5]]);
    for (const pack of packs.slice(0, 2)) expect(pack.reduce((sum, run) => sum + runItemsMax(run.entries.length), 0)).toBeLessThanOrEqual(20);
  });

  it('returns no transaction for no runs', () => {
    // Assess
    expect(packRuns([])).toEqual([]);
  });
});

describe('Constant: runEntriesMax', () => {
  it('is the largest run whose items fit one TransactWriteItems (100 items)', () => {
    // Assess
    expect(runItemsMax(runEntriesMax)).toBeLessThanOrEqual(100);
    expect(runItemsMax(runEntriesMax + 1)).toBeGreaterThan(100);
  });
});

/** mulberry32: a tiny seeded PRNG, so every generated case can be replayed from its seed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(random: () => number, choices: readonly T[]): T {
  const choice = choices[Math.floor(random() * choices.length)];
  if (choice === undefined) throw new Error('pick from an empty list');
  return choice;
}

type KvState = Map<string, { value: Uint8Array; index: number }>;

function applyEntryByEntry(initial: KvState, entries: readonly LogEntry[]): KvState {
  const state: KvState = new Map(initial);
  for (const entry of entries) {
    for (const op of entry.ops) {
      if (op.type === 'put') state.set(op.key, { value: op.value, index: entry.index });
      else if (op.type === 'delete') state.delete(op.key);
    }
  }
  return state;
}

function applyEffects(initial: KvState, effects: readonly KvEffect[]): KvState {
  const state: KvState = new Map(initial);
  for (const effect of effects) {
    if (effect.type === 'put') state.set(effect.key, { value: effect.value, index: effect.index });
    else state.delete(effect.key);
  }
  return state;
}

describe('Property: netEffects of a run equals applying its entries one by one', () => {
  const casesCount = 500;
  const keys = ['a', 'b', 'c', 'd', 'e', '{tag}/x', '{tag}/y'];

  it(`holds for ${casesCount} generated runs (seeds 1..${casesCount})`, () => {
    for (let seed = 1; seed <= casesCount; seed += 1) {
      // Prepare: a random starting state and a random run of 0..60 entries of 0..4 operations.
      const random = seededRandom(seed);
      const initial: KvState = new Map();
      for (const key of keys) if (random() < 0.5) initial.set(key, { value: text(`initial-${key}`), index: 0 });
      const entriesCount = Math.floor(random() * 61);
      const opsByEntry: Operation[][] = Array.from({ length: entriesCount }, (_, position) =>
        Array.from({ length: Math.floor(random() * 5) }, (): Operation => {
          const roll = random();
          if (roll < 0.1) return leaderMarker;
          const key = pick(random, keys);
          return roll < 0.4 ? { type: 'delete', key } : { type: 'put', key, value: text(`${key}@${seed}.${position}.${Math.floor(random() * 1000)}`) };
        }),
      );
      const chain = chainOf(opsByEntry);

      // Act
      const effects = netEffects(chain);

      // Assess
      const context = `seed ${seed}`;
      expect(applyEffects(initial, effects), context).toEqual(applyEntryByEntry(initial, chain));
      const effectKeys = effects.map((effect) => effect.key);
      expect(new Set(effectKeys).size, context).toBe(effectKeys.length);
      // Applied run by run (as the replica store does), the result is the same.
      const runByRun = chunkRuns(chain).reduce((state, run) => applyEffects(state, netEffects(run)), initial);
      expect(runByRun, context).toEqual(applyEntryByEntry(initial, chain));
    }
  });
});
