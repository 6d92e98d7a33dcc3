/**
 * How many of a page's items fit in `bytesMax`, in order: at least one (a single item always
 * fits the cap by the value limits: see limits.pageBytesMax), so a page always moves on.
 */
export function countWithinBytes(itemBytes: readonly number[], bytesMax: number): number {
  let total = 0;
  for (const [position, bytes] of itemBytes.entries()) {
    total += bytes;
    if (total > bytesMax) return Math.max(1, position);
  }
  return itemBytes.length;
}
