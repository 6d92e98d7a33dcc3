/**
 * A numeric command-line option (`--rate 200`) within bounds. Throws a message that names the
 * option, the bounds and what was given; the command prints it with its usage and exits 2.
 */
export function numberOption(raw: string, name: string, bounds: { min: number; max: number; integer?: boolean; what?: string }): number {
  const value = Number(raw);
  const integer = bounds.integer === true;
  if (raw.trim() === '' || !Number.isFinite(value) || value < bounds.min || value > bounds.max || (integer && !Number.isInteger(value))) {
    throw new Error(`--${name} must be ${bounds.what ?? (integer ? 'an integer' : 'a number')} from ${bounds.min} to ${bounds.max}, got "${raw}"`);
  }
  return value;
}
