/**
 * The history a chaos run records and the linearizability checker reads: one entry per
 * operation a client issued, with the interval of monotonic time in which it took effect (if it
 * did). The recorder writes exactly these; the checker interprets them with the register model
 * described on each field.
 */

export type OperationKind = 'put' | 'get' | 'cas' | 'delete';

/**
 * - `ok`: the operation took effect, with the output recorded (a CAS whose condition failed and
 *   a delete of a missing key are `ok` too: they observed the register, see `output`).
 * - `fail`: it certainly did not take effect; the checker drops it, as Jepsen does.
 * - `info`: indeterminate (timeout, ambiguous error): it may have taken effect at any time after
 *   its call, or never.
 */
export type OperationStatus = 'ok' | 'fail' | 'info';

/**
 * The output a CAS records when the store answered 412 (condition failed). It is legal only when
 * the register did not hold the expected value at that moment, and changes nothing.
 */
export const conflictMarker = 'CONFLICT';

export interface HistoryOperation {
  client: number;
  kind: OperationKind;
  key: string;
  /**
   * put: `value` is the value written. cas: `value` is the value written and `expectedValue` the
   * value the register must hold (the recorder translates the If-Match version into the value
   * read at that version; values are unique per run). A cas without `expectedValue` expects the
   * key to be missing. get and delete: nothing.
   */
  input: { value?: string; expectedValue?: string };
  status: OperationStatus;
  /**
   * get: the value read, `null` when the key was missing. delete: `null` when the store answered
   * 404 (the key was missing: legal only then, no effect), absent for a 200. cas: `conflictMarker`
   * when the condition failed, absent when the swap happened. put: nothing.
   */
  output: { value?: string | null };
  /** Monotonic milliseconds at invocation. */
  callMs: number;
  /** Monotonic milliseconds at response; the checker ignores it for `info` operations (taken as +Infinity). */
  returnMs: number;
}
