import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EpochKv } from '../../lib/client/index.ts';
import { limits } from '../../lib/core/limits.ts';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { uniquePrefix, waitUntil } from '../support.ts';

let cloud: LocalCloud;

/** 30 values of 256 KiB: about 10 MB as base64, more than one Lambda answer can carry. */
const bigCount = 30;

async function getJson(path: string): Promise<{ status: number; bytes: number; body: Record<string, unknown> }> {
  const response = await fetch(`${cloud.apiUrl}${path}`);
  const text = await response.text();
  return { status: response.status, bytes: Buffer.byteLength(text), body: JSON.parse(text) as Record<string, unknown> };
}

describe("AWS's payload limits through the local cloud's HTTP API (Lambda's model)", () => {
  beforeAll(async () => {
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('limits'),
      replicaRegions: [],
      log: () => undefined,
    });
    const client = new EpochKv({ endpoint: cloud.apiUrl });
    await waitUntil('every shard led', async () => (((await client.status()) as { shards: { live: boolean }[] }).shards.every((shard) => shard.live) ? true : undefined), 30_000);
    // Binary values (base64 in JSON), all in one shard through a hash tag; one at a time, as
    // large items are slow on DynamoDB Local.
    for (let n = 0; n < bigCount; n += 1) {
      const answer = await fetch(`${cloud.apiUrl}/kv/${encodeURIComponent(`{big}/${String(n).padStart(2, '0')}`)}`, { method: 'PUT', body: randomBytes(limits.valueBytesMax) });
      expect(answer.status).toBe(200);
    }
  }, 240_000);

  afterAll(async () => {
    await cloud?.stop();
  });

  it('cuts a list page by bytes under Lambda\'s 6 MB response cap and continues with next', async () => {
    // Act: ask for up to 1000 items; follow next.
    const pages: { count: number; bytes: number }[] = [];
    const keys: string[] = [];
    let after: string | undefined;
    do {
      const page = await getJson(`/kv?prefix=%7Bbig%7D/&limit=1000${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`);
      expect(page.status).toBe(200);
      const items = page.body.items as { key: string }[];
      pages.push({ count: items.length, bytes: page.bytes });
      keys.push(...items.map((item) => item.key));
      after = (page.body.next as string | null) ?? undefined;
    } while (after !== undefined && pages.length < 10);

    // Assess: more than one page, each under the cap, every key once, in order.
    expect(pages.length).toBeGreaterThan(1);
    for (const page of pages) expect(page.bytes).toBeLessThan(limits.lambdaResponseBytesMax);
    expect(keys).toEqual(Array.from({ length: bigCount }, (_, n) => `{big}/${String(n).padStart(2, '0')}`));
  });

  it('cuts a watch page by bytes and resumes at next without losing an entry', async () => {
    // Act
    const puts: string[] = [];
    const pageBytes: number[] = [];
    let from = 1;
    for (let round = 0; round < 10 && puts.length < bigCount; round += 1) {
      const page = await getJson(`/watch?prefix=%7Bbig%7D/&from=${from}&limit=1000&waitMs=0`);
      expect(page.status).toBe(200);
      pageBytes.push(page.bytes);
      for (const entry of page.body.entries as { ops: { type: string; key?: string }[] }[]) for (const op of entry.ops) if (op.type === 'put' && op.key !== undefined) puts.push(op.key);
      from = page.body.next as number;
    }

    // Assess
    expect(pageBytes.length).toBeGreaterThan(1);
    for (const bytes of pageBytes) expect(bytes).toBeLessThan(limits.lambdaResponseBytesMax);
    expect([...puts].sort()).toEqual(Array.from({ length: bigCount }, (_, n) => `{big}/${String(n).padStart(2, '0')}`));
  });

  it('refuses oversized requests as AWS does: a value over 256 KiB 413, an event over 6 MiB 500 (the Lambda API refuses it), a body over 10 MB 413', async () => {
    // Act
    const put = (bytes: number) => fetch(`${cloud.apiUrl}/kv/too-big`, { method: 'PUT', body: Buffer.alloc(bytes, 0x61) });
    const [value, event, body] = [await put(limits.valueBytesMax + 1), await put(7 * 1024 * 1024), await put(11 * 1024 * 1024)];

    // Assess: each names what went wrong in the {error, message} shape; nothing was written.
    expect(value.status).toBe(413);
    expect(await value.json()).toMatchObject({ error: expect.any(String), message: expect.stringContaining(String(limits.valueBytesMax)) });
    expect(event.status).toBe(500);
    expect(await event.json()).toMatchObject({ error: 'LambdaRequestTooLarge' });
    expect(body.status).toBe(413);
    expect(await body.json()).toMatchObject({ error: 'TooLarge' });
    expect((await fetch(`${cloud.apiUrl}/kv/too-big`)).status).toBe(404);
  });
});
