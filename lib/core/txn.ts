import { limits } from './limits.ts';
import { validateKey, validateValue, type Invalid, type Valid } from './validation.ts';

/**
 * Multi-key transactions (`POST /txn`): the request's rules and the compare logic, pure. The
 * service reads every key of the transaction in one snapshot, judges the compares here, and
 * commits the chosen branch in one DynamoDB transaction that re-checks what it read.
 */

/** What a compare asks of a key: its version (0: the key is absent), its absence, or its bytes. */
export type TxnCompare = { key: string; version: number } | { key: string; absent: true } | { key: string; value: Uint8Array };

export type TxnOp = { op: 'put'; key: string; value: Uint8Array } | { op: 'delete'; key: string } | { op: 'get'; key: string };

export interface TxnRequest {
  compare: TxnCompare[];
  success: TxnOp[];
  failure: TxnOp[];
}

/** A key's state in the transaction's snapshot: undefined when absent. */
export type TxnState = ReadonlyMap<string, { version: number; value: Uint8Array } | undefined>;

export type TxnInvalid = Invalid & { code: 'BadRequest' | 'TxnTooLarge' };

const branches = ['success', 'failure'] as const;

function bad(field: string, message: string): TxnInvalid {
  return { ok: false, field, message, code: 'BadRequest' };
}

function tooLarge(field: string, message: string): TxnInvalid {
  return { ok: false, field, message, code: 'TxnTooLarge' };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value` (UTF-8 text) or `valueBase64` (bytes), exactly one. */
function bytesOf(raw: Record<string, unknown>, field: string): Valid<Uint8Array> | TxnInvalid {
  const hasText = 'value' in raw;
  const hasBase64 = 'valueBase64' in raw;
  if (hasText === hasBase64) return bad(field, `${field} needs exactly one of "value" (UTF-8 text) or "valueBase64"`);
  let bytes: Uint8Array;
  if (hasText) {
    if (typeof raw.value !== 'string') return bad(`${field}.value`, `${field}.value must be a string (use valueBase64 for bytes)`);
    bytes = new Uint8Array(Buffer.from(raw.value, 'utf8'));
  } else {
    const text = raw.valueBase64;
    if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return bad(`${field}.valueBase64`, `${field}.valueBase64 must be standard base64 (A-Z a-z 0-9 + /, padded with =)`);
    bytes = new Uint8Array(Buffer.from(text, 'base64'));
  }
  const checked = validateValue(bytes);
  return checked.ok ? checked : tooLarge(`${field}.value`, `${field}: ${checked.message}`);
}

function keyOf(raw: Record<string, unknown>, field: string): Valid<string> | TxnInvalid {
  if (typeof raw.key !== 'string') return bad(`${field}.key`, `${field}.key must be a string`);
  const checked = validateKey(raw.key);
  return checked.ok ? checked : bad(`${field}.key`, `${field}: ${checked.message}`);
}

function unknownFields(raw: Record<string, unknown>, allowed: readonly string[], field: string): TxnInvalid | undefined {
  const unknown = Object.keys(raw).find((name) => !allowed.includes(name));
  return unknown === undefined ? undefined : bad(field, `${field} has an unknown field "${unknown.slice(0, 40)}"; allowed: ${allowed.join(', ')}`);
}

function parseCompare(raw: unknown, field: string): Valid<TxnCompare> | TxnInvalid {
  if (!isRecord(raw)) return bad(field, `${field} must be an object such as {"key": "a", "version": 12}`);
  const key = keyOf(raw, field);
  if (!key.ok) return key;
  const asks = ['version', 'absent', 'value', 'valueBase64'].filter((name) => name in raw);
  if (asks.length !== 1) return bad(field, `${field} needs exactly one of "version", "absent", "value" or "valueBase64"`);
  const unknown = unknownFields(raw, ['key', 'version', 'absent', 'value', 'valueBase64'], field);
  if (unknown !== undefined) return unknown;
  if ('version' in raw) {
    if (typeof raw.version !== 'number' || !Number.isSafeInteger(raw.version) || raw.version < 0) return bad(`${field}.version`, `${field}.version must be an integer ≥ 0 (0: the key is absent)`);
    return { ok: true, value: { key: key.value, version: raw.version } };
  }
  if ('absent' in raw) {
    if (raw.absent !== true) return bad(`${field}.absent`, `${field}.absent must be true`);
    return { ok: true, value: { key: key.value, absent: true } };
  }
  const bytes = bytesOf(raw, field);
  return bytes.ok ? { ok: true, value: { key: key.value, value: bytes.value } } : bytes;
}

function parseOp(raw: unknown, field: string): Valid<TxnOp> | TxnInvalid {
  if (!isRecord(raw)) return bad(field, `${field} must be an object such as {"op": "put", "key": "a", "value": "v"}`);
  const key = keyOf(raw, field);
  if (!key.ok) return key;
  switch (raw.op) {
    case 'put': {
      const unknown = unknownFields(raw, ['op', 'key', 'value', 'valueBase64'], field);
      if (unknown !== undefined) return unknown;
      const bytes = bytesOf(raw, field);
      return bytes.ok ? { ok: true, value: { op: 'put', key: key.value, value: bytes.value } } : bytes;
    }
    case 'delete':
    case 'get': {
      const unknown = unknownFields(raw, ['op', 'key'], field);
      return unknown ?? { ok: true, value: { op: raw.op, key: key.value } };
    }
    default:
      return bad(`${field}.op`, `${field}.op must be "put", "delete" or "get"`);
  }
}

/**
 * A transaction request from its JSON body: at most txnComparesMax compares and txnOpsMax ops
 * per branch, a key at most once per branch, and at most txnKeysMax distinct keys in all (one
 * snapshot read). What a branch commits must also fit one DynamoDB transaction: see txnItemsOf.
 */
export function parseTxn(body: unknown): Valid<TxnRequest> | TxnInvalid {
  if (!isRecord(body)) return bad('body', 'the body must be a JSON object {"compare": [...], "success": [...], "failure": [...]}');
  const unknown = unknownFields(body, ['compare', 'success', 'failure'], 'body');
  if (unknown !== undefined) return unknown;
  for (const name of ['compare', ...branches] as const) {
    if (name in body && !Array.isArray(body[name])) return bad(name, `${name} must be an array`);
  }
  const rawCompare = (body.compare ?? []) as unknown[];
  if (rawCompare.length > limits.txnComparesMax) return tooLarge('compare', `the transaction has ${rawCompare.length} compares; the limit is ${limits.txnComparesMax}`);
  const compare: TxnCompare[] = [];
  for (const [position, raw] of rawCompare.entries()) {
    const parsed = parseCompare(raw, `compare[${position}]`);
    if (!parsed.ok) return parsed;
    compare.push(parsed.value);
  }
  const parsedBranches: Record<(typeof branches)[number], TxnOp[]> = { success: [], failure: [] };
  for (const branch of branches) {
    const raws = (body[branch] ?? []) as unknown[];
    if (raws.length > limits.txnOpsMax) return tooLarge(branch, `${branch} has ${raws.length} ops; the limit is ${limits.txnOpsMax}`);
    const seen = new Set<string>();
    for (const [position, raw] of raws.entries()) {
      const parsed = parseOp(raw, `${branch}[${position}]`);
      if (!parsed.ok) return parsed;
      if (seen.has(parsed.value.key)) return bad(`${branch}[${position}].key`, `${branch} names "${parsed.value.key.slice(0, 40)}" twice; a key may appear once per branch`);
      seen.add(parsed.value.key);
      parsedBranches[branch].push(parsed.value);
    }
  }
  const txn: TxnRequest = { compare, ...parsedBranches };
  const keyCount = txnKeys(txn).length;
  if (keyCount > limits.txnKeysMax) return tooLarge('body', `the transaction names ${keyCount} distinct keys; the limit is ${limits.txnKeysMax} (one snapshot read)`);
  return { ok: true, value: txn };
}

/** Every distinct key the transaction names, compares first. */
export function txnKeys(txn: TxnRequest): string[] {
  return [...new Set([...txn.compare.map((compare) => compare.key), ...txn.success.map((op) => op.key), ...txn.failure.map((op) => op.key)])];
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Whether every compare holds in the snapshot (no compares: true). */
export function comparesHold(compares: readonly TxnCompare[], state: TxnState): boolean {
  return compares.every((compare) => {
    const current = state.get(compare.key);
    if ('version' in compare) return compare.version === 0 ? current === undefined : current?.version === compare.version;
    if ('absent' in compare) return current === undefined;
    return current !== undefined && bytesEqual(current.value, compare.value);
  });
}

/**
 * The DynamoDB transaction items a branch's commit takes: per shard it writes, the lease check,
 * the log entry and the log-floor check (the compaction point); then one item per key it reads
 * or writes (a condition on what was read).
 */
export function txnItemsOf(txn: TxnRequest, branch: TxnOp[], shardOf: (key: string) => number): number {
  const writes = branch.filter((op) => op.op !== 'get');
  if (writes.length === 0) return 0;
  const shards = new Set(writes.map((op) => shardOf(op.key)));
  const keys = new Set([...txn.compare.map((compare) => compare.key), ...branch.map((op) => op.key)]);
  return 3 * shards.size + keys.size;
}

/** Checks that each branch's commit fits one DynamoDB transaction (items and bytes). */
export function checkTxnFits(txn: TxnRequest, shardOf: (key: string) => number, extraItems: number): TxnInvalid | undefined {
  for (const branch of branches) {
    const items = txnItemsOf(txn, txn[branch], shardOf);
    if (items > 0 && items + extraItems > limits.txnItemsMax) {
      return tooLarge(branch, `${branch} would commit ${items + extraItems} items in one DynamoDB transaction (a lease check, a log entry and a log-floor check per shard written, one item per key read or written); the limit is ${limits.txnItemsMax}: touch fewer shards or keys`);
    }
    // Each put's value is stored twice: in its shard's log entry and in its item.
    const bytes = txn[branch].reduce((sum, op) => sum + (op.op === 'put' ? 2 * (op.value.byteLength + Buffer.byteLength(op.key)) + limits.itemOverheadBytesMax : 0), 0);
    if (bytes > limits.transactionBytesMax) {
      return tooLarge(branch, `${branch} writes about ${bytes} bytes (each value twice: log entry and item); one transaction holds at most ${limits.transactionBytesMax}`);
    }
  }
  return undefined;
}
