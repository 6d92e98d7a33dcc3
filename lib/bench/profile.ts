/**
 * A CPU profile of this process around one phase (the inspector's sampling profiler, as
 * `node --cpu-prof` writes), saved as a `.cpuprofile` (open it in Chrome DevTools or VS Code)
 * and summarized: self time by where the code comes from, and the hottest functions.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  durationMs: number;
  /** Share of samples by origin: AWS SDK, SQS emulator, node:http, epochkv code, GC, idle... */
  categories: { category: string; share: number }[];
  top: { fn: string; where: string; share: number }[];
}

/** Where a frame's code comes from. */
export function categoryOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(idle)') return 'idle (waiting for I/O)';
    if (functionName === '(garbage collector)') return 'garbage collector';
    if (functionName === '(program)') return 'V8/native (program)';
    return 'native (socket writes, hashing, other bindings)';
  }
  if (/node_modules\/(@aws-sdk|@smithy|@aws-crypto)\//.test(url)) return 'AWS SDK (marshal, sign, HTTP)';
  if (/node_modules\/(fauxqs|fastify|@fastify|find-my-way|light-my-request|pino)/.test(url)) return 'SQS emulator (in-process)';
  if (/node_modules\/fauxqs/.test(url) || /fauxqs/.test(url)) return 'SQS emulator (in-process)';
  if (url.includes('node_modules/')) return `other packages (${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? '?'})`;
  if (/^node:(internal\/)?(http|_http|net|stream|internal\/streams|internal\/http|dns|tls)/.test(url) || /node:_http/.test(url)) return 'node:http / net';
  if (url.startsWith('node:')) return 'node core (other)';
  if (url.includes('/lib/bench/')) return 'benchmark load generator';
  if (url.includes('/lib/') || url.includes('/functions/')) return 'epochkv code (API, apply, heartbeats)';
  return 'other';
}

export function summarizeProfile(profile: CpuProfile, file: string): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const counts = new Map<number, number>();
  if (profile.samples !== undefined) for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
  else for (const node of profile.nodes) counts.set(node.id, node.hitCount ?? 0);
  const total = [...counts.values()].reduce((sum, count) => sum + count, 0) || 1;
  const categories = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, count] of counts) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const category = categoryOf(url, functionName);
    categories.set(category, (categories.get(category) ?? 0) + count);
    const where = url === '' ? '' : `${url.replace(/^.*\/(node_modules\/)/, '$1').replace(/^file:\/\/.*\/(lib|functions)\//, '$1/')}:${lineNumber + 1}`;
    const key = `${functionName || '(anonymous)'}\u0000${where}`;
    functions.set(key, (functions.get(key) ?? 0) + count);
  }
  const share = (count: number) => Math.round((count / total) * 1000) / 10;
  return {
    file,
    durationMs: Math.round((profile.endTime - profile.startTime) / 1000),
    categories: [...categories.entries()].sort((a, b) => b[1] - a[1]).map(([category, count]) => ({ category, share: share(count) })),
    top: [...functions.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 15)
      .map(([key, count]) => {
        const [fn, where] = key.split('\u0000') as [string, string];
        return { fn, where, share: share(count) };
      }),
  };
}

export async function withCpuProfile<T>(file: string, run: () => Promise<T>): Promise<{ result: T; summary: ProfileSummary }> {
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 500 });
    await session.post('Profiler.start');
    const result = await run();
    const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
    writeFileSync(file, JSON.stringify(profile));
    return { result, summary: summarizeProfile(profile, file) };
  } finally {
    session.disconnect();
  }
}
