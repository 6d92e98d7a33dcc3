/**
 * `npm run chaos -- --duration 60 --seed S --nemesis all`: the fault-injection suite on the
 * local cloud. Exit code 1 on any violation.
 */
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { nemesisKinds } from '../lib/chaos/nemesis.ts';
import { chaosWorkloads, parseNemeses, runChaos, type ChaosWorkload } from '../lib/chaos/run.ts';
import { isReplicationMode, replicationModes } from '../lib/core/replication.ts';
import { numberOption } from '../lib/cli-options.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const usage = `usage: npm run chaos -- [--duration 60] [--seed N] [--nemesis all|none|kind,kind] [--workload all|register|bank|lock] [--replication async|quorum|all] [--clients 10] [--keys 5] [--bank-clients 4] [--lock-clients 4]

Runs concurrent clients against a fresh local cloud while faults are injected, then checks
that the history is linearizable, no acknowledged write was lost, the replicas converged to
the home state, sessions kept read-your-writes and monotonic reads, and no log entry of an
epoch follows a higher epoch's first entry. The report is printed and written as JSON under
chaos/results/. Exit code 1 on any violation.

workloads (default all: every one side by side, each on its own keys):
  register              --clients clients on --keys keys: put, strong get, CAS, delete; the
                        linearizability checker and the session client at the replicas
  bank                  --bank-clients clients move money between 8 accounts on 8 shards by
                        compare-and-transaction (POST /txn); every read-only transaction of all
                        accounts must sum to the total, none negative, none missing (Jepsen's bank)
  lock                  --lock-clients clients take one lock on a 1500 ms lease (keepalive every
                        500 ms) and append to two keys by CAS with X-Epochkv-Fence; a quarter of
                        the holds end in a holder pause (no keepalives, a sleep past the ttl, then
                        a write and a release with the old token, which must be refused): every
                        committed append had the lock's current token, tokens only grow, no stale
                        write accepted; the keys' reads and CASes go to the linearizability checker

nemeses: ${nemesisKinds.join(', ')} (all = every one but region-loss)
  region-loss           alone: cuts the home region off a third into the run and promotes
                        a replica; with --replication quorum|all no acknowledged write may be
                        lost, with async the report counts the writes lost (the trade-off)
  --replication MODE    the cluster's replication mode (default async)
  --log-retain-entries N
                        log compaction with a retention of N entries (default: the
                        cluster's 100000, so nothing is trimmed in a run): leaders trim
                        the logs under the faults and replicas left behind are seeded
                        from snapshots; the run records the log as it goes to check it
  --unsafe-no-fencing   TEST ONLY: the API writes without the epoch check; the run must fail`;

function integer(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  try {
    return numberOption(raw, name, { min, max, integer: true });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${usage}`);
    process.exit(2);
  }
}

let values;
try {
  values = parseArgs({
    options: {
      duration: { type: 'string' },
      seed: { type: 'string' },
      nemesis: { type: 'string', default: 'all' },
      clients: { type: 'string' },
      keys: { type: 'string' },
      workload: { type: 'string', default: 'all' },
      'bank-clients': { type: 'string' },
      'lock-clients': { type: 'string' },
      replication: { type: 'string', default: 'async' },
      'unsafe-no-fencing': { type: 'boolean', default: false },
      'log-retain-entries': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values;
} catch (error) {
  console.error(`${(error as Error).message}\n\n${usage}`);
  process.exit(2);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}
let nemeses;
try {
  nemeses = parseNemeses(values.nemesis ?? 'all');
} catch (error) {
  console.error(`${(error as Error).message}\n\n${usage}`);
  process.exit(2);
}
const workloadOption = values.workload ?? 'all';
const workloads = (workloadOption === 'all' ? [...chaosWorkloads] : workloadOption.split(',').map((name) => name.trim())) as ChaosWorkload[];
if (workloads.length === 0 || workloads.some((name) => !(chaosWorkloads as readonly string[]).includes(name))) {
  console.error(`--workload must be all or a list of ${chaosWorkloads.join(', ')}, got "${workloadOption}"\n\n${usage}`);
  process.exit(2);
}
const replication = values.replication ?? 'async';
if (!isReplicationMode(replication)) {
  console.error(`--replication must be one of ${replicationModes.join(', ')}, got "${replication}"\n\n${usage}`);
  process.exit(2);
}
const report = await runChaos({
  replication,
  durationS: integer(values.duration, 'duration', 60, 5, 3_600),
  seed: integer(values.seed, 'seed', randomInt(1, 1_000_000), 0, 2 ** 31 - 1),
  nemeses,
  clients: integer(values.clients, 'clients', 10, 1, 100),
  keyCount: integer(values.keys, 'keys', 5, 1, 1_000),
  workloads,
  bankClients: integer(values['bank-clients'], 'bank-clients', 4, 1, 100),
  lockClients: integer(values['lock-clients'], 'lock-clients', 4, 1, 100),
  unsafeDisableFencing: values['unsafe-no-fencing'] === true,
  ...(values['log-retain-entries'] === undefined ? {} : { logRetainEntries: integer(values['log-retain-entries'], 'log-retain-entries', 100_000, 1, 1_000_000_000) }),
  resultsDirectory: 'chaos/results',
  print: (line) => console.log(line),
});
process.exit(report.ok ? 0 : 1);
