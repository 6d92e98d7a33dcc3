/**
 * `epochkv`: the command line for an epochkv cluster (the local cloud by default, or a
 * deployed API with SigV4 signing from the standard AWS credential chain).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { systemClock } from '../lib/clock.ts';
import { isReplicationMode, replicationModes } from '../lib/core/replication.ts';
import { tableNames } from '../lib/infra/schema.ts';
import { findLocalCloud } from '../lib/local/discovery.ts';
import { promoteRegion, PromotionRefusedError, type PromotionReport } from '../lib/service/promotion.ts';
import {
  AccessDeniedError,
  BadRequestError,
  EpochKv,
  EpochKvError,
  FenceRejectedError,
  LeaseNotFoundError,
  localEndpoint,
  LockHeldError,
  OutcomeUnknownError,
  UnavailableError,
  VersionConflictError,
  type Consistency,
  type ListedItem,
  type TxnRequest,
  type WatchEntry,
} from '../lib/client/index.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const here = path.dirname(fileURLToPath(import.meta.url));

// `epochkv status | head -1`: the reader left; that is the end of the output, not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

/** Each command's usage line and, for its own --help, what else to know. */
const commands: Record<string, { usage: string; help?: string }> = {
  put: {
    usage: 'put <key> [value] [--file f]    write a value: the argument, the bytes of --file, or stdin',
    help: `Writes the exact bytes given: the [value] argument (as UTF-8), the file of --file, or
stdin when neither is given (binary-safe: epochkv put k < photo.jpg).
  --replication quorum|all   wait for more than the cluster's mode for this write
  --lease <id>               attach the key to a lease: it is deleted when the lease ends
  --ttl-ms <n>               give the key its own expiry (1000 to 86400000)
  --fence <name:token>       write only while lock <name> is held with <token> (inside
                             \`epochkv lock\`: --fence "$EPOCHKV_FENCE"); else exit 4, nothing written`,
  },
  get: {
    usage: 'get <key>                       print a value (--consistency strong|session|eventual)',
    help: `Writes the value's exact bytes to stdout (no newline added, except at a terminal when the
value does not end in one). --json prints {key, value | valueBase64, version, ...}:
valueBase64 when the value is not UTF-8.`,
  },
  del: { usage: 'del <key>                       delete a key', help: '  --fence <name:token>       delete only while lock <name> is held with <token>; else exit 4' },
  txn: {
    usage: 'txn [--file f]                  a transaction: its JSON body from stdin or --file',
    help: `Sends POST /txn with the JSON body read from stdin (or --file):
  {"compare": [{"key": "a", "version": 12}, {"key": "b", "absent": true}, {"key": "c", "value": "x"}],
   "success": [{"op": "put", "key": "a", "value": "v"}, {"op": "put", "key": "d", "valueBase64": "AAE="},
               {"op": "delete", "key": "b"}, {"op": "get", "key": "c"}],
   "failure": [{"op": "get", "key": "a"}]}
When every compare holds the success ops run, else the failure ops, atomically across shards.
Prints the answer as JSON: {"succeeded", "results", "token"}; a get's value is "value" when it is
UTF-8 text, else "valueBase64". Exit 0 when the compares held (success ran), 4 when they did
not (failure ran; its results are printed all the same).
  --replication quorum|all   wait for more than the cluster's mode for this transaction
  --fence <name:token>       commit only while lock <name> is held with <token>; else exit 4`,
  },
  cas: {
    usage: 'cas <key> <version> [value]     write only while the key is at <version> (value as put)',
    help: '  --fence <name:token>       write only while lock <name> is held with <token>; else exit 4',
  },
  ls: {
    usage: 'ls [--prefix p] [--limit n]     list keys in order',
    help: '--json prints the items, each with value (UTF-8) or valueBase64.',
  },
  watch: {
    usage: 'watch [--shard s | --prefix {tag}p] [--from now|i]   follow a shard\'s log (Ctrl-C stops)',
    help: `Prints each log entry of the shard as it is committed. --from now (the default) starts
at the current head; --from 1 replays the whole log first. An idle shard is waited on for
ever: each long poll waits --wait-ms (default 10000, at most 20000) for an entry.`,
  },
  status: { usage: 'status                          nodes, shard leaders and epochs, replica lag' },
  lock: {
    usage: 'lock <name> [--ttl-ms n] [--wait-ms n] -- <command...>   run a command while holding a lock',
    help: `Takes lock <name> on a lease of --ttl-ms (default 10000) kept alive every ttl/3, runs the
command with EPOCHKV_FENCE=<name>:<token> in its environment (pass it on writes:
epochkv put k v --fence "$EPOCHKV_FENCE", or the X-Epochkv-Fence header), and releases the lock
when the command ends (Ctrl-C is passed on to the command first). --wait-ms: how long to wait
for another holder to let go (default 0: do not wait).
Exit codes: the command's own (128+n if a signal ended it; 127 if it could not be started); 4
when the lock is held by another holder past --wait-ms (the command does not run); 1 when the
lease was lost while the command ran (no keepalive succeeded for a whole ttl: the command is
sent SIGTERM, since its fenced writes are refused from then on); others as below.`,
  },
  lease: {
    usage: 'lease grant <ttlMs> | keepalive <id> | revoke <id> | show <id>   leases',
    help: `  grant <ttlMs>     grant a lease (1000 to 86400000 ms); prints its id (--json: {id, ttlMs})
  keepalive <id>    keep it alive every ttl/3 until Ctrl-C (--once: one keepalive, then exit)
  revoke <id>       end it now: its keys (and locks, leaderships) are deleted
  show <id>         its ttl, the time left, its keys
A lease that has ended (expired or revoked) exits 3.`,
  },
  elect: {
    usage: 'elect <name> <value> [--ttl-ms n] [--wait-ms n]   campaign, lead until Ctrl-C, resign',
    help: `Campaigns in election <name> with <value> on a lease of --ttl-ms (default 10000) kept alive
every ttl/3, waiting for the current leader to go (for ever, or --wait-ms: then exit 4 if
not elected). Prints the leadership once won and holds it until Ctrl-C (or SIGTERM), then
resigns and exits 0. Exit 1 if the lease is lost meanwhile.`,
  },
  chaos: { usage: 'chaos kill|pause|resume|start <node>   local cloud only: fault controls' },
  region: { usage: 'region cut|heal <region>        local cloud only: lose a region and get it back' },
  promote: {
    usage: 'promote <region> [--force]      make a replica region the home region (disaster recovery)',
    help: `local cloud: through its control API; a deployed cluster:
  --aws --home <region> --replicas <r1,r2> [--table-prefix epochkv] [--shards 8]
  [--replication async|quorum|all], then redeploy`,
  },
  bench: { usage: 'bench [--quick]                 run the benchmark (its own local cloud; bench --help)' },
};

const options = `options:
  --endpoint <url>    API base URL; default: EPOCHKV_ENDPOINT, else the local cloud that
                      \`npm start\` runs (found from .epochkv/local-cloud.json in this directory
                      or a parent), else ${localEndpoint}
  --region <region>   sign requests with SigV4 for this region (deployed APIs use IAM auth)
  --session <token>   start from this session token (printed with --json)
  --token <token>     the local cloud's EPOCHKV_TOKEN (default: that variable)
  --timeout-ms <ms>   how long one request waits for an answer (default 10000)
  --json              machine-readable output
  -h, --help          usage (of a command: epochkv <command> --help)
  --version           the version`;

const exitCodeText = `exit codes: 0 ok, 1 error, 2 bad usage, 3 not found (a key, or a lease that ended), 4
  version conflict (or a txn whose compares failed, a lock held by another holder, a --fence
  whose lock moved on), 5 access denied (401/403), 6 outcome unknown (a write got no verdict,
  even after repeating it under its Idempotency-Key: it may or may not have been applied; read
  the key to find out)`;

const usage = `usage: epochkv <command> [arguments] [options]

commands:
${Object.values(commands)
  .map((command) => `  ${command.usage}`)
  .join('\n')}

${options}

${exitCodeText}`;

function commandUsage(name: string): string {
  const command = commands[name];
  if (command === undefined) return usage;
  return `usage: epochkv ${command.usage}${command.help === undefined ? '' : `\n\n${command.help}`}\n\n${options}\n\n${exitCodeText}`;
}

const exitCodes = { ok: 0, error: 1, usage: 2, notFound: 3, conflict: 4, accessDenied: 5, outcomeUnknown: 6 } as const;

function fail(message: string, code: number = exitCodes.usage, command?: string): never {
  console.error(code === exitCodes.usage ? `${message}\n\n${command === undefined ? usage : commandUsage(command)}` : message);
  process.exit(code);
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(path.join(here, '..', 'package.json'), 'utf8')) as { version: string }).version;
}

/** `value` as UTF-8 text, or undefined when its bytes are not UTF-8. */
function utf8(value: Uint8Array): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(value);
  } catch {
    return undefined;
  }
}

/** The CLI's JSON for a value: `value` when it is UTF-8 text, else `valueBase64`. */
function valueJson(value: Uint8Array): { value: string } | { valueBase64: string } {
  const text = utf8(value);
  return text === undefined ? { valueBase64: Buffer.from(value).toString('base64') } : { value: text };
}

function listedBytes(item: ListedItem): Uint8Array {
  return item.encoding === 'base64' ? Buffer.from(item.value, 'base64') : Buffer.from(item.value, 'utf8');
}

async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) console.error('reading the value from stdin (end it with Ctrl-D)');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

// `epochkv bench ...` hands every flag to the benchmark, which starts its own local cloud.
if (process.argv[2] === 'bench') {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'bench.ts'), ...process.argv.slice(3)], { stdio: 'inherit', cwd: path.join(here, '..') });
  child.on('exit', (code) => process.exit(code ?? exitCodes.error));
} else {
  await cli();
}

async function cli(): Promise<void> {
  const first = process.argv.slice(2).find((argument) => !argument.startsWith('-'));
  const named = first !== undefined && commands[first] !== undefined ? first : undefined;
  // `epochkv lock <name> [options] -- <command...>`: everything after `--` is the command's own.
  const argv = process.argv.slice(2);
  const dashDash = named === 'lock' ? argv.indexOf('--') : -1;
  const own = dashDash < 0 ? argv : argv.slice(0, dashDash);
  const lockCommand = dashDash < 0 ? [] : argv.slice(dashDash + 1);
  let parsed;
  try {
    parsed = parseArgs({
      args: own,
      allowPositionals: true,
      options: {
        endpoint: { type: 'string' },
        region: { type: 'string' },
        session: { type: 'string' },
        token: { type: 'string' },
        'timeout-ms': { type: 'string' },
        consistency: { type: 'string' },
        prefix: { type: 'string' },
        limit: { type: 'string' },
        shard: { type: 'string' },
        from: { type: 'string' },
        'wait-ms': { type: 'string' },
        'ttl-ms': { type: 'string' },
        lease: { type: 'string' },
        fence: { type: 'string' },
        once: { type: 'boolean', default: false },
        file: { type: 'string' },
        replication: { type: 'string' },
        force: { type: 'boolean', default: false },
        aws: { type: 'boolean', default: false },
        home: { type: 'string' },
        replicas: { type: 'string' },
        'table-prefix': { type: 'string' },
        shards: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', default: false },
      },
    });
  } catch (error) {
    fail((error as Error).message, exitCodes.usage, named);
  }
  const { values, positionals } = parsed;
  if (values.version) {
    console.log(`epochkv ${packageVersion()}`);
    process.exit(exitCodes.ok);
  }
  // `epochkv help [command]` and `epochkv [command] --help`.
  if (positionals[0] === 'help') {
    console.log(commandUsage(positionals[1] ?? ''));
    process.exit(exitCodes.ok);
  }
  if (values.help || positionals.length === 0) {
    console.log(commandUsage(positionals[0] ?? ''));
    process.exit(values.help ? exitCodes.ok : exitCodes.usage);
  }
  const command = positionals[0] as string;
  if (commands[command] === undefined) fail(`unknown command "${command}"`);
  const usageError = (message: string): never => fail(message, exitCodes.usage, command);

  function integer(raw: string | undefined, name: string): number | undefined {
    if (raw === undefined) return undefined;
    if (!/^\d+$/.test(raw)) usageError(`${name} must be a non-negative integer, got "${raw}"`);
    return Number(raw);
  }

  // Where the CLI sends requests, and how it came to that: said when nothing answers there.
  let endpoint: string;
  let endpointSource: string;
  if (values.endpoint !== undefined) {
    endpoint = values.endpoint;
    endpointSource = '--endpoint';
  } else if (process.env.EPOCHKV_ENDPOINT) {
    endpoint = process.env.EPOCHKV_ENDPOINT;
    endpointSource = 'EPOCHKV_ENDPOINT';
  } else {
    const local = findLocalCloud();
    if (local.found) {
      endpoint = local.discovery.apiUrl;
      endpointSource = `the local cloud's ${local.file}`;
    } else {
      endpoint = localEndpoint;
      endpointSource =
        local.stale === undefined
          ? `the default: no .epochkv/local-cloud.json (written by a running \`npm start\`) in ${process.cwd()} or its parents`
          : `the default: ${local.stale} is left from an \`npm start\` that is no longer running`;
    }
  }
  const bearerToken = values.token ?? (process.env.EPOCHKV_TOKEN || undefined);
  const timeoutMs = integer(values['timeout-ms'], '--timeout-ms');
  const client = new EpochKv({
    endpoint,
    ...(values.region === undefined ? {} : { region: values.region }),
    ...(values.session === undefined ? {} : { sessionToken: values.session }),
    ...(bearerToken === undefined ? {} : { bearerToken }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });
  const json = values.json === true;
  const out = (human: string, machine: unknown) => console.log(json ? JSON.stringify(machine) : human);

  function consistency(): Consistency | undefined {
    const raw = values.consistency;
    if (raw === undefined) return undefined;
    if (raw !== 'strong' && raw !== 'session' && raw !== 'eventual') usageError(`--consistency must be strong, session or eventual, got "${raw}"`);
    return raw as Consistency;
  }

  function arg(position: number, name: string): string {
    const value = positionals[position];
    if (value === undefined) usageError(`missing <${name}>`);
    return value as string;
  }

  /** A write's value: the argument at `position`, else --file, else stdin; exact bytes. */
  async function valueArg(position: number): Promise<string | Uint8Array> {
    const given = positionals[position];
    if (given !== undefined && values.file !== undefined) usageError('give the value as an argument or with --file, not both');
    if (given !== undefined) return given;
    if (values.file !== undefined) {
      try {
        return readFileSync(values.file);
      } catch (error) {
        return usageError(`--file: cannot read ${values.file} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
      }
    }
    return readStdin();
  }

  /** A JSON body from --file or stdin. */
  async function jsonBody(): Promise<unknown> {
    let text: string;
    if (values.file !== undefined) {
      try {
        text = readFileSync(values.file, 'utf8');
      } catch (error) {
        return usageError(`--file: cannot read ${values.file} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
      }
    } else {
      text = (await readStdin()).toString('utf8');
    }
    try {
      return JSON.parse(text);
    } catch (error) {
      return usageError(`the transaction must be JSON: ${(error as Error).message}`);
    }
  }

  /**
   * The typed request of a JSON body: each `valueBase64` becomes bytes, each `value` stays
   * text; anything else passes through unchanged for the server to judge and name.
   */
  function txnRequestOf(body: unknown): TxnRequest {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) usageError('the transaction must be a JSON object {"compare": [...], "success": [...], "failure": [...]}');
    const withBytes = (entry: unknown, field: string): unknown => {
      if (typeof entry !== 'object' || entry === null || !('valueBase64' in entry)) return entry;
      const { valueBase64, ...rest } = entry as { valueBase64: unknown };
      if ('value' in rest) usageError(`${field} needs one of "value" or "valueBase64", not both`);
      if (typeof valueBase64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(valueBase64) || valueBase64.length % 4 !== 0) usageError(`${field}.valueBase64 must be standard base64`);
      return { ...rest, value: new Uint8Array(Buffer.from(valueBase64 as string, 'base64')) };
    };
    const request: Record<string, unknown> = { ...(body as Record<string, unknown>) };
    for (const name of ['compare', 'success', 'failure']) {
      const list = request[name];
      if (list === undefined) continue;
      if (!Array.isArray(list)) usageError(`"${name}" must be an array`);
      request[name] = (list as unknown[]).map((entry, position) => withBytes(entry, `${name}[${position}]`));
    }
    return request as TxnRequest;
  }

  function pad(cells: (string | number)[], widths: number[]): string {
    return cells.map((cell, index) => String(cell).padEnd(widths[index] ?? 0)).join('  ').trimEnd();
  }

  function table(header: string[], rows: (string | number)[][]): string {
    const widths = header.map((title, index) => Math.max(title.length, ...rows.map((row) => String(row[index] ?? '').length)));
    return [pad(header, widths), ...rows.map((row) => pad(row, widths))].join('\n');
  }

  function replicationMode(): 'async' | 'quorum' | 'all' | undefined {
    const raw = values.replication;
    if (raw === undefined) return undefined;
    if (!isReplicationMode(raw)) usageError(`--replication must be ${replicationModes.join(', ')}, got "${raw}"`);
    return raw as 'async' | 'quorum' | 'all';
  }

  /** `--fence name:token` (the server checks the lock; here only its shape, for a usage error that says so). */
  function fenceOption(): { fence?: string } {
    const fence = values.fence;
    if (fence === undefined) return {};
    if (!/^[A-Za-z0-9._:-]{1,200}:[1-9][0-9]*$/.test(fence)) usageError(`--fence must be <lock name>:<token>, as \`epochkv lock\` passes in EPOCHKV_FENCE; got "${fence}"`);
    return { fence };
  }

  /** Resolves on the first Ctrl-C or SIGTERM. */
  function interrupted(): Promise<NodeJS.Signals> {
    return new Promise((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
    });
  }

  async function runLocked(): Promise<number> {
    const name = arg(1, 'name');
    if (positionals.length > 2) usageError(`lock takes one <name>, then -- and the command (got "${positionals[2]}" before --)`);
    if (lockCommand.length === 0) usageError('lock needs a command after --: epochkv lock <name> -- <command...>');
    const ttlMs = integer(values['ttl-ms'], '--ttl-ms');
    const waitMs = integer(values['wait-ms'], '--wait-ms');
    const lock = await client.lock(name, { ...(ttlMs === undefined ? {} : { ttlMs }), ...(waitMs === undefined ? {} : { waitMs }) });
    if (!json) console.error(`lock ${name} held (token ${lock.token}, lease ${lock.leaseId}); running ${lockCommand.join(' ')}`);
    const child = spawn(lockCommand[0]!, lockCommand.slice(1), { stdio: 'inherit', env: { ...process.env, EPOCHKV_FENCE: lock.fence } });
    // Ctrl-C reaches the command through the terminal's process group; a SIGTERM sent to us alone is passed on.
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    process.on('SIGINT', () => undefined);
    process.on('SIGTERM', forward);
    let lost = false;
    void lock.lost.then((error) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      lost = true;
      console.error(`lock ${name}: ${error.message}; stopping the command (SIGTERM): its fenced writes are refused from now on`);
      child.kill('SIGTERM');
    });
    const code = await new Promise<number>((resolve) => {
      child.once('error', (error: NodeJS.ErrnoException) => {
        console.error(`lock ${name}: cannot run ${lockCommand[0]}: ${error.code ?? error.message}`);
        resolve(127);
      });
      child.once('exit', (exitCode, signal) => resolve(exitCode ?? 128 + (signal === null ? 0 : (os.constants.signals[signal] ?? 0))));
    });
    process.off('SIGTERM', forward);
    try {
      await lock.release();
      if (!json) console.error(`lock ${name} released`);
    } catch (error) {
      // Lost meanwhile: nothing to release, and the lost lease already decides the exit code.
      if (!(error instanceof FenceRejectedError) || !lost) throw error;
    }
    if (json) out('', { name, token: lock.token, leaseId: lock.leaseId, fence: lock.fence, exitCode: code, lost });
    return lost ? exitCodes.error : code;
  }

  async function leaseCommand(): Promise<number> {
    const action = arg(1, 'grant|keepalive|revoke|show');
    if (action === 'grant') {
      const ttlMs = integer(arg(2, 'ttlMs'), '<ttlMs>') as number;
      const lease = await client.grantLease(ttlMs, { keepAlive: false });
      // The id alone, so that id=$(epochkv lease grant 60000) works.
      out(lease.id, { id: lease.id, ttlMs: lease.ttlMs });
      return exitCodes.ok;
    }
    const id = arg(2, 'id');
    switch (action) {
      case 'show': {
        const info = await client.leaseInfo(id);
        out(`lease ${info.id}: ttl ${info.ttlMs} ms, ${info.remainingMs} ms left, ${info.keys.length} key(s)${info.keys.map((key) => `\n  ${key}`).join('')}`, info);
        return exitCodes.ok;
      }
      case 'revoke': {
        const revoked = await client.revokeLease(id);
        out(`lease ${id} revoked, ${revoked.keysDeleted} key(s) deleted`, revoked);
        return exitCodes.ok;
      }
      case 'keepalive': {
        const kept = await client.keepLeaseAlive(id);
        out(`lease ${id} kept alive (ttl ${kept.ttlMs} ms)`, kept);
        if (values.once) return exitCodes.ok;
        const lease = await client.lease(id);
        const ended = await Promise.race([interrupted().then(() => undefined), lease.lost]);
        lease.close();
        if (ended === undefined) return exitCodes.ok;
        console.error(`lease ${id}: ${ended.message}`);
        return ended instanceof LeaseNotFoundError && ended.code === 'LeaseNotFound' ? exitCodes.notFound : exitCodes.error;
      }
      default:
        return usageError(`lease takes grant, keepalive, revoke or show, got "${action}"`);
    }
  }

  async function elect(): Promise<number> {
    const name = arg(1, 'name');
    const value = arg(2, 'value');
    const ttlMs = integer(values['ttl-ms'], '--ttl-ms');
    const waitMs = integer(values['wait-ms'], '--wait-ms');
    const stop = new AbortController();
    const signalled = interrupted();
    void signalled.then(() => stop.abort());
    if (!json) console.error(`campaigning in ${name} with ${JSON.stringify(value)}${waitMs === undefined ? '' : ` (waiting ${waitMs} ms at most)`}; Ctrl-C stops`);
    let leadership;
    try {
      leadership = await client.election(name).campaign(value, { waitMs: waitMs ?? Number.POSITIVE_INFINITY, signal: stop.signal, ...(ttlMs === undefined ? {} : { ttlMs }) });
    } catch (error) {
      if (stop.signal.aborted) return exitCodes.ok;
      throw error;
    }
    out(`leader of ${name}: ${value} (token ${leadership.token}, lease ${leadership.leaseId}); Ctrl-C resigns`, { name, token: leadership.token, leaseId: leadership.leaseId, value });
    const ended = await Promise.race([signalled.then(() => undefined), leadership.lost]);
    if (ended !== undefined) {
      console.error(`election ${name}: ${ended.message}; no longer leader`);
      return exitCodes.error;
    }
    await leadership.resign();
    if (!json) console.error(`resigned from ${name}`);
    return exitCodes.ok;
  }

  function authHeaders(): Record<string, string> {
    return bearerToken === undefined ? {} : { authorization: `Bearer ${bearerToken}` };
  }

  async function localControl(path: string, body?: unknown): Promise<{ ok: boolean; status: number; body: Record<string, unknown> }> {
    const response = await fetch(`${endpoint.replace(/\/+$/, '')}/_local/${path}`, {
      method: 'POST',
      headers: { ...authHeaders(), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { ok: response.ok, status: response.status, body: (await response.json().catch(() => ({}))) as Record<string, unknown> };
  }

  /** A refused control call: its exit code, with the same meaning as the client's errors. */
  function controlRefused(status: number, message: string): number {
    console.error(message);
    return status === 401 || status === 403 ? exitCodes.accessDenied : exitCodes.error;
  }

  function printPromotion(report: PromotionReport): void {
    console.log(`${report.home} is home (cluster epoch ${report.clusterEpoch}; ${report.planned ? 'planned switchover' : `unplanned: ${report.previousHome} lost`}) in ${report.durationMs} ms`);
    console.log(`replica regions now: ${report.replicaRegions.join(', ') || '(none)'}${report.unreachable.length > 0 ? `; unreachable (re-seed before they rejoin): ${report.unreachable.join(', ')}` : ''}`);
    console.log(table(['step', 'ms'], report.steps.map((step) => [step.step, step.ms])));
    for (const warning of report.warnings) console.log(`WARNING: ${warning}`);
  }

  function watchOpJson(op: WatchEntry['ops'][number]): unknown {
    return op.type === 'put' ? { type: 'put', key: op.key, ...valueJson(Buffer.from(op.value, 'base64')) } : op;
  }

  function watchOpText(op: WatchEntry['ops'][number]): string {
    if (op.type === 'delete') return `delete ${op.key}`;
    if (op.type === 'leader') return `leader ${op.node} epoch ${op.epoch}`;
    const bytes = Buffer.from(op.value, 'base64');
    const text = utf8(bytes);
    return `put ${op.key}=${text === undefined ? `(binary, ${bytes.length} bytes)` : JSON.stringify(text.slice(0, 40))}`;
  }

  async function main(): Promise<number> {
    switch (command) {
      case 'put': {
        const key = arg(1, 'key');
        const replication = replicationMode();
        const value = await valueArg(2);
        const ttlMs = integer(values['ttl-ms'], '--ttl-ms');
        if (ttlMs !== undefined && values.lease !== undefined) usageError('give --lease or --ttl-ms, not both');
        const result = await client.put(key, value, {
          ...(replication === undefined ? {} : { replication }),
          ...(values.lease === undefined ? {} : { lease: values.lease }),
          ...(ttlMs === undefined ? {} : { ttlMs }),
          ...fenceOption(),
        });
        out(
          `${key} = version ${result.version} (epoch ${result.epoch}${result.replication === undefined ? '' : `; ${result.replication.mode}, in ${result.replication.acceptedBy.join(', ') || 'no'} replica queue(s)`})`,
          { ...result, session: client.sessionToken },
        );
        return exitCodes.ok;
      }
      case 'get': {
        const key = arg(1, 'key');
        const item = await client.get(key, { consistency: consistency() });
        if (item === undefined) {
          if (json) out('', { key, found: false, session: client.sessionToken });
          else console.error(`${key}: not found`);
          return exitCodes.notFound;
        }
        if (json) {
          out('', { key, ...valueJson(item.value), version: item.version, epoch: item.epoch, index: item.index, servedBy: item.servedBy, session: client.sessionToken });
          return exitCodes.ok;
        }
        // Exact bytes for pipes and files; at a terminal, end the line so the prompt is not glued on.
        process.stdout.write(item.value);
        if (process.stdout.isTTY && item.value.at(-1) !== 0x0a) process.stdout.write('\n');
        return exitCodes.ok;
      }
      case 'del': {
        const key = arg(1, 'key');
        const deleted = await client.delete(key, fenceOption());
        out(deleted ? `${key} deleted` : `${key}: not found`, { key, deleted, session: client.sessionToken });
        return deleted ? exitCodes.ok : exitCodes.notFound;
      }
      case 'txn': {
        if (positionals.length > 1) usageError(`txn takes its JSON body from stdin or --file, not as an argument (got "${positionals[1]}")`);
        const request = txnRequestOf(await jsonBody());
        const result = await client.txn(request, { replication: replicationMode(), ...fenceOption() });
        console.log(
          JSON.stringify({
            succeeded: result.succeeded,
            results: result.results.map((entry) => (entry.op === 'get' && entry.found ? { op: entry.op, key: entry.key, found: true, ...valueJson(entry.value), version: entry.version } : entry)),
            token: result.token,
          }),
        );
        // The failure branch ran: as a CAS whose version did not match.
        return result.succeeded ? exitCodes.ok : exitCodes.conflict;
      }
      case 'cas': {
        const key = arg(1, 'key');
        const version = integer(arg(2, 'version'), '<version>') as number;
        const result = await client.cas(key, version, await valueArg(3), fenceOption());
        out(`${key} = version ${result.version} (was ${version})`, { ...result, session: client.sessionToken });
        return exitCodes.ok;
      }
      case 'ls': {
        const limit = integer(values.limit, '--limit');
        const items: ListedItem[] = [];
        for await (const item of client.list({ prefix: values.prefix, ...(limit === undefined ? {} : { pageSize: Math.min(limit, 1000) }) })) {
          items.push(item);
          if (limit !== undefined && items.length >= limit) break;
        }
        out(
          table(['key', 'version', 'value'], items.map((item) => [item.key, item.version, item.encoding === 'utf8' ? item.value.slice(0, 60) : `(binary, ${listedBytes(item).length} bytes)`])),
          items.map((item) => ({ key: item.key, ...valueJson(listedBytes(item)), version: item.version, epoch: item.epoch, index: item.index })),
        );
        return exitCodes.ok;
      }
      case 'watch': {
        const shard = integer(values.shard, '--shard');
        const from = values.from === undefined || values.from === 'now' ? 'now' : integer(values.from, '--from (now or a log index)');
        if (from === 0) usageError('--from must be now or a log index from 1');
        const waitMs = integer(values['wait-ms'], '--wait-ms');
        const stop = new AbortController();
        process.on('SIGINT', () => stop.abort());
        process.on('SIGTERM', () => stop.abort());
        if (!json) console.error(`watching ${shard === undefined ? `prefix ${values.prefix ?? '?'}` : `shard ${shard}`} from ${from === 'now' ? 'now' : `index ${from}`} at ${endpoint} (Ctrl-C stops)`);
        try {
          const entries = client.watch({
            ...(shard === undefined ? {} : { shard }),
            prefix: values.prefix,
            from: from as number | 'now',
            ...(waitMs === undefined ? {} : { waitMs }),
            signal: stop.signal,
          });
          for await (const entry of entries) {
            out(`${entry.index}  epoch ${entry.epoch}  ${entry.ops.map(watchOpText).join(', ')}`, { ...entry, ops: entry.ops.map(watchOpJson) });
          }
        } catch (error) {
          if (!stop.signal.aborted) throw error;
        }
        return exitCodes.ok;
      }
      case 'status': {
        const status = await client.status();
        if (json) {
          out('', status);
          return exitCodes.ok;
        }
        console.log(`cluster at ${endpoint} (region ${status.region}; home ${status.homeRegion ?? '?'}, replication ${status.replication ?? 'async'}, cluster epoch ${status.clusterEpoch ?? 0})\n`);
        console.log(table(['node', 'status', 'heartbeat age'], status.nodes.map((node) => [node.id, node.status, node.lastHeartbeatAgeMs === null ? '-' : `${node.lastHeartbeatAgeMs} ms`])));
        console.log('');
        console.log(table(['shard', 'leader', 'epoch', 'head', 'live', 'in sync'], status.shards.map((shard) => [shard.shard, shard.leader ?? '-', shard.epoch, shard.headIndex, shard.live ? 'yes' : 'NO', shard.inSync === undefined || shard.inSync === null ? '(all)' : shard.inSync.join(',') || '-'])));
        if (status.replicas.length > 0) {
          console.log('');
          console.log(table(['replica', 'shard', 'applied', 'lag entries', 'lag'], status.replicas.map((row) => [row.region, row.shard, row.appliedIndex, row.lagEntries, `${row.lagMs} ms`])));
        }
        return exitCodes.ok;
      }
      case 'lock':
        return runLocked();
      case 'lease':
        return leaseCommand();
      case 'elect':
        return elect();
      case 'chaos': {
        const action = arg(1, 'kill|pause|resume|start');
        const node = arg(2, 'node');
        if (!['kill', 'pause', 'resume', 'start'].includes(action)) usageError(`chaos takes kill, pause, resume or start, got "${action}"`);
        const answer = await localControl(`nodes/${encodeURIComponent(node)}/${action}`);
        if (!answer.ok) return controlRefused(answer.status, answer.status === 404 && answer.body.message === undefined ? 'fault controls exist only on the local cloud' : String(answer.body.message ?? `answered ${answer.status}`));
        out(`${node}: ${String(answer.body.state)}`, answer.body);
        return exitCodes.ok;
      }
      case 'region': {
        const action = arg(1, 'cut|heal');
        const region = arg(2, 'region');
        if (action !== 'cut' && action !== 'heal') usageError(`region takes cut or heal, got "${action}"`);
        const answer = await localControl(`regions/${encodeURIComponent(region)}/${action}`);
        if (!answer.ok) return controlRefused(answer.status, answer.status === 404 && answer.body.message === undefined ? 'region controls exist only on the local cloud' : String(answer.body.message ?? `answered ${answer.status}`));
        out(`${region}: ${action === 'cut' ? 'cut off' : 'reconnected'}`, answer.body);
        return exitCodes.ok;
      }
      case 'promote': {
        const region = arg(1, 'region');
        if (values.aws) {
          const home = values.home ?? usageError('--aws needs --home <region> (the home region as deployed)');
          const replicaRegions = (values.replicas ?? usageError('--aws needs --replicas <r1,r2> (the replica regions as deployed)')).split(',').map((name) => name.trim()).filter(Boolean);
          const prefix = values['table-prefix'] ?? 'epochkv';
          const shardCount = integer(values.shards, '--shards') ?? 8;
          const report = await promoteRegion({
            homeRegion: home,
            replicaRegions,
            target: region,
            tablePrefix: prefix,
            tables: tableNames(prefix),
            shardCount,
            mode: replicationMode() ?? 'async',
            force: values.force === true,
            clock: systemClock(),
            log: (line) => console.error(line),
          }).catch((error: unknown) => {
            if (error instanceof PromotionRefusedError) fail(error.message, exitCodes.error);
            throw error;
          });
          if (json) out('', report);
          else {
            printPromotion(report);
            const others = report.replicaRegions.join(',');
            console.log(`\nnext: move the functions to the new home:\n  npx cdk deploy --all -c epochkv:homeRegion=${report.home} -c epochkv:replicaRegions=${others}`);
          }
          return exitCodes.ok;
        }
        const answer = await localControl(`promote/${encodeURIComponent(region)}`, values.force ? { force: true } : undefined);
        if (!answer.ok) return controlRefused(answer.status, answer.status === 404 && answer.body.message === undefined ? 'promote without --aws works on the local cloud only' : String(answer.body.message ?? `answered ${answer.status}`));
        if (json) out('', answer.body);
        else printPromotion(answer.body as unknown as PromotionReport);
        return exitCodes.ok;
      }
      default:
        return usageError(`unknown command "${command}"`);
    }
  }

  /** Nothing listens at the endpoint (or its name does not resolve): say where we looked and how to change it. */
  function unreachable(error: unknown): boolean {
    // The client's error wraps fetch's, which wraps the socket's (or, for a name with several
    // addresses, an AggregateError of one per address).
    for (let candidate = error, depth = 0; candidate !== undefined && candidate !== null && depth < 4; depth += 1) {
      const { code, errors } = candidate as { code?: unknown; errors?: { code?: string }[] };
      const found = typeof code === 'string' ? code : errors?.[0]?.code;
      if (found !== undefined && ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH'].includes(found)) return true;
      candidate = (candidate as { cause?: unknown }).cause;
    }
    return false;
  }

  try {
    process.exitCode = await main();
  } catch (error) {
    if (unreachable(error)) {
      console.error(
        `nothing answers at ${endpoint} (from ${endpointSource}).\n` +
          `Start the local cloud with \`npm start\` (the CLI finds it from the directory you started it in, or below), ` +
          `or point the CLI at a running cluster: export EPOCHKV_ENDPOINT=<url> (or pass --endpoint <url>).`,
      );
      process.exitCode = exitCodes.error;
    } else if (error instanceof VersionConflictError || error instanceof LockHeldError || error instanceof FenceRejectedError) {
      // A condition that did not hold: a version, a lock held by another, a fence that moved on.
      console.error(error.message);
      process.exitCode = exitCodes.conflict;
    } else if (error instanceof LeaseNotFoundError) {
      console.error(error.message);
      process.exitCode = exitCodes.notFound;
    } else if (error instanceof AccessDeniedError) {
      const hint = error.status === 401 ? ' (set EPOCHKV_TOKEN or pass --token)' : values.region === undefined ? ' (a deployed API needs --region to sign requests)' : '';
      console.error(`access denied by ${endpoint}: ${error.message}${hint}`);
      process.exitCode = exitCodes.accessDenied;
    } else if (error instanceof OutcomeUnknownError) {
      console.error(`${error.message} (${error.code})`);
      process.exitCode = exitCodes.outcomeUnknown;
    } else if (error instanceof BadRequestError) {
      console.error(error.message);
      process.exitCode = exitCodes.usage;
    } else if (error instanceof EpochKvError) {
      console.error(`${error.message} (${error.code})`);
      process.exitCode = exitCodes.error;
    } else {
      console.error(String(error));
      process.exitCode = exitCodes.error;
    }
  }
}
