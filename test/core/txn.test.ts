import { describe, expect, it } from 'vitest';
import { sealEntry, verifyChain } from '../../lib/core/log.ts';
import { checkTxnFits, comparesHold, parseTxn, txnItemsOf, type TxnRequest } from '../../lib/core/txn.ts';

const bytes = (text: string) => new Uint8Array(Buffer.from(text));

describe('Function: comparesHold', () => {
  const state = new Map([
    ['a', { version: 12, value: bytes('x') }],
    ['b', undefined],
  ]);

  it('judges version (0: absent), absence and byte equality against the snapshot', () => {
    expect(comparesHold([{ key: 'a', version: 12 }], state)).toBe(true);
    expect(comparesHold([{ key: 'a', version: 11 }], state)).toBe(false);
    expect(comparesHold([{ key: 'a', version: 0 }], state)).toBe(false);
    expect(comparesHold([{ key: 'b', version: 0 }], state)).toBe(true);
    expect(comparesHold([{ key: 'b', absent: true }], state)).toBe(true);
    expect(comparesHold([{ key: 'a', absent: true }], state)).toBe(false);
    expect(comparesHold([{ key: 'a', value: bytes('x') }], state)).toBe(true);
    expect(comparesHold([{ key: 'a', value: bytes('y') }], state)).toBe(false);
    expect(comparesHold([{ key: 'b', value: bytes('') }], state)).toBe(false);
    expect(comparesHold([], state)).toBe(true);
  });
});

describe('Function: parseTxn', () => {
  it('reads values as UTF-8 text or base64 bytes, and says what is wrong otherwise', () => {
    const parsed = parseTxn({ compare: [{ key: 'a', valueBase64: 'AAE=' }], success: [{ op: 'put', key: 'a', value: 'é' }], failure: [{ op: 'get', key: 'a' }] });
    expect(parsed.ok && parsed.value.compare[0]).toEqual({ key: 'a', value: new Uint8Array([0, 1]) });
    expect(parsed.ok && parsed.value.success[0]).toEqual({ op: 'put', key: 'a', value: bytes('é') });
    expect(parseTxn([])).toMatchObject({ ok: false, code: 'BadRequest' });
    expect(parseTxn({ extra: 1 })).toMatchObject({ ok: false, message: expect.stringContaining('unknown field "extra"') });
    expect(parseTxn({ success: [{ op: 'put', key: 'a' }] })).toMatchObject({ ok: false, message: expect.stringContaining('exactly one of "value"') });
    expect(parseTxn({ success: [{ op: 'get', key: '' }] })).toMatchObject({ ok: false, field: 'success[0].key' });
    expect(parseTxn({ failure: Array.from({ length: 65 }, (_, n) => ({ op: 'get', key: `k${n}` })) })).toMatchObject({ ok: false, code: 'TxnTooLarge', message: 'failure has 65 ops; the limit is 64' });
  });
});

describe('Function: txnItemsOf / checkTxnFits', () => {
  it('counts a lease check, an entry and a log-floor check per shard written plus one item per key read or written', () => {
    const txn: TxnRequest = { compare: [{ key: 'c', absent: true }], success: [{ op: 'put', key: 'a', value: bytes('1') }, { op: 'put', key: 'b', value: bytes('2') }, { op: 'get', key: 'c' }], failure: [{ op: 'get', key: 'a' }] };
    const shardOf = (key: string) => (key === 'a' ? 0 : 1);
    expect(txnItemsOf(txn, txn.success, shardOf)).toBe(3 * 2 + 3);
    expect(txnItemsOf(txn, txn.failure, shardOf)).toBe(0);
    expect(checkTxnFits(txn, shardOf, 0)).toBeUndefined();
    expect(checkTxnFits(txn, shardOf, 92)).toMatchObject({ code: 'TxnTooLarge', message: expect.stringContaining('101 items') });
  });
});

describe('Function: sealEntry with a transaction part', () => {
  it('hashes the transaction id and parts, so a replica can verify them', () => {
    const plain = sealEntry(undefined, { shard: 1, index: 1, epoch: 1, ops: [{ type: 'delete', key: 'a' }], requestId: 't', committedAtMs: 5 });
    const part = sealEntry(undefined, { shard: 1, index: 1, epoch: 1, ops: [{ type: 'delete', key: 'a' }], requestId: 't', committedAtMs: 5, txn: { id: 't', parts: [{ shard: 1, index: 1 }, { shard: 2, index: 7 }] } });
    expect(part.hash).not.toBe(plain.hash);
    expect(verifyChain([part])).toEqual({ ok: true });
    expect(verifyChain([{ ...part, txn: { id: 't', parts: [{ shard: 1, index: 1 }, { shard: 2, index: 8 }] } }])).toMatchObject({ ok: false });
  });
});
