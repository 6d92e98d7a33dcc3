import { limits } from './limits.ts';
import type { Invalid, Valid } from './validation.ts';

/**
 * Leases, locks and elections as keys of the store itself, so they live in the shards' logs:
 * every change is fenced by the shard leader's epoch, replicated, watchable and carried through
 * a promotion. They sit under a reserved prefix that user writes may not touch.
 *
 * - a lease: `__epochkv/lease/{<id>}` holding {"ttlMs": n}; each key attached to it has an
 *   attachment `__epochkv/lease/{<id>}/key/<key>`. The hash tag keeps a lease and its attachments
 *   on one shard, whose leader alone judges the lease's expiry (LeaseClock).
 * - a lock: `__epochkv/lock/<name>` holding {"leaseId": id}; its token is the key's version (the
 *   log index of the acquisition), so tokens only grow, across failovers and promotions alike.
 * - an election: `__epochkv/election/<name>` (the leader, token = its version) and
 *   `__epochkv/election/<name>/value` (what the leader proclaims).
 */
export const reservedPrefix = '__epochkv/';

export function isReservedKey(key: string): boolean {
  return key.startsWith(reservedPrefix);
}

export function leaseKey(id: string): string {
  return `${reservedPrefix}lease/{${id}}`;
}

export function leaseAttachmentPrefix(id: string): string {
  return `${leaseKey(id)}/key/`;
}

export function lockKey(name: string): string {
  return `${reservedPrefix}lock/${name}`;
}

export function electionKey(name: string): string {
  return `${reservedPrefix}election/${name}`;
}

export function electionValueKey(name: string): string {
  return `${electionKey(name)}/value`;
}

/** The lease id of a lease key or an attachment, and the attached key; undefined for other keys. */
export function parseLeaseKey(key: string): { id: string; attached: string | undefined } | undefined {
  const match = /^__epochkv\/lease\/\{([0-9a-f-]{1,64})\}(?:\/key\/([\s\S]+))?$/.exec(key);
  if (match === null) return undefined;
  return { id: match[1]!, attached: match[2] };
}

const namePattern = /^[A-Za-z0-9._:-]{1,200}$/;

/** Lock and election names: 1–200 of A–Z a–z 0–9 . _ : - (they become part of a key and a header). */
export function validateName(name: string, what: 'lock' | 'election'): Valid<string> | Invalid {
  if (namePattern.test(name)) return { ok: true, value: name };
  return { ok: false, field: 'name', message: `a ${what} name is 1 to 200 characters of A-Z a-z 0-9 . _ : -, got "${name.slice(0, 40)}"` };
}

const leaseIdPattern = /^[0-9a-f-]{1,64}$/;

export function validateLeaseId(id: string): Valid<string> | Invalid {
  if (leaseIdPattern.test(id)) return { ok: true, value: id };
  return { ok: false, field: 'leaseId', message: `a lease id is what POST /leases answered (lowercase hex and -), got "${id.slice(0, 40)}"` };
}

export function validateTtlMs(ttlMs: unknown): Valid<number> | Invalid {
  if (typeof ttlMs === 'number' && Number.isSafeInteger(ttlMs) && ttlMs >= limits.leaseTtlMsMin && ttlMs <= limits.leaseTtlMsMax) return { ok: true, value: ttlMs };
  return { ok: false, field: 'ttlMs', message: `ttlMs must be an integer from ${limits.leaseTtlMsMin} to ${limits.leaseTtlMsMax}, got ${JSON.stringify(ttlMs)?.slice(0, 40)}` };
}

/** `X-Epochkv-Fence: <lock name>:<token>`. */
export function parseFence(header: string): Valid<{ name: string; token: number }> | Invalid {
  const at = header.lastIndexOf(':');
  const name = header.slice(0, at);
  const token = header.slice(at + 1);
  if (at <= 0 || !namePattern.test(name) || !/^[1-9][0-9]{0,15}$/.test(token)) {
    return { ok: false, field: 'X-Epochkv-Fence', message: 'X-Epochkv-Fence must be <lock name>:<token>, as POST /locks/{name} answered (for example "cron:42")' };
  }
  return { ok: true, value: { name, token: Number(token) } };
}

export function encodeJson(value: Record<string, unknown>): Uint8Array {
  return new Uint8Array(Buffer.from(JSON.stringify(value), 'utf8'));
}

export function decodeJson(bytes: Uint8Array | undefined): Record<string, unknown> | undefined {
  if (bytes === undefined) return undefined;
  try {
    const value = JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** A lease as its shard's leader reads it: its id, the version of its key (a keepalive moves it) and its ttl. */
export interface ObservedLease {
  id: string;
  version: number;
  ttlMs: number;
}

/** What a leader hands its successor: per lease, the version it last saw and the time left then. */
export type CarriedLeaseClock = ReadonlyMap<string, { version: number; remainingMs: number }>;

/**
 * Lease expiry judged on one machine's monotonic clock: the shard leader's. A lease's time starts
 * when the leader first sees its key at a version (a grant or a keepalive: both rewrite the key),
 * never from a timestamp another machine wrote, so no two clocks are compared. The leader
 * sees a keepalive after the client sent it, so no lease ends before ttl after the client's last
 * keepalive. A new leader starts from what its predecessor carried (the time left, written
 * every tick), so a failover adds at most a lease and a tick or two, not another ttl.
 * Pure: the caller passes the time in.
 */
export class LeaseClock {
  readonly #deadlines = new Map<string, { version: number; deadlineMs: number }>();

  /** Takes the leases seen now; returns those whose time is up. */
  observe(nowMs: number, leases: readonly ObservedLease[], carried: CarriedLeaseClock | undefined): ObservedLease[] {
    const seen = new Set<string>();
    const expired: ObservedLease[] = [];
    for (const lease of leases) {
      seen.add(lease.id);
      const known = this.#deadlines.get(lease.id);
      if (known === undefined || known.version !== lease.version) {
        const handed = known === undefined ? carried?.get(lease.id) : undefined;
        const remainingMs = handed !== undefined && handed.version === lease.version ? Math.min(handed.remainingMs, lease.ttlMs) : lease.ttlMs;
        this.#deadlines.set(lease.id, { version: lease.version, deadlineMs: nowMs + remainingMs });
      }
      if (nowMs >= this.#deadlines.get(lease.id)!.deadlineMs) expired.push(lease);
    }
    for (const id of [...this.#deadlines.keys()]) if (!seen.has(id)) this.#deadlines.delete(id);
    return expired;
  }

  /** Time left per lease now, for a successor. */
  carry(nowMs: number): Map<string, { version: number; remainingMs: number }> {
    return new Map([...this.#deadlines].map(([id, { version, deadlineMs }]) => [id, { version, remainingMs: Math.max(0, deadlineMs - nowMs) }]));
  }
}
