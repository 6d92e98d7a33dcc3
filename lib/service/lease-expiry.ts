import type { Clock } from '../clock.ts';
import { decodeJson, LeaseClock, parseLeaseKey, reservedPrefix, type ObservedLease } from '../core/coordination.ts';
import type { Store } from '../ports/store.ts';
import type { CoordinationService } from './coordination.ts';

/** Lease keys and attachments read per shard per run (pages of 1000), bounded. */
const leasePagesMax = 10;

/**
 * The shard leader's lease duty, once a tick: read the shard's leases, judge their time on this
 * node's monotonic clock (LeaseClock), revoke the expired ones through the log (their attached
 * keys, locks and elections with them), clean attachments whose lease is gone, and write the
 * time left for a successor.
 */
export class LeaseExpirer {
  readonly #clocks = new Map<number, LeaseClock>();
  /** Shards whose stored carry may hold leases: written until it is empty once. */
  readonly #carrying = new Set<number>();

  constructor(
    private readonly deps: { store: Store; coordination: CoordinationService; clock: Clock; log: (line: string) => void; label: string },
  ) {}

  async run(leading: number[]): Promise<void> {
    // A shard no longer led starts from its successor's carry if it comes back.
    for (const shard of [...this.#clocks.keys()]) if (!leading.includes(shard)) this.#clocks.delete(shard);
    await Promise.all(leading.map((shard) => this.#runShard(shard).catch((error: unknown) => this.deps.log(`${this.deps.label} shard ${shard}: lease expiry failed: ${String(error)}`))));
  }

  async #runShard(shard: number): Promise<void> {
    const { store, coordination, clock, log, label } = this.deps;
    const leases: ObservedLease[] = [];
    const attached = new Set<string>();
    let after: string | undefined;
    for (let page = 0; page < leasePagesMax; page += 1) {
      const found = await store.listShard(shard, `${reservedPrefix}lease/`, 1000, after);
      for (const item of found.items) {
        const parsed = parseLeaseKey(item.key);
        if (parsed === undefined || item.tombstone === true) continue;
        if (parsed.attached !== undefined) {
          attached.add(parsed.id);
          continue;
        }
        const ttlMs = decodeJson(item.value)?.ttlMs;
        if (typeof ttlMs === 'number') leases.push({ id: parsed.id, version: item.version, ttlMs });
      }
      after = found.next;
      if (after === undefined) break;
    }
    let leaseClock = this.#clocks.get(shard);
    const carried = leaseClock === undefined ? await store.readLeaseClock(shard) : undefined;
    if (leaseClock === undefined) {
      leaseClock = new LeaseClock();
      this.#clocks.set(shard, leaseClock);
    }
    const expired = leaseClock.observe(clock.monotonicMs(), leases, carried);
    for (const lease of expired) {
      const revoked = await coordination.revokeLease(lease.id, lease.version);
      if (revoked !== undefined) log(`${label} shard ${shard}: lease ${lease.id} expired (ttl ${lease.ttlMs} ms); ${revoked.keysDeleted} attached keys deleted`);
    }
    // A revoke cut short (an API environment that died) leaves attachments without a lease.
    const live = new Set(leases.map((lease) => lease.id));
    for (const id of attached) if (!live.has(id)) await coordination.deleteAttached(id);
    if ((carried?.size ?? 0) > 0) this.#carrying.add(shard);
    if (leases.length === 0 && !this.#carrying.has(shard)) return;
    await store.writeLeaseClock(shard, leaseClock.carry(clock.monotonicMs()));
    if (leases.length === 0) this.#carrying.delete(shard);
    else this.#carrying.add(shard);
  }
}
