/**
 * Session tokens: per shard, the highest log index a client has written or observed. A
 * session read at a replica waits until the replica has applied that index for the key's
 * shard (else it reads strong), which gives read-your-writes and monotonic reads.
 */
export type SessionToken = Readonly<Record<number, number>>;

export const emptyToken: SessionToken = {};

/** Shards a token may name; past this, it is not a token we issued. */
const tokenShardsMax = 256;
/**
 * The largest token we issue: 256 shards, each with an index up to 2^53, is about 7.7 KB of
 * base64 JSON; tokens hold only the shards a client touched, so real ones are far smaller.
 * Under API Gateway's 10 KB limit on request headers.
 */
const tokenBytesMax = 8192;

export function mergeToken(token: SessionToken, shard: number, index: number): SessionToken {
  if ((token[shard] ?? 0) >= index) return token;
  return { ...token, [shard]: index };
}

export function encodeToken(token: SessionToken): string {
  const entries = Object.entries(token).sort(([a], [b]) => Number(a) - Number(b));
  return Buffer.from(JSON.stringify({ v: 1, s: Object.fromEntries(entries) }), 'utf8').toString('base64url');
}

export type TokenParse = { ok: true; token: SessionToken } | { ok: false; message: string };

export function decodeToken(raw: string | undefined): TokenParse {
  if (raw === undefined || raw.trim() === '') return { ok: true, token: emptyToken };
  const invalid = { ok: false as const, message: 'X-Epochkv-Session must be a token returned by epochkv (send back the header of an earlier response, unchanged)' };
  if (raw.length > tokenBytesMax || !/^[A-Za-z0-9_-]+$/.test(raw.trim())) return invalid;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw.trim(), 'base64url').toString('utf8'));
  } catch {
    return invalid;
  }
  if (typeof parsed !== 'object' || parsed === null || (parsed as { v?: unknown }).v !== 1) return invalid;
  const shards = (parsed as { s?: unknown }).s;
  if (typeof shards !== 'object' || shards === null || Array.isArray(shards)) return invalid;
  const token: Record<number, number> = {};
  const entries = Object.entries(shards);
  if (entries.length > tokenShardsMax) return invalid;
  for (const [shard, index] of entries) {
    const shardNumber = Number(shard);
    if (!Number.isInteger(shardNumber) || shardNumber < 0 || shardNumber >= tokenShardsMax || String(shardNumber) !== shard) return invalid;
    if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) return invalid;
    token[shardNumber] = index;
  }
  return { ok: true, token };
}
