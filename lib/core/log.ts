import { createHash, type Hash } from 'node:crypto';
import { assert } from './assert.ts';
import { limits } from './limits.ts';

/** One change inside a log entry; an entry's operations apply together or not at all. */
export type Operation =
  | { type: 'put'; key: string; value: Uint8Array }
  | { type: 'delete'; key: string }
  /** The marker a new leader appends under its own epoch, so the log records every epoch boundary. */
  | { type: 'leader'; node: string; epoch: number; previousEpoch: number };

/**
 * One committed entry of a shard's log. Indexes are dense per shard and each entry carries the
 * hash of the one before it, so a replica can prove it holds an unbroken prefix of the log.
 */
export interface LogEntry {
  shard: number;
  index: number;
  epoch: number;
  ops: Operation[];
  prevHash: string;
  hash: string;
  requestId: string;
  committedAtMs: number;
  /**
   * A multi-shard transaction's part: every shard it wrote has an entry with the same id, and
   * each names all the parts, so a replica knows when it holds the whole transaction.
   */
  txn?: TxnParts;
}

/** The shared id of a transaction's entries, and each part's place (shard and index). */
export interface TxnParts {
  id: string;
  parts: { shard: number; index: number }[];
}

/** An entry before it is linked into the chain. */
export type UnsealedEntry = Omit<LogEntry, 'hash' | 'prevHash'>;

/** The prevHash of index 1: there is nothing before it to hash. */
export const genesisHash: string = '0'.repeat(64);

/** Bumped if the encoding ever changes, so hashes of two encodings can never be confused. */
const encodingTag = 'epochkv/log-entry/v1';

/**
 * SHA-256 (hex) over a canonical encoding of every field of the entry. Every string and byte
 * array is length-prefixed and every field has a fixed position, so the encoding is injective:
 * no two different entries share an encoding, whatever their keys and values contain
 * (`{key: 'ab', value: 'c'}` and `{key: 'a', value: 'bc'}` encode differently).
 */
export function hashEntry(entry: Omit<LogEntry, 'hash'>): string {
  const malformation = describeMalformation(entry);
  assert(malformation === undefined, `cannot hash a malformed log entry: ${malformation}`);

  const hash = createHash('sha256');
  updateString(hash, encodingTag);
  updateInteger(hash, entry.shard);
  updateInteger(hash, entry.index);
  updateInteger(hash, entry.epoch);
  updateString(hash, entry.prevHash);
  updateString(hash, entry.requestId);
  updateInteger(hash, entry.committedAtMs);
  updateInteger(hash, entry.ops.length);
  for (const operation of entry.ops) {
    updateString(hash, operation.type);
    switch (operation.type) {
      case 'put':
        updateString(hash, operation.key);
        updateBytes(hash, operation.value);
        break;
      case 'delete':
        updateString(hash, operation.key);
        break;
      case 'leader':
        updateString(hash, operation.node);
        updateInteger(hash, operation.epoch);
        updateInteger(hash, operation.previousEpoch);
        break;
    }
  }
  // Only entries of multi-shard transactions carry it: every older entry keeps its hash.
  if (entry.txn !== undefined) {
    updateString(hash, 'txn');
    updateString(hash, entry.txn.id);
    updateInteger(hash, entry.txn.parts.length);
    for (const part of entry.txn.parts) {
      updateInteger(hash, part.shard);
      updateInteger(hash, part.index);
    }
  }
  return hash.digest('hex');
}

/** Links an entry after `previous` (or at the start of the log when there is none). */
export function sealEntry(previous: { index: number; hash: string } | undefined, entry: UnsealedEntry): LogEntry {
  const expectedIndex = (previous?.index ?? 0) + 1;
  assert(entry.index === expectedIndex, `log entry index must be ${expectedIndex} (dense), got ${entry.index}`);
  const linked: Omit<LogEntry, 'hash'> = { ...entry, prevHash: previous?.hash ?? genesisHash };
  const sealed: LogEntry = { ...linked, hash: hashEntry(linked) };
  return sealed;
}

export type ChainCheck = { ok: true } | { ok: false; index: number; reason: string };

/**
 * Checks that `entries` continue the chain after `previous` (or from index 1): dense indexes,
 * prevHash links, hashes that match the content, and epochs that never decrease. On failure,
 * `index` is the log index at which the chain first breaks (the index expected at that position).
 */
export function verifyChain(entries: readonly LogEntry[], previous?: { index: number; hash: string }): ChainCheck {
  let expectedIndex = (previous?.index ?? 0) + 1;
  let expectedPrevHash = previous?.hash ?? genesisHash;
  // The entry before the first one carries no epoch here, so the first entry's epoch is unchecked.
  let previousEpoch: number | undefined;
  for (const entry of entries) {
    const malformation = describeMalformation(entry);
    if (malformation !== undefined) {
      return { ok: false, index: expectedIndex, reason: `entry at index ${expectedIndex} is malformed: ${malformation}` };
    }
    if (entry.index !== expectedIndex) {
      return {
        ok: false,
        index: expectedIndex,
        reason: `expected index ${expectedIndex}, found index ${entry.index} (indexes must be dense)`,
      };
    }
    if (entry.prevHash !== expectedPrevHash) {
      return {
        ok: false,
        index: expectedIndex,
        reason: `prevHash of index ${expectedIndex} is ${entry.prevHash}, but the entry before it hashes to ${expectedPrevHash}`,
      };
    }
    const { hash: storedHash, ...unhashed } = entry;
    const recomputedHash = hashEntry(unhashed);
    if (recomputedHash !== storedHash) {
      return {
        ok: false,
        index: expectedIndex,
        reason: `hash of index ${expectedIndex} does not match its content (stored ${storedHash}, recomputed ${recomputedHash})`,
      };
    }
    if (previousEpoch !== undefined && entry.epoch < previousEpoch) {
      return {
        ok: false,
        index: expectedIndex,
        reason: `epoch decreased at index ${expectedIndex}: ${entry.epoch} after ${previousEpoch}`,
      };
    }
    previousEpoch = entry.epoch;
    expectedPrevHash = entry.hash;
    expectedIndex += 1;
  }
  return { ok: true };
}

/** Bytes charged per number and per item for attribute names and type markers. */
const numberBytes = 8;
const entryOverheadBytes = 128;
const operationOverheadBytes = 16;

/**
 * Approximate stored size of an entry in bytes: its strings as UTF-8, its values, 8 bytes per
 * number and a fixed overhead for attribute names. Used to hold entries within item and
 * message limits, so it errs on the large side.
 */
export function entryBytes(entry: LogEntry): number {
  let bytes = entryOverheadBytes + 4 * numberBytes;
  bytes += utf8Bytes(entry.prevHash) + utf8Bytes(entry.hash) + utf8Bytes(entry.requestId);
  for (const operation of entry.ops) {
    bytes += operationOverheadBytes + utf8Bytes(operation.type);
    switch (operation.type) {
      case 'put':
        bytes += utf8Bytes(operation.key) + operation.value.byteLength;
        break;
      case 'delete':
        bytes += utf8Bytes(operation.key);
        break;
      case 'leader':
        bytes += utf8Bytes(operation.node) + 2 * numberBytes;
        break;
    }
  }
  return bytes;
}

// The encoding: a string is uint32 byte length + UTF-8, bytes are uint32 length + bytes,
// an integer is 8 bytes big-endian. Fixed widths and length prefixes leave no ambiguity.

function updateString(hash: Hash, text: string): void {
  const encoded = Buffer.from(text, 'utf8');
  updateLength(hash, encoded.byteLength);
  hash.update(encoded);
}

function updateBytes(hash: Hash, bytes: Uint8Array): void {
  updateLength(hash, bytes.byteLength);
  hash.update(bytes);
}

function updateLength(hash: Hash, length: number): void {
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(length, 0);
  hash.update(prefix);
}

function updateInteger(hash: Hash, value: number): void {
  const encoded = Buffer.alloc(8);
  encoded.writeBigUInt64BE(BigInt(value), 0);
  hash.update(encoded);
}

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * Why an entry cannot be encoded canonically, or undefined when it can. Entries may come back
 * from storage corrupted, so this checks at run time what the types only promise.
 */
function describeMalformation(entry: Omit<LogEntry, 'hash'>): string | undefined {
  const integerFields = ['shard', 'index', 'epoch', 'committedAtMs'] as const;
  for (const field of integerFields) {
    if (!isNonNegativeSafeInteger(entry[field])) return `${field} must be a non-negative safe integer, got ${String(entry[field])}`;
  }
  const stringFields = ['prevHash', 'requestId'] as const;
  for (const field of stringFields) {
    const problem = describeStringProblem(entry[field]);
    if (problem !== undefined) return `${field} ${problem}`;
  }
  if (!Array.isArray(entry.ops)) return 'ops must be an array';
  for (const [position, operation] of entry.ops.entries()) {
    const problem = describeOperationProblem(operation as unknown);
    if (problem !== undefined) return `ops[${position}] ${problem}`;
  }
  if (entry.txn !== undefined) {
    const txn = entry.txn as unknown as { id?: unknown; parts?: unknown };
    const idProblem = describeStringProblem(txn.id as string);
    if (idProblem !== undefined) return `txn.id ${idProblem}`;
    if (!Array.isArray(txn.parts) || txn.parts.length === 0) return 'txn.parts must be a non-empty array';
    for (const part of txn.parts as { shard?: unknown; index?: unknown }[]) {
      if (!isNonNegativeSafeInteger(part?.shard) || !isNonNegativeSafeInteger(part?.index)) return 'txn.parts must hold {shard, index} integers';
    }
  }
  return undefined;
}

function describeOperationProblem(operation: unknown): string | undefined {
  if (typeof operation !== 'object' || operation === null) return 'must be an object';
  const candidate = operation as Record<string, unknown>;
  switch (candidate['type']) {
    case 'put': {
      const keyProblem = describeStringProblem(candidate['key']);
      if (keyProblem !== undefined) return `key ${keyProblem}`;
      if (!(candidate['value'] instanceof Uint8Array)) return 'value must be a Uint8Array';
      return undefined;
    }
    case 'delete': {
      const keyProblem = describeStringProblem(candidate['key']);
      if (keyProblem !== undefined) return `key ${keyProblem}`;
      return undefined;
    }
    case 'leader': {
      const nodeProblem = describeStringProblem(candidate['node']);
      if (nodeProblem !== undefined) return `node ${nodeProblem}`;
      if (!isNonNegativeSafeInteger(candidate['epoch'])) return 'epoch must be a non-negative safe integer';
      if (!isNonNegativeSafeInteger(candidate['previousEpoch'])) return 'previousEpoch must be a non-negative safe integer';
      return undefined;
    }
    default:
      return `has unknown type ${String(candidate['type'])}`;
  }
}

/** A lone surrogate would encode to U+FFFD and collide with a real U+FFFD, so it is refused. */
const loneSurrogatePattern = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function describeStringProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return 'must be a string';
  if (loneSurrogatePattern.test(value)) return 'contains a lone surrogate (not representable in UTF-8)';
  return undefined;
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Bytes the operations of an entry add to one transaction, as `limits.transactionBytesMax`
 * counts them: each key and value twice (the log entry and the kv item), each item with its
 * attribute names and metadata. A key's UTF-16 length × 3 bounds its UTF-8 bytes.
 */
export function transactionBytesOf(ops: readonly Operation[]): number {
  let bytes = 0;
  for (const op of ops) {
    if (op.type === 'put') bytes += 2 * (3 * op.key.length + op.value.byteLength + limits.itemOverheadBytesMax);
    else if (op.type === 'delete') bytes += 2 * (3 * op.key.length + limits.itemOverheadBytesMax);
    else bytes += limits.itemOverheadBytesMax;
  }
  return bytes;
}
