import { createHash } from 'node:crypto';
import { assert } from './assert.ts';
import { limits } from './limits.ts';

/**
 * The part of a key that decides its shard, with Redis Cluster's hash-tag rule: the text
 * between the first `{` and the first `}` after it, when that text is not empty. Keys that
 * must change together in one transaction share a tag, hence a shard: `{user42}/profile`
 * and `{user42}/cart`. An empty tag (`{}x`) hashes the whole key, as in Redis, so that `{}`
 * cannot pile unrelated keys onto one shard by accident.
 */
export function hashTagOf(key: string): string {
  const openIndex = key.indexOf('{');
  if (openIndex === -1) return key;
  const closeIndex = key.indexOf('}', openIndex + 1);
  if (closeIndex === -1) return key;
  if (closeIndex === openIndex + 1) return key;
  return key.slice(openIndex + 1, closeIndex);
}

/**
 * The shard of a key: the first 4 bytes of SHA-256 over the UTF-8 of its hash tag, read as a
 * big-endian uint32, modulo the shard count. SHA-256 rather than a faster hash because the
 * mapping must never change across Node versions, platforms or languages: every region and
 * every future tool has to agree on it, and SHA-256 is specified everywhere.
 */
export function shardOf(key: string, shardCount: number): number {
  assertShardCount(shardCount);
  const digest = createHash('sha256').update(hashTagOf(key), 'utf8').digest();
  const shard = digest.readUInt32BE(0) % shardCount;
  assert(shard >= 0 && shard < shardCount, 'a shard must be within 0..shardCount-1');
  return shard;
}

/** All shard ids of a cluster, in order: [0, 1, ..., shardCount - 1]. */
export function shardIds(shardCount: number): number[] {
  assertShardCount(shardCount);
  return Array.from({ length: shardCount }, (_, shard) => shard);
}

function assertShardCount(shardCount: number): void {
  assert(
    Number.isInteger(shardCount) && shardCount >= 1 && shardCount <= limits.shardsMax,
    `shardCount must be an integer from 1 to ${limits.shardsMax}, got ${shardCount}`,
  );
}
