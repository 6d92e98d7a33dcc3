import { limits } from './limits.ts';

/**
 * Validation of user input at the edge. Bad input is an operating error, not a bug: these
 * functions return what is wrong and what to fix, and never throw for it.
 */
export type Invalid = { ok: false; field: string; message: string };
export type Valid<T> = { ok: true; value: T };

/** Longest piece of user input echoed back in a message, so an error never grows with the input. */
const echoCharsMax = 40;

const loneSurrogatePattern = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const controlCharacterPattern = /[\u0000-\u001F\u007F-\u009F]/;

/**
 * A key is 1..keyBytesMax bytes of UTF-8 (the DynamoDB sort-key limit), is valid Unicode, and
 * has no control characters (they break logs, headers and listings). Anything else is allowed,
 * including '/', spaces and hash tags.
 */
export function validateKey(key: string): Valid<string> | Invalid {
  if (typeof key !== 'string') return invalid('key', 'key must be a string');
  const keyBytes = Buffer.byteLength(key, 'utf8');
  if (keyBytes < limits.keyBytesMin) {
    return invalid('key', `key is empty; a key must be ${limits.keyBytesMin} to ${limits.keyBytesMax} bytes of UTF-8`);
  }
  if (keyBytes > limits.keyBytesMax) {
    return invalid('key', `key is ${keyBytes} bytes; the limit is ${limits.keyBytesMax} bytes of UTF-8`);
  }
  const surrogate = loneSurrogatePattern.exec(key);
  if (surrogate !== null) {
    return invalid(
      'key',
      `key has a lone surrogate ${codePointLabel(surrogate[0])} at position ${surrogate.index}, which is not representable in UTF-8; send the key as valid Unicode text`,
    );
  }
  const control = controlCharacterPattern.exec(key);
  if (control !== null) {
    return invalid(
      'key',
      `key has control character ${codePointLabel(control[0])} at position ${control.index}; remove control characters (U+0000-U+001F, U+007F-U+009F) from the key`,
    );
  }
  return { ok: true, value: key };
}

/** A value is any bytes, empty included, up to valueBytesMax. */
export function validateValue(bytes: Uint8Array): Valid<Uint8Array> | Invalid {
  if (!(bytes instanceof Uint8Array)) return invalid('value', 'value must be bytes');
  if (bytes.byteLength > limits.valueBytesMax) {
    return invalid(
      'value',
      `value is ${bytes.byteLength} bytes; the limit is ${limits.valueBytesMax} bytes (${limits.valueBytesMax / 1024} KiB)`,
    );
  }
  return { ok: true, value: bytes };
}

/** A positive decimal integer without leading zeros, quoted as a strong ETag or bare. */
const versionPattern = /^(?:"([1-9][0-9]*)"|([1-9][0-9]*))$/;

/**
 * Parses an If-Match header into the version a compare-and-swap expects. Only one strong ETag
 * (`"12"`) or a bare version (`12`) is accepted: a weak ETag, `*` or a list would each need
 * semantics this store does not offer, so they are refused instead of half-honoured.
 */
export function parseVersion(header: string | undefined, field: string): Valid<number | undefined> | Invalid {
  if (header === undefined) return { ok: true, value: undefined };
  const mustBeVersion = 'If-Match must be a version such as "12"';
  if (typeof header !== 'string') return invalid(field, mustBeVersion);
  // Header values may carry optional whitespace around them (RFC 9110).
  const trimmed = header.trim();
  const match = versionPattern.exec(trimmed);
  const digits = match?.[1] ?? match?.[2];
  if (digits === undefined) {
    return invalid(field, `${mustBeVersion} (a positive integer, optionally quoted); got ${echo(header)}${hintFor(trimmed)}`);
  }
  const version = Number(digits);
  if (!Number.isSafeInteger(version)) {
    return invalid(field, `${mustBeVersion}; ${echo(digits)} is larger than the largest version ${Number.MAX_SAFE_INTEGER}`);
  }
  return { ok: true, value: version };
}

function hintFor(trimmed: string): string {
  if (trimmed.startsWith('W/')) return '; weak ETags are not accepted';
  if (trimmed === '*') return '; "*" is not accepted, send the version you read';
  if (trimmed.includes(',')) return '; send exactly one version, not a list';
  return '';
}

/** Parses the `limit` query parameter of a listing: absent means the default page size. */
export function parseListLimit(raw: string | undefined): Valid<number> | Invalid {
  if (raw === undefined) return { ok: true, value: limits.listLimitDefault };
  const mustBeInRange = `limit must be an integer from 1 to ${limits.listLimitMax}`;
  if (typeof raw !== 'string' || !/^[0-9]+$/.test(raw)) return invalid('limit', `${mustBeInRange}; got ${echo(String(raw))}`);
  const limit = Number(raw);
  if (limit < 1 || limit > limits.listLimitMax) return invalid('limit', `${mustBeInRange}; got ${echo(raw)}`);
  return { ok: true, value: limit };
}

/** A fatal decoder throws on the first invalid sequence instead of substituting U+FFFD. */
const strictUtf8Decoder = new TextDecoder('utf-8', { fatal: true });

export function isValidUtf8(bytes: Uint8Array): boolean {
  try {
    strictUtf8Decoder.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

function invalid(field: string, message: string): Invalid {
  return { ok: false, field, message };
}

function echo(input: string): string {
  const shown = input.length > echoCharsMax ? `${input.slice(0, echoCharsMax)}...` : input;
  return JSON.stringify(shown);
}

function codePointLabel(character: string): string {
  const codeUnit = character.charCodeAt(0);
  return `U+${codeUnit.toString(16).toUpperCase().padStart(4, '0')}`;
}
