import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { makeDynamoClient } from '../adapters/aws/clients.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import { lockKey, reservedPrefix } from '../core/coordination.ts';
import { verifyChain, type LogEntry } from '../core/log.ts';
import { shardOf } from '../core/shard.ts';
import { startLocalCloud, type LocalCloud } from '../local/cloud.ts';
import type { ReplicationMode } from '../core/replication.ts';
import { between, mulberry32, pick } from '../random.ts';
import { checkBank, checkHistory, checkLock, formatViolation, type LockLogEntry, type LockVerdict } from './checker.ts';
import { Nemesis, nemesisKinds, nodeNemeses, type BlackholeRecord, type NemesisKind } from './nemesis.ts';
import { bankAccounts, finalBankRead, lockWorkloadKeys, runBankWorkload, runLockWorkload, runSessionClient, runWorkload, setupBank, type AcknowledgedWrite, type BankHistory, type LockHistory } from './workload.ts';

/**
 * register: put, strong get, CAS and delete on a few keys, checked for linearizability (with
 * the session client at the replicas). bank: transfers between accounts on different shards by
 * POST /txn, every read-only transaction of all accounts checked for the total. lock: clients
 * take one lock on a short lease and append to two keys with the fence header, some holders
 * paused past their lease; checkLock proves every accepted write had the current token.
 */
export const chaosWorkloads = ['register', 'bank', 'lock'] as const;
export type ChaosWorkload = (typeof chaosWorkloads)[number];

/** Bank accounts, each starting with bankBalance: the total every snapshot must see. */
const bankAccountCount = 8;
const bankBalance = 100;

/** The fenced lock workload's lock, and its holders' lease: short, so pauses and faults outlive it. */
const lockName = 'chaos-fenced';
const lockTtlMs = 1_500;
/** Holds that end in the holder-pause fault. */
const lockPauseFraction = 0.25;
const leasePrefix = `${reservedPrefix}lease/`;

export interface ChaosOptions {
  durationS: number;
  seed: number;
  nemeses: NemesisKind[];
  clients: number;
  keyCount: number;
  /** Reuse a running DynamoDB Local (tests); otherwise the run starts its own in memory. */
  dynamoEndpoint?: string;
  /** TEST ONLY: writes without the epoch ConditionCheck — the run must then report a violation. */
  unsafeDisableFencing?: boolean;
  /** The cluster's replication mode; default async. */
  replication?: ReplicationMode;
  /** The API as one long-lived process instead of Lambda's execution environments (comparisons). */
  singleProcess?: boolean;
  /** Where the JSON report goes; nothing is written when undefined. */
  resultsDirectory?: string;
  /**
   * Log compaction with this retention (entries): the leaders trim the logs during the run and
   * replicas that fall behind are seeded from snapshots. A recorder keeps every entry it sees,
   * so the checks after the run still see the whole log. Default: the cluster's (100000).
   */
  logRetainEntries?: number;
  /** The workloads run side by side, each on its own keys; default register alone. */
  workloads?: ChaosWorkload[];
  /** Clients of the bank workload (default 4). */
  bankClients?: number;
  /** Clients of the fenced lock workload (default 4). */
  lockClients?: number;
  print: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  durationS: number;
  nemeses: NemesisKind[];
  unsafeDisableFencing: boolean;
  operations: { total: number; ok: number; fail: number; info: number; byKind: Record<string, number>; unexpected: number; unexpectedSamples: string[] };
  faults: { total: number; byKind: Record<string, number>; log: { kind: string; atS: number; detail: string }[] };
  failoverMs: { count: number; min: number | null; median: number | null; max: number | null; leaseMs: number };
  /** Each blackhole of DynamoDB and SQS: the probe write's answer and time, and the recovery after healing. */
  blackholes: BlackholeRecord[];
  checker: { linearizable: boolean; timedOut: boolean; violatingKeys: string[]; keys: number; operations: number; statesExplored: number; ms: number; explanation: string | null };
  lost: { count: number; acknowledged: number; samples: string[]; expected: boolean };
  replication: ReplicationMode;
  /** The region-loss nemesis: the lost home and the promotion that replaced it. */
  regionLoss: { lost: string; promoted: string; lostAtS: number; writableAfterMs: number | null; promotionMs: number; drainedMessages: number; warnings: string[] } | null;
  diverged: { count: number; samples: string[] };
  session: { reads: number; servedByReplica: number; readYourWritesViolations: number; monotonicViolations: number; samples: string[] };
  epochOrder: { violations: number; samples: string[] };
  convergedMs: number | null;
  /** With logRetainEntries: what the run compacted, and entries the recorder never saw before they were trimmed (the checks cannot see those). */
  compaction: { retainEntries: number; compactedThrough: number[]; unrecorded: number } | null;
  workloads: ChaosWorkload[];
  /** The bank workload (null when it did not run). */
  bank: {
    accounts: number;
    total: number;
    transfers: { ok: number; fail: number; info: number; byReason: Record<string, number> };
    reads: number;
    readsUnavailable: number;
    /** Reads whose accounts did not sum to the total, or held a missing or negative account. */
    violations: number;
    samples: string[];
    /** The read after healing (null: none answered within its deadline, itself a failure). */
    finalBalances: (number | null)[] | null;
    unexpected: number;
    unexpectedSamples: string[];
  } | null;
  /** The fenced lock workload (null when it did not run). */
  lock: {
    name: string;
    keys: LockHistory['keys'];
    ttlMs: number;
    acquisitions: { ok: number; fail: number; info: number; byReason: Record<string, number> };
    writes: { ok: number; fail: number; info: number; byReason: Record<string, number> };
    releases: { ok: number; fail: number; info: number };
    pauses: LockHistory['pauses'];
    leasesLost: number;
    keepalives: Record<string, number>;
    verdict: LockVerdict;
    unexpected: number;
    unexpectedSamples: string[];
  } | null;
  ok: boolean;
  summary: string;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function percentile(sorted: number[], fraction: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] as number;
}

/**
 * A Jepsen-style run on the local cloud: concurrent clients record a history while a nemesis
 * injects faults drawn from a seeded schedule; afterwards the faults are healed and the
 * history, the logs and the replicas are checked.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const { print } = options;
  const random = mulberry32(options.seed);
  const prefix = `chaos-${options.seed}-${Date.now().toString(36)}`;
  const replication = options.replication ?? 'async';
  const regionLossRun = options.nemeses.includes('region-loss');
  if (regionLossRun && options.nemeses.length > 1) throw new Error('the region-loss nemesis runs alone: it rewires the whole cloud');
  const workloads = options.workloads ?? ['register'];
  const register = workloads.includes('register');
  const bankClients = workloads.includes('bank') ? (options.bankClients ?? 4) : 0;
  const lockClients = workloads.includes('lock') ? (options.lockClients ?? 4) : 0;
  print(
    `chaos: seed ${options.seed}, ${options.durationS} s, nemeses ${options.nemeses.join(',') || 'none'}, replication ${replication}, ${register ? `${options.clients} clients on ${options.keyCount} keys` : 'no register clients'}${bankClients > 0 ? `, bank: ${bankClients} clients on ${bankAccountCount} accounts` : ''}${lockClients > 0 ? `, lock: ${lockClients} clients on one lock (ttl ${lockTtlMs} ms)` : ''}${options.unsafeDisableFencing ? ', FENCING DISABLED (test only)' : ''}`,
  );
  const cloud = await startLocalCloud({
    replication,
    basePort: 0,
    ...(options.dynamoEndpoint === undefined ? {} : { dynamoEndpoint: options.dynamoEndpoint }),
    tablePrefix: prefix,
    invocationMs: 10_000,
    faultSeed: options.seed,
    unsafeDisableFencing: options.unsafeDisableFencing === true,
    singleProcess: options.singleProcess === true,
    ...(options.logRetainEntries === undefined ? {} : { logRetainEntries: options.logRetainEntries }),
    // The blackhole nemesis makes DynamoDB and SQS hang through loopback proxies in front of them.
    faultProxy: options.nemeses.includes('blackhole'),
    log: process.env.EPOCHKV_CHAOS_DEBUG === "1" ? (line) => print(`    cloud: ${line}`) : () => undefined,
  });
  let recorder: LogRecorder | undefined;
  try {
    await cloud.waitForLeaders(30_000);
    if (options.logRetainEntries !== undefined) {
      recorder = new LogRecorder(new DynamoStore(makeDynamoClient({ region: cloud.config.homeRegion, endpoint: cloud.dynamoEndpoint }), cloud.config.tables, cloud.config.shardCount), cloud.config.shardCount);
    }
    // The accounts exist before the first fault: the total is known from the start.
    const accounts = bankClients > 0 ? bankAccounts(bankAccountCount, cloud.config.shardCount, 'bank') : [];
    if (bankClients > 0) await setupBank(cloud.apiUrl, accounts, bankBalance, 30_000);
    const startedMs = Date.now();
    const deadlineMs = startedMs + options.durationS * 1_000;
    const keys = register ? Array.from({ length: options.keyCount }, (_, index) => `k${index}`) : [];
    const lockKeys = lockWorkloadKeys(shardOf(lockKey(lockName), cloud.config.shardCount), cloud.config.shardCount, 'fenced');
    const lockShardKeys = lockClients > 0 ? [lockKey(lockName), lockKeys.sameShard, lockKeys.crossShard] : [];
    const busyShards = [...new Set([...keys, ...accounts, ...lockShardKeys].map((key) => shardOf(key, cloud.config.shardCount)))];
    const nemesis = new Nemesis(cloud, random, (line) => print(`  [${((Date.now() - startedMs) / 1_000).toFixed(1)} s] ${line}`), busyShards);

    // Two lanes of faults run side by side: one on the nodes and the API, one on replication.
    // Each lane draws from its own seeded stream, so a schedule replays from the seed.
    const lanes = [options.nemeses.filter((kind) => nodeNemeses.includes(kind)), options.nemeses.filter((kind) => !nodeNemeses.includes(kind))].filter(
      (lane) => lane.length > 0,
    );
    let regionLoss: ChaosReport['regionLoss'] = null;
    const schedule = Promise.all(
      lanes.map(async (lane, position) => {
        if (regionLossRun) {
          regionLoss = await loseHomeRegion(cloud, startedMs, deadlineMs, (line) => print(`  [${((Date.now() - startedMs) / 1_000).toFixed(1)} s] ${line}`));
          return;
        }
        const laneRandom = mulberry32(options.seed + 101 * (position + 1));
        // Quiet at the start and at the end, so the history holds operations before and after faults.
        await sleep(Math.min(1_000, options.durationS * 100));
        while (Date.now() < deadlineMs - 2_000) {
          await nemesis.inject(pick(lane, laneRandom));
          await sleep(between(100, 500, laneRandom));
        }
      }),
    );
    const emptyBank: BankHistory = { reads: [], transfers: [], readsUnavailable: 0, acknowledged: [], counters: { unexpected: 0, unexpectedSamples: [] } };
    const emptyLock: LockHistory = { name: lockName, keys: lockKeys, acquisitions: [], observations: [], releases: [], writes: [], pauses: { injected: 0, lockNeverMoved: 0 }, leasesLost: 0, keepalives: {}, history: [], acknowledged: [], counters: { unexpected: 0, unexpectedSamples: [] } };
    const [workload, session, bankHistory, lockHistory] = await Promise.all([
      runWorkload({ apiUrl: () => cloud.apiUrl, shardCount: cloud.config.shardCount, clients: register ? options.clients : 0, keys, seed: options.seed, deadlineMs, requestTimeoutMs: 4 * cloud.config.leaseMs }),
      runSessionClient({
        homeUrl: cloud.apiUrl,
        replicaUrls: cloud.regions.filter((region) => region.role === 'replica').map((region) => region.apiUrl),
        seed: options.seed,
        // A lost region takes its APIs along: sessions are checked in the other runs.
        deadlineMs: regionLossRun || !register ? 0 : deadlineMs,
        requestTimeoutMs: 4 * cloud.config.leaseMs,
      }),
      bankClients > 0
        ? runBankWorkload({ apiUrl: () => cloud.apiUrl, shardCount: cloud.config.shardCount, accounts, clients: bankClients, seed: options.seed, deadlineMs, requestTimeoutMs: 4 * cloud.config.leaseMs })
        : Promise.resolve(emptyBank),
      lockClients > 0
        ? runLockWorkload({
            apiUrl: () => cloud.apiUrl,
            shardCount: cloud.config.shardCount,
            name: lockName,
            keys: lockKeys,
            clients: lockClients,
            ttlMs: lockTtlMs,
            pauseFraction: lockPauseFraction,
            // A lease's keys go within ttl + leaseMs + 2 ticks of its last keepalive (the README's bound).
            expiryBoundMs: cloud.config.leaseMs + 2 * cloud.config.tickMs,
            seed: options.seed,
            deadlineMs,
            requestTimeoutMs: 4 * cloud.config.leaseMs,
          })
        : Promise.resolve(emptyLock),
      schedule,
    ]);
    await schedule;
    if (regionLossRun) print('chaos: sessions are not checked in a region-loss run (the session client\'s regions move)');
    else await nemesis.healAll();
    const home = new DynamoStore(makeDynamoClient({ region: cloud.config.homeRegion, endpoint: cloud.dynamoEndpoint }), cloud.config.tables, cloud.config.shardCount);
    print(`chaos: workload done (${workload.history.length} operations); healing and waiting for the replicas to converge...`);
    // The lock workload can leave leases behind (a paused holder's, one whose revoke timed out):
    // their expiry appends deletes for a few seconds more. Wait for them, or the checks below
    // race a log that still grows.
    if (lockClients > 0 && !(await waitForLeasesGone(home, 30_000))) print('chaos: leases of the lock workload still present after 30 s; checking anyway');
    const convergedMs = await waitForConvergence(cloud, home, 60_000);
    const finalRead = bankClients > 0 ? await finalBankRead(cloud.apiUrl, accounts, 30_000) : undefined;

    const checkStartMs = performance.now();
    // The lock workload's data keys are registers too (reads and fenced CASes): one search for all.
    const verdict = checkHistory([...workload.history, ...lockHistory.history]);
    const checkMs = Math.round(performance.now() - checkStartMs);
    const readLogs = async () => {
      const retained = await Promise.all(Array.from({ length: cloud.config.shardCount }, (_, shard) => home.readLog(shard, 1, 1_000_000)));
      return recorder === undefined ? retained : recorder.merged(retained);
    };
    let logs = await readLogs();
    let diverged = await findDivergence(cloud, home, logs, recorder !== undefined);
    // The log can grow after the convergence check: a node's next invocation takes its own
    // leases over and appends leader markers. A replica that is merely behind catches up; a
    // real divergence (a different hash, a different table) stays. Look again a few times.
    for (let attempt = 0; diverged.count > 0 && attempt < 3; attempt += 1) {
      await waitForConvergence(cloud, home, 10_000);
      logs = await readLogs();
      diverged = await findDivergence(cloud, home, logs, recorder !== undefined);
    }
    const lost = findLost([...workload.acknowledged, ...bankHistory.acknowledged, ...lockHistory.acknowledged], logs);
    const bank = bankClients > 0 ? bankReport(bankHistory, finalRead, accounts.length) : null;
    const lock = lockClients > 0 ? lockReport(lockHistory, logs, cloud.config.shardCount) : null;
    const epochOrder = checkEpochOrder(logs);
    await recorder?.stop();
    const compaction =
      recorder === undefined || options.logRetainEntries === undefined
        ? null
        : { retainEntries: options.logRetainEntries, compactedThrough: await Promise.all(Array.from({ length: cloud.config.shardCount }, (_, shard) => home.readCompaction(shard))), unrecorded: recorder.unrecorded };

    const byKind: Record<string, number> = {};
    for (const operation of workload.history) byKind[`${operation.kind}:${operation.status}`] = (byKind[`${operation.kind}:${operation.status}`] ?? 0) + 1;
    const faultsByKind: Record<string, number> = {};
    for (const fault of nemesis.log.faults) faultsByKind[fault.kind] = (faultsByKind[fault.kind] ?? 0) + 1;
    const failovers = [...nemesis.log.failoverMs].sort((a, b) => a - b);
    const sessionViolations = session.readYourWritesViolations + session.monotonicViolations;
    // async replication loses the unshipped tail with the home region: that loss (and the
    // non-linearizable history it makes) is the measured trade-off, not a failure of the run.
    const lossExpected = regionLossRun && replication === 'async';
    const bankOk = bank === null || (bank.violations === 0 && bank.finalBalances !== null && bank.unexpected === 0) || (lossExpected && bank.unexpected === 0);
    const lockOk = lock === null || ((lock.verdict.violations === 0 || lossExpected) && lock.unexpected === 0);
    const ok = (lossExpected || (verdict.linearizable && lost.count === 0)) && diverged.count === 0 && sessionViolations === 0 && epochOrder.violations === 0 && workload.counters.unexpected === 0 && bankOk && lockOk &&
      // An entry trimmed before anyone saw it could hide a lost write: the run cannot vouch for it.
      (compaction === null || compaction.unrecorded === 0);
    const report: ChaosReport = {
      seed: options.seed,
      durationS: options.durationS,
      nemeses: options.nemeses,
      unsafeDisableFencing: options.unsafeDisableFencing === true,
      operations: { total: workload.history.length, ok: workload.counters.ok, fail: workload.counters.fail, info: workload.counters.info, byKind, unexpected: workload.counters.unexpected, unexpectedSamples: workload.counters.unexpectedSamples },
      faults: {
        total: nemesis.log.faults.length,
        byKind: faultsByKind,
        log: nemesis.log.faults.map((fault) => ({ kind: fault.kind, atS: Math.round((fault.startedMs - startedMs) / 100) / 10, detail: fault.detail })),
      },
      failoverMs: { count: failovers.length, min: failovers[0] ?? null, median: percentile(failovers, 0.5), max: failovers.at(-1) ?? null, leaseMs: cloud.config.leaseMs },
      blackholes: nemesis.log.blackholes,
      checker: {
        linearizable: verdict.linearizable,
        timedOut: verdict.timedOut === true,
        violatingKeys: verdict.violatingKeys ?? [],
        keys: verdict.keysChecked,
        operations: verdict.operationsChecked,
        statesExplored: verdict.statesExplored,
        ms: checkMs,
        explanation: verdict.linearizable ? null : formatViolation(verdict),
      },
      lost: { count: lost.count, acknowledged: workload.acknowledged.length, samples: lost.samples, expected: lossExpected },
      replication,
      regionLoss,
      diverged,
      session: { reads: session.reads, servedByReplica: session.servedByReplica, readYourWritesViolations: session.readYourWritesViolations, monotonicViolations: session.monotonicViolations, samples: session.samples },
      epochOrder,
      convergedMs,
      compaction,
      workloads,
      bank,
      lock,
      ok,
      summary: `chaos: linearizable=${verdict.linearizable ? 'yes' : 'no'} lost=${lost.count} diverged=${diverged.count} ops=${workload.history.length} faults=${nemesis.log.faults.length + (regionLoss === null ? 0 : 1)}${regionLossRun ? ` replication=${replication}` : ''}${bank === null ? '' : ` bank=${bankOk ? 'ok' : 'FAILED'} transfers=${bank.transfers.ok} reads=${bank.reads}`}${lock === null ? '' : ` lock=${lockOk ? 'ok' : 'FAILED'} tokens=${lock.verdict.tokensInLog} writes=${lock.verdict.committedWrites} stale-refused=${lock.verdict.stale.refused}`}`,
    };
    printReport(report, print);
    if (options.resultsDirectory !== undefined) {
      mkdirSync(options.resultsDirectory, { recursive: true });
      const file = path.join(options.resultsDirectory, `${new Date().toISOString().replace(/[:.]/g, '-')}-seed${options.seed}.json`);
      writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
      print(`report: ${file}`);
    }
    print(report.summary);
    return report;
  } finally {
    await recorder?.stop();
    await cloud.stop();
  }
}

/**
 * The region-loss nemesis: at a third of the run the home region is cut off (tables, queues,
 * API and nodes gone), an operator notices a second later and promotes the first replica
 * region; the workload follows the new home.
 */
async function loseHomeRegion(cloud: LocalCloud, startedMs: number, deadlineMs: number, print: (line: string) => void): Promise<NonNullable<ChaosReport['regionLoss']>> {
  await sleep(Math.max(1_000, (deadlineMs - startedMs) / 3));
  const lost = cloud.config.homeRegion;
  const promoted = cloud.config.replicaRegions[0] as string;
  const lostMs = Date.now();
  cloud.cutOff(lost);
  print(`nemesis region-loss: ${lost} cut off (its nodes killed, its tables, queues and API unreachable)`);
  await sleep(1_000);
  const report = await cloud.promote(promoted);
  print(`nemesis region-loss: promoted ${promoted} in ${report.durationMs} ms (cluster epoch ${report.clusterEpoch}; drained ${report.drainedMessages} queued entries)${report.warnings.length > 0 ? `; ${report.warnings.join('; ')}` : ''}`);
  const writableAfterMs = await cloud.waitForLeaders(deadlineMs - Date.now()).then(
    () => Date.now() - lostMs,
    () => null,
  );
  print(`nemesis region-loss: every shard led at ${promoted} ${writableAfterMs ?? '—'} ms after the loss`);
  return { lost, promoted, lostAtS: Math.round((lostMs - startedMs) / 100) / 10, writableAfterMs, promotionMs: report.durationMs, drainedMessages: report.drainedMessages, warnings: report.warnings };
}

/** Waits until no lease key is left in the home table (all expired through the log); false at the deadline. */
async function waitForLeasesGone(home: DynamoStore, timeoutMs: number): Promise<boolean> {
  const deadlineMs = Date.now() + timeoutMs;
  while (Date.now() < deadlineMs) {
    const page = await home.list(leasePrefix, 1, undefined, true).catch(() => undefined);
    if (page !== undefined && page.items.every((item) => item.tombstone === true)) return true;
    await sleep(200);
  }
  return false;
}

/** Waits until every replica applied every shard to the home head; the ms it took, or null. */
async function waitForConvergence(cloud: LocalCloud, home: DynamoStore, timeoutMs: number): Promise<number | null> {
  const startedMs = Date.now();
  const replicas = cloud.config.replicaRegions.map((region) => new DynamoReplicaStore(makeDynamoClient({ region, endpoint: cloud.dynamoEndpoint }), cloud.config.tables));
  while (Date.now() - startedMs < timeoutMs) {
    const heads = await Promise.all(Array.from({ length: cloud.config.shardCount }, (_, shard) => home.readHead(shard)));
    let caughtUp = true;
    for (const replica of replicas) {
      const progress = await replica.readAllProgress();
      for (const [shard, head] of heads.entries()) {
        const applied = progress.get(shard);
        if ((head?.index ?? 0) !== (applied?.appliedIndex ?? 0) || (head !== undefined && head.hash !== applied?.appliedHash)) caughtUp = false;
      }
    }
    if (caughtUp) return Date.now() - startedMs;
    await sleep(100);
  }
  return null;
}

/** Every acknowledged write must be in the home log at the index it was acknowledged with. */
function findLost(acknowledged: AcknowledgedWrite[], logs: LogEntry[][]): { count: number; samples: string[] } {
  const samples: string[] = [];
  let count = 0;
  // By index: with compaction the log checked after the run is the recorder's, which need not start at 1.
  const byIndex = logs.map((log) => new Map(log.map((entry) => [entry.index, entry])));
  for (const write of acknowledged) {
    const entry = byIndex[write.shard]?.get(write.index);
    // A single write is its entry's only op; a transaction's put is one of its shard part's ops.
    const op = write.epoch === undefined ? entry?.ops.find((candidate) => candidate.type !== 'leader' && candidate.key === write.key) : entry?.ops[0];
    const matches =
      entry !== undefined &&
      entry.index === write.index &&
      (write.epoch === undefined || entry.epoch === write.epoch) &&
      op !== undefined &&
      op.type !== 'leader' &&
      op.key === write.key &&
      (write.value === undefined ? op.type === 'delete' : op.type === 'put' && Buffer.from(op.value).toString('utf8') === write.value);
    if (!matches) {
      count += 1;
      if (samples.length < 5) samples.push(`${write.value === undefined ? 'delete' : `put ${write.value}`} of ${write.key} acknowledged at shard ${write.shard} index ${write.index}${write.epoch === undefined ? ' (a transaction)' : ` epoch ${write.epoch}`} is not in the log`);
    }
  }
  return { count, samples };
}

/** No log entry of an epoch after a higher epoch's first entry; the hash chain intact. */
function checkEpochOrder(logs: LogEntry[][]): { violations: number; samples: string[] } {
  const samples: string[] = [];
  let violations = 0;
  for (const [shard, log] of logs.entries()) {
    let highest = 0;
    for (const entry of log) {
      if (entry.epoch < highest) {
        violations += 1;
        if (samples.length < 5) samples.push(`shard ${shard} index ${entry.index} has epoch ${entry.epoch} after epoch ${highest} began`);
      }
      highest = Math.max(highest, entry.epoch);
    }
    const chain = verifyChain(log);
    if (!chain.ok && !chain.reason.includes('epoch')) {
      violations += 1;
      if (samples.length < 5) samples.push(`shard ${shard}: ${chain.reason}`);
    }
  }
  return { violations, samples };
}

/** Each replica's log copy equals the home log and its table equals the home table. */
async function findDivergence(cloud: LocalCloud, home: DynamoStore, logs: LogEntry[][], compacted: boolean): Promise<{ count: number; samples: string[] }> {
  const samples: string[] = [];
  let count = 0;
  const homeRows = await scan(home);
  for (const region of cloud.config.replicaRegions) {
    const copy = new DynamoStore(makeDynamoClient({ region, endpoint: cloud.dynamoEndpoint }), cloud.config.tables, cloud.config.shardCount);
    for (const [shard, log] of logs.entries()) {
      const copied = await copy.readLog(shard, 1, 1_000_000);
      // With compaction a copy holds the tail of the log: dense, ending at the home head, each
      // entry the home's. Without, the whole log from 1.
      const hashes = new Map(log.map((entry) => [entry.index, entry.hash]));
      const start = copied[0]?.index ?? (log.at(-1)?.index ?? 0) + 1;
      const same =
        (compacted || start === (log[0]?.index ?? 1)) &&
        (copied.at(-1)?.index ?? 0) === (log.at(-1)?.index ?? 0) &&
        copied.every((entry, position) => entry.index === start + position && hashes.get(entry.index) === entry.hash);
      if (!same) {
        count += 1;
        if (samples.length < 5) samples.push(`${region} shard ${shard}: log copy has ${copied.length} entries, home ${log.length}, or a different hash`);
      }
    }
    const rows = await scan(copy);
    if (JSON.stringify(rows) !== JSON.stringify(homeRows)) {
      count += 1;
      if (samples.length < 5) samples.push(`${region}: table differs from home (${rows.length} items vs ${homeRows.length})`);
    }
  }
  return { count, samples };
}

async function scan(store: DynamoStore): Promise<[string, number, string][]> {
  const rows: [string, number, string][] = [];
  let after: string | undefined;
  do {
    const page = await store.list('', 1000, after, true);
    // A pending delete's tombstone is a missing key (the home table's own representation).
    rows.push(...page.items.filter((item) => item.tombstone !== true).map((item): [string, number, string] => [item.key, item.version, Buffer.from(item.value).toString('base64')]));
    after = page.next;
  } while (after !== undefined);
  return rows;
}

/**
 * Keeps every home log entry it sees, reading each shard's log from where it left off, so the
 * checks after a run with compaction see the entries the leaders trimmed. An entry it finds
 * already gone is counted in `unrecorded`.
 */
class LogRecorder {
  readonly #entries: Map<number, LogEntry>[];
  readonly #loops: Promise<void>[];
  #stopped = false;
  unrecorded = 0;

  constructor(
    private readonly store: DynamoStore,
    shardCount: number,
  ) {
    this.#entries = Array.from({ length: shardCount }, () => new Map<number, LogEntry>());
    this.#loops = Array.from({ length: shardCount }, (_, shard) => this.#follow(shard));
  }

  async #follow(shard: number): Promise<void> {
    let next = 1;
    const seen = this.#entries[shard] as Map<number, LogEntry>;
    while (!this.#stopped) {
      const entries = await this.store.readLog(shard, next, recorderPageEntries).catch((): LogEntry[] => []);
      const first = entries[0];
      if (first !== undefined && first.index > next) this.unrecorded += first.index - next;
      for (const entry of entries) seen.set(entry.index, entry);
      const last = entries.at(-1);
      if (last !== undefined) next = last.index + 1;
      // Read again at once while the log moves; a short pause when it does not.
      if (entries.length < recorderPageEntries) await sleep(recorderPollMs);
    }
  }

  /** Each shard's log: what was recorded, and what is still in the log after the run. */
  merged(retained: LogEntry[][]): LogEntry[][] {
    return retained.map((log, shard) => {
      const all = new Map(this.#entries[shard]);
      for (const entry of log) all.set(entry.index, entry);
      return [...all.values()].sort((a, b) => a.index - b.index);
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#loops);
  }
}

const recorderPageEntries = 1_000;
/** How often the recorder reads an idle shard's log: a leader trims every four ticks (250 ms each locally), and only entries beyond the retention. */
const recorderPollMs = 20;

function printReport(report: ChaosReport, print: (line: string) => void): void {
  const line = (label: string, value: string) => print(`  ${label.padEnd(22)} ${value}`);
  print('chaos report');
  line('operations', `${report.operations.total} (ok ${report.operations.ok}, failed ${report.operations.fail}, indeterminate ${report.operations.info})`);
  line('by kind', Object.entries(report.operations.byKind).sort().map(([kind, count]) => `${kind}=${count}`).join(' '));
  line('faults injected', `${report.faults.total} ${JSON.stringify(report.faults.byKind)}`);
  const failover = report.failoverMs;
  line('failovers seen', failover.count === 0 ? 'none' : `${failover.count}: min ${failover.min} ms, median ${failover.median} ms, max ${failover.max} ms (leaseMs ${failover.leaseMs})`);
  for (const hole of report.blackholes) {
    line('blackhole', `${hole.durationMs} ms: probe write ${hole.probeStatus}${hole.probeError === undefined ? '' : ` ${hole.probeError}`} in ${hole.probeMs} ms; led again ${hole.recoveredMs ?? '—'} ms after healing; ${hole.shardsNewEpoch}/${hole.shards} shards at a new epoch`);
  }
  const verdict = report.checker.linearizable ? 'linearizable' : report.checker.violatingKeys.length > 0 ? `NOT linearizable (keys ${report.checker.violatingKeys.join(', ')})` : 'UNKNOWN (search bound hit)';
  line('checker', `${verdict}: ${report.checker.operations} operations on ${report.checker.keys} keys, ${report.checker.statesExplored} states, ${report.checker.ms} ms`);
  if (report.checker.explanation !== null) print(report.checker.explanation);
  if (report.regionLoss !== null) {
    const loss = report.regionLoss;
    line('region loss', `${loss.lost} cut off at ${loss.lostAtS} s; ${loss.promoted} promoted in ${loss.promotionMs} ms (${loss.drainedMessages} queued entries drained); writable again ${loss.writableAfterMs ?? '—'} ms after the loss`);
    for (const warning of loss.warnings) print(`    ${warning}`);
  }
  line('acknowledged writes', `${report.lost.acknowledged}, lost ${report.lost.count}${report.lost.expected ? ` (replication ${report.replication}: writes not yet shipped are lost with the home region — the expected trade-off)` : ''}`);
  for (const sample of report.lost.samples) print(`    ${sample}`);
  line('replicas', `${report.diverged.count === 0 ? 'converged, equal to home' : `${report.diverged.count} divergences`}${report.convergedMs === null ? ' (did not converge within 60 s)' : ` (converged ${report.convergedMs} ms after healing)`}`);
  for (const sample of report.diverged.samples) print(`    ${sample}`);
  line('sessions', `${report.session.reads} session reads (${report.session.servedByReplica} by a replica), ${report.session.readYourWritesViolations} read-your-writes and ${report.session.monotonicViolations} monotonic-read violations`);
  for (const sample of report.session.samples) print(`    ${sample}`);
  line('epoch order', `${report.epochOrder.violations} violations`);
  if (report.compaction !== null) {
    line('compaction', `retain ${report.compaction.retainEntries} entries; compacted through ${report.compaction.compactedThrough.join(',')} per shard; ${report.compaction.unrecorded} entries trimmed before the recorder saw them`);
  }
  for (const sample of report.epochOrder.samples) print(`    ${sample}`);
  if (report.operations.unexpected > 0) line('unexpected answers', `${report.operations.unexpected}: ${report.operations.unexpectedSamples.join(' | ')}`);
  const bank = report.bank;
  if (bank !== null) {
    const reasons = Object.entries(bank.transfers.byReason).sort().map(([reason, count]) => `${reason}=${count}`).join(' ');
    line('bank transfers', `ok ${bank.transfers.ok}, failed ${bank.transfers.fail}, indeterminate ${bank.transfers.info}${reasons === '' ? '' : ` (${reasons})`}`);
    line('bank reads', `${bank.reads} snapshots of ${bank.accounts} accounts (${bank.readsUnavailable} unavailable), ${bank.violations} not summing to ${bank.total}`);
    for (const sample of bank.samples) print(`    ${sample}`);
    line('bank after healing', bank.finalBalances === null ? 'NO snapshot answered within 30 s' : `[${bank.finalBalances.join(', ')}] sum ${bank.finalBalances.reduce<number>((sum, balance) => sum + (balance ?? 0), 0)}`);
    if (bank.unexpected > 0) line('bank unexpected', `${bank.unexpected}: ${bank.unexpectedSamples.join(' | ')}`);
  }
  const lock = report.lock;
  if (lock !== null) {
    const reasons = (byReason: Record<string, number>) => Object.entries(byReason).sort().map(([reason, count]) => `${reason}=${count}`).join(' ');
    const counts = (outcome: { ok: number; fail: number; info: number }) => `ok ${outcome.ok}, failed ${outcome.fail}, indeterminate ${outcome.info}`;
    line('lock acquisitions', `${counts(lock.acquisitions)} (${reasons(lock.acquisitions.byReason)}); ${lock.verdict.tokensInLog} tokens in the log`);
    line('lock fenced writes', `${counts(lock.writes)} (${reasons(lock.writes.byReason)}); ${lock.verdict.committedWrites} appends in the logs`);
    line('lock releases', `${counts(lock.releases)}; keepalives ${reasons(lock.keepalives)}; ${lock.leasesLost} leases lost while held`);
    line('lock holder pauses', `${lock.pauses.injected} (${lock.pauses.lockNeverMoved} saw the lock never move): ${lock.verdict.stale.sent} stale writes, ${lock.verdict.stale.refused} refused FenceRejected, ${lock.verdict.stale.accepted} accepted; ${lock.verdict.stale.releasesRefused} stale releases refused`);
    line('lock checker', `${lock.verdict.violations} violations`);
    for (const sample of lock.verdict.samples) print(`    ${sample}`);
    if (lock.unexpected > 0) line('lock unexpected', `${lock.unexpected}: ${lock.unexpectedSamples.join(' | ')}`);
  }
}

/** The fenced lock workload's part of the report: checkLock over the lock's log and the data keys' logs. */
function lockReport(history: LockHistory, logs: LogEntry[][], shardCount: number): NonNullable<ChaosReport['lock']> {
  const asLockLog = (log: LogEntry[]): LockLogEntry[] =>
    log.map((entry) => ({
      index: entry.index,
      ops: entry.ops.flatMap((op): LockLogEntry['ops'] => (op.type === 'put' ? [{ type: 'put', key: op.key, value: Buffer.from(op.value).toString('utf8') }] : op.type === 'delete' ? [{ type: 'delete', key: op.key }] : [])),
    }));
  const keyLogs = new Map([history.keys.sameShard, history.keys.crossShard].map((key) => [key, asLockLog(logs[shardOf(key, shardCount)] ?? [])]));
  const verdict = checkLock(history, lockKey(history.name), asLockLog(logs[shardOf(lockKey(history.name), shardCount)] ?? []), keyLogs);
  const tally = <T extends { status: 'ok' | 'fail' | 'info'; reason?: string }>(items: readonly T[]) => {
    const byReason: Record<string, number> = {};
    for (const item of items) if (item.reason !== undefined) byReason[item.reason] = (byReason[item.reason] ?? 0) + 1;
    const count = (status: string) => items.filter((item) => item.status === status).length;
    return { ok: count('ok'), fail: count('fail'), info: count('info'), byReason };
  };
  const releases = tally(history.releases);
  return {
    name: history.name,
    keys: history.keys,
    ttlMs: lockTtlMs,
    acquisitions: tally(history.acquisitions),
    writes: tally(history.writes),
    releases: { ok: releases.ok, fail: releases.fail, info: releases.info },
    pauses: history.pauses,
    leasesLost: history.leasesLost,
    keepalives: history.keepalives,
    verdict,
    unexpected: history.counters.unexpected,
    unexpectedSamples: history.counters.unexpectedSamples,
  };
}

/** The bank workload's part of the report: every snapshot, the one after healing included, checked for the total. */
function bankReport(history: BankHistory, finalRead: BankHistory['reads'][number] | undefined, accounts: number): NonNullable<ChaosReport['bank']> {
  const total = accounts * bankBalance;
  const verdict = checkBank(finalRead === undefined ? history.reads : [...history.reads, finalRead], total);
  const byReason: Record<string, number> = {};
  for (const transfer of history.transfers) if (transfer.reason !== undefined) byReason[transfer.reason] = (byReason[transfer.reason] ?? 0) + 1;
  const count = (status: string) => history.transfers.filter((transfer) => transfer.status === status).length;
  return {
    accounts,
    total,
    transfers: { ok: count('ok'), fail: count('fail'), info: count('info'), byReason },
    reads: history.reads.length,
    readsUnavailable: history.readsUnavailable,
    violations: verdict.violations,
    samples: verdict.samples,
    finalBalances: finalRead?.balances ?? null,
    unexpected: history.counters.unexpected,
    unexpectedSamples: history.counters.unexpectedSamples,
  };
}

export function parseNemeses(raw: string): NemesisKind[] {
  // region-loss rewires the cloud: it is asked for by name, never part of `all`.
  if (raw === 'all') return nemesisKinds.filter((kind) => kind !== 'region-loss');
  if (raw === 'none' || raw === '') return [];
  const kinds = raw.split(',').map((kind) => kind.trim());
  for (const kind of kinds) {
    if (!(nemesisKinds as readonly string[]).includes(kind)) throw new Error(`unknown nemesis "${kind}"; use all, none or a list of ${nemesisKinds.join(', ')}`);
  }
  if (kinds.includes('region-loss') && kinds.length > 1) throw new Error('region-loss runs alone (it rewires the whole cloud); give --nemesis region-loss by itself');
  return kinds as NemesisKind[];
}
