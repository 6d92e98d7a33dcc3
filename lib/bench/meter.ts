/**
 * Counts the AWS requests the benchmark's process makes (through the optional observer of
 * `lib/adapters/aws/clients.ts`), classified by what they are for, with the capacity units
 * DynamoDB reports; and follows each committed entry to every replica (commit, ship, receive,
 * apply) to measure replication lag on one clock. Record handling is pure (feed it records);
 * only `attach` touches the SDK hook.
 */
import { observeAwsRequests, type AwsRequestRecord } from '../adapters/aws/clients.ts';

export interface RequestStats {
  count: number;
  errors: number;
  /** SDK attempts (retries included): what AWS bills. */
  attempts: number;
  /** Capacity units as billed: DynamoDB's reported units with AWS's per-request minimums (see `billedUnits`). */
  writeUnits: number;
  readUnits: number;
  /** SQS requests as billed: each 64 KiB of payload is one request. */
  sqsBillable: number;
  /** Message bytes sent (SQS bodies): cross-region traffic when the queue is in another region. */
  bytesSent: number;
  /** Sum of call durations (ms). */
  durationMs: number;
}

/** `prefix|service|region|role|operation` → stats. */
export type MeterSnapshot = Record<string, RequestStats>;

export interface RequestKey {
  prefix: string;
  service: string;
  region: string;
  role: string;
  operation: string;
}

export function parseKey(key: string): RequestKey {
  const [prefix = '', service = '', region = '', role = '', operation = ''] = key.split('|');
  return { prefix, service, region, role, operation };
}

const emptyStats = (): RequestStats => ({ count: 0, errors: 0, attempts: 0, writeUnits: 0, readUnits: 0, sqsBillable: 0, bytesSent: 0, durationMs: 0 });

const readOperations = new Set(['GetItem', 'Query', 'Scan', 'BatchGetItem', 'TransactGetItems']);
const writeOperations = new Set(['PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem', 'TransactWriteItems']);

type Item = Record<string, unknown>;

/** A value in document form or in DynamoDB's marshalled form ({N: "3"}, {S: "x"}). */
function plain(value: unknown): unknown {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array)) {
    const entries = Object.entries(value as Item);
    if (entries.length === 1) {
      const [type, inner] = entries[0] as [string, unknown];
      if (type === 'N') return Number(inner);
      if (type === 'S' || type === 'B' || type === 'BOOL') return inner;
    }
  }
  return value;
}

function tableParts(tableName: unknown): { prefix: string; table: string } {
  const name = typeof tableName === 'string' ? tableName : '';
  const match = /^(.*)-(control|log|kv)$/.exec(name);
  return match === null ? { prefix: name, table: 'other' } : { prefix: match[1] as string, table: match[2] as string };
}

function queuePrefix(queueUrl: unknown): string {
  const name = typeof queueUrl === 'string' ? queueUrl.slice(queueUrl.lastIndexOf('/') + 1) : '';
  const match = /^(.*)-replication(-dlq)?\.fifo$/.exec(name);
  return match === null ? name : (match[1] as string);
}

interface TransactPart {
  kind: 'ConditionCheck' | 'Put' | 'Update' | 'Delete';
  body: Item;
}

function transactParts(input: Item): TransactPart[] {
  const items = Array.isArray(input.TransactItems) ? (input.TransactItems as Item[]) : [];
  return items.flatMap((item) => {
    const kind = (['ConditionCheck', 'Put', 'Update', 'Delete'] as const).find((name) => item[name] !== undefined);
    return kind === undefined ? [] : [{ kind, body: item[kind] as Item }];
  });
}

/**
 * DynamoDB's item size: the UTF-8 bytes of every attribute name plus its value (strings:
 * UTF-8 bytes; binary: bytes; numbers: about one byte per two significant digits plus one;
 * booleans and null: 1; lists and maps: 3 plus their elements plus 1 per element).
 */
export function itemSizeBytes(item: Record<string, unknown>): number {
  return Object.entries(item).reduce((sum, [name, value]) => sum + Buffer.byteLength(name) + valueSize(value), 0);
}

function valueSize(value: unknown): number {
  if (value === null || value === undefined || typeof value === 'boolean') return 1;
  if (typeof value === 'string') return Buffer.byteLength(value);
  if (typeof value === 'number') {
    const digits = String(Math.abs(value)).replace('.', '').replace(/^0+/, '').replace(/e.*$/, '').length;
    return Math.min(21, Math.ceil(Math.max(1, digits) / 2) + 1);
  }
  if (value instanceof Uint8Array) return value.length;
  if (Array.isArray(value)) return 3 + value.reduce((sum: number, element) => sum + 1 + valueSize(element), 0);
  if (typeof value === 'object') return 3 + Object.entries(value as Record<string, unknown>).reduce((sum, [name, element]) => sum + 1 + Buffer.byteLength(name) + valueSize(element), 0);
  return 0;
}

/**
 * A transaction's write units as AWS bills them: 2 per item per started KB (a ConditionCheck,
 * Update or Delete as one KB). DynamoDB Local reports 2 per table, however many items.
 */
function transactionWriteUnits(input: Item): number {
  return transactParts(input).reduce((sum, part) => sum + 2 * (part.kind === 'Put' ? Math.max(1, Math.ceil(itemSizeBytes((part.body.Item ?? {}) as Item) / 1024)) : 1), 0);
}

/** What a DynamoDB request is for, from its table and key (the adapters' access patterns). */
/** A BatchWriteItem's first table and item: the batches this system sends are of one kind each. */
function firstBatchWrite(input: Item): { tableName: string; item: Item | undefined } | undefined {
  const tables = Object.entries((input.RequestItems ?? {}) as Record<string, Item[]>);
  const [tableName, requests] = tables[0] ?? [];
  if (tableName === undefined) return undefined;
  const request = requests?.[0];
  return { tableName, item: ((request?.PutRequest as Item | undefined)?.Item ?? (request?.DeleteRequest as Item | undefined)?.Key) as Item | undefined };
}

export function classifyDynamo(operation: string, input: Item): { prefix: string; role: string } {
  if (operation === 'TransactWriteItems') {
    const parts = transactParts(input);
    const prefix = tableParts(parts[0]?.body.TableName).prefix;
    if (parts.some((part) => part.kind === 'ConditionCheck')) return { prefix, role: 'commit' };
    if (parts.some((part) => part.kind === 'Update' && tableParts(part.body.TableName).table === 'control')) return { prefix, role: 'marker' };
    if (parts.some((part) => part.kind === 'Put' && plain((part.body.Item as Item | undefined)?.pk) === 'progress')) return { prefix, role: 'apply' };
    return { prefix, role: 'commit-unfenced' };
  }
  const batched = operation === 'BatchWriteItem' ? firstBatchWrite(input) : undefined;
  const { prefix, table } = tableParts(batched?.tableName ?? input.TableName);
  const key = (batched?.item ?? input.Key ?? input.Item) as Item | undefined;
  const pk = plain(key?.pk);
  if (table === 'control') {
    if (operation === 'Query') {
      const values = (input.ExpressionAttributeValues ?? {}) as Item;
      const partition = plain(values[':pk']);
      return { prefix, role: partition === 'lease' ? 'leases-read' : partition === 'node' ? 'heartbeats-read' : partition === 'replica' ? 'reports-read' : partition === 'progress' ? 'progress-read-all' : 'control-query' };
    }
    if (pk === 'lease') return { prefix, role: operation === 'GetItem' ? 'lease-read' : 'lease-write' };
    if (pk === 'node') return { prefix, role: 'heartbeat-write' };
    if (pk === 'replica') return { prefix, role: 'report-write' };
    if (pk === 'progress') return { prefix, role: 'progress-read' };
    return { prefix, role: `control-${operation}` };
  }
  if (table === 'log') {
    if (operation === 'Query') {
      const condition = String(input.KeyConditionExpression ?? '');
      return { prefix, role: condition.includes('>=') ? 'log-range-read' : 'head-read' };
    }
    return { prefix, role: operation === 'GetItem' ? 'log-entry-read' : `log-${operation}` };
  }
  if (table === 'kv') return { prefix, role: operation === 'Query' ? 'list' : operation === 'GetItem' ? (input.ConsistentRead === true ? 'kv-read-strong' : 'kv-read-eventual') : `kv-${operation}` };
  return { prefix, role: operation };
}

function sqsRole(operation: string): string {
  switch (operation) {
    case 'SendMessageBatch':
    case 'SendMessage':
      return 'ship';
    case 'ReceiveMessage':
      return 'receive';
    case 'DeleteMessageBatch':
    case 'DeleteMessage':
      return 'delete';
    case 'ChangeMessageVisibilityBatch':
    case 'ChangeMessageVisibility':
      return 'visibility';
    default:
      return 'queue-meta';
  }
}

/**
 * Capacity units as AWS bills them: what DynamoDB reported, never less than a request's minimum
 * (1 write unit; 1 read unit for a consistent read, 0.5 for an eventual one — DynamoDB Local
 * reports 0 for a Query that finds nothing). A transaction is counted from its items (2 units
 * per item per started KB): DynamoDB Local reports 2 per table. A failed request reports
 * nothing: a failed transaction is modelled the same way, a failed single write as 1.
 */
export function billedUnits(operation: string, input: Item, output: Item | undefined, failed: boolean): { write: number; read: number } {
  const reported = (() => {
    const consumed = output?.ConsumedCapacity;
    const list = Array.isArray(consumed) ? consumed : consumed === undefined ? [] : [consumed];
    return list.reduce((sum: number, entry) => sum + Number((entry as Item).CapacityUnits ?? 0), 0);
  })();
  if (writeOperations.has(operation)) {
    if (operation === 'TransactWriteItems') return { write: failed ? transactionWriteUnits(input) : Math.max(reported, transactionWriteUnits(input)), read: 0 };
    if (failed) return { write: 1, read: 0 };
    return { write: Math.max(reported, 1), read: 0 };
  }
  if (readOperations.has(operation)) {
    const floor = input.ConsistentRead === true ? 1 : 0.5;
    return { write: 0, read: Math.max(reported, floor) };
  }
  return { write: 0, read: 0 };
}

function sqsPayload(operation: string, input: Item): { billable: number; bytes: number } {
  if (operation === 'SendMessageBatch') {
    const entries = Array.isArray(input.Entries) ? (input.Entries as Item[]) : [];
    const bytes = entries.reduce((sum, entry) => sum + Buffer.byteLength(String(entry.MessageBody ?? '')), 0);
    return { billable: Math.max(1, Math.ceil(bytes / 65_536)), bytes };
  }
  if (operation === 'SendMessage') {
    const bytes = Buffer.byteLength(String(input.MessageBody ?? ''));
    return { billable: Math.max(1, Math.ceil(bytes / 65_536)), bytes };
  }
  return { billable: 1, bytes: 0 };
}

/** Where a committed entry is on its way to each replica (performance.now() ms). */
export interface EntryTimes {
  committedMs: number;
  shipped: Record<string, number>;
  received: Record<string, number>;
  applied: Record<string, number>;
}

export interface LagSample {
  region: string;
  /** When the entry was committed and when it was applied there (performance.now() ms). */
  committedMs: number;
  appliedMs: number;
  /** commit → applied at the replica. */
  lagMs: number;
  /** commit → accepted by the region's queue (undefined: not shipped, e.g. repaired). */
  shipMs: number | undefined;
  /** accepted → received by the region's apply poller. */
  queueMs: number | undefined;
  /** received → applied (undefined when the entry was pulled from the home log before its message was received). */
  applyMs: number | undefined;
}

export class Meter {
  #stats = new Map<string, RequestStats>();
  #entries = new Map<string, EntryTimes>();
  #trackPrefix: string | undefined;
  #homeRegion = '';
  #detach: (() => void) | undefined;

  /** Registers with the SDK hook (asking DynamoDB for consumed capacity). */
  attach(): void {
    this.#detach ??= observeAwsRequests((record) => this.record(record), { consumedCapacity: true });
  }

  detach(): void {
    this.#detach?.();
    this.#detach = undefined;
  }

  /** Follows entries committed to `prefix`'s home log from now on; forgets earlier ones. */
  trackEntries(prefix: string | undefined, homeRegion: string): void {
    this.#trackPrefix = prefix;
    this.#homeRegion = homeRegion;
    this.#entries.clear();
  }

  record(record: AwsRequestRecord): void {
    const failed = record.error !== undefined;
    let prefix: string;
    let role: string;
    let units = { write: 0, read: 0 };
    let payload = { billable: 0, bytes: 0 };
    if (record.service === 'dynamodb') {
      ({ prefix, role } = classifyDynamo(record.operation, record.input));
      units = billedUnits(record.operation, record.input, record.output, failed);
    } else {
      prefix = queuePrefix(record.input.QueueUrl ?? record.input.QueueName);
      role = sqsRole(record.operation);
      payload = sqsPayload(record.operation, record.input);
    }
    // A report names the replica region it is about: attribute it there, not to the home client.
    const reportedRegion = role === 'report-write' ? plain(((record.input.Item ?? firstBatchWrite(record.input)?.item) as Item | undefined)?.region) : undefined;
    const region = typeof reportedRegion === 'string' ? reportedRegion : record.region;
    const key = `${prefix}|${record.service}|${region}|${role}|${record.operation}`;
    let stats = this.#stats.get(key);
    if (stats === undefined) {
      stats = emptyStats();
      this.#stats.set(key, stats);
    }
    stats.count += 1;
    stats.attempts += record.attempts;
    if (failed) stats.errors += 1;
    stats.writeUnits += units.write;
    stats.readUnits += units.read;
    stats.sqsBillable += payload.billable * record.attempts;
    stats.bytesSent += payload.bytes;
    stats.durationMs += record.endMs - record.startMs;
    if (!failed && this.#trackPrefix !== undefined && prefix === this.#trackPrefix) this.#track(record, role);
  }

  #track(record: AwsRequestRecord, role: string): void {
    const at = record.endMs;
    if (record.service === 'dynamodb' && record.operation === 'TransactWriteItems') {
      const logPuts = transactParts(record.input).filter((part) => part.kind === 'Put' && tableParts(part.body.TableName).table === 'log');
      for (const part of logPuts) {
        const item = part.body.Item as Item;
        const id = `${plain(item.shard)}:${plain(item.index)}`;
        if (role === 'commit' && record.region === this.#homeRegion) {
          this.#entries.set(id, { committedMs: at, shipped: {}, received: {}, applied: {} });
        } else if (role === 'apply' && record.region !== this.#homeRegion) {
          const times = this.#entries.get(id);
          if (times !== undefined) times.applied[record.region] ??= at;
        }
      }
      return;
    }
    if (record.service === 'sqs' && record.operation === 'SendMessageBatch') {
      const failedIds = new Set(((record.output?.Failed ?? []) as Item[]).map((failure) => String(failure.Id)));
      for (const entry of (record.input.Entries ?? []) as Item[]) {
        if (failedIds.has(String(entry.Id))) continue;
        const times = this.#entries.get(String(entry.MessageDeduplicationId));
        if (times !== undefined) times.shipped[record.region] ??= at;
      }
      return;
    }
    if (record.service === 'sqs' && record.operation === 'ReceiveMessage') {
      for (const message of (record.output?.Messages ?? []) as Item[]) {
        const attributes = (message.Attributes ?? {}) as Item;
        const times = this.#entries.get(String(attributes.MessageDeduplicationId));
        if (times !== undefined) times.received[record.region] ??= at;
      }
    }
  }

  snapshot(): MeterSnapshot {
    const copy: MeterSnapshot = {};
    for (const [key, stats] of this.#stats) copy[key] = { ...stats };
    return copy;
  }

  /** Entries committed (to the tracked prefix) in [fromMs, toMs). */
  entries(fromMs = 0, toMs = Number.POSITIVE_INFINITY): EntryTimes[] {
    return [...this.#entries.values()].filter((times) => times.committedMs >= fromMs && times.committedMs < toMs);
  }
}

/**
 * The lag samples of tracked entries for each replica region. Entries with no apply time there
 * are counted apart: the benchmark waits for the replicas to catch up before it reads these, so
 * they were applied, by a request the meter did not see succeed (presumably one that failed after
 * a retry whose first attempt had landed: 2 of about 2,600 entries in one `bench:lag` run, none
 * in any full run).
 */
export function lagSamples(entries: readonly EntryTimes[], regions: readonly string[]): { samples: LagSample[]; unapplied: Record<string, number> } {
  const samples: LagSample[] = [];
  const unapplied: Record<string, number> = Object.fromEntries(regions.map((region) => [region, 0]));
  for (const times of entries) {
    for (const region of regions) {
      const applied = times.applied[region];
      if (applied === undefined) {
        unapplied[region] = (unapplied[region] ?? 0) + 1;
        continue;
      }
      const shipped = times.shipped[region];
      // Received after it was applied: the replica pulled it from the home log first (repair).
      const received = times.received[region] !== undefined && (times.received[region] as number) <= applied ? times.received[region] : undefined;
      samples.push({
        region,
        committedMs: times.committedMs,
        appliedMs: applied,
        lagMs: applied - times.committedMs,
        shipMs: shipped === undefined ? undefined : shipped - times.committedMs,
        queueMs: shipped === undefined || received === undefined ? undefined : received - shipped,
        applyMs: received === undefined ? undefined : applied - received,
      });
    }
  }
  return { samples, unapplied };
}

/** after − before, key by key (keys absent before count from zero). */
export function diffSnapshots(after: MeterSnapshot, before: MeterSnapshot): MeterSnapshot {
  const out: MeterSnapshot = {};
  for (const [key, stats] of Object.entries(after)) {
    const earlier = before[key] ?? emptyStats();
    const delta = emptyStats();
    for (const field of Object.keys(delta) as (keyof RequestStats)[]) delta[field] = stats[field] - earlier[field];
    if (delta.count !== 0 || delta.durationMs !== 0) out[key] = delta;
  }
  return out;
}

/** `snapshot` scaled by `factor` (e.g. a per-second background times a phase's seconds). */
export function scaleSnapshot(snapshot: MeterSnapshot, factor: number): MeterSnapshot {
  const out: MeterSnapshot = {};
  for (const [key, stats] of Object.entries(snapshot)) {
    const scaled = emptyStats();
    for (const field of Object.keys(scaled) as (keyof RequestStats)[]) scaled[field] = stats[field] * factor;
    out[key] = scaled;
  }
  return out;
}

/** `a − b` clamped at zero per field: a phase's requests minus the background it would have had anyway. */
export function subtractBackground(phase: MeterSnapshot, background: MeterSnapshot): MeterSnapshot {
  const out: MeterSnapshot = {};
  for (const [key, stats] of Object.entries(phase)) {
    const other = background[key] ?? emptyStats();
    const result = emptyStats();
    for (const field of Object.keys(result) as (keyof RequestStats)[]) result[field] = Math.max(0, stats[field] - other[field]);
    out[key] = result;
  }
  return out;
}

/** Keeps the keys whose parts match (undefined parts match anything). */
export function filterSnapshot(snapshot: MeterSnapshot, match: Partial<RequestKey> | ((key: RequestKey) => boolean)): MeterSnapshot {
  const test =
    typeof match === 'function'
      ? match
      : (key: RequestKey) => (Object.entries(match) as [keyof RequestKey, string | undefined][]).every(([part, value]) => value === undefined || key[part] === value);
  return Object.fromEntries(Object.entries(snapshot).filter(([key]) => test(parseKey(key))));
}

/** Field totals of a snapshot. */
export function totals(snapshot: MeterSnapshot): RequestStats {
  const sum = emptyStats();
  for (const stats of Object.values(snapshot)) for (const field of Object.keys(sum) as (keyof RequestStats)[]) sum[field] += stats[field];
  return sum;
}
