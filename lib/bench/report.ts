/**
 * The benchmark report: its JSON shape, the stdout tables, the Markdown and the chart data.
 * Pure: everything here is a function of the report.
 */
import type { CostLine } from './cost.ts';
import type { EventLoopLoad } from './cpu.ts';
import type { LatencySummary } from './stats.ts';
import type { ChartData } from './svg.ts';
import type { ProfileSummary } from './profile.ts';

export interface CellSummary extends LatencySummary {
  opsPerSecond: number;
  failed: number;
  errors: Record<string, number>;
  elapsedMs: number;
}

export interface WriteBreakdown {
  /** Writes completed in the phase (warmup included): the divisor of the per-write counts. */
  writes: number;
  /** The replicas' apply transactions per write (both regions; on DynamoDB Local with the home writes). */
  applyTransactionsPerWrite: number;
  /** Every other DynamoDB request per write: lease, head and progress reads, replica reports, repairs. */
  otherDynamoRequestsPerWrite: number;
  commitsPerWrite: number;
  /** Commits refused because another write took the index (or the lease moved): retried. */
  lostRacesPerWrite: number;
  commitMeanMs: number;
  leaseReadsPerWrite: number;
  leaseReadMeanMs: number;
  headReadsPerWrite: number;
  headReadMeanMs: number;
  shipBatchesPerWrite: number;
  shipMeanMs: number;
  /** Time a write spends in storage calls on average (per-write counts × mean durations). */
  storageMsPerWrite: number;
  latencyMeanMs: number;
  /** latencyMean − storage: HTTP, the handler, waiting for the event loop, backoff before retries. */
  otherMsPerWrite: number;
}

export interface WriteCell {
  valueBytes: number;
  concurrency: number;
  limit: CellSummary;
  system: CellSummary;
  /** system ops/s ÷ limit ops/s at the same concurrency. */
  ratio: number;
  /** system ops/s ÷ the best limit of any concurrency (DynamoDB Local slows with many concurrent transactions). */
  ratioToBestLimit: number;
  /**
   * How long after the phase every replica had applied every shard up to the home head (null:
   * not within 30 s), and the writes ÷ (phase + that time): the rate the cluster sustains with
   * its replicas current. Absent in reports from before it was measured.
   */
  catchUpMs?: number | null;
  sustainedOpsPerSecond?: number;
  breakdown: WriteBreakdown;
  cpu: { limit: Record<string, number>; system: Record<string, number> };
}

export interface ReadCell {
  consistency: 'strong' | 'session' | 'eventual';
  region: string;
  concurrency: number;
  cell: CellSummary;
  servedByReplica: number;
}

/** The same write workload acknowledged under each replication mode, side by side. */
export interface ModeCell {
  mode: 'async' | 'quorum' | 'all';
  concurrency: number;
  valueBytes: number;
  cell: CellSummary;
}

export interface LagRegion {
  region: string;
  entries: number;
  /** Entries applied (the replicas caught up) whose apply request the meter did not see succeed: no lag sample (meter.ts, `lagSamples`). */
  unapplied: number;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  meanShipMs: number | null;
  meanQueueMs: number | null;
  meanApplyMs: number | null;
  /** Entries applied without their message having been received first (pulled from the home log). */
  viaRepair: number;
  /** Entries applied per second over the phase (first commit to last apply): below the write rate, the replica falls behind. */
  appliedPerSecond: number | null;
  /** The region's apply poller over the phase (until the replicas caught up): handler invocations, messages per invocation. */
  poller: { batches: number; messagesPerBatch: number; batchesPerSecond: number } | null;
}

export interface HomeOnlyCell {
  concurrency: number;
  /** The raw transaction limit, measured around this phase (this cluster's background on the engine). */
  limit: CellSummary;
  cell: CellSummary;
  /** epochkv ÷ the limit. */
  ratio: number | null;
  cpu: Record<string, number>;
}

export interface FailoverRun {
  shard: number;
  killed: string;
  oldEpoch: number;
  newEpoch: number | null;
  /** Kill → first write acknowledged under the new epoch. */
  failoverMs: number | null;
  /** Kill → last write acknowledged under the old epoch (the dead leader's lease still counted). */
  lastOldEpochWriteMs: number | null;
  /** Longest time without an acknowledged write to the shard, around the kill. */
  longestGapMs: number | null;
  failedWrites: number;
}

export interface ScalingRow {
  shards: number;
  concurrency: number;
  cell: CellSummary;
  lostRacesPerWrite: number;
  cpu: Record<string, number>;
}

export interface CostScenario {
  operation: string;
  replicaRegions: number;
  lines: CostLine[];
  usdPerMillion: number;
  /** The fixed background spread over the operations at `amortizedAtOpsPerSecond`. */
  backgroundUsdPerMillion: number;
}

export interface CostReport {
  priceNote: string;
  prices: { key: string; unit: string; usd: number; source: string; asOf: string }[];
  scenarios: CostScenario[];
  background: { replicaRegions: number; usdPerMonth: number; lines: CostLine[] }[];
  amortizedAtOpsPerSecond: number;
  globalTables: { valueBytes: number; itemBytes: number; replicaRegions: number; usdPerMillion: number; epochkvStorageAndReplicationUsdPerMillion: number }[];
  measuredVsModelled: string[];
}

export interface EtcdReport {
  available: boolean;
  skipped?: string;
  version?: string;
  members?: number;
  dataDirectory?: string;
  writes?: { valueBytes: number; concurrency: number; cell: CellSummary; ratioToEpochkv: number | null }[];
  reads?: { mode: 'linearizable' | 'serializable'; concurrency: number; cell: CellSummary }[];
  failover?: { runs: { killed: string; failoverMs: number | null; failedWrites: number }[]; medianMs: number | null; maxMs: number | null; electionTimeoutMs: number };
  cpu?: Record<string, number>;
}

export interface Target {
  name: string;
  target: string;
  measured: string;
  met: boolean;
}

export interface BenchReport {
  version: 1;
  mode: 'full' | 'quick';
  command: string;
  startedAt: string;
  durationS: number;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; os: string; node: string; java: string; etcd: string | null; loadAverageAtStart: number[] };
  cluster: { shards: number; nodes: number; leaseMs: number; tickMs: number; homeRegion: string; replicaRegions: string[]; note: string };
  writes: WriteCell[];
  /** The write phase on a cluster without replica regions: the fenced write path alone on the engine. */
  homeOnly: HomeOnlyCell[];
  reads: ReadCell[];
  /** Write latency per replication mode (`?replication=` per write, same cluster, interleaved rounds). */
  modes: ModeCell[];
  lag: {
    targetPerSecond: number;
    /** Half the highest sustained write rate; differs from the target only with --lag-rate (absent in older reports). */
    halfLoadPerSecond?: number;
    achievedPerSecond: number;
    writes: CellSummary;
    skipped: number;
    regions: LagRegion[];
    /** The machine during the phase: cores per process group, and the benchmark process's event loop (absent in older reports). */
    machine?: { cores: Record<string, number>; eventLoop: EventLoopLoad };
    cdf: Record<string, [number, number][]>;
    /** The same at a light load, for comparison. */
    light: { ratePerSecond: number; achievedPerSecond: number; regions: LagRegion[] };
  };
  failover: { runs: FailoverRun[]; leaseMs: number; tickMs: number; boundMs: number; medianMs: number | null; maxMs: number | null; withinBound: number };
  scaling: ScalingRow[];
  cost: CostReport;
  etcd: EtcdReport;
  profile: { summary: ProfileSummary | null; notes: string[] };
  targets: Target[];
  latencyCdf: Record<string, [number, number][]>;
  summaryLine: string;
}

const fixed = (value: number | null | undefined, digits = 1) => (value === null || value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(digits));
const bytes = (value: number) => (value >= 1024 ? `${value / 1024} KiB` : `${value} B`);
const usd = (value: number) => (!Number.isFinite(value) ? '—' : value >= 100 ? `$${value.toFixed(0)}` : value >= 1 ? `$${value.toFixed(2)}` : `$${value.toFixed(3)}`);
const errorsText = (errors: Record<string, number>) =>
  Object.entries(errors)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([code, count]) => `${code} ×${count}`)
    .join(', ');

/**
 * What the machine did during the lag phase. Queueing grows steeply as a machine nears full use,
 * so a lag measured on a saturated machine says more about the machine than about the pull cadence.
 */
export function lagMachineNote(machine: { cores: Record<string, number>; eventLoop: EventLoopLoad }, cpus: number): string {
  const { cores, eventLoop } = machine;
  // A figure named `<group> <what>` is a share of its group's (threads of that process): shown inside it.
  const isPart = (name: string) => name.includes(' ') && Object.hasOwn(cores, name.slice(0, name.indexOf(' ')));
  const within = (group: string) =>
    Object.entries(cores)
      .filter(([name]) => name.startsWith(`${group} `))
      .map(([name, used]) => `${name.slice(group.length + 1)} ${fixed(used, 2)}`);
  const parts = Object.keys(cores)
    .filter((name) => name !== 'machine' && !isPart(name))
    .map((name) => {
      const inner = within(name);
      return `${name} ${fixed(cores[name] as number, 2)}${inner.length > 0 ? ` (${inner.join(', ')})` : ''}`;
    })
    .join(', ');
  const busy = cores.machine === undefined ? '' : `${fixed(cores.machine, 2)} of ${cpus} cores busy (${parts})`;
  return `The machine during the phase: ${busy === '' ? `cores ${parts}` : busy}. The benchmark process's event loop (API, SQS emulator, apply pollers, load generator) was busy ${fixed(eventLoop.utilization * 100, 0)}% of the time and a timer due every 10 ms fired ${fixed(eventLoop.delayP99Ms)} ms late at p99: that is how long a step of a write or of an apply may wait for its turn.`;
}

/** A table as aligned text (first column left, the others right). */
export function textTable(headers: string[], rows: string[][]): string[] {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) => cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number))).join('  ');
  return [line(headers), line(widths.map((width) => '-'.repeat(width))), ...rows.map(line)];
}

export function markdownTable(headers: string[], rows: string[][]): string[] {
  const escape = (cell: string) => cell.replace(/\|/g, '\\|');
  return [`| ${headers.map(escape).join(' | ')} |`, `| ${headers.map((_, column) => (column === 0 ? '---' : '---:')).join(' | ')} |`, ...rows.map((row) => `| ${row.map(escape).join(' | ')} |`)];
}

interface Section {
  title: string;
  headers: string[];
  rows: string[][];
  notes: string[];
}

function sections(report: BenchReport): Section[] {
  const out: Section[] = [];
  out.push({
    title: 'Writes: PUT through the HTTP API vs the limit (the raw fenced transaction on DynamoDB Local, same concurrency)',
    headers: ['value', 'conc', 'limit ops/s', 'limit p50', 'limit p99', 'epochkv ops/s', 'p50 ms', 'p95 ms', 'p99 ms', 'ratio', 'to best limit', 'catch-up ms', 'sustained ops/s', 'failed'],
    rows: report.writes.map((cell) => [
      bytes(cell.valueBytes),
      String(cell.concurrency),
      fixed(cell.limit.opsPerSecond),
      fixed(cell.limit.p50Ms),
      fixed(cell.limit.p99Ms),
      fixed(cell.system.opsPerSecond),
      fixed(cell.system.p50Ms),
      fixed(cell.system.p95Ms),
      fixed(cell.system.p99Ms),
      fixed(cell.ratio, 2),
      fixed(cell.ratioToBestLimit, 2),
      cell.catchUpMs === undefined ? '—' : cell.catchUpMs === null ? '> 30000' : String(cell.catchUpMs),
      fixed(cell.sustainedOpsPerSecond),
      cell.system.failed === 0 ? '0' : `${cell.system.failed} (${errorsText(cell.system.errors)})`,
    ]),
    notes: [
      'Keys are spread over every shard. The limit runs the same adapter call (ConditionCheck lease + Put log entry + Put kv item) with no HTTP, no lease/head reads, no lost races and no replication; it is measured half just before and half just after each epochkv phase.',
      '"to best limit": epochkv against the highest limit of any concurrency for that value size. DynamoDB Local slows down with many concurrent transactions; the API sends at most one transaction per shard at a time, and the writes of a shard that queue meanwhile share the next one (group commit), so at high concurrency it sends fewer, larger transactions than the limit, which commits every write alone.',
      'In the local cloud every region shares the one DynamoDB Local and the machine\'s cores: a write also costs the replicas\' apply transactions there, which on AWS run in other regions.',
      '"catch-up ms": how long after the phase every replica had applied every shard up to the home head; "sustained ops/s" = the phase\'s writes ÷ (its duration + the catch-up): the rate the cluster keeps up with replicas current. A burst the replicas absorb only by falling behind counts as acknowledged throughput, not as sustained.',
    ],
  });
  if (report.homeOnly.length > 0) {
    out.push({
      title: 'Writes without replica regions (100 B): the same write path with no replication competing for DynamoDB Local',
      headers: ['conc', 'limit ops/s', 'epochkv ops/s', 'p50 ms', 'p95 ms', 'p99 ms', 'ratio', 'failed', 'CPU cores used'],
      rows: report.homeOnly.map((entry) => [
        String(entry.concurrency),
        fixed(entry.limit.opsPerSecond),
        fixed(entry.cell.opsPerSecond),
        fixed(entry.cell.p50Ms),
        fixed(entry.cell.p95Ms),
        fixed(entry.cell.p99Ms),
        fixed(entry.ratio, 2),
        String(entry.cell.failed),
        Object.entries(entry.cpu)
          .map(([name, cores]) => `${name} ${cores}`)
          .join(', '),
      ]),
      notes: ['On AWS each replica region applies on its own DynamoDB; locally the apply transactions of both replica regions run on the same DynamoDB Local as the home writes.'],
    });
  }
  const breakdownRows = report.writes.map((cell) => {
    const b = cell.breakdown;
    return [
      `${bytes(cell.valueBytes)} c${cell.concurrency}`,
      fixed(b.latencyMeanMs),
      `${fixed(b.commitsPerWrite, 2)} × ${fixed(b.commitMeanMs)}`,
      fixed(b.lostRacesPerWrite, 2),
      `${fixed(b.leaseReadsPerWrite, 3)} × ${fixed(b.leaseReadMeanMs)}`,
      `${fixed(b.headReadsPerWrite, 3)} × ${fixed(b.headReadMeanMs)}`,
      `${fixed(b.shipBatchesPerWrite, 2)} × ${fixed(b.shipMeanMs)}`,
      fixed(b.otherMsPerWrite),
      fixed(b.applyTransactionsPerWrite, 2),
      fixed(b.otherDynamoRequestsPerWrite, 2),
      Object.entries(cell.cpu.system)
        .map(([name, cores]) => `${name} ${cores}`)
        .join(', '),
    ];
  });
  out.push({
    title: 'Where a write\'s time goes (per write: count × mean ms of each storage call; CPU in cores)',
    headers: ['cell', 'mean ms', 'commits', 'lost races', 'lease reads', 'head reads', 'SQS sends', 'other ms', 'apply txns', 'other DynamoDB', 'CPU cores used'],
    rows: breakdownRows,
    notes: [
      '"other" = mean latency − storage calls: waiting for the shard\'s transaction in flight (the API commits a shard\'s queued writes together, one transaction per shard at a time), HTTP, the API handler, the event loop shared with the in-process SQS emulator, apply pollers and load generator, and backoff before retried commits. Lease and head reads are cache misses (1 − the count is the hit rate). SQS sends: batches per region per write × mean ms. "apply txns" and "other DynamoDB": the rest of the engine\'s work per write (replica apply transactions of both regions; lease, head and progress reads, reports, repairs).',
    ],
  });
  out.push({
    title: 'Reads (100 B values)',
    headers: ['consistency', 'region', 'conc', 'ops/s', 'p50 ms', 'p95 ms', 'p99 ms', 'served by replica', 'failed'],
    rows: report.reads.map((read) => [
      read.consistency,
      read.region,
      String(read.concurrency),
      fixed(read.cell.opsPerSecond),
      fixed(read.cell.p50Ms),
      fixed(read.cell.p95Ms),
      fixed(read.cell.p99Ms),
      read.consistency === 'strong' ? '—' : `${read.servedByReplica}`,
      String(read.cell.failed),
    ]),
    notes: ['strong: ConsistentRead on the home table; session: the replica once it has applied the session token\'s index (else strong); eventual: the replica\'s table.'],
  });
  if (report.modes.length > 0) {
    const asyncCell = report.modes.find((row) => row.mode === 'async');
    out.push({
      title: 'Write latency per replication mode (100 B values)',
      headers: ['mode', 'conc', 'ops/s', 'p50 ms', 'p95 ms', 'p99 ms', 'p50 vs async', 'failed'],
      rows: report.modes.map((row) => [
        row.mode,
        String(row.concurrency),
        fixed(row.cell.opsPerSecond),
        fixed(row.cell.p50Ms),
        fixed(row.cell.p95Ms),
        fixed(row.cell.p99Ms),
        asyncCell?.cell.p50Ms === null || asyncCell?.cell.p50Ms === undefined || row.cell.p50Ms === null ? '—' : `${fixed(row.cell.p50Ms / asyncCell.cell.p50Ms)}×`,
        String(row.cell.failed),
      ]),
      notes: [
        'The same closed-loop writes with `?replication=async|quorum|all` on the same cluster, in interleaved rounds. Every mode waits for the SendMessageBatch to every replica queue (sent in parallel) before it answers, because a Lambda may be frozen once it has answered; the modes differ only when a send fails or is slow (async acknowledges anyway, quorum/all answer 503 after 2 s). So the same latency is expected, here and on AWS; differences are noise.',
      ],
    });
  }
  out.push({
    title: `Replication lag, commit → applied, at ${fixed(report.lag.achievedPerSecond)} writes/s (target ${fixed(report.lag.targetPerSecond)}/s = ${report.lag.halfLoadPerSecond === undefined || report.lag.halfLoadPerSecond === report.lag.targetPerSecond ? 'half the highest sustained write rate' : `set by --lag-rate; half the highest sustained write rate was ${fixed(report.lag.halfLoadPerSecond)}/s`})`,
    headers: ['replica', 'entries', 'p50 ms', 'p99 ms', 'max ms', 'ship (mean)', 'queue (mean)', 'apply (mean)', 'applied/s', 'via repair', 'applied unseen', 'poller: msgs per receive'],
    rows: report.lag.regions.map((region) => [
      region.region,
      String(region.entries),
      fixed(region.p50Ms),
      fixed(region.p99Ms),
      fixed(region.maxMs),
      fixed(region.meanShipMs),
      fixed(region.meanQueueMs),
      fixed(region.meanApplyMs),
      fixed(region.appliedPerSecond),
      String(region.viaRepair),
      String(region.unapplied),
      region.poller === null ? '—' : `${fixed(region.poller.messagesPerBatch, 2)} (${fixed(region.poller.batchesPerSecond)}/s)`,
    ]),
    notes: [
      `Writes during the phase: p50 ${fixed(report.lag.writes.p50Ms)} ms, p99 ${fixed(report.lag.writes.p99Ms)} ms.`,
      ...(report.lag.machine === undefined ? [] : [lagMachineNote(report.lag.machine, report.machine.cpus)]),
      `At a light load (${fixed(report.lag.light.achievedPerSecond)} writes/s): ${report.lag.light.regions.map((region) => `${region.region} p50 ${fixed(region.p50Ms)} ms, p99 ${fixed(region.p99Ms)} ms, max ${fixed(region.maxMs)} ms`).join('; ')}.`,
      'Locally the SQS emulator hands out at most one message per message group (shard) per receive, so the queue alone brings a replica at most one entry per shard per round trip (receive, apply transaction, delete); AWS hands out up to ten per group. The apply handler applies a batch\'s shards in one shared transaction, and pulls from the home log (one read per shard, runs shared too) every shard whose message waited 50 ms in the queue, at most every 50 ms per shard: "via repair" counts the entries that came that way.',
      'Measured in one process on one clock: commit = the fenced transaction returned; ship = the region\'s queue accepted it; queue = until the apply poller received it; apply = until its apply transaction returned.',
    ],
  });
  out.push({
    title: `Failover: kill a shard's leader while writing to it (bound leaseMs + 2 × tickMs = ${report.failover.boundMs} ms)`,
    headers: ['run', 'shard', 'killed', 'epoch', 'first write at new epoch ms', 'last write at old epoch ms', 'longest gap ms', 'failed writes'],
    rows: report.failover.runs.map((run, index) => [
      String(index + 1),
      String(run.shard),
      run.killed,
      `${run.oldEpoch} → ${run.newEpoch ?? '?'}`,
      fixed(run.failoverMs, 0),
      fixed(run.lastOldEpochWriteMs, 0),
      fixed(run.longestGapMs, 0),
      String(run.failedWrites),
    ]),
    notes: [`median ${fixed(report.failover.medianMs, 0)} ms, max ${fixed(report.failover.maxMs, 0)} ms; ${report.failover.withinBound} of ${report.failover.runs.length} within the bound (leaseMs ${report.failover.leaseMs}, tickMs ${report.failover.tickMs}).`],
  });
  out.push({
    title: 'Scaling: writes (100 B) by shard count',
    headers: ['shards', 'conc', 'ops/s', 'p50 ms', 'p99 ms', 'lost races per write', 'failed', 'CPU cores used'],
    rows: report.scaling.map((row) => [
      String(row.shards),
      String(row.concurrency),
      fixed(row.cell.opsPerSecond),
      fixed(row.cell.p50Ms),
      fixed(row.cell.p99Ms),
      fixed(row.lostRacesPerWrite, 2),
      row.cell.failed === 0 ? '0' : `${row.cell.failed} (${errorsText(row.cell.errors)})`,
      Object.entries(row.cpu)
        .map(([name, cores]) => `${name} ${cores}`)
        .join(', '),
    ]),
    notes: [
      'Each shard\'s log takes one commit at a time (the next index is the compare-and-swap); the API queues a shard\'s writes so that only one commit per shard is in flight, so with few shards the writers wait in that queue (lost races stay near 0). Locally more shards help until DynamoDB Local and the cores are saturated; every shard also adds lease renewals and replica reads to the same engine. On AWS shards are separate DynamoDB partitions.',
    ],
  });
  out.push({
    title: `Cost on AWS, $ per million operations (${report.cost.priceNote})`,
    headers: ['operation', 'replica regions', 'marginal', 'background amortized', 'total'],
    rows: report.cost.scenarios.map((scenario) => [
      scenario.operation,
      String(scenario.replicaRegions),
      usd(scenario.usdPerMillion),
      usd(scenario.backgroundUsdPerMillion),
      usd(scenario.usdPerMillion + scenario.backgroundUsdPerMillion),
    ]),
    notes: [
      `Background (nodes, replica heartbeats, idle polling), always on: ${report.cost.background.map((entry) => `${usd(entry.usdPerMonth)}/month with ${entry.replicaRegions} replica region${entry.replicaRegions === 1 ? '' : 's'}`).join(', ')}; amortized at ${fixed(report.cost.amortizedAtOpsPerSecond)} ops/s (the measured write rate at concurrency 32).`,
      ...report.cost.globalTables.map(
        (entry) =>
          `DynamoDB global tables, ${bytes(entry.valueBytes)} value (${entry.itemBytes} B item), ${entry.replicaRegions} replica region${entry.replicaRegions === 1 ? '' : 's'}: ${usd(entry.usdPerMillion)} per million writes; epochkv's storage and replication share (DynamoDB + SQS + transfer + apply): ${usd(entry.epochkvStorageAndReplicationUsdPerMillion)}.`,
      ),
      ...report.cost.measuredVsModelled,
    ],
  });
  const etcd = report.etcd;
  if (!etcd.available) {
    out.push({ title: 'Peer: etcd', headers: ['status'], rows: [[`skipped: ${etcd.skipped ?? 'not run'}`]], notes: [] });
  } else {
    out.push({
      title: `Peer: etcd ${etcd.version ?? ''}, ${etcd.members ?? 3} members on loopback (JSON gateway; data on ${etcd.dataDirectory ?? '?'})`,
      headers: ['workload', 'conc', 'ops/s', 'p50 ms', 'p95 ms', 'p99 ms', 'epochkv ÷ etcd', 'failed'],
      rows: [
        ...(etcd.writes ?? []).map((write) => [
          `put ${bytes(write.valueBytes)}`,
          String(write.concurrency),
          fixed(write.cell.opsPerSecond),
          fixed(write.cell.p50Ms),
          fixed(write.cell.p95Ms),
          fixed(write.cell.p99Ms),
          fixed(write.ratioToEpochkv, 2),
          String(write.cell.failed),
        ]),
        ...(etcd.reads ?? []).map((read) => [`get ${read.mode}`, String(read.concurrency), fixed(read.cell.opsPerSecond), fixed(read.cell.p50Ms), fixed(read.cell.p95Ms), fixed(read.cell.p99Ms), '—', String(read.cell.failed)]),
      ],
      notes:
        etcd.failover === undefined
          ? []
          : [
              `etcd failover (kill the leader while writing; election timeout ${etcd.failover.electionTimeoutMs} ms): ${etcd.failover.runs.map((run) => fixed(run.failoverMs, 0)).join(', ')} ms; median ${fixed(etcd.failover.medianMs, 0)} ms, max ${fixed(etcd.failover.maxMs, 0)} ms.`,
            ],
    });
  }
  out.push({
    title: 'Targets (measured, not asserted)',
    headers: ['target', 'wanted', 'measured', 'met'],
    rows: report.targets.map((target) => [target.name, target.target, target.measured, target.met ? 'yes' : 'NO']),
    notes: report.profile.notes,
  });
  return out;
}

function header(report: BenchReport): string[] {
  const machine = report.machine;
  return [
    `epochkv benchmark (${report.mode}), ${report.startedAt}, ${report.durationS} s`,
    `machine: ${machine.cpus} CPUs (${machine.cpuModel}), ${machine.memoryGiB} GiB RAM, ${machine.os}, Node ${machine.node}, Java ${machine.java}${machine.etcd === null ? '' : `, etcd ${machine.etcd}`}; load average at start ${machine.loadAverageAtStart.join(' ')}`,
    `cluster: ${report.cluster.shards} shards, ${report.cluster.nodes} nodes, leaseMs ${report.cluster.leaseMs}, tickMs ${report.cluster.tickMs}, home ${report.cluster.homeRegion}, replicas ${report.cluster.replicaRegions.join(' ')}; ${report.cluster.note}`,
  ];
}

export function formatText(report: BenchReport): string[] {
  const lines = [...header(report), ''];
  for (const section of sections(report)) {
    lines.push(section.title, ...textTable(section.headers, section.rows).map((line) => `  ${line}`));
    for (const note of section.notes) lines.push(`  · ${note}`);
    lines.push('');
  }
  return lines;
}

export function formatMarkdown(report: BenchReport, chartFile: string | undefined): string {
  const lines = ['# epochkv benchmark', '', ...header(report).map((line) => `${line}  `), ''];
  if (chartFile !== undefined) lines.push(`![write latency, replication lag and throughput](${chartFile})`, '');
  for (const section of sections(report)) {
    lines.push(`## ${section.title}`, '', ...markdownTable(section.headers, section.rows), '');
    for (const note of section.notes) lines.push(`- ${note}`);
    if (section.notes.length > 0) lines.push('');
  }
  if (report.profile.summary !== null) {
    const summary = report.profile.summary;
    lines.push('## CPU profile of the benchmark process (one write phase at concurrency 32)', '');
    lines.push(...markdownTable(['origin', 'share of samples'], summary.categories.map((entry) => [entry.category, `${entry.share}%`])), '');
    lines.push(...markdownTable(['function', 'where', 'self'], summary.top.map((entry) => [entry.fn, entry.where, `${entry.share}%`])), '');
  }
  const detail = report.cost.scenarios.find((scenario) => scenario.operation === 'write 100 B' && scenario.replicaRegions === 2);
  if (detail !== undefined) {
    lines.push('## Cost of one write (100 B, 2 replica regions), line by line', '');
    lines.push(...markdownTable(['component', 'per write', 'price', '$ per million writes', 'basis', 'note'], detail.lines.map((line) => [line.component, line.quantity.toPrecision(3), line.price, line.usdPerMillion.toFixed(3), line.basis, line.note ?? ''])), '');
  }
  const background = report.cost.background.find((entry) => entry.replicaRegions === 2);
  if (background !== undefined) {
    lines.push(`## Background of an idle cluster (3 nodes, 2 replica regions): ${usd(background.usdPerMonth)} per month`, '');
    lines.push(...markdownTable(['component', 'per second', 'price', '$ per month', 'basis', 'note'], background.lines.map((line) => [line.component, line.quantity.toPrecision(3), line.price, ((line.usdPerMillion / 1e6) * 2_592_000).toFixed(2), line.basis, line.note ?? ''])), '');
  }
  const priceText = (value: number) => (value < 0.001 ? `$${Number((value * 1e6).toPrecision(6))} per million` : `$${Number(value.toPrecision(6))}`);
  lines.push('## Prices', '', ...markdownTable(['price', 'USD', 'source', 'as of'], report.cost.prices.map((price) => [price.unit, priceText(price.usd), price.source, price.asOf])), '');
  lines.push('```', report.summaryLine, '```', '');
  return lines.join('\n');
}

export function chartData(report: BenchReport): ChartData {
  const cells100 = report.writes.filter((cell) => cell.valueBytes === 100);
  const etcdWrites = new Map((report.etcd.writes ?? []).filter((write) => write.valueBytes === 100).map((write) => [write.concurrency, write.cell.opsPerSecond]));
  return {
    title: `epochkv benchmark (${report.mode}, ${report.startedAt.slice(0, 10)})`,
    subtitle: `${report.machine.cpus} CPUs ${report.machine.cpuModel}, Node ${report.machine.node}; ${report.cluster.shards} shards, 2 replica regions, all on one DynamoDB Local; ${report.summaryLine}`,
    latency: {
      title: 'Write latency CDF, 100 B, by concurrency',
      series: Object.entries(report.latencyCdf).map(([label, points]) => ({ label, points })),
    },
    lag: {
      title: `Replication lag CDF at ${Math.round(report.lag.achievedPerSecond)} writes/s`,
      series: Object.entries(report.lag.cdf).map(([label, points]) => ({ label, points })),
      marker: { x: 250, label: '250 ms target' },
    },
    throughput: {
      title: 'Write throughput, 100 B, by concurrency: the raw transaction limit, epochkv, etcd',
      unit: 'ops/s',
      groups: cells100.map((cell) => ({
        label: `concurrency ${cell.concurrency}`,
        bars: [
          { name: 'limit', value: cell.limit.opsPerSecond },
          { name: 'epochkv', value: cell.system.opsPerSecond },
          ...(etcdWrites.has(cell.concurrency) ? [{ name: 'etcd', value: etcdWrites.get(cell.concurrency) as number }] : []),
        ],
      })),
    },
  };
}
