import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../lib/core/assert.ts';
import {
  Election,
  rendezvousScore,
  type AcquireReason,
  type ActionOutcome,
  type LeaseAction,
  type LeaseRecord,
} from '../../lib/core/lease.ts';

// The local cloud's timings: a lease of 2 s renewed every 250 ms, 8 shards, 3 nodes.
const leaseMs = 2000;
const tickMs = 250;
const shardCount = 8;
const nodeNames = ['node-a', 'node-b', 'node-c'] as const;
const fairShareOfThree = Math.ceil(shardCount / nodeNames.length);
const allShards = Array.from({ length: shardCount }, (_, shard) => shard);

/** Incarnations as `functions/node.ts` makes them: zero-padded, so a later one sorts after. */
const firstIncarnation = '0001';
const secondIncarnation = '0002';

// ---------------------------------------------------------------------------------------------
// The simulated lease table: the conditional semantics of the `control` table on DynamoDB.
// ---------------------------------------------------------------------------------------------

interface Holder {
  node: string;
  incarnation: string;
}

function holderKey(holder: Holder): string {
  return `${holder.node}/${holder.incarnation}`;
}

/**
 * Every lease item in a Map, written only through the same conditions as the DynamoDB adapter:
 * renew/release only if holder, incarnation and epoch match; acquire only if the version is the
 * expected one (or the item is absent when none is expected); every write bumps the version.
 * Each write is checked against the safety invariant: one holder per (shard, epoch), epochs
 * never decrease.
 */
class LeaseTable {
  readonly #records = new Map<number, LeaseRecord>();
  /** Simulated time each (shard, version) was written: the timing checks compare against it. */
  readonly #writtenAtMs = new Map<string, number>();
  /** The holder that ever stored each (shard, epoch). */
  readonly #epochHolders = new Map<string, string>();

  /** One strongly consistent read of every lease item, as copies. */
  read(): LeaseRecord[] {
    return [...this.#records.values()].sort((a, b) => a.shard - b.shard).map((record) => ({ ...record }));
  }

  get(shard: number): LeaseRecord | undefined {
    const record = this.#records.get(shard);
    return record === undefined ? undefined : { ...record };
  }

  /** When the given version of a shard's lease was written. */
  writtenAtMs(shard: number, version: number): number {
    const atMs = this.#writtenAtMs.get(`${shard}@${version}`);
    if (atMs === undefined) throw new Error(`shard ${shard} never had version ${version}`);
    return atMs;
  }

  apply(action: LeaseAction, holder: Holder, nowMs: number): { outcome: ActionOutcome; stored?: LeaseRecord } {
    const current = this.#records.get(action.shard);
    let next: LeaseRecord;
    if (action.type === 'acquire') {
      // As the DynamoDB adapter: from our own older incarnation the condition is on who holds it.
      const expected =
        action.expectedIncarnation !== undefined
          ? current?.holder === holder.node && current.incarnation === action.expectedIncarnation && current.epoch === action.previousEpoch
          : action.expectedVersion === undefined
            ? current === undefined
            : current?.version === action.expectedVersion;
      if (!expected) return { outcome: 'conflict' };
      next = {
        shard: action.shard,
        holder: holder.node,
        incarnation: holder.incarnation,
        epoch: action.epoch,
        version: (current?.version ?? 0) + 1,
        renewedAtMs: nowMs,
      };
    } else {
      const held =
        current !== undefined &&
        current.holder === holder.node &&
        current.incarnation === holder.incarnation &&
        current.epoch === action.epoch;
      if (!held) return { outcome: 'conflict' };
      next = { ...current, version: current.version + 1, renewedAtMs: nowMs };
      if (action.type === 'release') {
        next.holder = undefined;
        next.incarnation = undefined;
      }
    }
    this.#store(next, nowMs);
    return { outcome: 'ok', stored: { ...next } };
  }

  #store(next: LeaseRecord, nowMs: number): void {
    const previous = this.#records.get(next.shard);
    expect(next.version, `shard ${next.shard}: every write bumps the version by one`).toBe((previous?.version ?? 0) + 1);
    expect(next.epoch, `shard ${next.shard}: epochs never decrease`).toBeGreaterThanOrEqual(previous?.epoch ?? 0);
    if (next.holder !== undefined && next.incarnation !== undefined) {
      const key = `${next.shard}@${next.epoch}`;
      const holder = holderKey({ node: next.holder, incarnation: next.incarnation });
      const earlier = this.#epochHolders.get(key);
      expect(earlier ?? holder, `shard ${next.shard}: two holders for epoch ${next.epoch}`).toBe(holder);
      this.#epochHolders.set(key, holder);
    }
    this.#records.set(next.shard, { ...next });
    this.#writtenAtMs.set(`${next.shard}@${next.version}`, nowMs);
  }
}

// ---------------------------------------------------------------------------------------------
// The simulated cluster: nodes ticking every tickMs of simulated time against the table.
// ---------------------------------------------------------------------------------------------

interface TraceEvent {
  atMs: number;
  node: string;
  incarnation: string;
  action: LeaseAction;
  outcome: ActionOutcome;
}

type AcquireAction = Extract<LeaseAction, { type: 'acquire' }>;
type AcquireEvent = TraceEvent & { action: AcquireAction };

function isAcquire(event: TraceEvent): event is AcquireEvent {
  return event.action.type === 'acquire';
}

interface StartOptions {
  incarnation?: string;
  /** Phase of this node's ticks relative to now; nodes due at the same instant race. */
  offsetMs?: number;
  draining?: boolean;
  /** What this node's failure detector reports; by default every ticking node. */
  aliveNodes?: readonly string[];
}

class SimNode implements Holder {
  readonly election: Election;
  status: 'ticking' | 'paused' | 'crashed' = 'ticking';
  nextTickAtMs: number;
  lastTickAtMs: number | undefined;
  /** Decided but not yet written: a pause between the read and the writes of one tick. */
  pending: LeaseAction[] = [];
  pauseAfterDecide = false;
  lastReleaseAtMs: number | undefined;
  draining: boolean;
  readonly aliveNodes: readonly string[] | undefined;

  constructor(
    readonly node: string,
    readonly incarnation: string,
    startAtMs: number,
    options: StartOptions,
  ) {
    this.election = new Election({ node, incarnation, shardCount, leaseMs, tickMs });
    this.nextTickAtMs = startAtMs;
    this.draining = options.draining ?? false;
    this.aliveNodes = options.aliveNodes;
  }
}

/**
 * Runs every simulated node's `Election` against one `LeaseTable`. Time moves from one tick
 * instant to the next; the nodes due at the same instant all read the table first and then
 * write in start order, so their decisions race like concurrent invocations. After every
 * write the table checks its invariants; after every instant the nodes' beliefs are checked.
 */
class Cluster {
  nowMs = 0;
  readonly table = new LeaseTable();
  readonly trace: TraceEvent[] = [];
  readonly #nodes: SimNode[] = [];

  start(node: string, options: StartOptions = {}): SimNode {
    const incarnation = options.incarnation ?? firstIncarnation;
    const sim = new SimNode(node, incarnation, this.nowMs + (options.offsetMs ?? 0), options);
    this.#nodes.push(sim);
    return sim;
  }

  /** The node stops ticking for good. */
  crash(sim: SimNode): void {
    sim.status = 'crashed';
  }

  /** The node stops ticking now, or (afterDecide) at its next tick, between reading and writing. */
  pause(sim: SimNode, options: { afterDecide?: boolean } = {}): void {
    if (options.afterDecide === true) sim.pauseAfterDecide = true;
    else sim.status = 'paused';
  }

  /** The paused node first performs the writes it had decided, then ticks again from now. */
  resume(sim: SimNode): void {
    expect(sim.status).toBe('paused');
    sim.status = 'ticking';
    const pending = sim.pending;
    sim.pending = [];
    this.#perform(sim, pending);
    sim.nextTickAtMs = this.nowMs;
    this.#checkBeliefs();
  }

  /** Runs every tick instant up to and including now + durationMs. */
  runFor(durationMs: number): void {
    const endMs = this.nowMs + durationMs;
    for (let next = this.#nextInstant(); next !== undefined && next <= endMs; next = this.#nextInstant()) this.#runInstant(next);
    this.nowMs = endMs;
  }

  /** Runs tick instants until `done` holds; returns the time it first held. */
  runUntil(done: () => boolean, deadlineMs: number): number {
    while (!done()) {
      const next = this.#nextInstant();
      if (next === undefined || next > deadlineMs) throw new Error(`not done by ${deadlineMs} ms (now ${this.nowMs} ms)`);
      this.#runInstant(next);
    }
    return this.nowMs;
  }

  holders(): Map<number, string | undefined> {
    return new Map(allShards.map((shard) => [shard, this.table.get(shard)?.holder]));
  }

  /** Shards per holder node in the table. */
  spread(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const record of this.table.read()) {
      if (record.holder !== undefined) counts.set(record.holder, (counts.get(record.holder) ?? 0) + 1);
    }
    return counts;
  }

  shardsOf(sim: Holder): number[] {
    return this.table
      .read()
      .filter((record) => record.holder === sim.node && record.incarnation === sim.incarnation)
      .map((record) => record.shard);
  }

  allHeld(): boolean {
    return allShards.every((shard) => this.table.get(shard)?.holder !== undefined);
  }

  acquisitions(filter: { since?: number; node?: string; incarnation?: string } = {}): AcquireEvent[] {
    return this.trace.filter(isAcquire).filter(
      (event) =>
        event.atMs >= (filter.since ?? 0) &&
        (filter.node === undefined || event.node === filter.node) &&
        (filter.incarnation === undefined || event.incarnation === filter.incarnation),
    );
  }

  #nextInstant(): number | undefined {
    const due = this.#nodes.filter((sim) => sim.status === 'ticking').map((sim) => sim.nextTickAtMs);
    return due.length === 0 ? undefined : Math.min(...due);
  }

  #runInstant(atMs: number): void {
    expect(atMs).toBeGreaterThanOrEqual(this.nowMs);
    this.nowMs = atMs;
    const ticking = this.#nodes.filter((sim) => sim.status === 'ticking');
    const alive = [...new Set(ticking.map((sim) => sim.node))];
    const due = ticking.filter((sim) => sim.nextTickAtMs === atMs);
    // Every due node reads before any of them writes: concurrent invocations race.
    const decisions = due.map((sim) => {
      const leases = this.table.read();
      const elapsedMs = sim.lastTickAtMs === undefined ? 0 : atMs - sim.lastTickAtMs;
      const actions = sim.election.tick({ elapsedMs, leases, aliveNodes: sim.aliveNodes ?? alive, draining: sim.draining });
      this.#checkDecision(sim, leases, actions);
      sim.lastTickAtMs = atMs;
      sim.nextTickAtMs = atMs + tickMs;
      return { sim, actions };
    });
    for (const { sim, actions } of decisions) {
      if (sim.pauseAfterDecide) {
        sim.pauseAfterDecide = false;
        sim.status = 'paused';
        sim.pending = actions;
        continue;
      }
      this.#perform(sim, actions);
    }
    this.#checkBeliefs();
  }

  #perform(sim: SimNode, actions: readonly LeaseAction[]): void {
    for (const action of actions) {
      const { outcome, stored } = this.table.apply(action, sim, this.nowMs);
      this.trace.push({ atMs: this.nowMs, node: sim.node, incarnation: sim.incarnation, action, outcome });
      if (action.type === 'release' && outcome === 'ok') sim.lastReleaseAtMs = this.nowMs;
      sim.election.onOutcome(action, outcome, stored);
    }
  }

  /** What every decision must respect, whatever the scenario. */
  #checkDecision(sim: SimNode, leases: readonly LeaseRecord[], actions: readonly LeaseAction[]): void {
    const at = `${holderKey(sim)} at ${this.nowMs} ms`;
    const seen = new Map(leases.map((record) => [record.shard, record]));
    let freeOrExpired = 0;
    let releases = 0;
    for (const action of actions) {
      const record = seen.get(action.shard);
      if (action.type === 'renew' || action.type === 'release') {
        // Only what the read shows as ours, at the epoch it shows.
        expect(record?.holder, `${at}: ${action.type} of shard ${action.shard}`).toBe(sim.node);
        expect(record?.incarnation, `${at}: ${action.type} of shard ${action.shard}`).toBe(sim.incarnation);
        expect(action.epoch, `${at}: ${action.type} of shard ${action.shard}`).toBe(record?.epoch);
      }
      if (action.type === 'release') {
        releases += 1;
        expect(sim.draining, `${at}: a draining node releases nothing`).toBe(false);
        if (sim.lastReleaseAtMs !== undefined) {
          expect(this.nowMs - sim.lastReleaseAtMs, `${at}: releases are a lease apart`).toBeGreaterThanOrEqual(leaseMs);
        }
      }
      if (action.type !== 'acquire') continue;
      if (sim.draining) {
        expect(['expired', 'leaderless'], `${at}: a draining node takes only leases whose holder is gone`).toContain(action.reason);
      }
      expect(action.expectedVersion, `${at}: acquire of shard ${action.shard}`).toBe(record?.version);
      expect(action.previousEpoch, `${at}: acquire of shard ${action.shard}`).toBe(record?.epoch ?? 0);
      expect(action.epoch, `${at}: acquire of shard ${action.shard}`).toBe((record?.epoch ?? 0) + 1);
      expect(this.#reasonIsJustified(sim, record, action.reason), `${at}: acquire of shard ${action.shard} for '${action.reason}'`).toBe(true);
      if (action.reason === 'free' || action.reason === 'expired') freeOrExpired += 1;
    }
    expect(releases, `${at}: at most one release per tick`).toBeLessThanOrEqual(1);
    if (freeOrExpired > 0) {
      // Free and expired shards are taken only up to the fair share (own incarnations' count).
      const held = leases.filter((record) => record.holder === sim.node).length;
      expect(held + freeOrExpired, `${at}: fair share`).toBeLessThanOrEqual(sim.election.fairShare());
    }
  }

  /** The reason an acquire gives holds in simulated time, which here is every node's own time. */
  #reasonIsJustified(sim: SimNode, record: LeaseRecord | undefined, reason: AcquireReason): boolean {
    const sinceWriteMs = record === undefined ? this.nowMs : this.nowMs - this.table.writtenAtMs(record.shard, record.version);
    if (record?.holder === undefined) {
      return reason === 'free' || (reason === 'leaderless' && sinceWriteMs >= leaseMs);
    }
    if (record.holder === sim.node) {
      return reason === 'own-incarnation' && (record.incarnation ?? '') < sim.incarnation;
    }
    // Another node's lease: never before its version stood still for a whole lease.
    if (reason === 'expired') return sinceWriteMs >= leaseMs;
    if (reason === 'leaderless') return sinceWriteMs >= 2 * leaseMs;
    return false;
  }

  /** No two incarnations ever believe they lead a shard at the same epoch. */
  #checkBeliefs(): void {
    for (const shard of allShards) {
      const believers = new Map<number, string>();
      for (const sim of this.#nodes) {
        const epoch = sim.election.epochOf(shard);
        if (epoch === undefined) continue;
        expect(believers.get(epoch) ?? holderKey(sim), `shard ${shard}: two leaders believe epoch ${epoch}`).toBe(holderKey(sim));
        believers.set(epoch, holderKey(sim));
      }
    }
  }
}

/** Three nodes started together and run until every shard is held. */
function startThree(): { cluster: Cluster; a: SimNode; b: SimNode; c: SimNode } {
  const cluster = new Cluster();
  const [a, b, c] = nodeNames.map((node) => cluster.start(node));
  if (a === undefined || b === undefined || c === undefined) throw new Error('three nodes');
  cluster.runUntil(() => cluster.allHeld(), 2 * leaseMs);
  return { cluster, a, b, c };
}

function sorted(values: Iterable<number>): number[] {
  return [...values].sort((x, y) => x - y);
}

// ---------------------------------------------------------------------------------------------

describe('Function: rendezvousScore', () => {
  it('is deterministic', () => {
    // Act
    const first = allShards.map((shard) => rendezvousScore('node-a', shard));
    const second = allShards.map((shard) => rendezvousScore('node-a', shard));

    // Assess
    expect(second).toEqual(first);
    for (const score of first) {
      expect(Number.isInteger(score) && score >= 0 && score <= 0xffffffff).toBe(true);
    }
  });

  it('gives every node a different preference order over the shards', () => {
    // Prepare
    const preferenceOf = (node: string): number[] =>
      [...allShards].sort((x, y) => rendezvousScore(node, y) - rendezvousScore(node, x) || x - y);

    // Act
    const orders = nodeNames.map(preferenceOf);

    // Assess
    expect(new Set(orders.map((order) => order.join(','))).size).toBe(nodeNames.length);
    for (const order of orders) expect(sorted(order)).toEqual(allShards);
    // Other names are hashed differently too (not only the ones used here).
    expect(rendezvousScore('node-a', 0)).not.toBe(rendezvousScore('node-b', 0));
    expect(rendezvousScore('node-a', 1)).not.toBe(rendezvousScore('node-a', 10));
  });
});

describe('Class: Election', () => {
  describe('Method: constructor', () => {
    it('rejects a tick longer than a third of the lease', () => {
      // Act & Assess
      expect(() => new Election({ node: 'node-a', incarnation: firstIncarnation, shardCount, leaseMs: 2000, tickMs: 667 })).toThrow(
        AssertionError,
      );
      expect(() => new Election({ node: 'node-a', incarnation: firstIncarnation, shardCount, leaseMs: 2001, tickMs: 667 })).not.toThrow();
    });

    it('rejects an empty node or incarnation and a non-positive shard count', () => {
      // Act & Assess
      expect(() => new Election({ node: '', incarnation: firstIncarnation, shardCount, leaseMs, tickMs })).toThrow(AssertionError);
      expect(() => new Election({ node: 'node-a', incarnation: '', shardCount, leaseMs, tickMs })).toThrow(AssertionError);
      expect(() => new Election({ node: 'node-a', incarnation: firstIncarnation, shardCount: 0, leaseMs, tickMs })).toThrow(AssertionError);
    });
  });

  describe('Method: tick', () => {
    it('rejects a negative elapsedMs', () => {
      // Prepare
      const election = new Election({ node: 'node-a', incarnation: firstIncarnation, shardCount, leaseMs, tickMs });

      // Act & Assess
      expect(() => election.tick({ elapsedMs: -1, leases: [], aliveNodes: ['node-a'], draining: false })).toThrow(AssertionError);
    });

    it('takes free shards up to its fair share on the first tick', () => {
      // Prepare
      const election = new Election({ node: 'node-a', incarnation: firstIncarnation, shardCount, leaseMs, tickMs });

      // Act
      const actions = election.tick({ elapsedMs: 0, leases: [], aliveNodes: [...nodeNames], draining: false });

      // Assess
      expect(actions).toHaveLength(fairShareOfThree);
      for (const action of actions) {
        expect(action).toMatchObject({ type: 'acquire', expectedVersion: undefined, epoch: 1, previousEpoch: 0, reason: 'free' });
      }
      expect(election.leading()).toEqual([]);
    });
  });

  describe('Method: onOutcome', () => {
    /** node-a alone, holding every shard after one tick and its outcomes. */
    function leaderOfAll(): { election: Election; table: LeaseTable; holder: Holder } {
      const table = new LeaseTable();
      const holder = { node: 'node-a', incarnation: firstIncarnation };
      const election = new Election({ ...holder, shardCount, leaseMs, tickMs });
      const actions = election.tick({ elapsedMs: 0, leases: [], aliveNodes: ['node-a'], draining: false });
      for (const action of actions) {
        const { outcome, stored } = table.apply(action, holder, 0);
        election.onOutcome(action, outcome, stored);
      }
      expect(election.leading()).toEqual(allShards);
      return { election, table, holder };
    }

    it('drops a shard from leading() at once when its renewal conflicts', () => {
      // Prepare: node-a reads and decides its renewals; node-b takes shard 3 before they land.
      const { election, table, holder } = leaderOfAll();
      const renewals = election.tick({ elapsedMs: tickMs, leases: table.read(), aliveNodes: ['node-a'], draining: false });
      const shard3 = table.get(3);
      const takeover: LeaseAction = { type: 'acquire', shard: 3, expectedVersion: shard3?.version, epoch: 2, previousEpoch: 1, reason: 'expired' };
      expect(table.apply(takeover, { node: 'node-b', incarnation: firstIncarnation }, tickMs).outcome).toBe('ok');

      // Act
      const outcomes = renewals.map((action) => {
        const { outcome, stored } = table.apply(action, holder, tickMs);
        election.onOutcome(action, outcome, stored);
        return [action.shard, outcome] as const;
      });

      // Assess
      expect(renewals.every((action) => action.type === 'renew')).toBe(true);
      expect(outcomes.filter(([, outcome]) => outcome === 'conflict')).toEqual([[3, 'conflict']]);
      expect(election.leading()).toEqual(allShards.filter((shard) => shard !== 3));
      expect(election.epochOf(3)).toBeUndefined();
    });

    it('neither renews nor takes back a stepped-down shard before the next read', () => {
      // Prepare: node-a lost shard 3 through a conflicting renewal.
      const { election, table } = leaderOfAll();
      const renewals = election.tick({ elapsedMs: tickMs, leases: table.read(), aliveNodes: ['node-a'], draining: false });
      const renewal3 = renewals.find((action) => action.shard === 3);
      expect(renewal3).toBeDefined();
      election.onOutcome(renewal3!, 'conflict');

      // Act: the next read is from before node-b's write (a lagging read path).
      const actions = election.tick({ elapsedMs: tickMs, leases: table.read(), aliveNodes: ['node-a'], draining: false });

      // Assess
      expect(actions.filter((action) => action.shard === 3)).toEqual([]);
      expect(election.leading()).not.toContain(3);
    });

    it('keeps leading after an error outcome: the next read tells', () => {
      // Prepare
      const { election, table } = leaderOfAll();
      const renewals = election.tick({ elapsedMs: tickMs, leases: table.read(), aliveNodes: ['node-a'], draining: false });

      // Act
      for (const action of renewals) election.onOutcome(action, 'error');

      // Assess
      expect(election.leading()).toEqual(allShards);
    });
  });

  describe('Scenario: cold start of three nodes', () => {
    it('gives every shard a holder at epoch 1, spread 3/3/2, within two leases', () => {
      // Prepare
      const cluster = new Cluster();
      for (const node of nodeNames) cluster.start(node);

      // Act
      const doneAtMs = cluster.runUntil(() => cluster.allHeld(), 2 * leaseMs);

      // Assess
      expect(doneAtMs).toBeLessThanOrEqual(2 * leaseMs);
      expect(sorted(cluster.spread().values())).toEqual([2, 3, 3]);
      expect([...cluster.spread().keys()].sort()).toEqual([...nodeNames]);
      for (const record of cluster.table.read()) expect(record.epoch).toBe(1);
      // Every acquisition was of a free shard; losing a race is a conflict, never a second holder.
      for (const event of cluster.acquisitions()) expect(event.action).toMatchObject({ reason: 'free', epoch: 1 });

      // Act: a few more leases of steady state.
      cluster.runFor(3 * leaseMs);

      // Assess: nothing moved; every renewal succeeded.
      const steady = cluster.trace.filter((event) => event.atMs > doneAtMs);
      expect(steady.every((event) => event.action.type === 'renew' && event.outcome === 'ok')).toBe(true);
      for (const record of cluster.table.read()) expect(record.epoch).toBe(1);
    });
  });

  describe('Scenario: leader crash', () => {
    it('moves the crashed node’s shards only after a whole lease without renewal, at epoch + 1', () => {
      // Prepare
      const { cluster, c } = startThree();
      cluster.runFor(leaseMs);
      const lost = cluster.shardsOf(c);
      const before = new Map(lost.map((shard) => [shard, cluster.table.get(shard)!]));
      const lastRenewalAtMs = Math.max(...[...before.values()].map((record) => record.renewedAtMs));
      const crashAtMs = cluster.nowMs + 1;
      cluster.runFor(1);

      // Act: crash.
      cluster.crash(c);
      const movedAtMs = cluster.runUntil(() => lost.every((shard) => cluster.table.get(shard)?.holder !== 'node-c'), crashAtMs + 3 * leaseMs);

      // Assess
      expect(lost.length).toBeGreaterThan(0);
      expect(movedAtMs - crashAtMs).toBeLessThanOrEqual(leaseMs + 2 * tickMs);
      const takeovers = cluster.acquisitions({ since: crashAtMs });
      expect(takeovers.filter((event) => event.outcome === 'ok').map((event) => event.action.shard).sort()).toEqual(lost.sort());
      for (const event of takeovers) {
        // Never earlier than a whole lease after the last renewal.
        expect(event.atMs - lastRenewalAtMs).toBeGreaterThanOrEqual(leaseMs);
        expect(event.action).toMatchObject({ reason: 'expired' });
      }
      for (const shard of lost) {
        const after = cluster.table.get(shard)!;
        expect(after.epoch).toBe(before.get(shard)!.epoch + 1);
        expect(['node-a', 'node-b']).toContain(after.holder);
      }
      expect(sorted(cluster.spread().values())).toEqual([4, 4]);
    });
  });

  describe('Scenario: zombie leader', () => {
    it('refuses a paused leader’s late renewals; it steps down and takes nothing recently written', () => {
      // Prepare: node-a reads and decides its renewals, then pauses for three leases.
      const { cluster, a } = startThree();
      cluster.runFor(leaseMs);
      const held = cluster.shardsOf(a);
      const epochsBefore = new Map(held.map((shard) => [shard, cluster.table.get(shard)!.epoch]));
      cluster.pause(a, { afterDecide: true });
      cluster.runFor(tickMs);
      expect(a.status).toBe('paused');
      expect(a.pending.map((action) => [action.type, action.shard])).toEqual(held.map((shard) => ['renew', shard]));
      const pausedAtMs = a.lastTickAtMs!;
      cluster.runFor(3 * leaseMs);

      // Assess: the others took node-a's shards at the next epoch.
      for (const shard of held) {
        expect(cluster.table.get(shard)).toMatchObject({ epoch: epochsBefore.get(shard)! + 1 });
        expect(['node-b', 'node-c']).toContain(cluster.table.get(shard)!.holder);
      }
      expect(a.election.leading()).toEqual(held);

      // Act: resume; the decided renewals land late.
      const resumedAtMs = cluster.nowMs;
      cluster.resume(a);

      // Assess: every renewal is refused and node-a steps down at once.
      const late = cluster.trace.filter((event) => event.atMs === resumedAtMs && event.node === 'node-a');
      expect(late.map((event) => [event.action.type, event.action.shard, event.outcome])).toEqual(held.map((shard) => ['renew', shard, 'conflict']));
      expect(a.election.leading()).toEqual([]);
      for (const shard of held) expect(a.election.epochOf(shard)).toBeUndefined();

      // Act: its next tick has a large elapsedMs and a fresh read.
      cluster.runFor(0);
      const firstTick = cluster.trace.filter((event) => event.atMs === resumedAtMs && event.node === 'node-a').slice(late.length);

      // Assess: nothing renewed or taken on that tick; leading() stays empty for the lost shards.
      expect(a.lastTickAtMs! - pausedAtMs).toBeGreaterThanOrEqual(3 * leaseMs);
      expect(firstTick).toEqual([]);
      expect(a.election.leading()).toEqual([]);

      // Act: run on; the cluster rebalances towards node-a through releases.
      cluster.runFor(4 * leaseMs);

      // Assess: whatever node-a took, it took free (released) shards, never a recently written lease.
      for (const event of cluster.acquisitions({ since: resumedAtMs, node: 'node-a' })) {
        expect(event.action).toMatchObject({ reason: 'free' });
      }
      expect(Math.max(...cluster.spread().values())).toBeLessThanOrEqual(fairShareOfThree);
    });

    it('a leader paused between ticks resumes on a fresh read and renews nothing it lost', () => {
      // Prepare
      const { cluster, a } = startThree();
      cluster.runFor(leaseMs);
      const held = cluster.shardsOf(a);
      cluster.pause(a);
      cluster.runFor(3 * leaseMs);

      // Act
      const resumedAtMs = cluster.nowMs;
      cluster.resume(a);
      cluster.runFor(0);

      // Assess
      expect(cluster.trace.filter((event) => event.atMs === resumedAtMs && event.node === 'node-a')).toEqual([]);
      expect(a.election.leading()).toEqual([]);
      for (const shard of held) expect(cluster.table.get(shard)?.holder).not.toBe('node-a');
    });
  });

  describe('Scenario: overlapping incarnations', () => {
    it('the newer incarnation takes its node’s shards at once; the older steps down and never takes them back', () => {
      // Prepare: node-a/0001 has its renewals in flight when node-a/0002 starts.
      const { cluster, a } = startThree();
      cluster.runFor(leaseMs);
      const held = cluster.shardsOf(a);
      const epochsBefore = new Map(held.map((shard) => [shard, cluster.table.get(shard)!.epoch]));
      cluster.pause(a, { afterDecide: true });
      cluster.runFor(tickMs);
      expect(a.pending.length).toBe(held.length);

      // Act: the new incarnation's first tick.
      const startAtMs = cluster.nowMs + 10;
      const a2 = cluster.start('node-a', { incarnation: secondIncarnation, offsetMs: 10 });
      cluster.runFor(10);

      // Assess: it took exactly node-a's shards, at once, at epoch + 1.
      const takeovers = cluster.acquisitions({ since: startAtMs });
      expect(takeovers.every((event) => event.atMs === startAtMs && event.incarnation === secondIncarnation && event.outcome === 'ok')).toBe(true);
      expect(sorted(takeovers.map((event) => event.action.shard))).toEqual(held);
      for (const event of takeovers) {
        expect(event.action).toMatchObject({ reason: 'own-incarnation', epoch: epochsBefore.get(event.action.shard)! + 1 });
      }
      expect(a2.election.leading()).toEqual(held);

      // Act: the old incarnation's renewals land.
      cluster.resume(a);

      // Assess: refused; it steps down at once.
      const late = cluster.trace.filter((event) => event.atMs === cluster.nowMs && event.incarnation === firstIncarnation && event.node === 'node-a');
      expect(late.map((event) => [event.action.type, event.outcome])).toEqual(held.map(() => ['renew', 'conflict']));
      expect(a.election.leading()).toEqual([]);

      // Act: both incarnations keep ticking for several leases.
      cluster.runFor(4 * leaseMs);

      // Assess: the old one took nothing back; the new one still leads node-a's shards.
      expect(cluster.acquisitions({ node: 'node-a', incarnation: firstIncarnation, since: startAtMs })).toEqual([]);
      expect(cluster.shardsOf(a2)).toEqual(held);
      expect(a.election.leading()).toEqual([]);

      // Act: the new incarnation crashes while the old one still runs (and is not draining).
      const crashAtMs = cluster.nowMs + 1;
      cluster.runFor(1);
      cluster.crash(a2);
      cluster.runFor(4 * leaseMs);

      // Assess: node-b and node-c took node-a/0002's shards over, not the old incarnation; it
      // only took shards they released to it afterwards, as free shards.
      for (const shard of held) {
        const takeover = cluster.acquisitions({ since: crashAtMs }).find((event) => event.action.shard === shard && event.outcome === 'ok');
        expect(['node-b', 'node-c']).toContain(takeover?.node);
      }
      for (const event of cluster.acquisitions({ node: 'node-a', incarnation: firstIncarnation, since: startAtMs })) {
        expect(event.action.reason).toBe('free');
      }
      expect(Math.max(...cluster.spread().values())).toBeLessThanOrEqual(fairShareOfThree);
    });

    it('an older incarnation that starts late does not take its node’s shards', () => {
      // Prepare
      const cluster = new Cluster();
      const a2 = cluster.start('node-a', { incarnation: secondIncarnation, aliveNodes: ['node-a'] });
      cluster.runUntil(() => cluster.allHeld(), leaseMs);

      // Act
      cluster.start('node-a', { incarnation: firstIncarnation, offsetMs: 100, aliveNodes: ['node-a'] });
      cluster.runFor(3 * leaseMs);

      // Assess
      expect(cluster.acquisitions({ incarnation: firstIncarnation })).toEqual([]);
      expect(cluster.shardsOf(a2)).toEqual(allShards);
    });
  });

  describe('Scenario: draining', () => {
    it('a draining node keeps renewing, takes no free shard and releases nothing, but still takes leases whose holder is gone', () => {
      // Prepare
      const { cluster, b, c } = startThree();
      const heldByB = cluster.shardsOf(b);
      const lostByC = cluster.shardsOf(c);
      const drainingSinceMs = cluster.nowMs + 1;
      cluster.runFor(1);
      b.draining = true;

      // Act: node-c crashes.
      cluster.crash(c);
      cluster.runFor(6 * leaseMs);

      // Assess: node-b renewed all it held, released nothing and took only expired or leaderless leases.
      const byB = cluster.trace.filter((event) => event.node === 'node-b' && event.atMs >= drainingSinceMs);
      expect(byB.filter((event) => event.action.type === 'release')).toEqual([]);
      for (const shard of heldByB) expect(cluster.table.get(shard)?.holder).toBe('node-b');
      const takenByB = byB.flatMap((event) => (event.action.type === 'acquire' && event.outcome === 'ok' ? [event.action] : []));
      expect(takenByB.every((action) => action.reason === 'expired' || action.reason === 'leaderless')).toBe(true);
      expect(takenByB.every((action) => lostByC.includes(action.shard))).toBe(true);
      // node-c's shards all found a holder again (liveness first), at a higher epoch.
      for (const shard of lostByC) {
        expect(['node-a', 'node-b']).toContain(cluster.table.get(shard)?.holder);
        expect(cluster.table.get(shard)?.epoch).toBeGreaterThan(1);
      }
      expect(cluster.allHeld()).toBe(true);
    });
  });

  describe('Scenario: rebalancing', () => {
    it('after node-c crashes and restarts, the spread returns to the fair share within a few leases', () => {
      // Prepare
      const { cluster, c } = startThree();
      cluster.crash(c);
      cluster.runUntil(() => (cluster.spread().get('node-c') ?? 0) === 0, 2 * leaseMs);
      cluster.runFor(leaseMs);
      expect(sorted(cluster.spread().values())).toEqual([4, 4]);

      // Act
      const restartAtMs = cluster.nowMs;
      const c2 = cluster.start('node-c', { incarnation: secondIncarnation });
      const balancedAtMs = cluster.runUntil(
        () => cluster.allHeld() && Math.max(...cluster.spread().values()) <= fairShareOfThree,
        restartAtMs + 3 * leaseMs,
      );

      // Assess
      expect(balancedAtMs - restartAtMs).toBeLessThanOrEqual(3 * leaseMs);
      expect(sorted(cluster.spread().values())).toEqual([2, 3, 3]);
      const releases = cluster.trace.filter((event) => event.action.type === 'release' && event.outcome === 'ok');
      expect(releases.map((event) => event.node).sort()).toEqual(['node-a', 'node-b']);
      for (const release of releases) {
        const taken = cluster.acquisitions({ since: release.atMs }).find((event) => event.action.shard === release.action.shard);
        expect(taken).toMatchObject({ node: 'node-c', incarnation: secondIncarnation, outcome: 'ok' });
        expect(taken?.action).toMatchObject({ reason: 'free', epoch: release.action.epoch + 1 });
      }
      expect(cluster.shardsOf(c2)).toHaveLength(2);

      // Act: steady state afterwards.
      cluster.runFor(4 * leaseMs);

      // Assess: nothing moves any more.
      expect(cluster.trace.filter((event) => event.atMs > balancedAtMs && event.action.type !== 'renew')).toEqual([]);
    });
  });

  describe('Scenario: fair share', () => {
    it('a node alone takes its fair share at once and the rest only once leaderless for a lease', () => {
      // Prepare: the failure detector still reports all three nodes.
      const cluster = new Cluster();
      cluster.start('node-a', { aliveNodes: [...nodeNames] });

      // Act
      cluster.runFor(leaseMs - tickMs);

      // Assess
      expect(cluster.acquisitions().map((event) => [event.atMs, event.action.reason, event.outcome])).toEqual(
        Array.from({ length: fairShareOfThree }, () => [0, 'free', 'ok']),
      );

      // Act
      const allAtMs = cluster.runUntil(() => cluster.allHeld(), 2 * leaseMs);

      // Assess
      expect(allAtMs).toBe(leaseMs);
      expect(cluster.acquisitions({ since: tickMs }).map((event) => event.action.reason)).toEqual(
        Array.from({ length: shardCount - fairShareOfThree }, () => 'leaderless'),
      );
      expect(cluster.spread()).toEqual(new Map([['node-a', shardCount]]));
    });

    it('offers a shard to nodes that do not take it only once, instead of cycling it through outages', () => {
      // Prepare: node-b and node-c are alive to the failure detector but never tick.
      const cluster = new Cluster();
      cluster.start('node-a', { aliveNodes: [...nodeNames] });
      cluster.runUntil(() => cluster.allHeld(), 2 * leaseMs);

      // Act
      cluster.runFor(10 * leaseMs);

      // Assess: one release a tick after the leaderless takeovers, the same shard back a lease later, then quiet.
      const moves = cluster.trace
        .filter((event) => event.action.type !== 'renew' && event.atMs >= leaseMs)
        .map((event) => [event.atMs, event.action.type, event.action.type === 'acquire' ? event.action.reason : '-']);
      expect(moves.slice(shardCount - fairShareOfThree)).toEqual([
        [leaseMs + tickMs, 'release', '-'],
        [2 * leaseMs + tickMs, 'acquire', 'leaderless'],
      ]);
      expect(cluster.spread()).toEqual(new Map([['node-a', shardCount]]));
    });

    it('a crash the failure detector misses is repaired only once the lease stood still for two leases', () => {
      // Prepare: every node believes all three alive, so the fair share stays 3.
      const cluster = new Cluster();
      const [a, b, c] = nodeNames.map((node) => cluster.start(node, { aliveNodes: [...nodeNames] }));
      cluster.runUntil(() => cluster.allHeld(), 2 * leaseMs);
      cluster.runFor(leaseMs);
      const lost = cluster.shardsOf(c!);
      const lastRenewalAtMs = cluster.nowMs;

      // Act
      cluster.crash(c!);
      const movedAtMs = cluster.runUntil(() => lost.every((shard) => cluster.table.get(shard)?.holder !== 'node-c'), cluster.nowMs + 4 * leaseMs);

      // Assess
      expect(movedAtMs - lastRenewalAtMs).toBeGreaterThanOrEqual(2 * leaseMs);
      expect(movedAtMs - lastRenewalAtMs).toBeLessThanOrEqual(2 * leaseMs + 2 * tickMs);
      const takeovers = cluster.acquisitions({ since: lastRenewalAtMs + 1 });
      expect(takeovers.length).toBeGreaterThanOrEqual(lost.length);
      for (const event of takeovers) expect(event.action.reason).toBe('leaderless');
      expect(cluster.shardsOf(a!).length + cluster.shardsOf(b!).length).toBe(shardCount);
    });
  });
});
