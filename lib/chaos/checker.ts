import { assert } from '../core/assert.ts';
import { conflictMarker, type HistoryOperation } from './history.ts';

/**
 * A linearizability checker for a per-key register with compare-and-swap.
 *
 * Linearizability is local (P-compositional): a history is linearizable if and only if its
 * restriction to each key is, so each key is checked on its own. The search is the Wing–Gong
 * algorithm with Lowe's memoization, as Porcupine implements it: the calls and returns of one key
 * form a doubly linked list in time order; the search linearizes a pending call (lifting it and
 * its return out of the list) whenever the model allows it and the resulting (linearized set,
 * register) pair has not been seen, and backtracks (unlifting) when it reaches a return whose call
 * it could not linearize. The completed set is stored in a form whose size is the concurrency, not
 * the history (`CompletedSet`). Indeterminate operations, which never return and so stay pending
 * to the end, get sound reductions (`ValueCodes`, `groupIndeterminate`, the enabling rule of
 * `checkKey`, dominance in `StateCache`), without which a few dozen of them make a refutation
 * exponential.
 *
 * Before the search, direct refutations (`findWitness`) catch the common failures, a stale read
 * or a lost update, in O(n log n) however long the history: a search has to exhaust every
 * interleaving before the failure to refute it.
 *
 * The module is pure: no clock, no randomness, no I/O.
 */

/** The bound on (linearized set, register) pairs stored per key; past it the verdict is unknown. */
export const maxStatesPerKeyDefault = 5_000_000;

export interface Violation {
  key: string;
  /**
   * The operations involved, in call order. From the search: the last write of the longest
   * linearizable prefix, the write of the value the culprit read or expected (if any), and the
   * completed operations that could not be linearized after that prefix. From a direct
   * refutation: its witnesses. Empty when the verdict is unknown.
   */
  operations: HistoryOperation[];
  /** One line for a human; it starts with "unknown:" when the search hit its bound. */
  message: string;
  /**
   * - `direct`: a direct refutation (a value read that nobody wrote, read before its write began
   *   or after a later write completed, or expected by two successful swaps).
   * - `search`: the search exhausted every linearization.
   * - `bound`: the search hit `maxStatesPerKey`; the verdict for this key is unknown.
   */
  foundBy: 'direct' | 'search' | 'bound';
  /** The longest linearizable prefix the search found, in linearization order (empty for `direct`). */
  prefix: HistoryOperation[];
  /** The register after that prefix: `null` when the key is missing. */
  stateAfterPrefix: string | null;
  /** The completed operations that could not be linearized next: after the prefix, or the culprit of a direct refutation. */
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
  /** Search nodes entered (linearized set, register), summed over keys: the search work done. */
  statesExplored: number;
  /** True when the search of at least one key hit `maxStatesPerKey` before deciding. */
  timedOut?: boolean;
  /** Keys proven not linearizable, in key order (present when not empty). */
  violatingKeys?: string[];
  /** Keys whose search hit the bound: unknown verdict (present when not empty). */
  undecidedKeys?: string[];
}

export interface CheckOptions {
  /** Search nodes a key may enter before its verdict is unknown (default `maxStatesPerKeyDefault`). */
  maxStatesPerKey?: number;
  /** Skip the direct refutations and decide by the search alone (tests compare the two). */
  searchOnly?: boolean;
}

/**
 * Decides whether `history` is linearizable for the register model of `HistoryOperation`, key by
 * key: first by the direct refutations, then by the search. Never reports `linearizable: true`
 * without a complete search: a key whose search exceeds `maxStatesPerKey` makes the verdict
 * `false` with `timedOut: true` (unknown). Throws an `AssertionError` on a malformed history (a
 * recorder bug, not a verdict).
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
    const witness = options.searchOnly === true ? undefined : findWitness(key, operations);
    const verdict: KeyVerdict = witness !== undefined ? { type: 'violation', statesExplored: 0, violation: witness } : checkKey(key, operations, maxStatesPerKey);
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
  if (violation.foundBy === 'direct') {
    lines.push('operations involved:');
    for (const operation of violation.operations) lines.push(`  ${formatOperation(operation)}`);
    return lines.join('\n');
  }
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
// Model: a register of `string | null`, with values coded as small integers (see `ValueCodes`)

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
  /** Position in the time order of all events (calls of indeterminate operations included). */
  order: number;
  /** For a call: its return. Undefined for a return (and the head). */
  match: EventNode | undefined;
  prev: EventNode | undefined;
  next: EventNode | undefined;
}

interface Frame {
  operation: number;
  /** The call's node for a completed operation (to unlift and resume after it); undefined for an indeterminate one. */
  call: EventNode | undefined;
  /** For an indeterminate operation: its group, to resume with the next one, and the order of the first pending return then. */
  group: number;
  firstReturnOrder: number;
  stateBefore: number;
  /** `enablingFrom` of the node the operation was linearized at. */
  enablingFromBefore: number;
  /** The completed set before the operation, restored on backtracking. */
  completedBefore: CompletedView;
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
 * Orders all events in time and links the calls and returns of the completed operations. At
 * equal times a call comes before a return, so operations that touch at a millisecond boundary
 * count as concurrent: with millisecond clocks the checker must not invent a real-time order.
 * Ties beyond that are broken by history order, which keeps the search deterministic.
 * Indeterminate operations return at +Infinity, so their returns never constrain anything: they
 * stay out of the list, and `callOrders` says from when each may be placed. `returnRanks` numbers
 * the completed operations in the order of their returns.
 */
function buildEvents(operations: readonly HistoryOperation[]): { head: EventNode; callOrders: number[]; returnRanks: number[] } {
  interface Event {
    timeMs: number;
    isCall: boolean;
    operation: number;
    node: EventNode | undefined;
  }
  const events: Event[] = [];
  for (const [index, operation] of operations.entries()) {
    if (operation.status === 'info') {
      events.push({ timeMs: operation.callMs, isCall: true, operation: index, node: undefined });
      continue;
    }
    const returnNode: EventNode = { operation: index, order: 0, match: undefined, prev: undefined, next: undefined };
    const callNode: EventNode = { operation: index, order: 0, match: returnNode, prev: undefined, next: undefined };
    events.push({ timeMs: operation.callMs, isCall: true, operation: index, node: callNode });
    events.push({ timeMs: operation.returnMs, isCall: false, operation: index, node: returnNode });
  }
  events.sort((a, b) => {
    if (a.timeMs !== b.timeMs) return a.timeMs < b.timeMs ? -1 : 1;
    if (a.isCall !== b.isCall) return a.isCall ? -1 : 1;
    return a.operation - b.operation;
  });
  const callOrders = operations.map(() => -1);
  const returnRanks = operations.map(() => -1);
  let returnCount = 0;
  const head: EventNode = { operation: -1, order: -1, match: undefined, prev: undefined, next: undefined };
  let last = head;
  for (const [order, event] of events.entries()) {
    if (event.isCall) callOrders[event.operation] = order;
    else returnRanks[event.operation] = returnCount++;
    if (event.node === undefined) continue;
    event.node.order = order;
    last.next = event.node;
    event.node.prev = last;
    last = event.node;
  }
  return { head, callOrders, returnRanks };
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

/** murmur3's finalizer: spreads 32 bits for the memo's hash. */
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
  completed: CompletedView;
  state: number;
  /**
   * The sets of indeterminate operations visited with this (completed set, register), an antichain
   * under inclusion, each packed in a string (16 bits a character): millions of them are stored,
   * and a string costs a fraction of a typed array.
   */
  indeterminateSets: string[];
}

/**
 * The memo of visited search nodes (linearized set, register): Lowe's observation that two nodes
 * with the same linearized set and the same register have the same future. With indeterminate
 * operations it prunes by dominance: a node that has placed the same completed operations, holds
 * the same register and has placed a superset of the indeterminate ones of a visited node can do
 * nothing that node could not (an indeterminate operation is optional and, never returning,
 * constrains no other).
 */
class StateCache {
  private readonly buckets = new Map<number, CacheEntry[]>();
  /** Nodes stored (a set dropped later because a new one dominates it still counts). */
  size = 0;

  /** Whether a visited node dominates this one. */
  dominates(completed: CompletedView, indeterminate: Uint32Array, state: number): boolean {
    const entry = this.entryOf(completed, state);
    return entry !== undefined && entry.indeterminateSets.some((visited) => packedIsSubset(visited, indeterminate));
  }

  /** Stores a node that no visited node dominates. */
  insert(completed: CompletedView, indeterminate: Uint32Array, state: number): void {
    const entry = this.entryOf(completed, state);
    if (entry !== undefined) {
      // Keep the antichain small: the new set dominates every visited superset of itself.
      entry.indeterminateSets = entry.indeterminateSets.filter((visited) => !packedIsSuperset(visited, indeterminate));
      entry.indeterminateSets.push(pack(indeterminate));
    } else {
      const hash = bucketHash(completed, state);
      const created: CacheEntry = { completed, state, indeterminateSets: [pack(indeterminate)] };
      const bucket = this.buckets.get(hash);
      if (bucket === undefined) this.buckets.set(hash, [created]);
      else bucket.push(created);
    }
    this.size += 1;
  }

  private entryOf(completed: CompletedView, state: number): CacheEntry | undefined {
    return this.buckets.get(bucketHash(completed, state))?.find((candidate) => candidate.state === state && sameCompleted(candidate.completed, completed));
  }
}

function bucketHash(completed: CompletedView, state: number): number {
  let hash = mix(completed.watermark ^ 0x9e3779b9);
  for (const rank of completed.above) hash = mix(hash ^ rank);
  return mix(hash ^ state) >>> 0;
}

function sameCompleted(a: CompletedView, b: CompletedView): boolean {
  if (a.watermark !== b.watermark || a.above.length !== b.above.length) return false;
  for (let index = 0; index < a.above.length; index += 1) {
    if (a.above[index] !== b.above[index]) return false;
  }
  return true;
}

/**
 * The set of completed operations placed, in a form whose size is the concurrency, not the
 * history: every operation returning before the first unplaced one (`watermark`, in return order)
 * is placed, and the others placed (`above`, ascending) were all called before that operation
 * returned. Views are immutable, so the memo and the stack share them without copying.
 */
interface CompletedView {
  readonly watermark: number;
  readonly above: readonly number[];
}

class CompletedSet {
  private readonly placed: Uint8Array;
  view: CompletedView = { watermark: 0, above: [] };

  constructor(count: number) {
    this.placed = new Uint8Array(count + 1);
  }

  /** Places the operation of return rank `rank`; returns the view before, for `restore`. */
  place(rank: number): CompletedView {
    const before = this.view;
    assert(this.placed[rank] === 0, `completed operation of rank ${rank} is not placed twice`);
    this.placed[rank] = 1;
    if (rank === before.watermark) {
      let watermark = rank + 1;
      while (this.placed[watermark] === 1) watermark += 1;
      this.view = { watermark, above: before.above.filter((other) => other > watermark) };
    } else {
      const above = [...before.above];
      let position = above.length;
      while (position > 0 && (above[position - 1] ?? 0) > rank) position -= 1;
      above.splice(position, 0, rank);
      this.view = { watermark: before.watermark, above };
    }
    return before;
  }

  /** Undoes the last `place` (the search backtracks in stack order). */
  restore(rank: number, before: CompletedView): void {
    this.placed[rank] = 0;
    this.view = before;
  }
}

function pack(words: Uint32Array): string {
  let packed = '';
  for (const word of words) packed += String.fromCharCode(word & 0xffff, word >>> 16);
  return packed;
}

/** Whether every bit of the packed set is set in `words`. */
function packedIsSubset(packed: string, words: Uint32Array): boolean {
  for (let index = 0; index < words.length; index += 1) {
    const word = words[index] ?? 0;
    if ((packed.charCodeAt(2 * index) & ~word & 0xffff) !== 0) return false;
    if ((packed.charCodeAt(2 * index + 1) & ~(word >>> 16) & 0xffff) !== 0) return false;
  }
  return true;
}

/** Whether every bit of `words` is set in the packed set. */
function packedIsSuperset(packed: string, words: Uint32Array): boolean {
  for (let index = 0; index < words.length; index += 1) {
    const word = words[index] ?? 0;
    if ((word & 0xffff & ~packed.charCodeAt(2 * index)) !== 0) return false;
    if (((word >>> 16) & ~packed.charCodeAt(2 * index + 1)) !== 0) return false;
  }
  return true;
}

/** A bitset over `count` slots. */
class Bitset {
  readonly words: Uint32Array;

  constructor(count: number) {
    this.words = new Uint32Array(Math.ceil(count / 32));
  }

  toggle(slot: number): void {
    const word = slot >>> 5;
    this.words[word] = (this.words[word] ?? 0) ^ (1 << (slot & 31));
  }
}

/**
 * Indeterminate operations grouped by signature (same step: same kind, same value codes), each
 * group in call order. Once called, the operations of a group are interchangeable: they never
 * return, so each stays available from its call on. The search therefore only ever places the
 * earliest-called unplaced one of a group, and the placed ones of a group are always its first
 * `n`: 2^k subsets become k + 1 counts.
 */
function groupIndeterminate(operations: readonly HistoryOperation[], steps: readonly Step[], callOrders: readonly number[]): number[][] {
  const groupIds = new Map<string, number>();
  const groups: number[][] = [];
  const byCall = operations.map((_, index) => index).sort((a, b) => (callOrders[a] ?? 0) - (callOrders[b] ?? 0));
  for (const index of byCall) {
    const step = steps[index];
    if (operations[index]?.status !== 'info' || step === undefined) continue;
    const signature = `${step.code}|${step.value}|${step.expected}`;
    let group = groupIds.get(signature);
    if (group === undefined) {
      group = groups.length;
      groupIds.set(signature, group);
      groups.push([]);
    }
    groups[group]?.push(index);
  }
  return groups;
}

/**
 * The search for one key. Completed operations are placed Wing–Gong style from the event list
 * (a call may be placed when it comes before the first pending return); once none leads anywhere,
 * indeterminate operations are tried, one candidate per group.
 *
 * After an indeterminate operation the next operation placed must be one it enables (illegal from
 * the register before it, legal after). Any linearization can be rewritten into that form: an
 * indeterminate operation that enables nothing can be moved after its successor (a read that was
 * legal anyway) or left out (its write is overwritten, or the swap that follows was legal anyway
 * and writes the same register), and leaving one out or placing it later is never worse. This
 * prunes every branch that places one for no reason. The node right after an indeterminate
 * operation is transient: its options are restricted, so a dominating visited node prunes it but
 * it is never stored to prune others.
 */
function checkKey(key: string, operations: readonly HistoryOperation[], maxStates: number): KeyVerdict {
  const values = new ValueCodes(operations);
  const steps = operations.map((operation) => stepOf(operation, values));
  const indeterminate = operations.map((operation) => operation.status === 'info');
  // Each indeterminate operation's slot in the bitset of placed ones (completed ones are numbered by return rank).
  const slots: number[] = [];
  let completedCount = 0;
  let indeterminateCount = 0;
  for (const isIndeterminate of indeterminate) slots.push(isIndeterminate ? indeterminateCount++ : (completedCount++, -1));
  // Only completed operations must be placed: an `info` one that is never linearized is one
  // that never took effect (Knossos and Porcupine semantics for an operation that never returns).
  if (completedCount === 0) return { type: 'linearizable', statesExplored: 0 };

  const { head, callOrders, returnRanks } = buildEvents(operations);
  const groups = groupIndeterminate(operations, steps, callOrders);
  const placedByGroup = groups.map(() => 0);
  const groupOf = operations.map(() => -1);
  for (const [group, members] of groups.entries()) for (const member of members) groupOf[member] = group;

  const completed = new CompletedSet(completedCount);
  const placedIndeterminate = new Bitset(indeterminateCount);
  const cache = new StateCache();
  const stack: Frame[] = [];
  let state = missing;
  let linearizedCompleted = 0;
  let transientNodes = 0;
  /** `none`, or the register before the indeterminate operation just placed (see above). */
  let enablingFrom = none;
  let best: Snapshot | undefined;
  const explored = () => cache.size + transientNodes;

  /** Adds the operation to the linearized sets; returns the completed set before, for `unplace`. */
  const place = (operation: number): CompletedView => {
    if (!indeterminate[operation]) {
      linearizedCompleted += 1;
      return completed.place(returnRanks[operation] ?? -1);
    }
    placedIndeterminate.toggle(slots[operation] ?? -1);
    const group = groupOf[operation] ?? -1;
    placedByGroup[group] = (placedByGroup[group] ?? 0) + 1;
    return completed.view;
  };
  const unplace = (operation: number, completedBefore: CompletedView): void => {
    if (!indeterminate[operation]) {
      linearizedCompleted -= 1;
      completed.restore(returnRanks[operation] ?? -1, completedBefore);
      return;
    }
    placedIndeterminate.toggle(slots[operation] ?? -1);
    const group = groupOf[operation] ?? -1;
    placedByGroup[group] = (placedByGroup[group] ?? 0) - 1;
  };

  // The scan position: a node of the list, or (group >= 0) a group of indeterminate operations,
  // available when called before the first pending return (`firstReturnOrder`).
  let node = head.next;
  let group = -1;
  let firstReturnOrder = -1;
  for (;;) {
    let operation: number;
    if (group < 0) {
      assert(node !== undefined, 'the list ends with a return: the scan stops at the first one');
      if (node.match === undefined) {
        // The first pending return: every completed candidate has been tried.
        firstReturnOrder = node.order;
        group = 0;
        continue;
      }
      operation = node.operation;
    } else {
      if (group >= groups.length) {
        // A dead end: backtrack. Only a stored node can be the deepest point: a transient one has
        // the depth of its parent, whose every legal continuation was tried.
        if (enablingFrom === none && (best === undefined || linearizedCompleted > best.completedCount)) best = snapshotOf(stack, head, operations);
        const frame = stack.pop();
        if (frame === undefined) {
          assert(best !== undefined, 'the root is a stored node and reached a dead end');
          return { type: 'violation', statesExplored: explored(), violation: explain(key, operations, steps, best) };
        }
        state = frame.stateBefore;
        enablingFrom = frame.enablingFromBefore;
        unplace(frame.operation, frame.completedBefore);
        if (frame.call !== undefined) {
          unlift(frame.call);
          node = frame.call.next;
          group = -1;
        } else {
          group = frame.group + 1;
          firstReturnOrder = frame.firstReturnOrder;
        }
        continue;
      }
      const candidate = groups[group]?.[placedByGroup[group] ?? 0];
      if (candidate === undefined || (callOrders[candidate] ?? 0) > firstReturnOrder) {
        group += 1;
        continue;
      }
      operation = candidate;
    }

    const step = steps[operation];
    assert(step !== undefined, `operation ${operation} has a step`);
    const next = apply(step, state);
    if (next !== illegal && (enablingFrom === none || apply(step, enablingFrom) === illegal)) {
      const isIndeterminate = group >= 0;
      const completedBefore = place(operation);
      if (!cache.dominates(completed.view, placedIndeterminate.words, next)) {
        if (explored() >= maxStates) {
          unplace(operation, completedBefore);
          return unknownVerdict(key, operations, best ?? snapshotOf(stack, head, operations), maxStates, explored());
        }
        if (isIndeterminate) transientNodes += 1;
        else cache.insert(completed.view, placedIndeterminate.words, next);
        stack.push({ operation, call: isIndeterminate ? undefined : node, group, firstReturnOrder, stateBefore: state, enablingFromBefore: enablingFrom, completedBefore });
        enablingFrom = isIndeterminate ? state : none;
        state = next;
        if (!isIndeterminate && node !== undefined) lift(node);
        if (linearizedCompleted === completedCount) return { type: 'linearizable', statesExplored: explored() };
        node = head.next;
        group = -1;
        continue;
      }
      unplace(operation, completedBefore);
    }
    if (group >= 0) group += 1;
    else node = node?.next;
  }
}

/**
 * The prefix on the stack and the completed operations pending there whose call comes before the
 * first pending return: the ones that had to be linearized next.
 */
function snapshotOf(stack: readonly Frame[], head: EventNode, operations: readonly HistoryOperation[]): Snapshot {
  const stuck: number[] = [];
  for (let node = head.next; node !== undefined && node.match !== undefined; node = node.next) {
    if (operations[node.operation]?.status === 'ok') stuck.push(node.operation);
  }
  const prefix = stack.map((frame) => frame.operation);
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
      : `the last write before it, by client ${lastWrite.client}, ${describeEffect(lastWrite)}`;
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
    foundBy: 'search',
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
      foundBy: 'bound',
      message: `unknown: the search entered ${maxStates} states (maxStatesPerKey) on this key (${operations.length} operations) without deciding; the history may or may not be linearizable`,
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

// ---------------------------------------------------------------------------------------------
// Direct refutations

/**
 * Refutations that need no search. Each relies on values being unique (a value has one writer,
 * so a register holds it only between that write and the next write); a value with several
 * writers is left to the search. For a completed get that read value v, or a completed swap that
 * expected v:
 * - no operation wrote v (a failed write does not count: it certainly had no effect);
 * - it returned before the write of v was called;
 * - the write of v completed, then another completed write began and completed, all before it
 *   was called: v was overwritten for good;
 * - (a swap) an earlier-called completed swap also expected v and succeeded: after the first of
 *   the two, v is gone.
 * Reads of null are left to the search: deletes and the initial state all produce it.
 */
function findWitness(key: string, operations: readonly HistoryOperation[]): Violation | undefined {
  const writersByValue = new Map<string, number[]>();
  for (const [index, operation] of operations.entries()) {
    if ((operation.kind === 'put' || operation.kind === 'cas') && operation.input.value !== undefined) {
      const writers = writersByValue.get(operation.input.value);
      if (writers === undefined) writersByValue.set(operation.input.value, [index]);
      else writers.push(index);
    }
  }
  // Completed writes by call time, with the earliest return among those called at or after each.
  const effects = operations
    .map((_, index) => index)
    .filter((index) => isCompletedEffect(operationAt(operations, index)))
    .sort((a, b) => byCall(operationAt(operations, a), operationAt(operations, b)) || a - b);
  const earliestReturnFrom: number[] = new Array<number>(effects.length + 1).fill(-1);
  for (let position = effects.length - 1; position >= 0; position -= 1) {
    const here = effects[position] ?? -1;
    const after = earliestReturnFrom[position + 1] ?? -1;
    earliestReturnFrom[position] = after >= 0 && operationAt(operations, after).returnMs <= operationAt(operations, here).returnMs ? after : here;
  }

  const readers = operations
    .map((_, index) => index)
    .filter((index) => observedValue(operationAt(operations, index)) !== undefined)
    .sort((a, b) => byCall(operationAt(operations, a), operationAt(operations, b)) || a - b);
  const firstSwapByExpected = new Map<string, number>();
  for (const index of readers) {
    const reader = operationAt(operations, index);
    const value = observedValue(reader);
    assert(value !== undefined, 'a reader observed a value');
    const writers = writersByValue.get(value) ?? [];
    const refuted = (because: string, witnesses: number[]): Violation => ({
      key,
      operations: [...new Set([...witnesses, index])].sort((a, b) => byCall(operationAt(operations, a), operationAt(operations, b)) || a - b).map((at) => operationAt(operations, at)),
      message: `${describeOutcome(reader)} but no linearization allows it (${because})`,
      foundBy: 'direct',
      prefix: [],
      stateAfterPrefix: null,
      stuck: [reader],
    });
    if (writers.length === 0) return refuted(`no operation wrote ${quote(value)}`, []);
    if (writers.length > 1) continue;
    const writerIndex = writers[0] ?? -1;
    const writer = operationAt(operations, writerIndex);
    if (reader.returnMs < writer.callMs) {
      return refuted(`it returned at ${showMs(reader.returnMs)} ms, before the write of ${quote(value)} by client ${writer.client} was called at ${showMs(writer.callMs)} ms`, [writerIndex]);
    }
    if (writer.status === 'ok') {
      const position = firstCalledAfter(effects, operations, writer.returnMs);
      const overwriterIndex = earliestReturnFrom[position] ?? -1;
      if (overwriterIndex >= 0) {
        const overwriter = operationAt(operations, overwriterIndex);
        if (overwriter.returnMs < reader.callMs) {
          return refuted(
            `${quote(value)} was written by client ${writer.client}, then a later write by client ${overwriter.client} ${describeEffect(overwriter)} ` +
              `and completed before it was called`,
            [writerIndex, overwriterIndex],
          );
        }
      }
    }
    if (reader.kind === 'cas') {
      const earlier = firstSwapByExpected.get(value);
      if (earlier !== undefined) {
        const other = operationAt(operations, earlier);
        return refuted(`cas by client ${other.client} from ${quote(value)} to ${quote(other.input.value ?? '')} also succeeded, and only client ${writer.client} wrote ${quote(value)}, once`, [writerIndex, earlier]);
      }
      firstSwapByExpected.set(value, index);
    }
  }
  return undefined;
}

/** The non-null value a completed get read or a completed successful swap expected. */
function observedValue(operation: HistoryOperation): string | undefined {
  if (operation.status !== 'ok') return undefined;
  if (operation.kind === 'get') return operation.output.value ?? undefined;
  if (operation.kind === 'cas' && operation.output.value !== conflictMarker) return operation.input.expectedValue;
  return undefined;
}

/** A completed operation that certainly changed the register. */
function isCompletedEffect(operation: HistoryOperation): boolean {
  if (operation.status !== 'ok') return false;
  if (operation.kind === 'put') return true;
  if (operation.kind === 'delete') return operation.output.value !== null;
  if (operation.kind === 'cas') return operation.output.value !== conflictMarker;
  return false;
}

/** The position in `effects` (sorted by call) of the first one called strictly after `timeMs`. */
function firstCalledAfter(effects: readonly number[], operations: readonly HistoryOperation[], timeMs: number): number {
  let low = 0;
  let high = effects.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (operationAt(operations, effects[middle] ?? -1).callMs > timeMs) high = middle;
    else low = middle + 1;
  }
  return low;
}

function describeEffect(operation: HistoryOperation): string {
  return operation.kind === 'delete' ? 'deleted the key' : `wrote ${quote(operation.input.value ?? '')}`;
}

/** What the bank checker reads: each read-only transaction's balances, in account order (null: missing). */
export interface BankSnapshot {
  client: number;
  balances: (number | null)[];
}

export interface BankVerdict {
  reads: number;
  /** Reads that saw a missing account, a negative balance, or a sum other than the total. */
  violations: number;
  samples: string[];
}

/**
 * Jepsen's bank checker: transfers move money but never create or destroy it, so every
 * snapshot of all accounts must hold every account, none below zero, summing to `total`. A
 * snapshot that saw half a transfer (one shard's part) shows up as a wrong sum.
 */
export function checkBank(reads: readonly BankSnapshot[], total: number): BankVerdict {
  const samples: string[] = [];
  let violations = 0;
  for (const read of reads) {
    const problems: string[] = [];
    const missing = read.balances.flatMap((balance, account) => (balance === null ? [account] : []));
    if (missing.length > 0) problems.push(`accounts ${missing.join(',')} missing`);
    const negative = read.balances.flatMap((balance, account) => (balance !== null && balance < 0 ? [`${account}=${balance}`] : []));
    if (negative.length > 0) problems.push(`negative ${negative.join(',')}`);
    const sum = read.balances.reduce<number>((sum, balance) => sum + (balance ?? 0), 0);
    if (sum !== total) problems.push(`sum ${sum}, not ${total}`);
    if (problems.length === 0) continue;
    violations += 1;
    if (samples.length < 5) samples.push(`client ${read.client} read [${read.balances.join(', ')}]: ${problems.join('; ')}`);
  }
  return { reads: reads.length, violations, samples };
}

/** One log entry as checkLock reads it: puts and deletes with their values as text. */
export interface LockLogEntry {
  index: number;
  ops: { type: 'put' | 'delete'; key: string; value?: string }[];
}

/** What the fenced lock workload recorded (lib/chaos/workload.ts LockHistory, structurally). */
export interface LockRun {
  keys: { sameShard: string; crossShard: string };
  acquisitions: readonly { client: number; token: number | null; status: 'ok' | 'fail' | 'info'; callMs: number; returnMs: number }[];
  observations: readonly { client: number; token: number | null; callMs: number; returnMs: number }[];
  releases: readonly { client: number; token: number; stale: boolean; status: 'ok' | 'fail' | 'info'; reason?: string; callMs: number; returnMs: number }[];
  writes: readonly { client: number; key: string; token: number; element: string; stale: boolean; status: 'ok' | 'fail' | 'info'; reason?: string; callMs: number; returnMs: number }[];
}

export interface LockVerdict {
  violations: number;
  samples: string[];
  /** Acquisitions of the lock in the log (each a token). */
  tokensInLog: number;
  /** Appends committed in the data keys' logs (accepted fenced writes, unknown outcomes that landed included). */
  committedWrites: number;
  /** Stale writes (the holder-pause fault) sent, refused with FenceRejected, and accepted (each a violation). */
  stale: { sent: number; refused: number; accepted: number; releasesRefused: number };
}

/** The token an appended element names: `c<client>.t<token>.s<sequence>[.stale]`. */
function tokenOfElement(element: string): number | undefined {
  const match = /^c\d+\.t(\d+)\.s\d+(?:\.stale)?$/.exec(element);
  return match === null ? undefined : Number(match[1]);
}

/**
 * The fenced lock's proof, from the logs and the clients' history:
 *
 * - mutual exclusion and token order in the lock key's log: the lock is put only while it is not
 *   held, each acquisition's token (the lock key's version, its log index) is above every earlier
 *   one, and every acquisition a client was answered is there at its token;
 * - acquisitions in real time: one answered before another was sent has the smaller token;
 * - every committed append to the key on the lock's shard (one log orders both) was made with the
 *   token the lock held at that index: the latest acquisition's, not released since;
 * - on both keys the appends' tokens never decrease in the key's log order, and each is a token
 *   the lock's log granted;
 * - no stale write was accepted: neither an append sent after its client saw the lock leave its
 *   token (the holder-pause fault) nor any append, stale or not, whose token had demonstrably
 *   ended before it was sent (a higher token acquired, the token released, or the lock seen at
 *   another token or free after the acquisition) may be in a log or answered 200; the same for
 *   a release with such a token.
 *
 * `lockLog` is the lock key's shard's log; `keyLogs` each data key's shard's log, in index order.
 */
export function checkLock(run: LockRun, lockKey: string, lockLog: readonly LockLogEntry[], keyLogs: ReadonlyMap<string, readonly LockLogEntry[]>): LockVerdict {
  const samples: string[] = [];
  let violations = 0;
  const violation = (what: string) => {
    violations += 1;
    if (samples.length < 8) samples.push(what);
  };

  // The lock key's log: who held it at each index, and the same-shard key's appends checked against it.
  const granted = new Set<number>();
  let held: number | undefined;
  let highest = 0;
  for (const entry of lockLog) {
    for (const op of entry.ops) {
      if (op.key === lockKey) {
        if (op.type === 'put') {
          if (held !== undefined) violation(`lock acquired at index ${entry.index} while token ${held} still held it (two holders)`);
          if (entry.index <= highest) violation(`lock token ${entry.index} granted after token ${highest}`);
          held = entry.index;
          highest = Math.max(highest, entry.index);
          granted.add(entry.index);
        } else {
          held = undefined;
        }
      } else if (op.key === run.keys.sameShard && op.type === 'put') {
        const token = tokenOfElement(op.value?.split(',').at(-1) ?? '');
        if (token === undefined || token !== held) violation(`append ${op.value?.split(',').at(-1)} to ${op.key} committed at index ${entry.index} while the lock was ${held === undefined ? 'free' : `at token ${held}`}`);
      }
    }
  }

  const acquiredOk = run.acquisitions.filter((acquisition) => acquisition.status === 'ok' && acquisition.token !== null) as { client: number; token: number; callMs: number; returnMs: number }[];
  const acquiredAt = new Map<number, number>();
  for (const acquisition of acquiredOk) {
    if (acquiredAt.has(acquisition.token)) violation(`token ${acquisition.token} answered to two acquisitions`);
    acquiredAt.set(acquisition.token, acquisition.returnMs);
    if (!granted.has(acquisition.token)) violation(`client ${acquisition.client} was answered token ${acquisition.token}, which is not an acquisition in the lock's log`);
  }
  const byReturn = [...acquiredOk].sort((a, b) => a.returnMs - b.returnMs);
  for (const later of acquiredOk) {
    // Any acquisition answered before this one was sent must have a smaller token.
    const earlier = byReturn.filter((candidate) => candidate.returnMs < later.callMs && candidate.token >= later.token);
    if (earlier.length > 0) violation(`token ${later.token} acquired after token ${earlier[0]!.token} had been answered: tokens went back`);
  }

  // Appends in each key's log order: tokens non-decreasing, each a granted token.
  const committed = new Set<string>();
  for (const key of [run.keys.sameShard, run.keys.crossShard]) {
    let previous = 0;
    for (const entry of keyLogs.get(key) ?? []) {
      for (const op of entry.ops) {
        if (op.key !== key || op.type !== 'put') continue;
        const element = op.value?.split(',').at(-1) ?? '';
        const token = tokenOfElement(element);
        committed.add(element);
        if (token === undefined) {
          violation(`${key} index ${entry.index}: a value not written by the workload (${element.slice(0, 40)})`);
          continue;
        }
        if (!granted.has(token)) violation(`${key} index ${entry.index}: append ${element} with token ${token}, which the lock's log never granted`);
        if (token < previous) violation(`${key} index ${entry.index}: append ${element} with token ${token} after an append with token ${previous}`);
        previous = Math.max(previous, token);
      }
    }
  }

  // The moment each token had demonstrably ended, as the clients saw it.
  const endedAt = (token: number): number => {
    let ended = Number.POSITIVE_INFINITY;
    for (const acquisition of acquiredOk) if (acquisition.token > token) ended = Math.min(ended, acquisition.returnMs);
    for (const release of run.releases) if (release.status === 'ok' && release.token === token && !release.stale) ended = Math.min(ended, release.returnMs);
    const acquiredReturnMs = acquiredAt.get(token);
    for (const seen of run.observations) {
      const movedOn = seen.token !== null ? seen.token > token : acquiredReturnMs !== undefined && seen.callMs > acquiredReturnMs;
      if (movedOn) ended = Math.min(ended, seen.returnMs);
    }
    return ended;
  };

  const stale = { sent: 0, refused: 0, accepted: 0, releasesRefused: 0 };
  for (const write of run.writes) {
    const landed = write.status === 'ok' || committed.has(write.element);
    if (write.stale) {
      stale.sent += 1;
      if (write.status === 'fail' && write.reason === 'FenceRejected') stale.refused += 1;
    }
    // A refusal says nothing was written: the log must agree.
    if (write.status === 'fail' && committed.has(write.element)) violation(`append ${write.element} to ${write.key} was refused (${write.reason ?? '?'}) but is in the log`);
    if (landed && (write.stale || endedAt(write.token) < write.callMs)) {
      if (write.stale) stale.accepted += 1;
      violation(`stale append ${write.element} to ${write.key} ${write.status === 'ok' ? 'answered 200' : 'is in the log'}: token ${write.token} had ended before it was sent`);
    }
  }
  for (const release of run.releases) {
    if (release.stale && release.status === 'fail' && release.reason === 'FenceRejected') stale.releasesRefused += 1;
    if (release.status === 'ok' && (release.stale || endedAt(release.token) < release.callMs)) violation(`release of token ${release.token} by client ${release.client} answered 200 after the token had ended`);
  }

  return { violations, samples, tokensInLog: granted.size, committedWrites: committed.size, stale };
}
