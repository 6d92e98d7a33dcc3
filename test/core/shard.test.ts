import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../lib/core/assert.ts';
import { limits } from '../../lib/core/limits.ts';
import { hashTagOf, shardIds, shardOf } from '../../lib/core/shard.ts';

/** The rule written out independently of the implementation: SHA-256, first 4 bytes big-endian, modulo. */
function referenceShardOf(hashedText: string, shardCount: number): number {
  return createHash('sha256').update(Buffer.from(hashedText, 'utf8')).digest().readUInt32BE(0) % shardCount;
}

describe('Function: hashTagOf', () => {
  it.each([
    ['{user42}/profile', 'user42'],
    ['{user42}/cart', 'user42'],
    ['prefix/{tag}/suffix', 'tag'],
    ['a{b}c{d}', 'b'],
    ['{a{b}c', 'a{b'],
    ['a}b{c}', 'c'],
  ])('returns the text between the first { and the next } of %j', (key, expectedTag) => {
    // Act
    const tag = hashTagOf(key);

    // Assess
    expect(tag).toBe(expectedTag);
  });

  it.each([
    ['plain/key'],
    ['{}x'],
    ['{}{a}'],
    ['x{'],
    ['}{a'],
    ['no-close{here'],
    [''],
  ])('returns the whole key %j when it has no non-empty tag', (key) => {
    // Act
    const tag = hashTagOf(key);

    // Assess
    expect(tag).toBe(key);
  });
});

describe('Function: shardOf', () => {
  it('puts keys that share a hash tag on the same shard', () => {
    // Prepare
    const shardCount = limits.shardsMax;

    // Act
    const profileShard = shardOf('{user42}/profile', shardCount);
    const cartShard = shardOf('{user42}/cart', shardCount);

    // Assess
    expect(profileShard).toBe(cartShard);
    expect(profileShard).toBe(shardOf('user42', shardCount));
  });

  it('hashes the whole key when the tag is empty', () => {
    // Prepare
    const shardCount = limits.shardsMax;

    // Act
    const shard = shardOf('{}x', shardCount);

    // Assess
    expect(shard).toBe(referenceShardOf('{}x', shardCount));
  });

  it('matches the published SHA-256 test vector for "abc" (ba7816bf...)', () => {
    // Prepare: FIPS 180-2 gives SHA-256("abc") = ba7816bf 8f01cfea ...; 0xba7816bf = 3128432319.
    const firstWord = 0xba7816bf;

    // Act
    const shardOf8 = shardOf('abc', 8);
    const shardOf256 = shardOf('{abc}/anything', 256);
    const shardOf255 = shardOf('abc', 255);

    // Assess
    expect(shardOf8).toBe(firstWord % 8);
    expect(shardOf256).toBe(firstWord % 256);
    expect(shardOf255).toBe(firstWord % 255);
  });

  it('follows the rule (SHA-256 of the UTF-8 hash tag, first 4 bytes big-endian, modulo) for many keys', () => {
    // Prepare
    const keys = ['a', 'key/with/slashes', 'with space', 'ünïcödé', '日本語', '🎉emoji', '{t}/1', 'x{}{t}'];

    for (const shardCount of [1, 3, 8, 100, limits.shardsMax]) {
      for (const key of keys) {
        // Act
        const shard = shardOf(key, shardCount);

        // Assess
        expect(shard).toBe(referenceShardOf(hashTagOf(key), shardCount));
      }
    }
  });

  it('is deterministic and within 0..shardCount-1', () => {
    // Prepare
    const keys = Array.from({ length: 200 }, (_, index) => `key-${index}`);

    for (const key of keys) {
      // Act
      const first = shardOf(key, 7);
      const second = shardOf(key, 7);

      // Assess
      expect(first).toBe(second);
      expect(Number.isInteger(first)).toBe(true);
      expect(first).toBeGreaterThanOrEqual(0);
      expect(first).toBeLessThan(7);
    }
  });

  it('spreads 10,000 keys over 8 shards within ±20% of an even share', () => {
    // Prepare
    const shardCount = 8;
    const counts = new Array<number>(shardCount).fill(0);

    // Act
    for (let index = 0; index < 10_000; index += 1) {
      const shard = shardOf(`k${index}`, shardCount);
      counts[shard] = (counts[shard] ?? 0) + 1;
    }

    // Assess
    for (const count of counts) {
      expect(count).toBeGreaterThanOrEqual(1000);
      expect(count).toBeLessThanOrEqual(1500);
    }
    expect(counts.reduce((sum, count) => sum + count, 0)).toBe(10_000);
  });

  it('maps every key to shard 0 when there is one shard', () => {
    // Act
    const shards = ['a', 'b', '{c}d'].map((key) => shardOf(key, 1));

    // Assess
    expect(shards).toEqual([0, 0, 0]);
  });

  it.each([0, -1, 1.5, Number.NaN, limits.shardsMax + 1])('refuses shardCount %s', (shardCount) => {
    // Act
    const act = () => shardOf('key', shardCount);

    // Assess
    expect(act).toThrow(AssertionError);
  });
});

describe('Function: shardIds', () => {
  it('lists every shard id in order', () => {
    // Act
    const ids = shardIds(4);

    // Assess
    expect(ids).toEqual([0, 1, 2, 3]);
  });

  it('lists shardsMax ids at the upper bound', () => {
    // Act
    const ids = shardIds(limits.shardsMax);

    // Assess
    expect(ids).toHaveLength(limits.shardsMax);
    expect(ids.at(-1)).toBe(limits.shardsMax - 1);
  });

  it.each([0, limits.shardsMax + 1, 2.5])('refuses shardCount %s', (shardCount) => {
    // Act
    const act = () => shardIds(shardCount);

    // Assess
    expect(act).toThrow(AssertionError);
  });
});
