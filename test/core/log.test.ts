import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../lib/core/assert.ts';
import { limits } from '../../lib/core/limits.ts';
import {
  entryBytes,
  genesisHash,
  hashEntry,
  sealEntry,
  verifyChain,
  type LogEntry,
  type UnsealedEntry,
} from '../../lib/core/log.ts';

const textEncoder = new TextEncoder();

function unsealedEntry(index: number, overrides: Partial<UnsealedEntry> = {}): UnsealedEntry {
  return {
    shard: 3,
    index,
    // Epochs rise every 5 entries, as leadership changes would make them.
    epoch: 1 + Math.floor((index - 1) / 5),
    ops: [
      { type: 'put', key: `key-${index}`, value: textEncoder.encode(`value-${index}`) },
      { type: 'delete', key: `old-${index}` },
    ],
    requestId: `request-${index}`,
    committedAtMs: 1_700_000_000_000 + index,
    ...overrides,
  };
}

/** Seals `count` entries into a chain; `overridesOf` may change any entry before it is sealed. */
function sealedChain(count: number, overridesOf: (index: number) => Partial<UnsealedEntry> = () => ({})): LogEntry[] {
  const chain: LogEntry[] = [];
  for (let index = 1; index <= count; index += 1) {
    chain.push(sealEntry(chain.at(-1), unsealedEntry(index, overridesOf(index))));
  }
  return chain;
}

function entryAt(chain: LogEntry[], position: number): LogEntry {
  const entry = chain[position];
  if (entry === undefined) throw new Error(`no entry at position ${position}`);
  return entry;
}

describe('Constant: genesisHash', () => {
  it('is 64 zeros', () => {
    // Assess
    expect(genesisHash).toBe('0'.repeat(64));
  });
});

describe('Function: sealEntry', () => {
  it('links the first entry to the genesis hash and the next to the first', () => {
    // Act
    const first = sealEntry(undefined, unsealedEntry(1));
    const second = sealEntry(first, unsealedEntry(2));

    // Assess
    expect(first.prevHash).toBe(genesisHash);
    expect(second.prevHash).toBe(first.hash);
    expect(first.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(second.hash).not.toBe(first.hash);
  });

  it('sets the hash to hashEntry of everything else', () => {
    // Act
    const entry = sealEntry(undefined, unsealedEntry(1));

    // Assess
    const { hash, ...unhashed } = entry;
    expect(hash).toBe(hashEntry(unhashed));
  });

  it.each([
    [undefined, 2],
    [{ index: 4, hash: 'a'.repeat(64) }, 4],
    [{ index: 4, hash: 'a'.repeat(64) }, 6],
  ])('refuses an index that does not follow %j (index %i)', (previous, index) => {
    // Act
    const act = () => sealEntry(previous, unsealedEntry(index));

    // Assess
    expect(act).toThrow(AssertionError);
  });

  it('refuses a key with a lone surrogate, which has no canonical UTF-8', () => {
    // Prepare
    const entry = unsealedEntry(1, { ops: [{ type: 'delete', key: 'bad\uD800' }] });

    // Act
    const act = () => sealEntry(undefined, entry);

    // Assess
    expect(act).toThrow(AssertionError);
  });
});

describe('Function: hashEntry', () => {
  it('is deterministic and ignores the order of object properties', () => {
    // Prepare
    const entry = sealEntry(undefined, unsealedEntry(1));
    const { hash: _hash, ...unhashed } = entry;
    const reordered = {
      committedAtMs: unhashed.committedAtMs,
      requestId: unhashed.requestId,
      prevHash: unhashed.prevHash,
      ops: unhashed.ops.map((operation) => ({ ...operation })),
      epoch: unhashed.epoch,
      index: unhashed.index,
      shard: unhashed.shard,
    };

    // Act
    const first = hashEntry(unhashed);
    const second = hashEntry(structuredClone(unhashed));
    const third = hashEntry(reordered);

    // Assess
    expect(second).toBe(first);
    expect(third).toBe(first);
  });

  it("distinguishes {key: 'ab', value: 'c'} from {key: 'a', value: 'bc'}", () => {
    // Prepare
    const base = { shard: 0, index: 1, epoch: 1, prevHash: genesisHash, requestId: 'r', committedAtMs: 0 };
    const left = { ...base, ops: [{ type: 'put' as const, key: 'ab', value: textEncoder.encode('c') }] };
    const right = { ...base, ops: [{ type: 'put' as const, key: 'a', value: textEncoder.encode('bc') }] };

    // Act
    const leftHash = hashEntry(left);
    const rightHash = hashEntry(right);

    // Assess
    expect(leftHash).not.toBe(rightHash);
  });

  it('distinguishes boundaries between operations and between string fields', () => {
    // Prepare
    const base = { shard: 0, index: 1, epoch: 1, prevHash: genesisHash, committedAtMs: 0 };
    const variants = [
      { ...base, requestId: 'r', ops: [{ type: 'delete' as const, key: 'ab' }] },
      { ...base, requestId: 'r', ops: [{ type: 'delete' as const, key: 'a' }, { type: 'delete' as const, key: 'b' }] },
      { ...base, requestId: 'rdelete', ops: [] },
      { ...base, requestId: 'r', ops: [{ type: 'put' as const, key: 'ab', value: new Uint8Array() }] },
      { ...base, requestId: 'r', ops: [{ type: 'leader' as const, node: 'ab', epoch: 1, previousEpoch: 0 }] },
      { ...base, requestId: 'r', ops: [{ type: 'leader' as const, node: 'ab', epoch: 0, previousEpoch: 1 }] },
      { ...base, shard: 1, index: 0, requestId: 'r', ops: [] },
      { ...base, shard: 0, index: 1, requestId: 'r', ops: [] },
    ];

    // Act
    const hashes = variants.map((variant) => hashEntry(variant));

    // Assess
    expect(new Set(hashes).size).toBe(variants.length);
  });
});

describe('Function: verifyChain', () => {
  it('accepts a sealed chain of 20 entries', () => {
    // Prepare
    const chain = sealedChain(20);

    // Act
    const check = verifyChain(chain);

    // Assess
    expect(check).toEqual({ ok: true });
  });

  it('accepts an empty chain', () => {
    // Act
    const check = verifyChain([]);

    // Assess
    expect(check).toEqual({ ok: true });
  });

  it('accepts a suffix that continues from a given previous entry', () => {
    // Prepare
    const chain = sealedChain(20);
    const previous = entryAt(chain, 9);

    // Act
    const check = verifyChain(chain.slice(10), previous);

    // Assess
    expect(check).toEqual({ ok: true });
  });

  it('refuses a suffix that does not continue from the given previous entry', () => {
    // Prepare
    const chain = sealedChain(20);
    const previous = { index: 10, hash: entryAt(chain, 8).hash };

    // Act
    const check = verifyChain(chain.slice(10), previous);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 11, reason: expect.stringContaining('prevHash') });
  });

  it('refuses a suffix whose first index does not follow the given previous index', () => {
    // Prepare
    const chain = sealedChain(20);

    // Act
    const check = verifyChain(chain.slice(10), { index: 9, hash: entryAt(chain, 8).hash });

    // Assess
    expect(check).toMatchObject({ ok: false, index: 10, reason: expect.stringContaining('expected index 10, found index 11') });
  });

  it('refuses a chain that does not start at index 1 without a previous entry', () => {
    // Prepare
    const chain = sealedChain(20);

    // Act
    const check = verifyChain(chain.slice(1));

    // Assess
    expect(check).toMatchObject({ ok: false, index: 1, reason: expect.stringContaining('expected index 1, found index 2') });
  });

  it('refuses a changed value byte at the index of the change', () => {
    // Prepare
    const chain = structuredClone(sealedChain(20));
    const operation = entryAt(chain, 7).ops[0];
    if (operation?.type !== 'put') throw new Error('expected a put');
    operation.value[0] = (operation.value[0] ?? 0) ^ 1;

    // Act
    const check = verifyChain(chain);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 8, reason: expect.stringContaining('hash of index 8 does not match its content') });
  });

  it('refuses a changed epoch at the index of the change', () => {
    // Prepare
    const chain = structuredClone(sealedChain(20));
    entryAt(chain, 12).epoch += 1;

    // Act
    const check = verifyChain(chain);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 13, reason: expect.stringContaining('does not match its content') });
  });

  it('refuses a changed requestId at the index of the change', () => {
    // Prepare
    const chain = structuredClone(sealedChain(20));
    entryAt(chain, 19).requestId = 'request-forged';

    // Act
    const check = verifyChain(chain);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 20, reason: expect.stringContaining('does not match its content') });
  });

  it('refuses two swapped entries at the first swapped position', () => {
    // Prepare
    const chain = sealedChain(20);
    const swapped = [...chain];
    swapped[4] = entryAt(chain, 5);
    swapped[5] = entryAt(chain, 4);

    // Act
    const check = verifyChain(swapped);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 5, reason: 'expected index 5, found index 6 (indexes must be dense)' });
  });

  it('refuses two swapped entries even when their indexes are rewritten', () => {
    // Prepare
    const chain = structuredClone(sealedChain(20));
    const swapped = [...chain];
    swapped[4] = { ...entryAt(chain, 5), index: 5 };
    swapped[5] = { ...entryAt(chain, 4), index: 6 };

    // Act
    const check = verifyChain(swapped);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 5, reason: expect.stringContaining('prevHash of index 5') });
  });

  it('refuses a dropped entry at the missing index', () => {
    // Prepare
    const chain = sealedChain(20);
    const dropped = chain.filter((entry) => entry.index !== 9);

    // Act
    const check = verifyChain(dropped);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 9, reason: 'expected index 9, found index 10 (indexes must be dense)' });
  });

  it('refuses a duplicated entry at the index after the original', () => {
    // Prepare
    const chain = sealedChain(20);
    const duplicated = [...chain.slice(0, 7), entryAt(chain, 6), ...chain.slice(7)];

    // Act
    const check = verifyChain(duplicated);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 8, reason: 'expected index 8, found index 7 (indexes must be dense)' });
  });

  it('refuses a properly sealed chain whose epoch decreases', () => {
    // Prepare
    const chain = sealedChain(20, (index) => (index === 10 ? { epoch: 1 } : {}));

    // Act
    const check = verifyChain(chain);

    // Assess
    expect(check).toEqual({ ok: false, index: 10, reason: 'epoch decreased at index 10: 1 after 2' });
  });

  it('accepts an epoch that stays the same or jumps ahead', () => {
    // Prepare
    const chain = sealedChain(10, (index) => ({ epoch: index < 5 ? 7 : 42 }));

    // Act
    const check = verifyChain(chain);

    // Assess
    expect(check).toEqual({ ok: true });
  });

  it('reports a malformed entry read back from storage instead of throwing', () => {
    // Prepare
    const chain = structuredClone(sealedChain(5));
    (entryAt(chain, 2) as unknown as Record<string, unknown>)['epoch'] = '3';

    // Act
    const check = verifyChain(chain);

    // Assess
    expect(check).toMatchObject({ ok: false, index: 3, reason: expect.stringContaining('epoch must be a non-negative safe integer') });
  });
});

describe('Function: entryBytes', () => {
  it('counts at least the bytes of keys, values and hashes', () => {
    // Prepare
    const value = new Uint8Array(1000);
    const entry = sealEntry(undefined, unsealedEntry(1, { ops: [{ type: 'put', key: 'k'.repeat(10), value }] }));

    // Act
    const bytes = entryBytes(entry);

    // Assess
    expect(bytes).toBeGreaterThanOrEqual(1000 + 10 + 64 + 64 + entry.requestId.length);
    expect(bytes).toBeLessThan(1000 + 10 + 64 + 64 + entry.requestId.length + 512);
  });

  it('counts multibyte keys in UTF-8 bytes', () => {
    // Prepare
    const ascii = sealEntry(undefined, unsealedEntry(1, { ops: [{ type: 'delete', key: 'aaaa' }] }));
    const multibyte = sealEntry(undefined, unsealedEntry(1, { ops: [{ type: 'delete', key: '日日日日' }] }));

    // Act
    const difference = entryBytes(multibyte) - entryBytes(ascii);

    // Assess
    expect(difference).toBe(4 * 3 - 4);
  });

  it('keeps an entry with the largest key and value within a DynamoDB item', () => {
    // Prepare
    const entry = sealEntry(
      undefined,
      unsealedEntry(1, {
        ops: [{ type: 'put', key: 'k'.repeat(limits.keyBytesMax), value: new Uint8Array(limits.valueBytesMax) }],
      }),
    );

    // Act
    const bytes = entryBytes(entry);

    // Assess
    expect(bytes).toBeGreaterThan(limits.valueBytesMax + limits.keyBytesMax);
    expect(bytes).toBeLessThanOrEqual(limits.dynamoItemBytesMax);
  });
});
