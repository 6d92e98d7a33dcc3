/**
 * `npm run chaos -- --duration 60 --seed S --nemesis all`: the fault-injection suite on the
 * local cloud. Exit code 1 on any violation.
 */
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { nemesisKinds } from '../lib/chaos/nemesis.ts';
import { parseNemeses, runChaos } from '../lib/chaos/run.ts';
import { isReplicationMode, replicationModes } from '../lib/core/replication.ts';
import { numberOption } from '../lib/cli-options.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const usage = `usage: npm run chaos -- [--duration 60] [--seed N] [--nemesis all|none|kind,kind] [--replication async|quorum|all] [--clients 10] [--keys 5]

Runs concurrent clients against a fresh local cloud while faults are injected, then checks
that the history is linearizable, no acknowledged write was lost, the replicas converged to
the home state, sessions kept read-your-writes and monotonic reads, and no log entry of an
epoch follows a higher epoch's first entry. The report is printed and written as JSON under
chaos/results/. Exit code 1 on any violation.

nemeses: ${nemesisKinds.join(', ')} (all = every one but region-loss)
  region-loss           alone: cuts the home region off a third into the run and promotes
                        a replica; with --replication quorum|all no acknowledged write may be
                        lost, with async the report counts the writes lost (the trade-off)
  --replication MODE    the cluster's replication mode (default async)
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
      replication: { type: 'string', default: 'async' },
      'unsafe-no-fencing': { type: 'boolean', default: false },
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
  unsafeDisableFencing: values['unsafe-no-fencing'] === true,
  resultsDirectory: 'chaos/results',
  print: (line) => console.log(line),
});
process.exit(report.ok ? 0 : 1);
