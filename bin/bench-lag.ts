/**
 * `npm run bench:lag -- [--rate <writes/s>] [--seconds <s>] [--rounds <n>] <variant>...`: the
 * replication lag of apply settings at one write rate, in alternating runs (lib/bench/lag-compare.ts).
 */
import { parseArgs } from 'node:util';
import { parseVariant, runLagCompare, type LagVariant } from '../lib/bench/lag-compare.ts';
import { numberOption } from '../lib/cli-options.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const usage = `usage: npm run bench:lag -- [--rate <writes/s>] [--seconds <s>] [--rounds <n>] <variant> [<variant>...]

  --rate <n>      steady writes per second during each lag phase, 1–2000 (default 200)
  --seconds <s>   length of each lag phase, 5–600 (default 20)
  --rounds <n>    how many times each variant runs, 1–20 (default 4); the variants take turns, their
                  order rotated by one each round (a multiple of the number of variants balances it)
  <variant>       a JSON object of apply settings; '{}' is the defaults. Settings: pullAfterQueuedMs,
                  pullEveryMs, pullBackoffFactor (functions/apply.ts), packItemsMax
                  (lib/service/replica-applier.ts), pollers, batchSize (the local event source).
                  Example: '{}' '{"pullEveryMs":100,"pullBackoffFactor":1}'

Each run starts a fresh 8-shard cluster with 2 replica regions on one DynamoDB Local and SQS
emulator, warms it (40 s on the first run, 5 s after), lets the replicas catch up, then writes
100 B values at the rate and measures commit → applied at each replica. Prints one line per run
(with how busy this process's event loop was: it runs the API, the SQS emulator, the apply
pollers and the load) and, per variant, the median of the runs' worst-region p99 and of their p50.`;

function fail(message: string): never {
  console.error(`${message}\n\n${usage}`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      rate: { type: 'string', default: '200' },
      seconds: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '4' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (error) {
  fail((error as Error).message);
}
if (parsed.values.help === true) {
  console.log(usage);
  process.exit(0);
}
let ratePerSecond: number;
let seconds: number;
let rounds: number;
try {
  ratePerSecond = numberOption(parsed.values.rate, 'rate', { min: 1, max: 2000 });
  seconds = numberOption(parsed.values.seconds, 'seconds', { min: 5, max: 600 });
  rounds = numberOption(parsed.values.rounds, 'rounds', { min: 1, max: 20, integer: true });
} catch (error) {
  fail((error as Error).message);
}
if (parsed.positionals.length === 0) fail('give at least one variant, e.g. \'{}\' for the defaults');
let variants: LagVariant[];
try {
  variants = parsed.positionals.map(parseVariant);
} catch (error) {
  fail((error as Error).message);
}
const perRunS = seconds + 20;
console.log(`bench:lag: ${variants.length} variant(s) × ${rounds} round(s) at ${ratePerSecond} writes/s, ${seconds} s each (about ${Math.ceil((variants.length * rounds * perRunS + 35) / 60)} min)`);
try {
  await runLagCompare({ ratePerSecond, seconds, rounds, variants, print: (line) => console.log(line) });
  process.exit(0);
} catch (error) {
  console.error(`bench:lag failed: ${(error as Error).stack ?? String(error)}`);
  process.exit(1);
}
