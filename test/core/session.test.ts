import { describe, expect, it } from 'vitest';
import { decodeToken, emptyToken, encodeToken, mergeToken, type SessionToken } from '../../lib/core/session.ts';

/** The one message every refused token gets: it tells the client what to send instead. */
const invalidMessage = 'X-Epochkv-Session must be a token returned by epochkv (send back the header of an earlier response, unchanged)';

/** Encodes any JSON value the way a token is encoded, so a test can forge near-tokens. */
function forge(payload: unknown): string {
  return Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
}

describe('Function: mergeToken', () => {
  it('adds a shard the token does not name', () => {
    // Act
    const token = mergeToken(emptyToken, 3, 7);

    // Assess
    expect(token).toEqual({ 3: 7 });
  });

  it('raises a shard to a higher index and keeps the other shards', () => {
    // Prepare
    const before: SessionToken = { 1: 4, 3: 7 };

    // Act
    const token = mergeToken(before, 3, 9);

    // Assess
    expect(token).toEqual({ 1: 4, 3: 9 });
    expect(before).toEqual({ 1: 4, 3: 7 });
  });

  it.each([5, 7])('keeps the higher index it already has when merging %i into 7', (index) => {
    // Prepare
    const before: SessionToken = { 3: 7 };

    // Act
    const token = mergeToken(before, 3, index);

    // Assess
    expect(token).toBe(before);
  });

  it('keeps the maximum per shard whatever the order of merges', () => {
    // Prepare
    const observations: [number, number][] = [
      [0, 3],
      [1, 9],
      [0, 1],
      [2, 4],
      [1, 2],
      [0, 8],
      [2, 4],
    ];

    // Act
    const forward = observations.reduce((token, [shard, index]) => mergeToken(token, shard, index), emptyToken);
    const backward = [...observations].reverse().reduce((token, [shard, index]) => mergeToken(token, shard, index), emptyToken);

    // Assess
    expect(forward).toEqual({ 0: 8, 1: 9, 2: 4 });
    expect(backward).toEqual(forward);
  });
});

describe('Function: encodeToken', () => {
  it('is URL-safe base64 without padding, so it travels in a header unchanged', () => {
    // Act
    const raw = encodeToken({ 0: 1, 7: 123_456, 255: Number.MAX_SAFE_INTEGER });

    // Assess
    expect(raw).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  it('encodes equal tokens identically whatever their construction order', () => {
    // Act
    const first = encodeToken(mergeToken(mergeToken(emptyToken, 5, 1), 2, 9));
    const second = encodeToken(mergeToken(mergeToken(emptyToken, 2, 9), 5, 1));

    // Assess
    expect(first).toBe(second);
  });
});

describe('Function: decodeToken', () => {
  it.each<[string, SessionToken]>([
    ['empty', {}],
    ['one shard', { 3: 7 }],
    ['several shards', { 0: 1, 7: 123_456, 255: Number.MAX_SAFE_INTEGER }],
    ['index 0', { 4: 0 }],
  ])('round-trips an encoded token (%s)', (_, token) => {
    // Act
    const parsed = decodeToken(encodeToken(token));

    // Assess
    expect(parsed).toEqual({ ok: true, token });
  });

  it('round-trips a token of every shard a token may name (256)', () => {
    // Prepare
    const token = Object.fromEntries(Array.from({ length: 256 }, (_, shard) => [shard, shard + 1])) as SessionToken;

    // Act
    const parsed = decodeToken(encodeToken(token));

    // Assess
    expect(parsed).toEqual({ ok: true, token });
  });

  it('decodes every token encodeToken issues: 256 shards, each at the largest safe index', () => {
    // Prepare: a client of a 256-shard cluster that has written to every shard of a long log.
    const token = Object.fromEntries(Array.from({ length: 256 }, (_, shard) => [shard, Number.MAX_SAFE_INTEGER])) as SessionToken;

    // Act
    const parsed = decodeToken(encodeToken(token));

    // Assess
    expect(parsed).toEqual({ ok: true, token });
  });

  it('ignores whitespace around the token', () => {
    // Act
    const parsed = decodeToken(`  ${encodeToken({ 1: 2 })}\t`);

    // Assess
    expect(parsed).toEqual({ ok: true, token: { 1: 2 } });
  });

  it.each([
    ['undefined (no header)', undefined],
    ['an empty string', ''],
    ['only whitespace', '   '],
  ])('reads %s as the empty token', (_, raw) => {
    // Act
    const parsed = decodeToken(raw);

    // Assess
    expect(parsed).toEqual({ ok: true, token: emptyToken });
  });

  it.each<[string, string]>([
    ['characters outside base64url', 'not a token!'],
    ['standard base64 with padding', Buffer.from(JSON.stringify({ v: 1, s: {} })).toString('base64')],
    ['bytes that are not JSON', 'AAECAwQF'],
    ['base64url of plain text', Buffer.from('hello world').toString('base64url')],
    ['JSON null', forge(null)],
    ['a JSON number', forge(42)],
    ['a JSON array', forge([1, 2])],
    ['a missing version', forge({ s: { 1: 2 } })],
    ['version 2', forge({ v: 2, s: { 1: 2 } })],
    ['version "1" as a string', forge({ v: '1', s: { 1: 2 } })],
    ['missing shards', forge({ v: 1 })],
    ['shards as an array', forge({ v: 1, s: [1, 2] })],
    ['shards as null', forge({ v: 1, s: null })],
    ['a fractional index', forge({ v: 1, s: { 1: 1.5 } })],
    ['a negative index', forge({ v: 1, s: { 1: -1 } })],
    ['an index beyond safe integers', forge({ v: 1, s: { 1: 2 ** 53 } })],
    ['an index as a string', forge({ v: 1, s: { 1: '5' } })],
    ['a null index', forge({ v: 1, s: { 1: null } })],
    ['a fractional shard', forge({ v: 1, s: { '1.5': 2 } })],
    ['a negative shard', forge({ v: 1, s: { '-1': 2 } })],
    ['a non-numeric shard', forge({ v: 1, s: { abc: 2 } })],
    ['shard 256 (past the shards a token may name)', forge({ v: 1, s: { 256: 2 } })],
    ['too many shards (257)', forge({ v: 1, s: Object.fromEntries(Array.from({ length: 257 }, (_, shard) => [shard, 1])) })],
    ['an oversized string (4097 characters)', 'A'.repeat(4097)],
    ['an oversized well-formed token', forge({ v: 1, s: { 1: 2 }, padding: 'x'.repeat(8200) })],
  ])('refuses %s with the documented message', (_, raw) => {
    // Act
    const parsed = decodeToken(raw);

    // Assess
    expect(parsed).toEqual({ ok: false, message: invalidMessage });
  });

  it.each([
    ['an empty shard name', ''],
    ['a zero-padded shard', '01'],
    ['a shard in exponent notation', '1e0'],
    ['negative zero', '-0'],
    ['a shard with spaces', ' 1'],
  ])('refuses %s, which epochkv never issues', (_, shard) => {
    // Prepare: a name that Number() reads as a valid shard but is not how a shard is written.
    const raw = forge({ v: 1, s: { [shard]: 2 } });

    // Act
    const parsed = decodeToken(raw);

    // Assess
    expect(parsed).toEqual({ ok: false, message: invalidMessage });
  });

  it('refuses a token naming one shard twice instead of letting the later, lower index win', () => {
    // Prepare: '1' and '01' would both be shard 1.
    const raw = forge({ v: 1, s: { 1: 9, '01': 2 } });

    // Act
    const parsed = decodeToken(raw);

    // Assess
    expect(parsed).toEqual({ ok: false, message: invalidMessage });
  });
});
