/** Thrown when an invariant of the system does not hold: a bug or corruption, never bad input. */
export class AssertionError extends Error {
  override name = 'AssertionError';
}

/** Costs nothing when true; stops the program on a broken invariant (TigerBeetle style). */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}
