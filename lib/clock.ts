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

/** Full-jitter exponential backoff (AWS architecture blog): spreads retries of lost races. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(maxMs, baseMs * 2 ** attempt));
}
