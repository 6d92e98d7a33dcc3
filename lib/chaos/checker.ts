import { assert } from '../core/assert.ts';
import { conflictMarker, type HistoryOperation } from './history.ts';

/**
 * A linearizability checker for a per-key register with compare-and-swap.
 *
 * Linearizability is local (P-compositional): a history is linearizable if and only if its
 * restriction to each key is, so each key is searched on its own. The search is the
 * Wing–Gong algorithm with Lowe's memoization, as Porcupine implements it: the calls and returns
 * of one key form a doubly linked list in time order; the search linearizes a pending call
 * (lifting it and its return out of the list) whenever the model allows it and the resulting
 * (linearized set, register) pair has not been seen, and backtracks (unlifting) when it reaches a
 * return whose call it could not linearize. The module is pure: no clock, no randomness, no I/O.
 */

/** The bound on (linearized set, register) pairs stored per key; past it the verdict is unknown. */
export const maxStatesPerKeyDefault = 5_000_000;

export interface Violation {
  key: string;
  /**
   * The operations involved: the last write of the longest linearizable prefix, the write of the
   * value the culprit observed or expected (if any), and the completed operations that could not
   * be linearized after that prefix; in call order. Empty when the verdict is unknown.
   */
  operations: HistoryOperation[];
  /** One line for a human; it starts with "unknown:" when the search hit its bound. */
  message: string;
  /** The longest linearizable prefix the search found, in linearization order. */
  prefix: HistoryOperation[];
  /** The register after that prefix: `null` when the key is missing. */
  stateAfterPrefix: string | null;
  /** The completed operations that were pending after the prefix and that the model refused there. */
  stuck: HistoryOperation[];
}

export interface CheckResult {
  linearizable: boolean;
  /** Keys with at least one operation left once `fail` operations and `info` gets are dropped. */
  keysChecked: number;
  /** Operations the search had to place (`fail` operations and `info` gets excluded). */
  operationsChecked: number;
  /** Present when not linearizable: for the first failing key in key order, or the first undecided one. */
  violation?: Violation;
  /** (Linearized set, register) pairs stored, summed over keys: the search work done. */
  statesExplored: number;
  /** True when the search of at least one key hit `maxStatesPerKey` before deciding. */
  timedOut?: boolean;
  /** Keys proven not linearizable, in key order (present when not empty). */
  violatingKeys?: string[];
  /** Keys whose search hit the bound: unknown verdict (present when not empty). */
  undecidedKeys?: string[];
}

export interface CheckOptions {
  maxStatesPerKey?: number;
}

/**
 * Decides whether `history` is linearizable for the register model of `HistoryOperation`.
 * Never reports `linearizable: true` without a complete search: a key whose search exceeds
 * `maxStatesPerKey` makes the verdict `false` with `timedOut: true` (unknown), unless another key
 * is proven not linearizable.
 */
export function checkHistory(history: readonly HistoryOperation[], options: CheckOptions = {}): CheckResult {
  const maxStatesPerKey = options.maxStatesPerKey ?? maxStatesPerKeyDefault;
  assert(Number.isSafeInteger(maxStatesPerKey) && maxStatesPerKey >= 1, `maxStatesPerKey must be an integer >= 1, got ${maxStatesPerKey}`);
  for (const [position, operation] of history.entries()) assertWellFormed(operation, position);

  const operationsByKey = partitionByKey(history);
  const keys = [...operationsByKey.keys()].sort();
  let operationsChecked = 0;
  let statesExplored = 0;
  const violations: Violation[] = [];
  const unknowns: Violation[] = [];
  for (const key of keys) {
    const operations = operationsByKey.get(key);
    assert(operations !== undefined, `key ${key} was partitioned`);
    operationsChecked += operations.length;
    const verdict = checkKey(key, operations, maxStatesPerKey);
    statesExplored += verdict.statesExplored;
    if (verdict.type === 'violation') violations.push(verdict.violation);
    if (verdict.type === 'unknown') unknowns.push(verdict.violation);
  }

  const result: CheckResult = {
    linearizable: violations.length === 0 && unknowns.length === 0,
    keysChecked: keys.length,
    operationsChecked,
    statesExplored,
  };
  const violation = violations[0] ?? unknowns[0];
  if (violation !== undefined) result.violation = violation;
  if (unknowns.length > 0) {
    result.timedOut = true;
    result.undecidedKeys = unknowns.map((unknown) => unknown.key);
  }
  if (violations.length > 0) result.violatingKeys = violations.map((found) => found.key);
  return result;
}

/** A readable multi-line explanation of a result (a one-line summary when linearizable). */
export function formatViolation(result: CheckResult): string {
  const summary = `${result.keysChecked} keys, ${result.operationsChecked} operations, ${result.statesExplored} states explored`;
  if (result.linearizable) return `linearizable: ${summary}`;
  const violation = result.violation;
  assert(violation !== undefined, 'a result that is not linearizable carries a violation');
  const lines: string[] = [];
  const proven = result.violatingKeys !== undefined && result.violatingKeys.length > 0;
  lines.push(proven ? `NOT linearizable (${summary})` : `UNKNOWN: the search hit its bound before deciding (${summary})`);
  if (result.violatingKeys !== undefined) lines.push(`keys not linearizable: ${result.violatingKeys.map(quote).join(', ')}`);
  if (result.undecidedKeys !== undefined) lines.push(`keys undecided: ${result.undecidedKeys.map(quote).join(', ')}`);
  lines.push(`key ${quote(violation.key)}: ${violation.message}`);
  const tailLength = 8;
  const tail = violation.prefix.slice(-tailLength);
  const omitted = violation.prefix.length - tail.length;
  lines.push(
    `longest linearizable prefix: ${violation.prefix.length} operations, leaving ${showState(violation.stateAfterPrefix)}` +
      (tail.length === 0 ? '' : omitted > 0 ? `; its last ${tail.length}:` : ':'),
  );
  for (const operation of tail) lines.push(`  ${formatOperation(operation)}`);
  if (violation.stuck.length > 0) {
    lines.push('could not be linearized next:');
    for (const operation of violation.stuck) lines.push(`  ${formatOperation(operation)}`);
  }
  if (violation.operations.length > 0) {
    lines.push('operations involved:');
    for (const operation of violation.operations) lines.push(`  ${formatOperation(operation)}`);
  }
  return lines.join('\n');
}

/** One operation on one line: client, kind, key, input, output, call and return times, status. */
export function formatOperation(operation: HistoryOperation): string {
  const returned = operation.status === 'info' ? 'return ? (indeterminate)' : `return ${showMs(operation.returnMs)} ms`;
  return (
    `client ${operation.client} ${operation.kind} ${quote(operation.key)} input ${JSON.stringify(operation.input)} ` +
    `output ${JSON.stringify(operation.output)} call ${showMs(operation.callMs)} ms ${returned} [${operation.status}]`
  );
}

// ---------------------------------------------------------------------------------------------
// Input

function assertWellFormed(operation: HistoryOperation, position: number): void {
  const where = `history[${position}] (client ${operation.client} ${operation.kind} ${quote(String(operation.key))})`;
  assert(typeof operation.key === 'string', `${where}: key must be a string`);
  assert(['put', 'get', 'cas', 'delete'].includes(operation.kind), `${where}: unknown kind ${String(operation.kind)}`);
  assert(['ok', 'fail', 'info'].includes(operation.status), `${where}: unknown status ${String(operation.status)}`);
  assert(Number.isFinite(operation.callMs), `${where}: callMs must be a finite number, got ${operation.callMs}`);
  if (operation.status === 'fail') return;
  if (operation.status === 'ok') {
    assert(
      Number.isFinite(operation.returnMs) && operation.returnMs >= operation.callMs,
      `${where}: returnMs must be a finite number >= callMs (${operation.callMs}), got ${operation.returnMs}`,
    );
  }
  const { input, output } = operation;
  switch (operation.kind) {
    case 'put':
      assert(typeof input.value === 'string', `${where}: a put needs input.value`);
      return;
    case 'cas':
      assert(typeof input.value === 'string', `${where}: a cas needs input.value`);
      assert(input.expectedValue === undefined || typeof input.expectedValue === 'string', `${where}: input.expectedValue must be a string when present`);
      if (operation.status === 'ok') {
        assert(output.value === undefined || output.value === conflictMarker, `${where}: an ok cas output must be absent or ${quote(conflictMarker)}, got ${String(output.value)}`);
      }
      return;
    case 'get':
      if (operation.status === 'ok') {
        assert(typeof output.value === 'string' || output.value === null, `${where}: an ok get needs output.value (a string, or null for missing)`);
      }
      return;
    case 'delete':
      if (operation.status === 'ok') {
        assert(output.value === undefined || output.value === null, `${where}: an ok delete output must be absent (200) or null (404)`);
      }
      return;
  }
}

/**
 * Drops what constrains nothing: `fail` operations certainly had no effect, and an `info` get has
 * neither an effect nor a known output. Keeps history order within each key.
 */
function partitionByKey(history: readonly HistoryOperation[]): Map<string, HistoryOperation[]> {
  const operationsByKey = new Map<string, HistoryOperation[]>();
  for (const operation of history) {
    if (operation.status === 'fail') continue;
    if (operation.status === 'info' && operation.kind === 'get') continue;
    const operations = operationsByKey.get(operation.key);
    if (operations === undefined) operationsByKey.set(operation.key, [operation]);
    else operations.push(operation);
  }
  return operationsByKey;
}

// ---------------------------------------------------------------------------------------------
// Model: a register of `string | null`, with values interned as small integers (0 is null)

/**
 * - write: state := value
 * - delete: state := null
 * - delete-missing: legal iff state is null; no change (a delete answered 404)
 * - read: legal iff state = value; no change
 * - swap: legal iff state = expected; state := value
 * - swap-conflict: legal iff state != expected; no change (a cas answered 412)
 */
type StepCode = 'write' | 'delete' | 'delete-missing' | 'read' | 'swap' | 'swap-conflict';

interface Step {
  code: StepCode;
  value: number;
  expected: number;
}

const missing = 0;
const illegal = -1;
/** No register: `enablingFrom` when the last operation placed was a completed one. */
const none = -2;

/** The register after `step` from `state`, or `illegal`. */
function apply(step: Step, state: number): number {
  switch (step.code) {
    case 'write':
      return step.value;
    case 'delete':
      return missing;
    case 'delete-missing':
      return state === missing ? state : illegal;
    case 'read':
      return state === step.value ? state : illegal;
    case 'swap':
      return state === step.expected ? step.value : illegal;
    case 'swap-conflict':
      return state !== step.expected ? state : illegal;
  }
}

/**
 * Codes the register's values as small integers. Every value that no operation observes (no get
 * reads it, no cas expects it) gets the same code, `unobserved`: every guard of the model (equal
 * to a value read or expected, different from a value expected, null) holds for one such value
 * exactly when it holds for another, so merging them changes no verdict, and it lets the memo
 * and the symmetry rule for indeterminate operations treat the writes nobody saw as one.
 */
class ValueCodes {
  private readonly codes = new Map<string, number>();

  constructor(operations: readonly HistoryOperation[]) {
    for (const operation of operations) {
      if (operation.kind === 'get' && typeof operation.output.value === 'string') this.observe(operation.output.value);
      if (operation.kind === 'cas' && operation.input.expectedValue !== undefined) this.observe(operation.input.expectedValue);
    }
  }

  code(value: string | null): number {
    if (value === null) return missing;
    return this.codes.get(value) ?? unobserved;
  }

  private observe(value: string): void {
    if (!this.codes.has(value)) this.codes.set(value, firstObserved + this.codes.size);
  }
}

const unobserved = 1;
const firstObserved = 2;

/** The model step of an operation kept by `partitionByKey`. An `info` operation steps only with its effect: leaving it out is its "no effect". */
function stepOf(operation: HistoryOperation, values: ValueCodes): Step {
  const indeterminate = operation.status === 'info';
  switch (operation.kind) {
    case 'put':
      return { code: 'write', value: values.code(operation.input.value ?? null), expected: missing };
    case 'delete':
      return { code: !indeterminate && operation.output.value === null ? 'delete-missing' : 'delete', value: missing, expected: missing };
    case 'get':
      assert(!indeterminate, 'info gets are dropped before the search');
      return { code: 'read', value: values.code(operation.output.value ?? null), expected: missing };
    case 'cas': {
      const conflict = !indeterminate && operation.output.value === conflictMarker;
      return {
        code: conflict ? 'swap-conflict' : 'swap',
        value: values.code(operation.input.value ?? null),
        expected: values.code(operation.input.expectedValue ?? null),
      };
    }
  }
}

/** The register after a linearization, with the real values (the search only knows their codes). */
function replay(linearization: readonly HistoryOperation[]): string | null {
  let register: string | null = null;
  for (const operation of linearization) {
    if (operation.kind === 'put') register = operation.input.value ?? null;
    if (operation.kind === 'delete' && !(operation.status === 'ok' && operation.output.value === null)) register = null;
    if (operation.kind === 'cas' && !(operation.status === 'ok' && operation.output.value === conflictMarker)) register = operation.input.value ?? null;
  }
  return register;
}

// ---------------------------------------------------------------------------------------------
// Search

interface EventNode {
  /** Index into the key's operations; -1 for the head sentinel. */
  operation: number;
  /** For a call: its return. Undefined for a return (and the head). */
  match: EventNode | undefined;
  prev: EventNode | undefined;
  next: EventNode | undefined;
}

/**
 * The search tries completed calls first and indeterminate ones only when no completed call
 * leads anywhere: an indeterminate operation never has to be placed, so the search first looks
 * for a linearization without it, and the dominance check of `StateCache` then prunes the
 * branches that use it needlessly.
 */
type Pass = 'completed' | 'indeterminate';

interface Frame {
  call: EventNode;
  stateBefore: number;
  /** The pass in which the call was linearized: after backtracking, the scan resumes there. */
  pass: Pass;
  /** `enablingFrom` of the node the call was linearized at. */
  enablingFromBefore: number;
}

interface Snapshot {
  /** Operation indexes in linearization order. */
  prefix: number[];
  /** Completed operations in `prefix`. */
  completedCount: number;
  stuck: number[];
}

type KeyVerdict =
  | { type: 'linearizable'; statesExplored: number }
  | { type: 'violation' | 'unknown'; statesExplored: number; violation: Violation };

/**
 * Builds the event list: calls and returns in time order. At equal times a call comes before a
 * return, so operations that touch at a millisecond boundary count as concurrent: with
 * millisecond clocks the checker must not invent a real-time order. An `info` operation returns
 * at +Infinity. Ties beyond that are broken by history order, which keeps the search deterministic.
 */
function buildEvents(operations: readonly HistoryOperation[]): EventNode {
  interface Event {
    timeMs: number;
    isCall: boolean;
    operation: number;
    node: EventNode;
  }
  const events: Event[] = [];
  for (const [index, operation] of operations.entries()) {
    const returnNode: EventNode = { operation: index, match: undefined, prev: undefined, next: undefined };
    const callNode: EventNode = { operation: index, match: returnNode, prev: undefined, next: undefined };
    const returnMs = operation.status === 'info' ? Number.POSITIVE_INFINITY : operation.returnMs;
    events.push({ timeMs: operation.callMs, isCall: true, operation: index, node: callNode });
    events.push({ timeMs: returnMs, isCall: false, operation: index, node: returnNode });
  }
  events.sort((a, b) => {
    if (a.timeMs !== b.timeMs) return a.timeMs < b.timeMs ? -1 : 1;
    if (a.isCall !== b.isCall) return a.isCall ? -1 : 1;
    return a.operation - b.operation;
  });
  const head: EventNode = { operation: -1, match: undefined, prev: undefined, next: undefined };
  let last = head;
  for (const event of events) {
    last.next = event.node;
    event.node.prev = last;
    last = event.node;
  }
  return head;
}

/** Takes a call and its return out of the list. */
function lift(call: EventNode): void {
  const match = call.match;
  assert(call.prev !== undefined && match !== undefined && match.prev !== undefined, 'a lifted call is linked and has a return');
  call.prev.next = call.next;
  if (call.next !== undefined) call.next.prev = call.prev;
  match.prev.next = match.next;
  if (match.next !== undefined) match.next.prev = match.prev;
}

/** Puts back what `lift` took out, in reverse order, so the neighbours' links are valid again. */
function unlift(call: EventNode): void {
  const match = call.match;
  assert(call.prev !== undefined && match !== undefined && match.prev !== undefined, 'an unlifted call kept its links');
  match.prev.next = match;
  if (match.next !== undefined) match.next.prev = match;
  call.prev.next = call;
  if (call.next !== undefined) call.next.prev = call;
}

/** murmur3's finalizer: spreads an operation index over 32 bits for the set hash. */
function mix(value: number): number {
  let hash = value >>> 0;
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

interface CacheEntry {
  completed: Uint32Array;
  state: number;
  /** The sets of indeterminate operations visited with this (completed set, register): an antichain under inclusion. */
  indeterminateSets: Uint32Array[];
}

/**
 * The memo of visited search nodes (linearized set, register): Lowe's observation that two nodes
 * with the same linearized set and the same register have the same future. With indeterminate
 * operations it prunes by dominance: a node that has placed the same completed operations, holds
 * the same register and has placed a superset of the indeterminate ones of a visited node can do
 * nothing that node could not (an indeterminate operation is optional and constrains no other
 * operation, since it never returns). The completed set's hash is kept incrementally (XOR of
 * mixed indexes), so a lookup compares sets only on a hash match.
 */
class StateCache {
  private readonly buckets = new Map<number, CacheEntry[]>();
  /** Nodes stored (a set dropped later because a new one dominates it still counts). */
  size = 0;

  /** Whether a visited node dominates this one. */
  dominates(completedHash: number, completed: Uint32Array, indeterminate: Uint32Array, state: number): boolean {
    const entry = this.entryOf(completedHash, completed, state);
    return entry !== undefined && entry.indeterminateSets.some((visited) => isSubset(visited, indeterminate));
  }

  /** Stores a node that no visited node dominates. */
  insert(completedHash: number, completed: Uint32Array, indeterminate: Uint32Array, state: number): void {
    const entry = this.entryOf(completedHash, completed, state);
    if (entry !== undefined) {
      // Keep the antichain small: the new set dominates every visited superset of itself.
      entry.indeterminateSets = entry.indeterminateSets.filter((visited) => !isSubset(indeterminate, visited));
      entry.indeterminateSets.push(indeterminate.slice());
    } else {
      const hash = bucketHash(completedHash, state);
      const created: CacheEntry = { completed: completed.slice(), state, indeterminateSets: [indeterminate.slice()] };
      const bucket = this.buckets.get(hash);
      if (bucket === undefined) this.buckets.set(hash, [created]);
      else bucket.push(created);
    }
    this.size += 1;
  }

  private entryOf(completedHash: number, completed: Uint32Array, state: number): CacheEntry | undefined {
    return this.buckets.get(bucketHash(completedHash, state))?.find((candidate) => candidate.state === state && wordsEqual(candidate.completed, completed));
  }
}

function bucketHash(completedHash: number, state: number): number {
  return (completedHash ^ mix(state + 0x9e3779b9)) >>> 0;
}

function wordsEqual(a: Uint32Array, b: Uint32Array): boolean {
  for (let index = 0; index < a.length; index += 1) {
    if (a[index] !== b[index]) return false;
  }
  return true;
}

/** Whether every bit of `a` is set in `b`. */
function isSubset(a: Uint32Array, b: Uint32Array): boolean {
  for (let index = 0; index < a.length; index += 1) {
    if (((a[index] ?? 0) & ~(b[index] ?? 0)) !== 0) return false;
  }
  return true;
}

/** A bitset over `count` slots with an incrementally kept hash. */
class LinearizedSet {
  readonly words: Uint32Array;
  hash = 0;

  constructor(count: number) {
    this.words = new Uint32Array(Math.ceil(count / 32));
  }

  toggle(slot: number): void {
    const word = slot >>> 5;
    this.words[word] = (this.words[word] ?? 0) ^ (1 << (slot & 31));
    this.hash = (this.hash ^ mix(slot)) >>> 0;
  }
}

function checkKey(key: string, operations: readonly HistoryOperation[], maxStates: number): KeyVerdict {
  const values = new ValueCodes(operations);
  const steps = operations.map((operation) => stepOf(operation, values));
  const indeterminate = operations.map((operation) => operation.status === 'info');
  // Each operation's slot in the bitset of its class, completed or indeterminate.
  const slots: number[] = [];
  let completedCount = 0;
  let indeterminateCount = 0;
  for (const isIndeterminate of indeterminate) slots.push(isIndeterminate ? indeterminateCount++ : completedCount++);
  // Only completed operations must be placed: an `info` one that is never linearized is one
  // that never took effect (Knossos and Porcupine semantics for an operation that never returns).
  if (completedCount === 0) return { type: 'linearizable', statesExplored: 0 };
  const symmetry = indeterminateSymmetry(operations, steps);

  const head = buildEvents(operations);
  const completed = new LinearizedSet(completedCount);
  const placedIndeterminate = new LinearizedSet(indeterminateCount);
  const placedBySignature = new Array<number>(symmetry.signatureCount).fill(0);
  const cache = new StateCache();
  const stack: Frame[] = [];
  let state = missing;
  let linearizedCompleted = 0;
  let linearizedIndeterminate = 0;
  /** Nodes entered right after an indeterminate operation: checked against the memo, not stored in it. */
  let transientNodes = 0;
  /**
   * `none`, or the register before the indeterminate operation just placed: then the next operation
   * must be one that it enables (illegal from that register, legal now). Any linearization can be
   * rewritten into one of that form: an indeterminate operation that enables nothing can be moved
   * after its successor (a read that was legal anyway) or left out (its effect is overwritten, or
   * a swap that was legal anyway writes the same register), and an operation left out or placed
   * later is never worse, since an indeterminate one never returns. This prunes every branch that
   * places one for no reason.
   */
  let enablingFrom = none;
  let best: Snapshot | undefined;
  const explored = () => cache.size + transientNodes;

  const toggle = (operation: number, placing: boolean) => {
    const slot = slots[operation];
    assert(slot !== undefined, `operation ${operation} has a slot`);
    if (!indeterminate[operation]) {
      completed.toggle(slot);
      linearizedCompleted += placing ? 1 : -1;
      return;
    }
    placedIndeterminate.toggle(slot);
    linearizedIndeterminate += placing ? 1 : -1;
    const signature = symmetry.signatures[operation] ?? 0;
    placedBySignature[signature] = (placedBySignature[signature] ?? 0) + (placing ? 1 : -1);
  };

  let node = head.next;
  let pass: Pass = 'completed';
  for (;;) {
    assert(node !== undefined, 'the list ends with a return: the search stops at a return or before');
    if (node.match !== undefined) {
      // A call: try to linearize it now, if this pass tries it.
      const operation = node.operation;
      const step = steps[operation];
      assert(step !== undefined, `operation ${operation} has a step`);
      const next = isCandidate(operation, pass) ? apply(step, state) : illegal;
      if (next !== illegal && (enablingFrom === none || apply(step, enablingFrom) === illegal)) {
        const isIndeterminate = indeterminate[operation] === true;
        toggle(operation, true);
        if (!cache.dominates(completed.hash, completed.words, placedIndeterminate.words, next)) {
          if (explored() >= maxStates) {
            toggle(operation, false);
            return unknownVerdict(key, operations, best ?? snapshotOf(stack, head, operations), maxStates, explored());
          }
          // After an indeterminate operation the node is transient (its options are restricted):
          // a dominating visited node prunes it, but it is not stored to prune others.
          if (isIndeterminate) transientNodes += 1;
          else cache.insert(completed.hash, completed.words, placedIndeterminate.words, next);
          stack.push({ call: node, stateBefore: state, pass, enablingFromBefore: enablingFrom });
          enablingFrom = isIndeterminate ? state : none;
          state = next;
          lift(node);
          if (linearizedCompleted === completedCount) return { type: 'linearizable', statesExplored: explored() };
          node = head.next;
          pass = 'completed';
          continue;
        }
        toggle(operation, false);
      }
      node = node.next;
      continue;
    }

    // The first pending return: every call that may come next has been tried in this pass.
    if (pass === 'completed' && indeterminateLast && linearizedIndeterminate < indeterminateCount) {
      node = head.next;
      pass = 'indeterminate';
      continue;
    }
    // A dead end: backtrack. Only a stored node can be the deepest point: a transient one has
    // the depth of its parent, whose every legal continuation was tried.
    if (enablingFrom === none && (best === undefined || linearizedCompleted > best.completedCount)) best = snapshotOf(stack, head, operations);
    const frame = stack.pop();
    if (frame === undefined) {
      assert(best !== undefined, 'the root is a stored node and reached a dead end');
      return { type: 'violation', statesExplored: explored(), violation: explain(key, operations, steps, best) };
    }
    const call = frame.call;
    state = frame.stateBefore;
    enablingFrom = frame.enablingFromBefore;
    toggle(call.operation, false);
    unlift(call);
    node = call.next;
    pass = frame.pass;
  }

  function isCandidate(operation: number, currentPass: Pass): boolean {
    if (!indeterminate[operation]) return currentPass === 'completed';
    if (indeterminateLast && currentPass !== 'indeterminate') return false;
    // Of the pending indeterminate operations with the same step, only the earliest called.
    const signature = symmetry.signatures[operation] ?? 0;
    return symmetry.ranks[operation] === placedBySignature[signature];
  }
}

const indeterminateLast = process.env.CHECKER_ORDER === 'two-pass';

/**
 * Indeterminate operations with the same step (same kind, same value codes) are interchangeable
 * once called: they never return, so each stays available from its call on. The search therefore
 * only ever places the earliest-called pending one of each signature, so the placed ones of a
 * signature are always its first `n` by call order (the rank): 2^k subsets become k + 1 counts.
 */
function indeterminateSymmetry(operations: readonly HistoryOperation[], steps: readonly Step[]): { signatures: number[]; ranks: number[]; signatureCount: number } {
  const signatureIds = new Map<string, number>();
  const signatures: number[] = operations.map(() => -1);
  const ranks: number[] = operations.map(() => -1);
  const countBySignature: number[] = [];
  // Call order as in the event list: by call time, then history order.
  const byCall = operations.map((_, index) => index).sort((a, b) => (operations[a]?.callMs ?? 0) - (operations[b]?.callMs ?? 0) || a - b);
  for (const index of byCall) {
    const step = steps[index];
    if (operations[index]?.status !== 'info' || step === undefined) continue;
    const text = `${step.code}|${step.value}|${step.expected}`;
    let signature = signatureIds.get(text);
    if (signature === undefined) {
      signature = signatureIds.size;
      signatureIds.set(text, signature);
      countBySignature.push(0);
    }
    signatures[index] = signature;
    ranks[index] = countBySignature[signature] ?? 0;
    countBySignature[signature] = (countBySignature[signature] ?? 0) + 1;
  }
  return { signatures, ranks, signatureCount: signatureIds.size };
}

/**
 * The prefix on the stack, the register after it, and the completed operations pending there whose
 * call comes before the first pending return: the ones that had to be linearized next.
 */
function snapshotOf(stack: readonly Frame[], head: EventNode, operations: readonly HistoryOperation[]): Snapshot {
  const stuck: number[] = [];
  for (let node = head.next; node !== undefined && node.match !== undefined; node = node.next) {
    if (operations[node.operation]?.status === 'ok') stuck.push(node.operation);
  }
  const prefix = stack.map((frame) => frame.call.operation);
  const completedCount = prefix.filter((operation) => operations[operation]?.status === 'ok').length;
  return { prefix, completedCount, stuck };
}

function operationAt(operations: readonly HistoryOperation[], index: number): HistoryOperation {
  const operation = operations[index];
  assert(operation !== undefined, `operation ${index} exists`);
  return operation;
}

/** A step that changes the register (a write, a delete, a successful swap). */
function isEffect(step: Step): boolean {
  return step.code === 'write' || step.code === 'delete' || step.code === 'swap';
}

/**
 * Explains a proven violation from the deepest point of the search. There, every pending
 * completed operation called before the first pending return was refused by the model (a legal
 * one would have led deeper), so the culprit is the one whose return comes first: it had to be
 * linearized before anything called after it returned, and it could not be.
 */
function explain(key: string, operations: readonly HistoryOperation[], steps: readonly Step[], best: Snapshot): Violation {
  const prefix = best.prefix.map((index) => operationAt(operations, index));
  const stuck = [...best.stuck].sort((a, b) => byCall(operationAt(operations, a), operationAt(operations, b)) || a - b);
  assert(stuck.length > 0, 'a dead end has a pending completed operation');
  let culpritIndex = stuck[0] ?? 0;
  for (const index of stuck) {
    const candidate = operationAt(operations, index);
    const current = operationAt(operations, culpritIndex);
    if (candidate.returnMs < current.returnMs) culpritIndex = index;
  }
  const culprit = operationAt(operations, culpritIndex);

  let lastWriteIndex: number | undefined;
  for (const index of best.prefix) {
    const step = steps[index];
    if (step !== undefined && isEffect(step)) lastWriteIndex = index;
  }
  const lastWrite = lastWriteIndex === undefined ? undefined : operationAt(operations, lastWriteIndex);

  // The write of the value the culprit saw or expected, when one exists.
  const wanted = wantedValue(culprit);
  let sourceIndex: number | undefined;
  if (wanted !== null && wanted !== undefined) {
    sourceIndex = operations.findIndex((operation) => (operation.kind === 'put' || operation.kind === 'cas') && operation.input.value === wanted);
    if (sourceIndex < 0) sourceIndex = undefined;
  }

  const involved = new Set<number>(stuck);
  if (lastWriteIndex !== undefined) involved.add(lastWriteIndex);
  if (sourceIndex !== undefined) involved.add(sourceIndex);
  const involvedOperations = [...involved]
    .sort((a, b) => byCall(operationAt(operations, a), operationAt(operations, b)) || a - b)
    .map((index) => operationAt(operations, index));

  const lastWriteClause =
    lastWrite === undefined
      ? 'nothing was written before it: the key was missing'
      : `the last write before it, by client ${lastWrite.client}, ${lastWrite.kind === 'delete' ? 'deleted the key' : `wrote ${quote(lastWrite.input.value ?? '')}`}`;
  let sourceClause = '';
  if (wanted !== null && wanted !== undefined) {
    const source = sourceIndex === undefined ? undefined : operationAt(operations, sourceIndex);
    sourceClause =
      source === undefined
        ? `; no operation wrote ${quote(wanted)}`
        : source === lastWrite
          ? ''
          : `; ${quote(wanted)} was written by client ${source.client} (${source.kind}, called at ${showMs(source.callMs)} ms)`;
  }
  const message = `${describeOutcome(culprit)} but no linearization allows it (${lastWriteClause})${sourceClause}`;
  return {
    key,
    operations: involvedOperations,
    message,
    prefix,
    stateAfterPrefix: replay(prefix),
    stuck: stuck.map((index) => operationAt(operations, index)),
  };
}

function unknownVerdict(
  key: string,
  operations: readonly HistoryOperation[],
  best: Snapshot,
  maxStates: number,
  statesExplored: number,
): KeyVerdict {
  const prefix = best.prefix.map((index) => operationAt(operations, index));
  return {
    type: 'unknown',
    statesExplored,
    violation: {
      key,
      operations: [],
      message: `unknown: the search stored ${maxStates} states on this key (${operations.length} operations) without deciding; the history may or may not be linearizable`,
      prefix,
      stateAfterPrefix: replay(prefix),
      stuck: [],
    },
  };
}

/** The value a get read or a cas expected (null: missing); undefined for other operations. */
function wantedValue(operation: HistoryOperation): string | null | undefined {
  if (operation.kind === 'get') return operation.output.value ?? null;
  if (operation.kind === 'cas') return operation.input.expectedValue ?? null;
  return undefined;
}

function describeOutcome(operation: HistoryOperation): string {
  const who = `${operation.kind} by client ${operation.client}`;
  switch (operation.kind) {
    case 'get':
      return `${who} returned ${showState(operation.output.value ?? null)}`;
    case 'cas': {
      const swap = `from ${showState(operation.input.expectedValue ?? null)} to ${quote(operation.input.value ?? '')}`;
      return operation.output.value === conflictMarker ? `${who} ${swap} failed its condition` : `${who} ${swap} succeeded`;
    }
    case 'delete':
      return operation.output.value === null ? `${who} found the key missing` : `${who} succeeded`;
    case 'put':
      return `${who} of ${quote(operation.input.value ?? '')} succeeded`;
  }
}

function byCall(a: HistoryOperation, b: HistoryOperation): number {
  return a.callMs - b.callMs;
}

function quote(value: string): string {
  return JSON.stringify(value);
}

function showState(value: string | null): string {
  return value === null ? 'missing' : quote(value);
}

function showMs(valueMs: number): string {
  return Number.isInteger(valueMs) ? String(valueMs) : valueMs.toFixed(3);
}
