import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { waitUntil } from '../support.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The README's quick start: the second bash block of the "Quick start" section, as written. */
function quickStartCommands(): string[] {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('\n## ', readme.indexOf('## Quick start') + 1));
  const blocks = [...section.matchAll(/```bash\n([\s\S]*?)```/g)].map((match) => match[1] ?? '');
  expect(blocks[0]).toMatch(/npm install\nnpm start/);
  return (blocks[1] ?? '').split('\n').filter((line) => line.trim() !== '' && !line.trimStart().startsWith('#'));
}

let cloud: ChildProcess | undefined;

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A base port whose API (base..base+2) and emulator ports (base+20, base+21) are all free. */
async function freeBasePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const base = 20_000 + Math.floor(Math.random() * 2_000) * 10;
    const free = await Promise.all([0, 1, 2, 20, 21].map((offset) => portIsFree(base + offset)));
    if (free.every(Boolean)) return base;
  }
  throw new Error('no free base port found in 50 tries');
}

describe("The README's quick start, run as a user runs it", () => {
  afterAll(async () => {
    if (cloud?.pid === undefined || cloud.exitCode !== null) return;
    // Ctrl-C, as the README says, to the whole group (npm, tsx, the emulators).
    process.kill(-cloud.pid, 'SIGINT');
    const exited = await waitUntil('npm start exited', async () => (cloud?.exitCode !== null || cloud?.signalCode !== null ? true : undefined), 30_000).catch(() => false);
    if (exited !== true) process.kill(-cloud.pid, 'SIGKILL');
  });

  it('starts with npm start, prints ready, and answers every command of the quick start as its comments say', async () => {
    // Prepare: its own ports (the README's 8080… may be in use on this machine).
    const basePort = await freeBasePort();
    const url = (offset: number) => `http://127.0.0.1:${basePort + offset}`;
    let output = '';
    cloud = spawn('npm', ['start', '--', '--in-memory'], { cwd: root, env: { ...process.env, EPOCHKV_BASE_PORT: String(basePort) }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    cloud.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    cloud.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    await waitUntil('npm start printed ready', async () => {
      if (cloud?.exitCode !== null) throw new Error(`npm start exited:\n${output}`);
      return /^ready\b/m.test(output) ? true : undefined;
    }, 150_000);

    // Act: the commands in order, in one shell (they share $token and $leader), on our ports.
    // The README's "a lease or so later" is a wait for the new leader here, with a deadline.
    const commands = quickStartCommands().map((line) => line.replaceAll('http://127.0.0.1:8080', url(0)).replaceAll('http://127.0.0.1:8081', url(1)).replaceAll('http://127.0.0.1:8082', url(2)));
    const script = commands
      .flatMap((line, position) => {
        const shown = line.startsWith('curl ') ? `curl -sS -w '\\n@@status %{http_code}\\n' ${line.slice('curl '.length)}` : line;
        const waitForNewLeader = line.includes('/_local/nodes/$leader/kill')
          ? [`for attempt in $(seq 1 150); do now=$(curl -s ${url(0)}/cluster | node -pe 'const s=JSON.parse(require("fs").readFileSync(0,"utf8")).shards[0]; s.live && s.leader !== process.argv[1] ? "moved" : "waiting"' "$leader"); [ "$now" = moved ] && break; sleep 0.2; done`]
          : [];
        return [`echo "@@command ${position}"`, shown, ...waitForNewLeader];
      })
      .join('\n');
    const run = spawnSync('bash', ['-c', script], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    const answers = new Map<number, { status: number; body: string }>();
    for (const part of run.stdout.split('@@command ').slice(1)) {
      const position = Number(part.slice(0, part.indexOf('\n')));
      const status = /@@status (\d+)/.exec(part);
      answers.set(position, { status: status === null ? 0 : Number(status[1]), body: part.slice(part.indexOf('\n') + 1).replace(/\n?@@status \d+\n?/, '') });
    }
    const answerTo = (fragment: string) => {
      const answer = answers.get(commands.findIndex((line) => line.includes(fragment)));
      if (answer === undefined) throw new Error(`no answer to "${fragment}"; stdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
      return answer;
    };

    // Assess: every top-level curl answered as the README says; the one refused CAS is the only non-2xx.
    expect(run.status, run.stderr).toBe(0);
    for (const [position, line] of commands.entries()) {
      if (!line.startsWith('curl ')) continue;
      const expected = line.includes("'too late'") ? 412 : 200;
      expect({ line, status: answers.get(position)?.status }).toEqual({ line, status: expected });
    }
    const written = JSON.parse(answerTo("--data-binary 'hello' ").body) as { version: number; index: number };
    expect(written).toMatchObject({ key: 'greeting', version: written.index, replication: { mode: 'async' } });
    expect(answerTo('-i http://127.0.0.1').body).toMatch(new RegExp(`etag: "${written.version}"`, 'i'));
    // Leadership markers may sit between the two writes in the shard's log: the versions are log indexes.
    const refused = JSON.parse(answerTo("'too late'").body) as { error: string; message: string };
    expect(refused.error).toBe('VersionConflict');
    const [, expected, current] = /^version conflict on "greeting": expected version (\d+), but the current version is (\d+)$/.exec(refused.message) ?? [];
    expect(Number(expected)).toBe(written.version);
    expect(Number(current)).toBeGreaterThan(written.version);
    expect(answerTo(`-i ${url(1)}/kv/greeting`).body).toMatch(/x-epochkv-served-by: replica[\s\S]*hello again$/i);
    expect(answerTo(`${url(2)}/kv/greeting?consistency=strong`).body).toBe('hello again');
    expect(JSON.parse(answerTo('prefix={user42}/').body).items.map((item: { key: string }) => item.key)).toEqual(['{user42}/name']);
    expect(answerTo('X-Epochkv-Session: $token').body).toBe('mine');
    expect(JSON.parse(answerTo('-X DELETE').body)).toMatchObject({ key: 'greeting', deleted: true });
    // The look at /cluster after the kill.
    const cluster = JSON.parse(answers.get(commands.findIndex((line) => line.includes('/kill')) + 1)?.body ?? '') as { shards: { shard: number; leader: string; live: boolean; epoch: number }[] };
    expect(cluster.shards[0]).toMatchObject({ live: true, epoch: expect.any(Number) });
    expect(cluster.shards[0]?.epoch).toBeGreaterThan(1);
  }, 300_000);
});
