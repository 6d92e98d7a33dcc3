import { assert } from './assert.ts';
import { checkTimings } from './limits.ts';

/**
 * The per-shard lease as stored in the home `control` table. `version` changes on every
 * write (renewal, takeover, release); `epoch` changes only when leadership changes hands and
 * is the fencing token every log append is checked against.
 */
export interface LeaseRecord {
  shard: number;
  /** Node id of the holder; undefined when the shard is free (released or never held). */
  holder: string | undefined;
  /** The holder's invocation (a node runs as overlapping invocations); undefined when free. */
  incarnation: string | undefined;
  epoch: number;
  version: number;
  /** Wall-clock time of the last write by the holder. Never used for safety: only by the API's liveness gate and status. */
  renewedAtMs: number;
  /**
   * Set by a takeover until the new leader's `leader` marker entry is in the log. Writers
   * wait while it is set, so the marker is the first entry of every epoch.
   */
  markerPending?: boolean;
  /** The epoch this one replaced (for the marker entry). */
  previousEpoch?: number;
  /** Set by a promotion in the old home: the region that is home now. Nobody may take the lease. */
  movedTo?: string;
}

export type AcquireReason = 'free' | 'expired' | 'own-incarnation' | 'leaderless';

export type LeaseAction =
  /** Conditional on holder, incarnation and epoch all being ours. */
  | { type: 'renew'; shard: number; epoch: number }
  /** Append the `leader` marker entry of a lease we took but whose marker is not in the log yet. */
  | { type: 'mark'; shard: number; epoch: number; previousEpoch: number }
  /**
   * Conditional on the version we saw (or on the item not existing). `epoch` is the new epoch.
   * The caller appends the `leader` marker entry in the same transaction.
   */
  | {
      type: 'acquire';
      shard: number;
      expectedVersion: number | undefined;
      /** Set when taking over from this node's older incarnation: conditional on it (and `previousEpoch`) instead of the version. */
      expectedIncarnation?: string | undefined;
      epoch: number;
      previousEpoch: number;
      reason: AcquireReason;
    }
  /** Give a shard back so an under-loaded node can take it; conditional like a renewal. */
  | { type: 'release'; shard: number; epoch: number };

export type ActionOutcome = 'ok' | 'conflict' | 'error';

export interface ElectionOptions {
  node: string;
  /** Comparable identity of this invocation: a newer incarnation sorts after an older one. */
  incarnation: string;
  shardCount: number;
  leaseMs: number;
  tickMs: number;
}

export interface Observation {
  /** Local monotonic time elapsed since the previous observation (0 for the first). */
  elapsedMs: number;
  /** Every existing lease item; a shard without one has never been held. */
  leases: readonly LeaseRecord[];
  /** Nodes the failure detector currently sees alive (this node counts itself). */
  aliveNodes: readonly string[];
  /** True in the last part of an invocation: keep renewing, take nothing new. */
  draining: boolean;
  /** False on observations between ticks: decide takeovers, but do not renew (default true). */
  renewDue?: boolean;
}

interface ShardView {
  record: LeaseRecord | undefined;
  /** Local elapsed time during which the lease version stayed the same. */
  unchangedMs: number;
  /** True once this node saw its renewal or takeover refused: it must not act on older observations. */
  steppedDown: boolean;
}

/**
 * The per-shard lease/election state machine of one node incarnation. Pure: it takes
 * observed lease items and elapsed ticks and returns the conditional writes to attempt; the
 * caller performs them and reports each outcome. Safety never rests on these decisions —
 * every write is conditional and every log append checks the epoch — only liveness and the
 * spreading of leaderships do.
 */
export class Election {
  readonly #options: ElectionOptions;
  readonly #shards: ShardView[];
  #observed = false;
  #aliveCount = 1;
  /** Local time since this node last released a shard: releases are spaced by a lease. */
  #sinceReleaseMs: number;
  /** The last shard this node released, until it is seen held again. */
  #releasedShard: number | undefined;
  /**
   * The alive set (sorted, comma-joined) in which a shard this node released came back to it:
   * the nodes that looked under-loaded did not take it (draining, or alive only to the failure
   * detector). Releasing again in the same alive set would only cycle shards through outages.
   */
  #releaseFutileFor: string | undefined;
  #aliveKey = '';

  constructor(options: ElectionOptions) {
    checkTimings(options);
    assert(Number.isInteger(options.shardCount) && options.shardCount >= 1, 'shardCount must be a positive integer');
    assert(options.node.length > 0 && options.incarnation.length > 0, 'node and incarnation must be non-empty');
    this.#options = options;
    this.#shards = Array.from({ length: options.shardCount }, () => ({ record: undefined, unchangedMs: 0, steppedDown: false }));
    this.#sinceReleaseMs = 0;
    this.#releasedShard = undefined;
    this.#releaseFutileFor = undefined;
  }

  /** Feeds one consistent read of all leases; returns the writes to attempt this tick. */
  tick(observation: Observation): LeaseAction[] {
    assert(observation.elapsedMs >= 0, 'elapsedMs must not be negative');
    this.#observe(observation);
    return this.#decide(observation);
  }

  /** Reports the outcome of an action returned by `tick`. */
  onOutcome(action: LeaseAction, outcome: ActionOutcome, stored?: LeaseRecord): void {
    const view = this.#view(action.shard);
    if (outcome === 'ok') {
      assert(stored !== undefined, 'a successful lease write must report the stored record');
      assert(stored.shard === action.shard, 'stored record is for another shard');
      if (stored.version !== view.record?.version) view.unchangedMs = 0;
      view.record = stored;
      view.steppedDown = false;
      if (action.type === 'release') {
        this.#sinceReleaseMs = 0;
        this.#releasedShard = action.shard;
      }
      return;
    }
    if (outcome === 'conflict') {
      // Someone else wrote the lease: whatever we believed is stale. Step down at once and
      // wait for the next consistent read.
      view.steppedDown = true;
    }
    // 'error': the write may or may not have happened. The next read tells; the conditions
    // make a retry safe either way.
  }

  /**
   * The holder gives a shard up without a write: its renewals have not been acknowledged for
   * about a lease (its store hangs or is unreachable), so another node may take the shard over
   * any moment. It acts as after a refused renewal: no more renewals or commits until a
   * consistent read shows the lease moved (or, when a renewal did land, still ours).
   */
  stepDown(shard: number): void {
    this.#view(shard).steppedDown = true;
  }

  /** Shards this incarnation holds as far as it knows (after the last outcome). */
  leading(): number[] {
    return this.#shards.flatMap((view, shard) => (this.#isMine(view) ? [shard] : []));
  }

  epochOf(shard: number): number | undefined {
    const view = this.#view(shard);
    return this.#isMine(view) ? view.record?.epoch : undefined;
  }

  /**
   * Local ms until the earliest lease held by another node could be taken over, if no
   * renewal shows up before then. The caller observes again at that moment rather than at
   * its next regular tick, so a takeover is not delayed by up to a tick.
   */
  msUntilTakeover(): number | undefined {
    let earliest: number | undefined;
    for (const view of this.#shards) {
      const holder = view.record?.holder;
      if (holder === undefined || holder === this.#options.node) continue;
      const remaining = this.#options.leaseMs - view.unchangedMs;
      if (remaining > 0 && (earliest === undefined || remaining < earliest)) earliest = remaining;
    }
    return earliest;
  }

  /** How many shards a node should lead when leaderships are spread over the alive nodes. */
  fairShare(): number {
    return Math.ceil(this.#options.shardCount / Math.max(1, this.#aliveCount));
  }

  #observe(observation: Observation): void {
    const seen = new Map<number, LeaseRecord>();
    for (const record of observation.leases) {
      if (record.shard < 0 || record.shard >= this.#options.shardCount) continue;
      seen.set(record.shard, record);
    }
    for (const [shard, view] of this.#shards.entries()) {
      const record = seen.get(shard);
      const changed = record?.version !== view.record?.version || record?.epoch !== view.record?.epoch;
      if (changed || !this.#observed) {
        view.unchangedMs = 0;
        view.steppedDown = false;
      } else {
        view.unchangedMs += observation.elapsedMs;
      }
      view.record = record;
    }
    this.#observed = true;
    this.#sinceReleaseMs += observation.elapsedMs;
    const alive = new Set(observation.aliveNodes);
    alive.add(this.#options.node);
    this.#aliveCount = alive.size;
    this.#aliveKey = [...alive].sort().join(',');
    if (this.#releasedShard !== undefined) {
      const holder = this.#view(this.#releasedShard).record?.holder;
      if (holder === this.#options.node) this.#releaseFutileFor = this.#aliveKey;
      if (holder !== undefined) this.#releasedShard = undefined;
    }
  }

  #decide(observation: Observation): LeaseAction[] {
    const { node } = this.#options;
    const actions: LeaseAction[] = [];
    const fairShare = this.fairShare();
    const counts = this.#countsByNode();
    let mine = counts.get(node) ?? 0;

    for (const [shard, view] of this.#shards.entries()) {
      if (!this.#isMine(view)) continue;
      const record = view.record!;
      if (observation.renewDue !== false) actions.push({ type: 'renew', shard, epoch: record.epoch });
      if (record.markerPending === true) actions.push({ type: 'mark', shard, epoch: record.epoch, previousEpoch: record.previousEpoch ?? 0 });
    }

    for (const shard of this.#preferenceOrder()) {
      const view = this.#view(shard);
      if (this.#isMine(view) || view.steppedDown) continue;
      const reason = this.#acquireReason(view);
      if (reason === undefined) continue;
      // A draining incarnation takes no free shard (its successor will), but still takes a
      // lease whose holder is gone: liveness first. Its successor then takes it over at once.
      if (observation.draining && (reason === 'free' || reason === 'own-incarnation')) continue;
      const leaderless = reason === 'leaderless';
      const ownIncarnation = reason === 'own-incarnation';
      // Taking a shard from our own older incarnation moves no load between nodes.
      if (!ownIncarnation && !leaderless && mine >= fairShare) continue;
      const record = view.record;
      actions.push({
        type: 'acquire',
        shard,
        expectedVersion: record?.version,
        // From our own older incarnation the condition is on who holds it, not on the
        // version: the older one keeps renewing (changing the version) until it sees this.
        expectedIncarnation: ownIncarnation ? record?.incarnation : undefined,
        epoch: (record?.epoch ?? 0) + 1,
        previousEpoch: record?.epoch ?? 0,
        reason,
      });
      if (!ownIncarnation) mine += 1;
    }

    const release = this.#maybeRelease(counts, fairShare, observation);
    if (release !== undefined) {
      // A released shard is no longer renewed.
      const index = actions.findIndex((action) => action.type === 'renew' && action.shard === release.shard);
      if (index >= 0) actions.splice(index, 1);
      actions.push(release);
    }
    assert(actions.length <= 2 * this.#options.shardCount, 'at most two actions per shard');
    return actions;
  }

  /** Why this node may take the shard now, or undefined when it must not. */
  #acquireReason(view: ShardView): AcquireReason | undefined {
    const { node, incarnation, leaseMs } = this.#options;
    const record = view.record;
    if (record === undefined || record.holder === undefined) {
      // Free: leaderless since we started watching it (or since it was released).
      return view.unchangedMs >= leaseMs ? 'leaderless' : 'free';
    }
    if (record.holder === node) {
      // The newer invocation of a node takes over its own node's leases at once; an older
      // one never takes them back.
      return (record.incarnation ?? '') < incarnation ? 'own-incarnation' : undefined;
    }
    // Held by another node: only after the version stood still for a whole lease of our own
    // elapsed time. No clocks of two machines are ever compared.
    if (view.unchangedMs < leaseMs) return undefined;
    return view.unchangedMs >= 2 * leaseMs ? 'leaderless' : 'expired';
  }

  #maybeRelease(counts: Map<string, number>, fairShare: number, observation: Observation): LeaseAction | undefined {
    const { node, leaseMs } = this.#options;
    if (observation.draining) return undefined;
    const mine = counts.get(node) ?? 0;
    if (mine <= fairShare) return undefined;
    if (this.#sinceReleaseMs < leaseMs) return undefined;
    // Not while the last released shard is still free, nor after one came back to us unwanted.
    if (this.#releasedShard !== undefined || this.#releaseFutileFor === this.#aliveKey) return undefined;
    // Only when a live node would take it: moving a shard costs a short write outage.
    const underLoaded = observation.aliveNodes.some((other) => {
      const theirs = counts.get(other) ?? 0;
      return other !== node && theirs < fairShare && theirs + 1 < mine;
    });
    if (!underLoaded) return undefined;
    // Give back the shard we like least, so preferences stay stable.
    const order = this.#preferenceOrder().reverse();
    for (const shard of order) {
      const view = this.#view(shard);
      if (this.#isMine(view)) return { type: 'release', shard, epoch: view.record!.epoch };
    }
    return undefined;
  }

  #countsByNode(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const view of this.#shards) {
      const holder = view.record?.holder;
      if (holder === undefined) continue;
      // A lease that stood still for a whole lease is not counted: its holder is gone.
      if (holder !== this.#options.node && view.unchangedMs >= this.#options.leaseMs) continue;
      counts.set(holder, (counts.get(holder) ?? 0) + 1);
    }
    return counts;
  }

  /** Rendezvous order: every node prefers different shards, so a cold start rarely collides. */
  #preferenceOrder(): number[] {
    const { node, shardCount } = this.#options;
    return Array.from({ length: shardCount }, (_, shard) => shard).sort(
      (a, b) => rendezvousScore(node, b) - rendezvousScore(node, a) || a - b,
    );
  }

  #isMine(view: ShardView): boolean {
    const record = view.record;
    return (
      record !== undefined &&
      !view.steppedDown &&
      record.holder === this.#options.node &&
      record.incarnation === this.#options.incarnation
    );
  }

  #view(shard: number): ShardView {
    const view = this.#shards[shard];
    assert(view !== undefined, `shard ${shard} is out of range`);
    return view;
  }
}

/** FNV-1a over `node:shard`: a stable, well-spread score without clocks or randomness. */
export function rendezvousScore(node: string, shard: number): number {
  let hash = 0x811c9dc5;
  const text = `${node}:${shard}`;
  for (let index = 0; index < text.length; index += 1) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  // A final avalanche so nearby inputs do not give nearby scores.
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b) >>> 0;
  hash ^= hash >>> 13;
  return hash >>> 0;
}
