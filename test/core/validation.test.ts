import { describe, expect, it } from 'vitest';
import { limits } from '../../lib/core/limits.ts';
import { isValidUtf8, parseListLimit, parseVersion, validateKey, validateValue } from '../../lib/core/validation.ts';

describe('Function: validateKey', () => {
  it.each([
    ['a'],
    ['users/42/profile'],
    ['with spaces in it'],
    ['{user42}/cart'],
    ['ünïcödé/日本語/🎉'],
    ['tab-free but "quoted" and \\ backslashed'],
    ['\u00A0non-breaking space is not a control character'],
  ])('accepts %j', (key) => {
    // Act
    const result = validateKey(key);

    // Assess
    expect(result).toEqual({ ok: true, value: key });
  });

  it('refuses an empty key', () => {
    // Act
    const result = validateKey('');

    // Assess
    expect(result).toEqual({ ok: false, field: 'key', message: 'key is empty; a key must be 1 to 1024 bytes of UTF-8' });
  });

  it('accepts exactly keyBytesMax bytes and refuses one more', () => {
    // Prepare
    const atLimit = 'k'.repeat(limits.keyBytesMax);
    const overLimit = 'k'.repeat(limits.keyBytesMax + 1);

    // Act
    const atLimitResult = validateKey(atLimit);
    const overLimitResult = validateKey(overLimit);

    // Assess
    expect(atLimitResult.ok).toBe(true);
    expect(overLimitResult).toEqual({ ok: false, field: 'key', message: 'key is 1025 bytes; the limit is 1024 bytes of UTF-8' });
  });

  it('counts multibyte characters in UTF-8 bytes, not characters', () => {
    // Prepare: '日' is 3 bytes and '🎉' is 4 bytes of UTF-8.
    const atLimit = '日'.repeat(341) + 'k'; // 1023 + 1 = 1024 bytes
    const overLimit = '日'.repeat(342); // 1026 bytes, only 342 characters
    const emojiOverLimit = '🎉'.repeat(257); // 1028 bytes

    // Act
    const atLimitResult = validateKey(atLimit);
    const overLimitResult = validateKey(overLimit);
    const emojiOverLimitResult = validateKey(emojiOverLimit);

    // Assess
    expect(atLimitResult.ok).toBe(true);
    expect(overLimitResult).toMatchObject({ ok: false, field: 'key', message: 'key is 1026 bytes; the limit is 1024 bytes of UTF-8' });
    expect(emojiOverLimitResult).toMatchObject({ ok: false, message: expect.stringContaining('1028 bytes') });
  });

  it.each([
    ['lone high surrogate', 'abc\uD800'],
    ['lone low surrogate', '\uDC00abc'],
    ['reversed pair', 'a\uDC00\uD800b'],
  ])('refuses a %s', (_case, key) => {
    // Act
    const result = validateKey(key);

    // Assess
    expect(result).toMatchObject({ ok: false, field: 'key', message: expect.stringContaining('lone surrogate') });
    expect(result).toMatchObject({ message: expect.stringContaining('not representable in UTF-8') });
  });

  it.each([
    ['NUL', '\u0000', 'U+0000'],
    ['newline', 'a\nb', 'U+000A'],
    ['unit separator', 'a\u001Fb', 'U+001F'],
    ['DEL', 'a\u007F', 'U+007F'],
    ['C1 control', '\u0085x', 'U+0085'],
    ['last C1 control', 'x\u009F', 'U+009F'],
  ])('refuses a key with a %s character', (_case, key, label) => {
    // Act
    const result = validateKey(key);

    // Assess
    expect(result).toMatchObject({ ok: false, field: 'key', message: expect.stringContaining(`control character ${label}`) });
  });

  it('accepts the characters just outside the control ranges', () => {
    // Act
    const results = [' ', '~', '\u00A0'].map((key) => validateKey(key).ok);

    // Assess
    expect(results).toEqual([true, true, true]);
  });

  it('accepts a well-formed surrogate pair', () => {
    // Act
    const result = validateKey('\uD83C\uDF89');

    // Assess
    expect(result.ok).toBe(true);
  });
});

describe('Function: validateValue', () => {
  it('accepts an empty value', () => {
    // Prepare
    const bytes = new Uint8Array();

    // Act
    const result = validateValue(bytes);

    // Assess
    expect(result).toEqual({ ok: true, value: bytes });
  });

  it('accepts exactly valueBytesMax bytes and refuses one more', () => {
    // Prepare
    const atLimit = new Uint8Array(limits.valueBytesMax);
    const overLimit = new Uint8Array(limits.valueBytesMax + 1);

    // Act
    const atLimitResult = validateValue(atLimit);
    const overLimitResult = validateValue(overLimit);

    // Assess
    expect(atLimitResult.ok).toBe(true);
    expect(overLimitResult).toEqual({
      ok: false,
      field: 'value',
      message: 'value is 262145 bytes; the limit is 262144 bytes (256 KiB)',
    });
  });

  it('accepts bytes that are not UTF-8: values are opaque', () => {
    // Act
    const result = validateValue(new Uint8Array([0xff, 0xfe, 0x00]));

    // Assess
    expect(result.ok).toBe(true);
  });
});

describe('Function: parseVersion', () => {
  it('returns no version when the header is absent', () => {
    // Act
    const result = parseVersion(undefined, 'If-Match');

    // Assess
    expect(result).toEqual({ ok: true, value: undefined });
  });

  it.each([
    ['"12"', 12],
    ['12', 12],
    ['"1"', 1],
    [' "7" ', 7],
    [`"${Number.MAX_SAFE_INTEGER}"`, Number.MAX_SAFE_INTEGER],
  ])('accepts %j as version %d', (header, version) => {
    // Act
    const result = parseVersion(header, 'If-Match');

    // Assess
    expect(result).toEqual({ ok: true, value: version });
  });

  it.each([
    ['W/"12"', 'weak ETags are not accepted'],
    ['*', '"*" is not accepted'],
    ['"12", "13"', 'not a list'],
    ['12,13', 'not a list'],
    ['"0"', ''],
    ['0', ''],
    ['-3', ''],
    ['"-3"', ''],
    ['1.5', ''],
    ['1e3', ''],
    ['"012"', ''],
    ['"12', ''],
    ['abc', ''],
    ['', ''],
    [`${Number.MAX_SAFE_INTEGER + 1}`, 'larger than the largest version'],
    ['99999999999999999999999', 'larger than the largest version'],
  ])('refuses %j', (header, hint) => {
    // Act
    const result = parseVersion(header, 'If-Match');

    // Assess
    expect(result).toMatchObject({ ok: false, field: 'If-Match', message: expect.stringContaining('If-Match must be a version such as "12"') });
    expect(result).toMatchObject({ message: expect.stringContaining(hint) });
  });

  it('names the field it was given', () => {
    // Act
    const result = parseVersion('W/"1"', 'if-match');

    // Assess
    expect(result).toMatchObject({ ok: false, field: 'if-match' });
  });

  it('echoes at most a bounded piece of a long header', () => {
    // Act
    const result = parseVersion('x'.repeat(10_000), 'If-Match');

    // Assess
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message.length).toBeLessThan(200);
  });
});

describe('Function: parseListLimit', () => {
  it('defaults to listLimitDefault when absent', () => {
    // Act
    const result = parseListLimit(undefined);

    // Assess
    expect(result).toEqual({ ok: true, value: limits.listLimitDefault });
  });

  it.each([
    ['1', 1],
    ['50', 50],
    [String(limits.listLimitMax), limits.listLimitMax],
  ])('accepts %j', (raw, limit) => {
    // Act
    const result = parseListLimit(raw);

    // Assess
    expect(result).toEqual({ ok: true, value: limit });
  });

  it.each([['0'], [String(limits.listLimitMax + 1)], ['-1'], ['1.5'], ['abc'], [''], [' 5'], ['1e2'], ['99999999999999999999']])(
    'refuses %j',
    (raw) => {
      // Act
      const result = parseListLimit(raw);

      // Assess
      expect(result).toMatchObject({ ok: false, field: 'limit', message: expect.stringContaining('limit must be an integer from 1 to 1000') });
    },
  );
});

describe('Function: isValidUtf8', () => {
  it.each([
    ['empty', []],
    ['ASCII', [0x61, 0x62]],
    ['two-byte é', [0xc3, 0xa9]],
    ['three-byte 日', [0xe6, 0x97, 0xa5]],
    ['four-byte 🎉', [0xf0, 0x9f, 0x8e, 0x89]],
  ])('accepts %s', (_case, bytes) => {
    // Act
    const valid = isValidUtf8(new Uint8Array(bytes));

    // Assess
    expect(valid).toBe(true);
  });

  it.each([
    ['a lone continuation byte', [0x80]],
    ['a truncated sequence', [0xe6, 0x97]],
    ['an overlong encoding', [0xc0, 0xaf]],
    ['an encoded surrogate', [0xed, 0xa0, 0x80]],
    ['0xFF', [0xff]],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ])('refuses %s', (_case, bytes) => {
    // Act
    const valid = isValidUtf8(new Uint8Array(bytes));

    // Assess
    expect(valid).toBe(false);
  });
});
