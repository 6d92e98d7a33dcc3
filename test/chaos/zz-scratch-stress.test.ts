import { performance } from 'node:perf_hooks';
import { it } from 'vitest';
import { checkHistory, formatViolation } from '../../lib/chaos/checker.ts';
import { conflictMarker, type HistoryOperation, type OperationKind, type OperationStatus } from '../../lib/chaos/history.ts';
import { between, mulberry32, pick } from '../../lib/random.ts';

function gen(seed: number, n: number, clients: number, keys: string[], infoRate: number, durMax: number) {
  const random = mulberry32(seed);
  const cursors = Array.from({ length: clients }, () => between(0, 5, random));
  const plan: any[] = [];
  for (let i = 0; i < n; i++) {
    let c = 0; for (let k = 1; k < clients; k++) if (cursors[k]! < cursors[c]!) c = k;
    const call = cursors[c]!; const d = between(1, durMax, random); const ret = call + d;
    const roll = random(); const sr = random();
    plan.push({ client: c, key: pick(keys, random), kind: roll < 0.3 ? 'put' : roll < 0.75 ? 'get' : roll < 0.9 ? 'cas' : 'delete', status: sr < infoRate ? 'info' : 'ok', applied: random() < 0.5, cur: random() < 0.7, call, point: call + random() * d, ret });
    cursors[c] = ret + between(0, 3, random);
  }
  const reg = new Map<string, string>(); const h: HistoryOperation[] = new Array(n);
  const order = plan.map((_, i) => i).sort((a, b) => plan[a].point - plan[b].point);
  for (const i of order) {
    const p = plan[i]; const cur = reg.get(p.key); const eff = p.status === 'ok' || p.applied;
    const base = { client: p.client, kind: p.kind as OperationKind, key: p.key, status: p.status as OperationStatus, callMs: p.call, returnMs: p.ret };
    if (p.kind === 'put') { if (eff) reg.set(p.key, `v${i}`); h[i] = { ...base, input: { value: `v${i}` }, output: {} }; }
    else if (p.kind === 'get') h[i] = { ...base, input: {}, output: p.status === 'ok' ? { value: cur ?? null } : {} };
    else if (p.kind === 'cas') { const exp = p.cur ? cur : `s${i}`; const sw = exp === cur; if (eff && sw) reg.set(p.key, `v${i}`); h[i] = { ...base, input: exp === undefined ? { value: `v${i}` } : { value: `v${i}`, expectedValue: exp }, output: p.status === 'ok' && !sw ? { value: conflictMarker } : {} }; }
    else { if (eff) reg.delete(p.key); h[i] = { ...base, input: {}, output: p.status === 'ok' && cur === undefined ? { value: null } : {} }; }
  }
  return h;
}
it.each([
  [2000, 10, 1, 0.02, 20], [2000, 10, 1, 0.1, 20], [10000, 10, 1, 0.05, 20], [20000, 10, 5, 0.05, 20], [2000, 30, 1, 0.05, 60], [5000, 10, 1, 0.3, 20],
])('n=%i clients=%i keys=%i info=%f dur=%i', (n, clients, k, info, dur) => {
  const h = gen(1, n, clients, Array.from({ length: k }, (_, i) => `k${i}`), info, dur);
  const t = performance.now(); const r = checkHistory(h); const ms = performance.now() - t;
  const gi = h.findIndex((o, i) => i > n / 2 && o.kind === 'get' && o.status === 'ok');
  const bad = h.map((o, i) => i === gi ? { ...o, output: { value: 'nope' } } : o);
  const t2 = performance.now(); const r2 = checkHistory(bad); const ms2 = performance.now() - t2;
  console.log(`n=${n} c=${clients} k=${k} info=${info}: good ${r.linearizable} ${ms.toFixed(0)}ms ${r.statesExplored} states; bad ${r2.linearizable} timedOut=${r2.timedOut} ${ms2.toFixed(0)}ms ${r2.statesExplored}`);
}, 600_000);
