import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkHistory, formatViolation, type CheckResult } from '../../lib/chaos/checker.ts';
import { conflictMarker, type HistoryOperation, type OperationKind, type OperationStatus } from '../../lib/chaos/history.ts';
import { AssertionError } from '../../lib/core/assert.ts';
import { between, mulberry32, pick } from '../../lib/random.ts';

const key = 'k';

function put(client: number, value: string, callMs: number, returnMs: number, status: OperationStatus = 'ok', onKey = key): HistoryOperation {
  return { client, kind: 'put', key: onKey, input: { value }, status, output: {}, callMs, returnMs };
}

function get(client: number, value: string | null, callMs: number, returnMs: number, onKey = key): HistoryOperation {
  return { client, kind: 'get', key: onKey, input: {}, status: 'ok', output: { value }, callMs, returnMs };
}

/** `expectedValue` undefined: the cas expects the key to be missing. */
function cas(
  client: number,
  expectedValue: string | undefined,
  value: string,
  callMs: number,
  returnMs: number,
  outcome: 'swapped' | 'conflict' | 'info' = 'swapped',
): HistoryOperation {
  return {
    client,
    kind: 'cas',
    key,
    input: expectedValue === undefined ? { value } : { value, expectedValue },
    status: outcome === 'info' ? 'info' : 'ok',
    output: outcome === 'conflict' ? { value: conflictMarker } : {},
    callMs,
    returnMs,
  };
}

function remove(client: number, callMs: number, returnMs: number, outcome: 'deleted' | 'missing' | 'info' = 'deleted'): HistoryOperation {
  return {
    client,
    kind: 'delete',
    key,
    input: {},
    status: outcome === 'info' ? 'info' : 'ok',
    output: outcome === 'missing' ? { value: null } : {},
    callMs,
    returnMs,
  };
}

function expectLinearizable(result: CheckResult): void {
  expect(result.violation, result.violation === undefined ? '' : formatViolation(result)).toBeUndefined();
  expect(result.linearizable).toBe(true);
  expect(result.timedOut).toBeUndefined();
}

// ---------------------------------------------------------------------------------------------
// Histories from a sequential execution: every operation takes effect at its linearization point,
// which lies inside its [callMs, returnMs] interval, so the history is linearizable by construction.

interface PlannedOperation {
  client: number;
  key: string;
  kind: OperationKind;
  status: OperationStatus;
  /** For an `info` operation: whether it took effect at its point. */
  applied: boolean;
  /** For a cas: expect the current value (it swaps) or another one (it conflicts). */
  casFromCurrent: boolean;
  callMs: number;
  pointMs: number;
  returnMs: number;
}

/** Runs the plan in point order on a map of registers and records what each operation saw; values written are unique. */
function historyOf(plan: readonly PlannedOperation[]): HistoryOperation[] {
  const registers = new Map<string, string>();
  const history: HistoryOperation[] = new Array<HistoryOperation>(plan.length);
  const order = plan.map((_, index) => index).sort((a, b) => (plan[a]?.pointMs ?? 0) - (plan[b]?.pointMs ?? 0) || a - b);
  for (const index of order) {
    const planned = plan[index];
    if (planned === undefined) throw new Error(`no planned operation ${index}`);
    const { client, kind, status, callMs, returnMs } = planned;
    const current = registers.get(planned.key);
    const takesEffect = status === 'ok' || (status === 'info' && planned.applied);
    const base = { client, kind, key: planned.key, status, callMs, returnMs };
    switch (kind) {
      case 'put': {
        const value = `v${index}`;
        if (takesEffect) registers.set(planned.key, value);
        history[index] = { ...base, input: { value }, output: {} };
        break;
      }
      case 'get':
        history[index] = { ...base, input: {}, output: status === 'ok' ? { value: current ?? null } : {} };
        break;
      case 'cas': {
        const value = `v${index}`;
        const expectedValue = planned.casFromCurrent ? current : current === undefined ? `stale${index}` : index % 2 === 0 ? undefined : `stale${index}`;
        const swaps = expectedValue === current;
        if (takesEffect && swaps) registers.set(planned.key, value);
        const input = expectedValue === undefined ? { value } : { value, expectedValue };
        history[index] = { ...base, input, output: status === 'ok' && !swaps ? { value: conflictMarker } : {} };
        break;
      }
      case 'delete':
        if (takesEffect) registers.delete(planned.key);
        history[index] = { ...base, input: {}, output: status === 'ok' && current === undefined ? { value: null } : {} };
        break;
    }
  }
  return history;
}

const plannedArbitrary = fc.record({
  client: fc.integer({ min: 0, max: 4 }),
  key: fc.constantFrom('a', 'b', 'c'),
  kind: fc.constantFrom<OperationKind>('put', 'get', 'get', 'cas', 'delete'),
  status: fc.constantFrom<OperationStatus>('ok', 'ok', 'ok', 'ok', 'ok', 'info', 'fail'),
  applied: fc.boolean(),
  casFromCurrent: fc.boolean(),
  beforeMs: fc.integer({ min: 0, max: 40 }),
  afterMs: fc.integer({ min: 0, max: 40 }),
});

/** Points 10 ms apart with intervals of up to 40 ms either side: many operations overlap. */
const planArbitrary = fc.array(plannedArbitrary, { minLength: 1, maxLength: 40 }).map((drafts) =>
  drafts.map(({ beforeMs, afterMs, ...draft }, index): PlannedOperation => {
    const pointMs = 10 * index;
    return { ...draft, callMs: pointMs - beforeMs, pointMs, returnMs: pointMs + afterMs };
  }),
);

/**
 * A run of `clients` clients, each issuing one operation after another on `keys`, with a point
 * drawn inside each interval: what the chaos recorder produces from a correct store.
 */
function simulatedPlan(seed: number, operationCount: number, clients: number, keys: readonly string[]): PlannedOperation[] {
  const random = mulberry32(seed);
  const cursorsMs = Array.from({ length: clients }, () => between(0, 5, random));
  const plan: PlannedOperation[] = [];
  for (let index = 0; index < operationCount; index += 1) {
    let client = 0;
    for (let candidate = 1; candidate < clients; candidate += 1) {
      if ((cursorsMs[candidate] ?? 0) < (cursorsMs[client] ?? 0)) client = candidate;
    }
    const callMs = cursorsMs[client] ?? 0;
    const durationMs = between(1, 20, random);
    const returnMs = callMs + durationMs;
    const roll = random();
    const statusRoll = random();
    plan.push({
      client,
      key: pick(keys, random),
      kind: roll < 0.3 ? 'put' : roll < 0.75 ? 'get' : roll < 0.9 ? 'cas' : 'delete',
      status: statusRoll < 0.02 ? 'info' : statusRoll < 0.05 ? 'fail' : 'ok',
      applied: random() < 0.5,
      casFromCurrent: random() < 0.7,
      callMs,
      pointMs: callMs + random() * durationMs,
      returnMs,
    });
    cursorsMs[client] = returnMs + between(0, 3, random);
  }
  return plan;
}

/**
 * The definition, by brute force: some order of the completed operations (and of any subset of
 * the indeterminate ones) that respects real time and that the register model accepts. No memo,
 * no reductions; exponential, so only for a handful of operations on one key.
 */
function linearizableByBruteForce(history: readonly HistoryOperation[]): boolean {
  const operations = history.filter((operation) => operation.status === 'ok' || (operation.status === 'info' && operation.kind !== 'get'));
  const placed = operations.map(() => false);
  const completedCount = operations.filter((operation) => operation.status === 'ok').length;
  const step = (operation: HistoryOperation, register: string | null): { legal: boolean; next: string | null } => {
    const indeterminate = operation.status === 'info';
    switch (operation.kind) {
      case 'put':
        return { legal: true, next: operation.input.value ?? null };
      case 'get':
        return { legal: operation.output.value === register, next: register };
      case 'delete':
        return !indeterminate && operation.output.value === null ? { legal: register === null, next: register } : { legal: true, next: null };
      case 'cas': {
        const expected = operation.input.expectedValue ?? null;
        if (!indeterminate && operation.output.value === conflictMarker) return { legal: register !== expected, next: register };
        return { legal: register === expected, next: operation.input.value ?? null };
      }
    }
  };
  const search = (register: string | null, completedPlaced: number): boolean => {
    if (completedPlaced === completedCount) return true;
    for (const [index, operation] of operations.entries()) {
      if (placed[index]) continue;
      // Real time: every completed operation that returned before this call must come first.
      const blocked = operations.some((other, otherIndex) => !placed[otherIndex] && other.status === 'ok' && other.returnMs < operation.callMs);
      if (blocked) continue;
      const { legal, next } = step(operation, register);
      if (!legal) continue;
      placed[index] = true;
      const found = search(next, completedPlaced + (operation.status === 'ok' ? 1 : 0));
      placed[index] = false;
      if (found) return true;
    }
    return false;
  };
  return search(null, 0);
}

/** Arbitrary operations on one key: few values (so values repeat), times in a small range (so times tie), any output. */
const arbitraryOperation = fc
  .record({
    client: fc.integer({ min: 0, max: 3 }),
    kind: fc.constantFrom<OperationKind>('put', 'get', 'cas', 'delete'),
    status: fc.constantFrom<OperationStatus>('ok', 'ok', 'info', 'info', 'fail'),
    value: fc.constantFrom('a', 'b', 'c', 'd'),
    seen: fc.constantFrom<string | null>('a', 'b', 'c', null),
    expected: fc.constantFrom<string | undefined>('a', 'b', undefined),
    outcome: fc.boolean(),
    callMs: fc.integer({ min: 0, max: 30 }),
    durationMs: fc.integer({ min: 0, max: 15 }),
  })
  .map(({ client, kind, status, value, seen, expected, outcome, callMs, durationMs }): HistoryOperation => {
    const base = { client, kind, key, status, callMs, returnMs: callMs + durationMs };
    switch (kind) {
      case 'put':
        return { ...base, input: { value }, output: {} };
      case 'get':
        return { ...base, input: {}, output: status === 'ok' ? { value: seen } : {} };
      case 'cas':
        return { ...base, input: expected === undefined ? { value } : { value, expectedValue: expected }, output: status === 'ok' && outcome ? { value: conflictMarker } : {} };
      case 'delete':
        return { ...base, input: {}, output: status === 'ok' && outcome ? { value: null } : {} };
    }
  });

describe('Function: checkHistory', () => {
  describe('linearizable histories', () => {
    it('accepts a sequential history of every kind of operation', () => {
      // Prepare
      const history = [
        get(1, null, 0, 10),
        put(1, 'a', 20, 30),
        get(2, 'a', 40, 50),
        cas(3, 'a', 'b', 60, 70),
        cas(1, 'a', 'c', 80, 90, 'conflict'),
        get(2, 'b', 100, 110),
        remove(3, 120, 130),
        get(1, null, 140, 150),
        cas(2, undefined, 'd', 160, 170),
        get(3, 'd', 180, 190),
      ];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
      expect(result).toMatchObject({ keysChecked: 1, operationsChecked: 10 });
      expect(result.statesExplored).toBeGreaterThanOrEqual(10);
    });

    it.each(['a', 'b'])('accepts a get overlapping a put that returns %s (either value is allowed)', (seen) => {
      // Prepare
      const history = [put(1, 'a', 0, 10), put(2, 'b', 20, 40), get(3, seen, 25, 35)];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it.each([1, 2])('accepts two concurrent cas from the same value when exactly one wins (client %i)', (winner) => {
      // Prepare
      const winning = winner === 1 ? 'a' : 'b';
      const history = [
        put(0, 'x', 0, 10),
        cas(1, 'x', 'a', 20, 40, winner === 1 ? 'swapped' : 'conflict'),
        cas(2, 'x', 'b', 22, 38, winner === 2 ? 'swapped' : 'conflict'),
        get(3, winning, 50, 60),
      ];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it('accepts an indeterminate put that took effect, even long after it was abandoned', () => {
      // Prepare
      const history = [put(1, 'a', 0, 10), put(2, 'b', 20, 25, 'info'), get(3, 'a', 30, 40), get(3, 'b', 50, 60), get(1, 'b', 70, 80)];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it('accepts an indeterminate put that never took effect', () => {
      // Prepare
      const history = [put(1, 'a', 0, 10), put(2, 'b', 20, 25, 'info'), get(3, 'a', 30, 40), get(3, 'a', 50, 60)];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it('accepts indeterminate cas and delete that cannot or did not take effect, and ignores an indeterminate get', () => {
      // Prepare
      const indeterminateGet: HistoryOperation = { client: 4, kind: 'get', key, input: {}, status: 'info', output: {}, callMs: 5, returnMs: 6 };
      const history = [put(1, 'a', 0, 10), cas(2, 'zzz', 'b', 20, 30, 'info'), remove(3, 20, 30, 'info'), get(1, 'a', 40, 50), indeterminateGet];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
      expect(result.operationsChecked).toBe(4);
    });

    it('accepts an indeterminate delete that must come after later operations (the memo prunes only dominated nodes)', () => {
      // Prepare: the 404 needs the indeterminate delete placed after the cas, although its call is
      // the earliest; a search that reached the same node with that delete placed early must not
      // prune the branch that keeps it for later.
      const history = [
        remove(1, 2, 2, 'missing'),
        remove(1, 0, 0),
        cas(1, undefined, 'a', 1, 1),
        remove(2, 0, 0, 'info'),
        put(3, 'a', 0, 0),
      ];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it('accepts a delete answered 404 when the key was missing, including before a concurrent put', () => {
      // Prepare
      const history = [remove(1, 0, 10, 'missing'), put(2, 'a', 20, 50), remove(3, 30, 40, 'missing'), remove(1, 60, 70), remove(2, 80, 90, 'missing'), get(3, null, 100, 110)];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it('accepts a read of a value written twice when the second write explains it', () => {
      // Prepare
      const history = [put(1, 'a', 0, 10), put(2, 'b', 20, 30), put(4, 'a', 35, 45), get(3, 'a', 50, 60)];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it('drops failed operations: they certainly had no effect', () => {
      // Prepare
      const history = [put(1, 'a', 0, 10), put(2, 'b', 20, 30, 'fail'), get(3, 'a', 40, 50)];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
      expect(result.operationsChecked).toBe(2);
    });

    it('treats operations that touch at a millisecond boundary as concurrent', () => {
      // Prepare: the put returns at 10 and the get is called at 10; with millisecond clocks
      // their order is unknown, so the get may still see the old value.
      const history = [put(1, 'a', 0, 5), put(2, 'b', 6, 10), get(3, 'a', 10, 12)];

      // Act
      const result = checkHistory(history);

      // Assess
      expectLinearizable(result);
    });

    it('accepts an empty history', () => {
      // Act
      const result = checkHistory([]);

      // Assess
      expect(result).toEqual({ linearizable: true, keysChecked: 0, operationsChecked: 0, statesExplored: 0 });
    });
  });

  describe('histories that are not linearizable', () => {
    /** Every case is decided twice: by the direct refutations (default) and by the search alone. */
    const modes = [
      { mode: 'direct', options: {} },
      { mode: 'search', options: { searchOnly: true } },
    ] as const;

    it.each(modes)('rejects the classic stale read: a read after a completed write returns the older value ($mode)', ({ mode, options }) => {
      // Prepare
      const first = put(1, 'a', 0, 10);
      const second = put(2, 'b', 20, 30);
      const stale = get(3, 'a', 40, 50);

      // Act
      const result = checkHistory([first, second, stale], options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.timedOut).toBeUndefined();
      expect(result.violatingKeys).toEqual([key]);
      expect(result.violation).toMatchObject({ key, foundBy: mode, operations: [first, second, stale], stuck: [stale] });
      expect(result.violation?.message).toBe(
        mode === 'direct'
          ? 'get by client 3 returned "a" but no linearization allows it ("a" was written by client 1, then a later write by client 2 wrote "b" and completed before it was called)'
          : 'get by client 3 returned "a" but no linearization allows it (the last write before it, by client 2, wrote "b"); "a" was written by client 1 (put, called at 0 ms)',
      );
      if (mode === 'search') expect(result.violation).toMatchObject({ prefix: [first, second], stateAfterPrefix: 'b' });
    });

    it.each(modes)('rejects a lost update: two cas from the same expected value both succeed ($mode)', ({ mode, options }) => {
      // Prepare
      const initial = put(0, 'x', 0, 10);
      const firstSwap = cas(1, 'x', 'a', 20, 40);
      const secondSwap = cas(2, 'x', 'b', 25, 45);

      // Act
      const result = checkHistory([initial, firstSwap, secondSwap], options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ key, foundBy: mode, operations: [initial, firstSwap, secondSwap], stuck: [secondSwap] });
      expect(result.violation?.message).toBe(
        mode === 'direct'
          ? 'cas by client 2 from "x" to "b" succeeded but no linearization allows it (cas by client 1 from "x" to "a" also succeeded, and only client 0 wrote "x", once)'
          : 'cas by client 2 from "x" to "b" succeeded but no linearization allows it (the last write before it, by client 1, wrote "a"); "x" was written by client 0 (put, called at 0 ms)',
      );
    });

    it.each(modes)('rejects a read of a value never written ($mode)', ({ mode, options }) => {
      // Prepare
      const write = put(1, 'a', 0, 10);
      const phantom = get(2, 'zzz', 5, 30);

      // Act
      const result = checkHistory([write, phantom], options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ key, foundBy: mode, stuck: [phantom] });
      expect(result.violation?.operations).toContain(phantom);
      expect(result.violation?.message).toMatch(/^get by client 2 returned "zzz" but no linearization allows it \(.*no operation wrote "zzz"\)?$/);
    });

    it.each(modes)('rejects a client that does not read its own completed write ($mode)', ({ mode, options }) => {
      // Prepare
      const other = put(2, 'b', 0, 5);
      const own = put(1, 'a', 10, 20);
      const read = get(1, 'b', 30, 40);

      // Act
      const result = checkHistory([other, own, read], options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ key, foundBy: mode, operations: [other, own, read], stuck: [read] });
      expect(result.violation?.message).toContain(mode === 'direct' ? 'a later write by client 1 wrote "a"' : 'the last write before it, by client 1, wrote "a"');
    });

    it.each(modes)('rejects a read that returns a value after its delete completed ($mode)', ({ mode, options }) => {
      // Prepare
      const write = put(1, 'a', 0, 10);
      const deletion = remove(2, 20, 30);
      const read = get(3, 'a', 40, 50);

      // Act
      const result = checkHistory([write, deletion, read], options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ key, foundBy: mode, operations: [write, deletion, read], stuck: [read] });
      expect(result.violation?.message).toContain(mode === 'direct' ? 'a later write by client 2 deleted the key' : 'the last write before it, by client 2, deleted the key');
    });

    it.each(modes)('rejects a read that returned before the write of its value was called ($mode)', ({ mode, options }) => {
      // Prepare
      const early = get(1, 'a', 0, 10);
      const write = put(2, 'a', 20, 30);

      // Act
      const result = checkHistory([early, write], options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ key, foundBy: mode, stuck: [early] });
      if (mode === 'direct') {
        expect(result.violation?.message).toBe('get by client 1 returned "a" but no linearization allows it (it returned at 10 ms, before the write of "a" by client 2 was called at 20 ms)');
      }
    });

    it.each(modes)('rejects a read of a write whose only attempt failed ($mode)', ({ mode, options }) => {
      // Prepare
      const history = [put(1, 'a', 0, 10), put(2, 'b', 20, 30, 'fail'), get(3, 'b', 40, 50)];

      // Act
      const result = checkHistory(history, options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation?.foundBy).toBe(mode);
      expect(result.violation?.message).toContain('no operation wrote "b"');
    });

    it('rejects a delete answered 404 while the key held a value (found by the search)', () => {
      // Prepare
      const write = put(1, 'a', 0, 10);
      const notFound = remove(2, 20, 30, 'missing');

      // Act
      const result = checkHistory([write, notFound]);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ foundBy: 'search', operations: [write, notFound], stuck: [notFound] });
      expect(result.violation?.message).toBe('delete by client 2 found the key missing but no linearization allows it (the last write before it, by client 1, wrote "a")');
    });

    it('rejects a cas that reports a conflict although the register held the expected value (found by the search)', () => {
      // Prepare
      const write = put(1, 'x', 0, 10);
      const refused = cas(2, 'x', 'y', 20, 30, 'conflict');

      // Act
      const result = checkHistory([write, refused]);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ foundBy: 'search', stuck: [refused] });
    });

    it('leaves a value written twice to the search, which still finds a stale read', () => {
      // Prepare: "a" has two writers, so no direct refutation applies to it.
      const history = [put(1, 'a', 0, 10), put(2, 'b', 20, 30), get(3, 'a', 40, 50), put(4, 'a', 60, 70), get(3, 'a', 80, 90)];

      // Act
      const result = checkHistory(history);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.violation).toMatchObject({ foundBy: 'search', stuck: [history[2]] });
    });

    it.each(modes)('names the only bad key of three (P-compositionality, $mode)', ({ mode, options }) => {
      // Prepare: three keys interleaved in time; only k2 has a stale read.
      const history = [
        put(1, 'a1', 0, 10, 'ok', 'k1'),
        put(2, 'a2', 0, 10, 'ok', 'k2'),
        put(3, 'a3', 5, 15, 'ok', 'k3'),
        put(1, 'b1', 20, 30, 'ok', 'k1'),
        put(2, 'b2', 20, 30, 'ok', 'k2'),
        get(3, 'a3', 25, 35, 'k3'),
        get(1, 'b1', 40, 50, 'k1'),
        get(3, 'a2', 40, 50, 'k2'),
        get(2, 'a3', 40, 50, 'k3'),
      ];

      // Act
      const result = checkHistory(history, options);

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result).toMatchObject({ keysChecked: 3, operationsChecked: 9, violatingKeys: ['k2'] });
      expect(result.violation).toMatchObject({ key: 'k2', foundBy: mode });
      expect(result.violation?.operations.every((operation) => operation.key === 'k2')).toBe(true);
    });
  });

  describe('the search bound', () => {
    it('reports unknown, never linearizable, when the bound is hit before deciding', () => {
      // Prepare: linearizable, but it needs more than two stored states.
      const history = [put(1, 'a', 0, 10), get(2, 'a', 20, 30), put(3, 'b', 40, 50), get(1, 'b', 60, 70)];

      // Act
      const result = checkHistory(history, { maxStatesPerKey: 2 });

      // Assess
      expect(result.linearizable).toBe(false);
      expect(result.timedOut).toBe(true);
      expect(result.undecidedKeys).toEqual([key]);
      expect(result.violatingKeys).toBeUndefined();
      expect(result.statesExplored).toBe(2);
      expect(result.violation?.message).toMatch(/^unknown: the search entered 2 states \(maxStatesPerKey\) on this key/);
      expect(checkHistory(history, { maxStatesPerKey: 4 }).linearizable).toBe(true);
    });

    it('prefers a proven violation on one key to an undecided one', () => {
      // Prepare
      const history = [
        put(1, 'a', 0, 10, 'ok', 'busy'),
        get(2, 'a', 20, 30, 'busy'),
        put(3, 'b', 40, 50, 'ok', 'busy'),
        put(1, 'x', 0, 10, 'ok', 'bad'),
        get(2, 'y', 20, 30, 'bad'),
      ];

      // Act
      const result = checkHistory(history, { maxStatesPerKey: 1 });

      // Assess
      expect(result).toMatchObject({ linearizable: false, timedOut: true, violatingKeys: ['bad'], undecidedKeys: ['busy'] });
      expect(result.violation?.key).toBe('bad');
    });

    it('refuses a bound that is not a positive integer', () => {
      // Act
      const act = () => checkHistory([], { maxStatesPerKey: 0 });

      // Assess
      expect(act).toThrow(AssertionError);
    });
  });

  describe('input and determinism', () => {
    it('refuses a completed get without a recorded value (a recorder bug, not a verdict)', () => {
      // Prepare
      const malformed: HistoryOperation = { client: 1, kind: 'get', key, input: {}, status: 'ok', output: {}, callMs: 0, returnMs: 1 };

      // Act
      const act = () => checkHistory([malformed]);

      // Assess
      expect(act).toThrow(/an ok get needs output.value/);
    });

    it('refuses a completed operation that returns before its call', () => {
      // Act
      const act = () => checkHistory([put(1, 'a', 10, 5)]);

      // Assess
      expect(act).toThrow(AssertionError);
    });

    it('gives the same result for the same history in any order, run after run', () => {
      // Prepare
      const history = historyOf(simulatedPlan(7, 300, 6, ['a', 'b']));
      const reversed = [...history].reverse();

      // Act
      const first = checkHistory(history);
      const second = checkHistory(history);
      const third = checkHistory(reversed);

      // Assess
      expectLinearizable(first);
      expect(second).toEqual(first);
      expect(third.linearizable).toBe(true);
    });
  });

  describe('properties', () => {
    it('accepts every history generated from a sequential execution', () => {
      fc.assert(
        fc.property(planArbitrary, (plan) => {
          // Prepare
          const history = historyOf(plan);

          // Act
          const result = checkHistory(history);

          // Assess
          expect(result.violation, result.violation === undefined ? '' : formatViolation(result)).toBeUndefined();
          expect(result.linearizable).toBe(true);
        }),
        { numRuns: 500 },
      );
    });

    it.each([
      { mode: 'direct', options: {} },
      { mode: 'search', options: { searchOnly: true } },
    ])('rejects such a history once one get returns a value never written, naming its key ($mode)', ({ options }) => {
      fc.assert(
        fc.property(planArbitrary, fc.nat(), (plan, choice) => {
          // Prepare
          const history = historyOf(plan);
          const gets = history.flatMap((operation, index) => (operation.kind === 'get' && operation.status === 'ok' ? [index] : []));
          fc.pre(gets.length > 0);
          const mutatedIndex = gets[choice % gets.length] ?? 0;
          const original = history[mutatedIndex];
          if (original === undefined) throw new Error('the chosen get exists');
          const mutated = { ...original, output: { value: 'never-written' } };
          history[mutatedIndex] = mutated;

          // Act
          const result = checkHistory(history, options);

          // Assess
          expect(result.linearizable).toBe(false);
          expect(result.timedOut).toBeUndefined();
          expect(result.violatingKeys).toEqual([mutated.key]);
          expect(result.violation?.key).toBe(mutated.key);
          expect(result.violation?.stuck.length).toBeGreaterThan(0);
        }),
        { numRuns: 300 },
      );
    });

    it('agrees with a brute-force search on small arbitrary histories (values repeat, times tie, some indeterminate)', () => {
      let accepted = 0;
      let rejected = 0;
      fc.assert(
        fc.property(fc.array(arbitraryOperation, { minLength: 1, maxLength: 10 }), (history) => {
          // Act
          const expected = linearizableByBruteForce(history);
          const direct = checkHistory(history);
          const search = checkHistory(history, { searchOnly: true });

          // Assess
          expect(search.linearizable, formatViolation(search)).toBe(expected);
          expect(direct.linearizable, formatViolation(direct)).toBe(expected);
          if (expected) accepted += 1;
          else rejected += 1;
        }),
        { numRuns: 5_000 },
      );
      expect(accepted).toBeGreaterThan(500);
      expect(rejected).toBeGreaterThan(500);
    });

    it('agrees with the search alone on arbitrary mutations (the direct refutations are sound)', () => {
      let rejected = 0;
      fc.assert(
        fc.property(planArbitrary, fc.nat(), fc.nat(), fc.constantFrom('read-other', 'read-missing', 'flip-cas', 'flip-delete'), (plan, choice, valueChoice, mutation) => {
          // Prepare: a mutation that may or may not break linearizability.
          const history = historyOf(plan);
          const written = history.flatMap((operation) => (operation.input.value === undefined ? [] : [operation.input.value]));
          const targets = history.flatMap((operation, index) => {
            if (operation.status !== 'ok') return [];
            if ((mutation === 'read-other' || mutation === 'read-missing') && operation.kind === 'get') return [index];
            if (mutation === 'flip-cas' && operation.kind === 'cas') return [index];
            if (mutation === 'flip-delete' && operation.kind === 'delete') return [index];
            return [];
          });
          fc.pre(targets.length > 0 && written.length > 0);
          const index = targets[choice % targets.length] ?? 0;
          const original = history[index];
          if (original === undefined) throw new Error('the chosen operation exists');
          const output =
            mutation === 'read-other'
              ? { value: written[valueChoice % written.length] ?? null }
              : mutation === 'read-missing'
                ? { value: null }
                : mutation === 'flip-cas'
                  ? original.output.value === conflictMarker ? {} : { value: conflictMarker }
                  : original.output.value === null ? {} : { value: null };
          history[index] = { ...original, output };

          // Act
          const direct = checkHistory(history);
          const search = checkHistory(history, { searchOnly: true });

          // Assess
          expect(direct.timedOut).toBeUndefined();
          expect(search.timedOut).toBeUndefined();
          expect(direct.linearizable, formatViolation(direct)).toBe(search.linearizable);
          expect(direct.violatingKeys).toEqual(search.violatingKeys);
          if (!direct.linearizable) rejected += 1;
        }),
        { numRuns: 500 },
      );
      // The mutations must exercise both verdicts, or the comparison says little.
      expect(rejected).toBeGreaterThan(50);
    });
  });

  describe('performance', () => {
    it('checks ~2,000 operations of 10 concurrent clients over 5 keys in a couple of seconds', () => {
      // Prepare
      const keys = ['k0', 'k1', 'k2', 'k3', 'k4'];
      const history = historyOf(simulatedPlan(20_240_605, 2_000, 10, keys));
      const badIndex = history.findIndex((operation, index) => index > 1_000 && operation.kind === 'get' && operation.status === 'ok');
      const bad = history.map((operation, index) => (index === badIndex ? { ...operation, output: { value: 'never-written' } } : operation));

      // Act
      const goodStartMs = performance.now();
      const good = checkHistory(history);
      const goodMs = performance.now() - goodStartMs;
      const badStartMs = performance.now();
      const rejected = checkHistory(bad);
      const badMs = performance.now() - badStartMs;
      const searchStartMs = performance.now();
      const rejectedBySearch = checkHistory(bad, { searchOnly: true });
      const searchMs = performance.now() - searchStartMs;

      // Assess
      console.log(
        `checker: ${history.length} operations (${good.operationsChecked} checked) over ${good.keysChecked} keys: ` +
          `linearizable in ${goodMs.toFixed(1)} ms, ${good.statesExplored} states; ` +
          `mutated get rejected in ${badMs.toFixed(1)} ms (direct), ` +
          `by the search alone in ${searchMs.toFixed(1)} ms, ${rejectedBySearch.statesExplored} states`,
      );
      console.log(formatViolation(rejectedBySearch));
      expectLinearizable(good);
      expect(good.keysChecked).toBe(5);
      expect(rejected.linearizable).toBe(false);
      expect(rejected.violation?.key).toBe(history[badIndex]?.key);
      expect(rejectedBySearch.linearizable).toBe(false);
      expect(rejectedBySearch.violation?.key).toBe(history[badIndex]?.key);
      expect(goodMs).toBeLessThan(30_000);
    });
  });
});

describe('Function: formatViolation', () => {
  it('summarizes a linearizable result on one line', () => {
    // Act
    const text = formatViolation(checkHistory([put(1, 'a', 0, 10), get(2, 'a', 20, 30)]));

    // Assess
    expect(text).toBe('linearizable: 1 keys, 2 operations, 2 states explored');
  });

  it('explains a direct refutation with the key and its witnesses', () => {
    // Prepare
    const result = checkHistory([put(1, 'a', 0, 10), put(2, 'b', 20, 30), get(3, 'a', 40, 50)]);

    // Act
    const text = formatViolation(result);

    // Assess
    expect(text.split('\n')).toEqual([
      'NOT linearizable (1 keys, 3 operations, 0 states explored)',
      'keys not linearizable: "k"',
      'key "k": get by client 3 returned "a" but no linearization allows it ("a" was written by client 1, then a later write by client 2 wrote "b" and completed before it was called)',
      'operations involved:',
      '  client 1 put "k" input {"value":"a"} output {} call 0 ms return 10 ms [ok]',
      '  client 2 put "k" input {"value":"b"} output {} call 20 ms return 30 ms [ok]',
      '  client 3 get "k" input {} output {"value":"a"} call 40 ms return 50 ms [ok]',
    ]);
  });

  it('explains a violation found by the search with the key, the prefix and every operation involved', () => {
    // Prepare
    const result = checkHistory([put(1, 'a', 0, 10), put(2, 'b', 20, 30), get(3, 'a', 40, 50)], { searchOnly: true });

    // Act
    const text = formatViolation(result);

    // Assess
    expect(text.split('\n')).toEqual([
      'NOT linearizable (1 keys, 3 operations, 2 states explored)',
      'keys not linearizable: "k"',
      'key "k": get by client 3 returned "a" but no linearization allows it (the last write before it, by client 2, wrote "b"); "a" was written by client 1 (put, called at 0 ms)',
      'longest linearizable prefix: 2 operations, leaving "b":',
      '  client 1 put "k" input {"value":"a"} output {} call 0 ms return 10 ms [ok]',
      '  client 2 put "k" input {"value":"b"} output {} call 20 ms return 30 ms [ok]',
      'could not be linearized next:',
      '  client 3 get "k" input {} output {"value":"a"} call 40 ms return 50 ms [ok]',
      'operations involved:',
      '  client 1 put "k" input {"value":"a"} output {} call 0 ms return 10 ms [ok]',
      '  client 2 put "k" input {"value":"b"} output {} call 20 ms return 30 ms [ok]',
      '  client 3 get "k" input {} output {"value":"a"} call 40 ms return 50 ms [ok]',
    ]);
  });

  it('says unknown when the search hit its bound', () => {
    // Prepare
    const result = checkHistory([put(1, 'a', 0, 10), get(2, 'a', 20, 30)], { maxStatesPerKey: 1 });

    // Act
    const text = formatViolation(result);

    // Assess
    expect(text).toMatch(/^UNKNOWN: the search hit its bound before deciding/);
    expect(text).toContain('keys undecided: "k"');
  });
});
