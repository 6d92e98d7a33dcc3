import { describe, expect, it } from 'vitest';
import { LeaseClock, parseFence, parseLeaseKey, leaseAttachmentPrefix, leaseKey } from '../../lib/core/coordination.ts';
import { shardOf } from '../../lib/core/shard.ts';

describe('Class: LeaseClock', () => {
  const lease = (version: number) => ({ id: 'l1', version, ttlMs: 1_000 });

  it('expires a lease ttl after its leader first saw it, never before, and starts again at each keepalive (a new version)', () => {
    const clock = new LeaseClock();
    expect(clock.observe(0, [lease(1)], undefined)).toEqual([]);
    expect(clock.observe(999, [lease(1)], undefined)).toEqual([]);
    // A keepalive rewrote the key: a new version, a new ttl from now.
    expect(clock.observe(999, [lease(2)], undefined)).toEqual([]);
    expect(clock.observe(1_998, [lease(2)], undefined)).toEqual([]);
    expect(clock.observe(1_999, [lease(2)], undefined)).toEqual([lease(2)]);
  });

  it('takes over what its predecessor carried, so a failover does not add another ttl', () => {
    const old = new LeaseClock();
    old.observe(0, [lease(1)], undefined);
    const carried = old.carry(600);
    expect(carried.get('l1')).toEqual({ version: 1, remainingMs: 400 });
    const successor = new LeaseClock();
    // The successor takes over 2 s later (a lease): 400 ms left from then, not a whole ttl.
    expect(successor.observe(10_000, [lease(1)], carried)).toEqual([]);
    expect(successor.observe(10_399, [lease(1)], carried)).toEqual([]);
    expect(successor.observe(10_400, [lease(1)], carried)).toEqual([lease(1)]);
    // A keepalive the predecessor never saw: the whole ttl from the successor's first sight.
    const fresh = new LeaseClock();
    expect(fresh.observe(10_000, [lease(2)], carried)).toEqual([]);
    expect(fresh.observe(10_999, [lease(2)], carried)).toEqual([]);
  });
});

describe('Keys of leases and locks', () => {
  it('keep a lease and its attachments on one shard, and parse back', () => {
    const id = '0f3c6a1e-5b7d-4e2a-9c1b-2d3e4f5a6b7c';
    expect(shardOf(`${leaseAttachmentPrefix(id)}some/key`, 8)).toBe(shardOf(leaseKey(id), 8));
    expect(parseLeaseKey(leaseKey(id))).toEqual({ id, attached: undefined });
    expect(parseLeaseKey(`${leaseAttachmentPrefix(id)}a/b`)).toEqual({ id, attached: 'a/b' });
    expect(parseLeaseKey('user/key')).toBeUndefined();
  });

  it('parses a fence header and says what a good one looks like', () => {
    expect(parseFence('cron:42')).toEqual({ ok: true, value: { name: 'cron', token: 42 } });
    expect(parseFence('a:b:7')).toEqual({ ok: true, value: { name: 'a:b', token: 7 } });
    for (const bad of ['cron', 'cron:', ':4', 'cron:0', 'cron:x', 'bad name:3']) expect(parseFence(bad)).toMatchObject({ ok: false, message: expect.stringContaining('<lock name>:<token>') });
  });
});
