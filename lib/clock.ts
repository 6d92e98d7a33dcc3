import { performance } from 'node:perf_hooks';
import { env } from './config.ts';

/**
 * Time as the edges of the system see it. Wall time only stamps records (lease renewals,
 * heartbeats, commits) and feeds the API's liveness gate; elapsed time drives the core. The
 * skew lets fault tests shift one process's wall clock without touching the machine's.
 */
export interface Clock {
  wallMs(): number;
  monotonicMs(): number;
}

export function systemClock(skewMs = Number(process.env[env.clockSkewMs] ?? 0)): Clock {
  return {
    wallMs: () => Date.now() + skewMs,
    monotonicMs: () => performance.now(),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * `work`'s value, or 'timeout' if it has not settled within `timeoutMs` (it keeps running; a
 * rejection within the time is passed on). The timer is cleared either way.
 */
export async function within<T>(work: Promise<T>, timeoutMs: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Full-jitter exponential backoff (AWS architecture blog): spreads retries of lost races. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(maxMs, baseMs * 2 ** attempt));
}
