import { randomUUID } from 'node:crypto';
import { sleep, type Clock } from '../clock.ts';
import {
  decodeJson,
  electionKey,
  electionValueKey,
  encodeJson,
  leaseAttachmentPrefix,
  leaseKey,
  lockKey,
} from '../core/coordination.ts';
import { limits } from '../core/limits.ts';
import type { SessionToken } from '../core/session.ts';
import type { TxnCompare, TxnOp, TxnRequest } from '../core/txn.ts';
import { FenceRejectedError, LeaseNotFoundError, LockHeldError, ValidationError } from '../ports/errors.ts';
import type { KvItem } from '../ports/store.ts';
import type { Fence, Idempotency, KvService, TxnResult } from './kv-service.ts';

/** How often a waiting lock or campaign tries again. */
const lockPollMs = 100;
/** Attached keys deleted per transaction when a lease ends: 2 ops each, within the 64 ops of a branch. */
const revokeKeysPerTxn = 30;

export interface LeaseInfo {
  id: string;
  ttlMs: number;
}

/** Who holds a lock (or leads an election): the key's version is the token. */
export interface Holder {
  token: number;
  leaseId: string;
}

/**
 * Leases, locks and elections (see lib/core/coordination.ts for how they are kept as keys),
 * every change a transaction through KvService.txn: fenced by the shard leaders' epochs, in the
 * logs, replicated. Expiry is the shard leader's (lib/service/lease-expiry.ts).
 */
export class CoordinationService {
  constructor(
    readonly kv: KvService,
    private readonly clock: Clock,
  ) {}

  async grantLease(ttlMs: number): Promise<LeaseInfo> {
    const id = randomUUID();
    await this.#commit({ compare: [{ key: leaseKey(id), absent: true }], success: [{ op: 'put', key: leaseKey(id), value: encodeJson({ ttlMs }) }], failure: [] });
    return { id, ttlMs };
  }

  /** Rewrites the lease's key (same bytes, a new version): its leader starts the ttl again. */
  async keepAlive(id: string): Promise<LeaseInfo> {
    const lease = await this.#lease(id);
    const done = await this.#commit({ compare: [{ key: leaseKey(id), value: lease.value }], success: [{ op: 'put', key: leaseKey(id), value: lease.value }], failure: [] });
    if (!done.succeeded) throw new LeaseNotFoundError(id);
    return { id, ttlMs: lease.ttlMs };
  }

  async leaseInfo(id: string): Promise<LeaseInfo & { keys: string[] }> {
    const lease = await this.#lease(id);
    return { id, ttlMs: lease.ttlMs, keys: await this.#attachedKeys(id) };
  }

  /** Deletes the lease, then every key attached to it (locks and elections included), through the log. */
  async revokeLease(id: string, expectedVersion?: number): Promise<{ keysDeleted: number } | undefined> {
    const lease = await this.kv.read(leaseKey(id), 'strong', {});
    if (lease.item === undefined || (expectedVersion !== undefined && lease.item.version !== expectedVersion)) return undefined;
    // The lease key first, on condition it is as read: a keepalive that lands first wins.
    const gone = await this.#commit({ compare: [{ key: leaseKey(id), version: lease.item.version }], success: [{ op: 'delete', key: leaseKey(id) }], failure: [] });
    if (!gone.succeeded) return undefined;
    return { keysDeleted: await this.deleteAttached(id) };
  }

  /** Deletes what is attached to a lease that is gone (also after a revoke cut short); returns how many keys. */
  async deleteAttached(id: string): Promise<number> {
    let deleted = 0;
    for (;;) {
      const keys = await this.#attachedKeys(id);
      if (keys.length === 0) return deleted;
      // A lock or a leadership goes only while this lease still holds it: released and taken by
      // another holder meanwhile, it is not this lease's to delete (only its attachment is).
      const owned = keys.filter((key) => key.startsWith(lockKey('')) || key.startsWith(electionKey('')));
      for (const key of owned.slice(0, revokeKeysPerTxn)) {
        const attachment: TxnOp = { op: 'delete', key: `${leaseAttachmentPrefix(id)}${key}` };
        const done = await this.#commit({ compare: [{ key, value: encodeJson({ leaseId: id }) }], success: [{ op: 'delete', key }, attachment], failure: [attachment] });
        if (done.succeeded) deleted += 1;
      }
      const batch = keys.filter((key) => !owned.includes(key)).slice(0, revokeKeysPerTxn);
      if (batch.length === 0) continue;
      // A key already gone (deleted by its owner) fails nothing: a transaction's delete of a missing key is a no-op.
      await this.#commit({ compare: [], success: batch.flatMap((key): TxnOp[] => [{ op: 'delete', key }, { op: 'delete', key: `${leaseAttachmentPrefix(id)}${key}` }]), failure: [] });
      deleted += batch.length;
    }
  }

  /** Attaches a key to a lease in the same transaction as its write (the lease must exist). */
  async putWithLease(key: string, value: Uint8Array, id: string, token: SessionToken, fence: Fence | undefined, compare: TxnCompare[] = [], idempotency?: Idempotency): Promise<TxnResult> {
    const lease = await this.#lease(id);
    const done = await this.kv.txn(
      {
        compare: [{ key: leaseKey(id), value: lease.value }, ...compare],
        success: [{ op: 'put', key, value }, { op: 'put', key: `${leaseAttachmentPrefix(id)}${key}`, value: new Uint8Array(0) }],
        failure: [{ op: 'get', key }, { op: 'get', key: leaseKey(id) }],
      },
      token,
      { fence, idempotency },
    );
    const leaseNow = done.results[1];
    if (!done.succeeded && leaseNow?.op === 'get' && !leaseNow.found) throw new LeaseNotFoundError(id);
    return done;
  }

  /** Time left as the lease's shard leader last wrote it (a tick old at most); the full ttl until it has. */
  async remainingMs(id: string, ttlMs: number): Promise<number> {
    const [lease, carried] = await Promise.all([this.kv.read(leaseKey(id), 'strong', {}), this.kv.store.readLeaseClock(this.kv.shardOf(leaseKey(id)))]);
    const known = carried.get(id);
    return known !== undefined && known.version === lease.item?.version ? known.remainingMs : ttlMs;
  }

  async acquireLock(name: string, owner: { leaseId?: string | undefined; ttlMs?: number | undefined }, waitMs: number): Promise<Holder> {
    return this.#acquire(lockKey(name), `lock "${name}"`, owner, waitMs, []);
  }

  async lockHolder(name: string): Promise<Holder | undefined> {
    return this.#holder(lockKey(name));
  }

  async releaseLock(name: string, token: number): Promise<void> {
    await this.#release(lockKey(name), `lock "${name}"`, token, []);
  }

  async campaign(name: string, owner: { leaseId?: string | undefined; ttlMs?: number | undefined }, value: Uint8Array, waitMs: number): Promise<Holder> {
    return this.#acquire(electionKey(name), `election "${name}"`, owner, waitMs, [{ op: 'put', key: electionValueKey(name), value }]);
  }

  async leader(name: string): Promise<(Holder & { value: Uint8Array }) | undefined> {
    const [holder, value] = await Promise.all([this.#holder(electionKey(name)), this.kv.read(electionValueKey(name), 'strong', {})]);
    if (holder === undefined) return undefined;
    return { ...holder, value: value.item?.value ?? new Uint8Array(0) };
  }

  /** The leader changes its value; the token stays (it is the leadership key's version). */
  async proclaim(name: string, token: number, value: Uint8Array): Promise<void> {
    const done = await this.kv.txn({ compare: [{ key: electionKey(name), version: token }], success: [{ op: 'put', key: electionValueKey(name), value }], failure: [{ op: 'get', key: electionKey(name) }] }, {});
    if (!done.succeeded) throw this.#fenceRejected(`election "${name}"`, token, done);
  }

  async resign(name: string, token: number): Promise<void> {
    await this.#release(electionKey(name), `election "${name}"`, token, [{ op: 'delete', key: electionValueKey(name) }]);
  }

  async #acquire(key: string, what: string, owner: { leaseId?: string | undefined; ttlMs?: number | undefined }, waitMs: number, alsoPut: TxnOp[]): Promise<Holder> {
    if ((owner.leaseId === undefined) === (owner.ttlMs === undefined)) throw new ValidationError('body', 'send exactly one of "leaseId" (a lease from POST /leases) or "ttlMs" (a new lease for this holder)');
    const leaseId = owner.leaseId ?? (await this.grantLease(owner.ttlMs!)).id;
    const lease = await this.#lease(leaseId);
    const startMs = this.clock.monotonicMs();
    for (;;) {
      const done = await this.#commit({
        compare: [{ key, absent: true }, { key: leaseKey(leaseId), value: lease.value }],
        success: [{ op: 'put', key, value: encodeJson({ leaseId }) }, { op: 'put', key: `${leaseAttachmentPrefix(leaseId)}${key}`, value: new Uint8Array(0) }, ...alsoPut],
        failure: [{ op: 'get', key }, { op: 'get', key: leaseKey(leaseId) }],
      });
      if (done.succeeded) return { token: done.results[0]!.op === 'put' ? (done.results[0] as { version: number }).version : 0, leaseId };
      const [held, leaseNow] = done.results;
      if (leaseNow?.op === 'get' && !leaseNow.found) throw new LeaseNotFoundError(leaseId);
      const token = held?.op === 'get' && held.found ? held.version : 0;
      if (this.clock.monotonicMs() - startMs + lockPollMs > waitMs) {
        throw new LockHeldError(`${what} is held (token ${token}); waited ${waitMs} ms. Retry, or wait longer with waitMs (at most ${limits.lockWaitMsMax})`, token);
      }
      await sleep(lockPollMs);
    }
  }

  async #release(key: string, what: string, token: number, alsoDelete: TxnOp[]): Promise<void> {
    const holder = await this.#holder(key);
    const done = await this.#commit({
      compare: [{ key, version: token }],
      success: [{ op: 'delete', key }, ...(holder === undefined ? [] : [{ op: 'delete' as const, key: `${leaseAttachmentPrefix(holder.leaseId)}${key}` }]), ...alsoDelete],
      failure: [{ op: 'get', key }],
    });
    if (!done.succeeded) throw this.#fenceRejected(what, token, done);
  }

  #fenceRejected(what: string, token: number, done: TxnResult): FenceRejectedError {
    const current = done.results[0];
    const held = current?.op === 'get' && current.found ? current.version : undefined;
    return new FenceRejectedError(`${what} is ${held === undefined ? 'not held' : `held with token ${held}`}, not ${token}; nothing was changed`, held);
  }

  async #holder(key: string): Promise<Holder | undefined> {
    const read = await this.kv.read(key, 'strong', {});
    if (read.item === undefined) return undefined;
    const leaseId = decodeJson(read.item.value)?.leaseId;
    return { token: read.item.version, leaseId: typeof leaseId === 'string' ? leaseId : '' };
  }

  async #lease(id: string): Promise<{ value: Uint8Array; ttlMs: number; item: KvItem }> {
    const read = await this.kv.read(leaseKey(id), 'strong', {});
    const ttlMs = decodeJson(read.item?.value)?.ttlMs;
    if (read.item === undefined || typeof ttlMs !== 'number') throw new LeaseNotFoundError(id);
    return { value: read.item.value, ttlMs, item: read.item };
  }

  async #attachedKeys(id: string): Promise<string[]> {
    const prefix = leaseAttachmentPrefix(id);
    const keys: string[] = [];
    let after: string | undefined;
    do {
      const page = await this.kv.list(prefix, limits.listLimitMax, after, 'strong');
      keys.push(...page.items.map((item) => item.key.slice(prefix.length)));
      after = page.next;
    } while (after !== undefined);
    return keys;
  }

  #commit(request: TxnRequest): Promise<TxnResult> {
    return this.kv.txn(request, {});
  }
}
