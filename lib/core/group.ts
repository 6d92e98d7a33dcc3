/**
 * Which waiting writes of one shard go into the next group commit. Used by the API's in-process
 * group commit and by the shard leader draining its intake: the same rules in both places.
 */

export interface GroupMember {
  key: string;
  /** The lease epoch the write is to be committed under: one lease check covers one epoch. */
  epoch: number;
  /** What the write adds to the transaction, as `limits.transactionBytesMax` counts it. */
  bytes: number;
}

export interface GroupBounds {
  writesMax: number;
  bytesMax: number;
}

/**
 * Takes the next group from the front of `waiting` (oldest first): writes of the first one's
 * epoch, of distinct keys (a transaction touches an item once, and a later write of a key must
 * see the earlier one's outcome), within the bounds. A write left behind keeps its place, and
 * so does every later write of its key. The first write always goes, whatever its size (a single
 * write fits one transaction by the limits' own relations).
 */
export function pickGroup<T>(waiting: readonly T[], describe: (item: T) => GroupMember, bounds: GroupBounds): { group: T[]; left: T[] } {
  const group: T[] = [];
  const left: T[] = [];
  const first = waiting[0];
  if (first === undefined) return { group, left };
  const epoch = describe(first).epoch;
  const keys = new Set<string>();
  let bytes = 0;
  for (const item of waiting) {
    const member = describe(item);
    const fits =
      group.length < bounds.writesMax &&
      member.epoch === epoch &&
      !keys.has(member.key) &&
      (group.length === 0 || bytes + member.bytes <= bounds.bytesMax);
    // Taken or left, the key is spoken for: a later write of it must not pass this one.
    keys.add(member.key);
    if (fits) {
      group.push(item);
      bytes += member.bytes;
    } else {
      left.push(item);
    }
  }
  return { group, left };
}
