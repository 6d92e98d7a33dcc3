/**
 * The cost model's arithmetic, pure: usage per operation (measured or modelled, each line says
 * which) times a price table gives dollars per million operations; a background that runs
 * whether or not anyone writes gives dollars per month and, divided by a rate, per operation.
 */
import { filterSnapshot, totals, type MeterSnapshot } from './meter.ts';

export { itemSizeBytes } from './meter.ts';
import { priceTable, type PriceKey, type PriceTable } from './prices.ts';

export type Basis = 'measured' | 'modelled';

/** One thing an operation (or a second of background) uses. */
export interface UsageLine {
  component: string;
  price: PriceKey;
  /** Units of `price` per operation (or per second, for a background). */
  quantity: number;
  basis: Basis;
  note?: string;
}

export interface CostLine extends UsageLine {
  /** Dollars per million operations (or per million seconds). */
  usdPerMillion: number;
}

export interface Costed {
  lines: CostLine[];
  usdPerMillion: number;
}

export function priceLines(lines: readonly UsageLine[], prices: PriceTable = priceTable): Costed {
  const costed = lines.map((line) => ({ ...line, usdPerMillion: line.quantity * prices[line.price].usd * 1e6 }));
  return { lines: costed, usdPerMillion: costed.reduce((sum, line) => sum + line.usdPerMillion, 0) };
}

export const secondsPerMonth = 30 * 24 * 3600;

/** Dollars per 30-day month of a background given per second. */
export function monthlyUsd(perSecond: readonly UsageLine[], prices: PriceTable = priceTable): number {
  return (priceLines(perSecond, prices).usdPerMillion / 1e6) * secondsPerMonth;
}

/** A background of `usdPerMonth` spread over operations arriving at `opsPerSecond`: dollars per million operations. */
export function amortizedPerMillion(usdPerMonth: number, opsPerSecond: number): number {
  if (!(opsPerSecond > 0)) return Number.POSITIVE_INFINITY;
  return (usdPerMonth / secondsPerMonth / opsPerSecond) * 1e6;
}

export function gbSeconds(memoryMb: number, seconds: number): number {
  return (memoryMb / 1024) * seconds;
}


/**
 * The same write on a DynamoDB global table (multi-region eventual consistency): one standard
 * write in the home region and one replicated write in each replica region, each a write unit
 * per started KB, plus the item's bytes across regions.
 */
export function globalTablesWrite(itemBytes: number, replicaRegions: number, prices: PriceTable = priceTable): Costed {
  const units = Math.max(1, Math.ceil(itemBytes / 1024));
  return priceLines(
    [
      { component: 'home write (standard PutItem)', price: 'dynamodbWriteRequestUnit', quantity: units, basis: 'modelled' },
      { component: `replicated writes × ${replicaRegions}`, price: 'dynamodbReplicatedWriteRequestUnit', quantity: units * replicaRegions, basis: 'modelled' },
      { component: 'replication traffic', price: 'interRegionTransferGb', quantity: (itemBytes * replicaRegions) / 1e9, basis: 'modelled' },
    ],
    prices,
  );
}

export interface MeasuredPhase {
  /** Operations the phase completed. */
  ops: number;
  /** The phase's requests for the cluster's prefix, minus the in-process background it would have had anyway. */
  requests: MeterSnapshot;
  homeRegion: string;
  /** The replica regions the measurement ran with. */
  measuredRegions: readonly string[];
  /** Apply invocations (event source batches) per replica region during the phase. */
  applyBatches: Record<string, number>;
  /** Mean latency of the operations (ms): the API function's billed duration is at most this. */
  meanLatencyMs: number;
}

/** Lambda memory of the functions (lib/infra). */
export const functionMemoryMb = { api: 512, apply: 256, node: 256, replicaHeartbeat: 256 } as const;
/** Modelled duration of one apply invocation (s). */
export const applyInvocationSeconds = 0.1;

const perOp = (value: number, ops: number) => (ops > 0 ? value / ops : 0);

/**
 * Modelled billed duration of the API function on AWS: a write is a DynamoDB transaction and
 * one SQS send per region in parallel (lease and head cached), a read one or two reads. The
 * local latencies are no guide: there every region shares one DynamoDB Local on a few cores.
 */
export const apiInvocationSeconds = { write: 0.04, read: 0.015 } as const;

/** The API Gateway and API Lambda share of any request. */
function apiLines(phase: MeasuredPhase, kind: 'write' | 'read'): UsageLine[] {
  return [
    { component: 'API Gateway REST request', price: 'apiGatewayRestRequest', quantity: 1, basis: 'modelled' },
    { component: 'API Lambda invocation', price: 'lambdaRequest', quantity: 1, basis: 'modelled' },
    {
      component: 'API Lambda duration',
      price: 'lambdaArmGbSecond',
      quantity: gbSeconds(functionMemoryMb.api, apiInvocationSeconds[kind]),
      basis: 'modelled',
      note: `${functionMemoryMb.api} MB × ${apiInvocationSeconds[kind] * 1000} ms assumed on AWS (the local mean latency was ${phase.meanLatencyMs.toFixed(1)} ms)`,
    },
  ];
}

/**
 * Usage per write for `replicaRegions` replica regions (1 or 2) from a phase measured with two:
 * home-region requests as measured; each replica region's requests (its apply, its reports to
 * home, its share of pull repairs from the home log) as the mean of the measured regions.
 */
export function writeUsage(phase: MeasuredPhase, replicaRegions: number): UsageLine[] {
  const { ops, requests, homeRegion, measuredRegions } = phase;
  const home = totals(filterSnapshot(requests, (key) => key.region === homeRegion && key.service === 'dynamodb' && key.role !== 'log-range-read'));
  const repair = totals(filterSnapshot(requests, (key) => key.region === homeRegion && key.role === 'log-range-read'));
  const regionCount = Math.max(1, measuredRegions.length);
  const mean = (pick: (region: string) => number) => measuredRegions.reduce((sum, region) => sum + pick(region), 0) / regionCount;
  const regionDynamo = (region: string) => totals(filterSnapshot(requests, (key) => key.region === region && key.service === 'dynamodb'));
  const regionSqs = (region: string, roles: string[]) => totals(filterSnapshot(requests, (key) => key.region === region && key.service === 'sqs' && roles.includes(key.role)));
  const shipBatches = mean((region) => regionSqs(region, ['ship']).count);
  const lines: UsageLine[] = [
    ...apiLines(phase, 'write'),
    { component: 'home DynamoDB writes (the fenced transaction)', price: 'dynamodbWriteRequestUnit', quantity: perOp(home.writeUnits, ops), basis: 'measured' },
    { component: 'home DynamoDB reads (lease and head cache misses)', price: 'dynamodbReadRequestUnit', quantity: perOp(home.readUnits, ops), basis: 'measured' },
  ];
  const r = replicaRegions;
  if (r > 0) {
    lines.push(
      {
        component: `replica DynamoDB writes (apply, progress reports) × ${r}`,
        price: 'dynamodbWriteRequestUnit',
        quantity: r * perOp(mean((region) => regionDynamo(region).writeUnits), ops),
        basis: 'measured',
      },
      {
        component: `replica DynamoDB reads (progress, pull repair from home) × ${r}`,
        price: 'dynamodbReadRequestUnit',
        quantity: r * perOp(mean((region) => regionDynamo(region).readUnits) + repair.readUnits / regionCount, ops),
        basis: 'measured',
      },
      {
        component: `SQS send × ${r}`,
        price: 'sqsFifoRequest',
        quantity: r,
        basis: 'modelled',
        note: `one SendMessageBatch per write per region on Lambda (one request per instance); locally concurrent writes shared batches: ${perOp(shipBatches, ops).toFixed(2)} per write per region measured`,
      },
      {
        component: `SQS receive, delete, visibility × ${r}`,
        price: 'sqsFifoRequest',
        quantity: r * perOp(mean((region) => regionSqs(region, ['receive', 'delete', 'visibility', 'queue-meta']).sqsBillable), ops),
        basis: 'measured',
        note: 'the local poller; the emulator hands out one message per group per receive, AWS up to ten (an upper bound)',
      },
      {
        component: `apply Lambda invocations × ${r}`,
        price: 'lambdaRequest',
        quantity: r * perOp(mean((region) => phase.applyBatches[region] ?? 0), ops),
        basis: 'measured',
      },
      {
        component: `apply Lambda duration × ${r}`,
        price: 'lambdaArmGbSecond',
        quantity: r * perOp(mean((region) => phase.applyBatches[region] ?? 0), ops) * gbSeconds(functionMemoryMb.apply, applyInvocationSeconds),
        basis: 'modelled',
        note: `${functionMemoryMb.apply} MB × ${applyInvocationSeconds * 1000} ms per measured invocation`,
      },
      {
        component: `replication traffic × ${r}`,
        price: 'interRegionTransferGb',
        quantity: (r * perOp(mean((region) => regionSqs(region, ['ship']).bytesSent), ops)) / 1e9,
        basis: 'measured',
        note: 'message bytes (base64 JSON of the entry)',
      },
    );
  }
  return lines;
}

/** Usage per read: the API's share and every DynamoDB read it made (home or the region's replica). */
export function readUsage(phase: MeasuredPhase): UsageLine[] {
  const dynamo = totals(filterSnapshot(phase.requests, { service: 'dynamodb' }));
  return [
    ...apiLines(phase, 'read'),
    { component: 'DynamoDB reads', price: 'dynamodbReadRequestUnit', quantity: perOp(dynamo.readUnits, phase.ops), basis: 'measured' },
    ...(dynamo.writeUnits > 0 ? [{ component: 'DynamoDB writes', price: 'dynamodbWriteRequestUnit' as const, quantity: perOp(dynamo.writeUnits, phase.ops), basis: 'measured' as const }] : []),
  ];
}

export interface BackgroundMeasurement {
  /** Requests per second of the node fleet (all nodes), at the measured tick. */
  nodes: MeterSnapshot;
  /** Requests per second of one replica region's heartbeat, at the measured tick. */
  heartbeatPerRegion: MeterSnapshot;
  /** The tick the measurement ran at and the tick to model (AWS). */
  measuredTickMs: number;
  modelTickMs: number;
  nodeCount: number;
}

/**
 * What runs whether or not anyone writes, per second on AWS: the nodes' and replica
 * heartbeats' DynamoDB requests (measured per tick, scaled to the AWS tick), their Lambda time
 * and the apply mappings' idle polling (modelled).
 */
export function backgroundUsage(background: BackgroundMeasurement, replicaRegions: number): UsageLine[] {
  const scale = background.measuredTickMs / background.modelTickMs;
  const nodes = totals(background.nodes);
  const heartbeat = totals(background.heartbeatPerRegion);
  const r = replicaRegions;
  const tickNote = `measured at tickMs ${background.measuredTickMs}, scaled per tick to tickMs ${background.modelTickMs}`;
  const lines: UsageLine[] = [
    { component: 'nodes: DynamoDB writes (lease renewals, heartbeats)', price: 'dynamodbWriteRequestUnit', quantity: nodes.writeUnits * scale, basis: 'measured', note: tickNote },
    { component: 'nodes: DynamoDB reads (leases, heartbeats, replica checks)', price: 'dynamodbReadRequestUnit', quantity: nodes.readUnits * scale, basis: 'measured', note: tickNote },
    {
      component: `nodes: Lambda (${background.nodeCount} × ${functionMemoryMb.node} MB, 70-s invocations every minute)`,
      price: 'lambdaArmGbSecond',
      quantity: background.nodeCount * gbSeconds(functionMemoryMb.node, 70 / 60),
      basis: 'modelled',
    },
    { component: 'nodes: Lambda invocations', price: 'lambdaRequest', quantity: background.nodeCount / 60, basis: 'modelled' },
  ];
  if (r > 0) {
    lines.push(
      { component: `replica heartbeats: DynamoDB writes × ${r}`, price: 'dynamodbWriteRequestUnit', quantity: r * heartbeat.writeUnits * scale, basis: 'measured', note: tickNote },
      { component: `replica heartbeats: DynamoDB reads × ${r}`, price: 'dynamodbReadRequestUnit', quantity: r * heartbeat.readUnits * scale, basis: 'measured', note: tickNote },
      {
        component: `replica heartbeats: Lambda × ${r} (${functionMemoryMb.replicaHeartbeat} MB, 55 s every minute)`,
        price: 'lambdaArmGbSecond',
        quantity: r * gbSeconds(functionMemoryMb.replicaHeartbeat, 55 / 60),
        basis: 'modelled',
      },
      { component: `replica heartbeats: Lambda invocations × ${r}`, price: 'lambdaRequest', quantity: r / 60, basis: 'modelled' },
      {
        component: `apply event source idle polling × ${r}`,
        price: 'sqsFifoRequest',
        quantity: r * 0.25,
        basis: 'modelled',
        note: 'about 5 long polls of 20 s at a time: 0.25 requests per second per queue',
      },
    );
  }
  return lines;
}
