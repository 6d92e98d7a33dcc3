/**
 * `epochkv`: the command line for an epochkv cluster (the local cloud by default, or a
 * deployed API with SigV4 signing from the standard AWS credential chain).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { systemClock } from '../lib/clock.ts';
import { isReplicationMode, replicationModes } from '../lib/core/replication.ts';
import { tableNames } from '../lib/infra/schema.ts';
import { promoteRegion, PromotionRefusedError, type PromotionReport } from '../lib/service/promotion.ts';
import { BadRequestError, EpochKv, EpochKvError, localEndpoint, VersionConflictError, type Consistency } from '../lib/client/index.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const usage = `usage: epochkv <command> [arguments] [options]

commands:
  put <key> [value]            write a value (read from stdin when omitted; --replication quorum|all)
  get <key>                    read a value (--consistency strong|session|eventual)
  del <key>                    delete a key
  cas <key> <version> <value>  write only while the key is at <version>
  ls [--prefix p] [--limit n]  list keys in order
  watch [--shard s | --prefix {tag}p] [--from i]   follow a shard's log (Ctrl-C stops)
  status                       nodes, shard leaders and epochs, replica lag
  chaos kill|pause|resume|start <node>   local cloud only: fault controls
  region cut|heal <region>     local cloud only: lose a region (tables, queues, API) and get it back
  promote <region> [--force]   make a replica region the home region (disaster recovery)
                               local cloud: through its control API; a deployed cluster:
                               --aws --home <region> --replicas <r1,r2> [--table-prefix epochkv]
                               [--shards 8] [--replication async|quorum|all], then redeploy
  bench [--quick]              run the benchmark (starts its own local cloud; see npm run bench -- --help)

options:
  --endpoint <url>   API base URL (default ${localEndpoint}, or EPOCHKV_ENDPOINT)
  --region <region>  sign requests with SigV4 for this region (deployed APIs use IAM auth)
  --session <token>  start from this session token (printed with --json)
  --token <token>    the local cloud's EPOCHKV_TOKEN (default: that variable)
  --json             machine-readable output
  -h, --help         this text

exit codes: 0 ok, 1 error, 2 bad usage, 3 not found, 4 version conflict`;

const exitCodes = { ok: 0, error: 1, usage: 2, notFound: 3, conflict: 4 } as const;

function fail(message: string, code: number = exitCodes.usage): never {
  console.error(code === exitCodes.usage ? `${message}\n\n${usage}` : message);
  process.exit(code);
}

// `epochkv bench ...` hands every flag to the benchmark, which starts its own local cloud.
if (process.argv[2] === 'bench') {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'bench.ts'), ...process.argv.slice(3)], { stdio: 'inherit', cwd: path.join(here, '..') });
  child.on('exit', (code) => process.exit(code ?? exitCodes.error));
} else {
  await cli();
}

async function cli(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        endpoint: { type: 'string' },
        region: { type: 'string' },
        session: { type: 'string' },
        token: { type: 'string' },
        consistency: { type: 'string' },
        prefix: { type: 'string' },
        limit: { type: 'string' },
        shard: { type: 'string' },
        from: { type: 'string' },
        replication: { type: 'string' },
        force: { type: 'boolean', default: false },
        aws: { type: 'boolean', default: false },
        home: { type: 'string' },
        replicas: { type: 'string' },
        'table-prefix': { type: 'string' },
        shards: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    fail((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length === 0) {
    console.log(usage);
    process.exit(values.help ? exitCodes.ok : exitCodes.usage);
  }

  const endpoint = values.endpoint ?? process.env.EPOCHKV_ENDPOINT ?? localEndpoint;
  const bearerToken = values.token ?? (process.env.EPOCHKV_TOKEN || undefined);
  const client = new EpochKv({
    endpoint,
    ...(values.region === undefined ? {} : { region: values.region }),
    ...(values.session === undefined ? {} : { sessionToken: values.session }),
    ...(bearerToken === undefined ? {} : { bearerToken }),
  });
  const json = values.json === true;
  const out = (human: string, machine: unknown) => console.log(json ? JSON.stringify(machine) : human);

  function consistency(): Consistency | undefined {
    const raw = values.consistency;
    if (raw === undefined) return undefined;
    if (raw !== 'strong' && raw !== 'session' && raw !== 'eventual') fail(`--consistency must be strong, session or eventual, got "${raw}"`);
    return raw;
  }

  function integer(raw: string | undefined, name: string): number | undefined {
    if (raw === undefined) return undefined;
    if (!/^\d+$/.test(raw)) fail(`${name} must be a non-negative integer, got "${raw}"`);
    return Number(raw);
  }

  function arg(position: number, name: string): string {
    const value = positionals[position];
    if (value === undefined) fail(`missing <${name}>`);
    return value;
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
    if (!isReplicationMode(raw)) fail(`--replication must be ${replicationModes.join(', ')}, got "${raw}"`);
    return raw;
  }

  async function localControl(path: string, body?: unknown): Promise<{ ok: boolean; status: number; body: Record<string, unknown> }> {
    const response = await fetch(`${endpoint.replace(/\/+$/, '')}/_local/${path}`, {
      method: 'POST',
      headers: { ...(bearerToken === undefined ? {} : { authorization: `Bearer ${bearerToken}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { ok: response.ok, status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  function printPromotion(report: PromotionReport): void {
    console.log(`${report.home} is home (cluster epoch ${report.clusterEpoch}; ${report.planned ? 'planned switchover' : `unplanned: ${report.previousHome} lost`}) in ${report.durationMs} ms`);
    console.log(`replica regions now: ${report.replicaRegions.join(', ') || '(none)'}${report.unreachable.length > 0 ? `; unreachable (re-seed before they rejoin): ${report.unreachable.join(', ')}` : ''}`);
    console.log(table(['step', 'ms'], report.steps.map((step) => [step.step, step.ms])));
    for (const warning of report.warnings) console.log(`WARNING: ${warning}`);
  }

  interface Status {
    region: string;
    homeRegion?: string;
    replication?: string;
    clusterEpoch?: number;
    nodes: { id: string; status: string; lastHeartbeatAgeMs: number | null }[];
    shards: { shard: number; leader: string | null; epoch: number; headIndex: number; live: boolean; inSync?: string[] | null }[];
    replicas: { region: string; shard: number; appliedIndex: number; lagEntries: number; lagMs: number }[];
  }

  async function main(): Promise<number> {
    const command = positionals[0];
    switch (command) {
      case 'put': {
        const key = arg(1, 'key');
        const value = positionals[2] ?? readFileSync(0);
        const replication = replicationMode();
        const result = await client.put(key, value, replication === undefined ? {} : { replication });
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
          out(`${key}: not found`, { key, found: false, session: client.sessionToken });
          return exitCodes.notFound;
        }
        if (json) out('', { key, value: item.text(), version: item.version, epoch: item.epoch, index: item.index, servedBy: item.servedBy, session: client.sessionToken });
        else process.stdout.write(`${item.text()}\n`);
        return exitCodes.ok;
      }
      case 'del': {
        const key = arg(1, 'key');
        const deleted = await client.delete(key);
        out(deleted ? `${key} deleted` : `${key}: not found`, { key, deleted, session: client.sessionToken });
        return deleted ? exitCodes.ok : exitCodes.notFound;
      }
      case 'cas': {
        const key = arg(1, 'key');
        const version = integer(arg(2, 'version'), '<version>') as number;
        const result = await client.cas(key, version, arg(3, 'value'));
        out(`${key} = version ${result.version} (was ${version})`, { ...result, session: client.sessionToken });
        return exitCodes.ok;
      }
      case 'ls': {
        const limit = integer(values.limit, '--limit');
        const items = [];
        for await (const item of client.list({ prefix: values.prefix, ...(limit === undefined ? {} : { pageSize: Math.min(limit, 1000) }) })) {
          items.push(item);
          if (limit !== undefined && items.length >= limit) break;
        }
        out(table(['key', 'version', 'value'], items.map((item) => [item.key, item.version, item.encoding === 'utf8' ? item.value.slice(0, 60) : '(binary)'])), items);
        return exitCodes.ok;
      }
      case 'watch': {
        const shard = integer(values.shard, '--shard');
        const stop = new AbortController();
        process.on('SIGINT', () => stop.abort());
        try {
          for await (const entry of client.watch({ ...(shard === undefined ? {} : { shard }), prefix: values.prefix, from: integer(values.from, '--from') ?? 1, signal: stop.signal })) {
            const ops = entry.ops.map((op) => (op.type === 'put' ? `put ${op.key}=${Buffer.from(op.value, 'base64').toString('utf8').slice(0, 40)}` : op.type === 'delete' ? `delete ${op.key}` : `leader ${op.node} epoch ${op.epoch}`));
            out(`${entry.index}  epoch ${entry.epoch}  ${ops.join(', ')}`, entry);
          }
        } catch (error) {
          if (!stop.signal.aborted) throw error;
        }
        return exitCodes.ok;
      }
      case 'status': {
        const status = (await client.status()) as unknown as Status;
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
      case 'chaos': {
        const action = arg(1, 'kill|pause|resume|start');
        const node = arg(2, 'node');
        if (!['kill', 'pause', 'resume', 'start'].includes(action)) fail(`chaos takes kill, pause, resume or start, got "${action}"`);
        const response = await fetch(`${endpoint.replace(/\/+$/, '')}/_local/nodes/${encodeURIComponent(node)}/${action}`, {
          method: 'POST',
          headers: bearerToken === undefined ? {} : { authorization: `Bearer ${bearerToken}` },
        });
        const body = (await response.json()) as { state?: string; message?: string };
        if (!response.ok) {
          console.error(response.status === 404 && body.message === undefined ? 'fault controls exist only on the local cloud' : (body.message ?? `answered ${response.status}`));
          return exitCodes.error;
        }
        out(`${node}: ${body.state}`, body);
        return exitCodes.ok;
      }
      case 'region': {
        const action = arg(1, 'cut|heal');
        const region = arg(2, 'region');
        if (action !== 'cut' && action !== 'heal') fail(`region takes cut or heal, got "${action}"`);
        const answer = await localControl(`regions/${encodeURIComponent(region)}/${action}`);
        if (!answer.ok) {
          console.error(answer.status === 404 && answer.body.message === undefined ? 'region controls exist only on the local cloud' : String(answer.body.message ?? `answered ${answer.status}`));
          return exitCodes.error;
        }
        out(`${region}: ${action === 'cut' ? 'cut off' : 'reconnected'}`, answer.body);
        return exitCodes.ok;
      }
      case 'promote': {
        const region = arg(1, 'region');
        if (values.aws) {
          const home = values.home ?? fail('--aws needs --home <region> (the home region as deployed)');
          const replicaRegions = (values.replicas ?? fail('--aws needs --replicas <r1,r2> (the replica regions as deployed)')).split(',').map((name) => name.trim()).filter(Boolean);
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
        if (!answer.ok) {
          console.error(answer.status === 404 && answer.body.message === undefined ? 'promote without --aws works on the local cloud only' : String(answer.body.message ?? `answered ${answer.status}`));
          return exitCodes.error;
        }
        if (json) out('', answer.body);
        else printPromotion(answer.body as unknown as PromotionReport);
        return exitCodes.ok;
      }
      default:
        fail(`unknown command "${command}"`);
    }
  }

  try {
    process.exitCode = await main();
  } catch (error) {
    if (error instanceof VersionConflictError) {
      console.error(error.message);
      process.exitCode = exitCodes.conflict;
    } else if (error instanceof BadRequestError) {
      console.error(error.message);
      process.exitCode = exitCodes.usage;
    } else if (error instanceof EpochKvError) {
      console.error(`${error.message} (${error.code})`);
      process.exitCode = exitCodes.error;
    } else {
      const cause = (error as { cause?: { code?: string } }).cause;
      console.error(cause?.code === 'ECONNREFUSED' ? `nothing answers at ${endpoint}: start the local cloud with \`npm start\`, or pass --endpoint` : String(error));
      process.exitCode = exitCodes.error;
    }
  }
}
