import { performance } from 'node:perf_hooks';
import { rate, summarize, type LatencySummary } from './stats.ts';

/** One operation's outcome: ok, or a short failure code counted per code. */
export type Outcome = { ok: true; epoch?: number } | { ok: false; code: string };

export interface PhaseResult {
  label: string;
  /** Closed loop: workers; open loop: the most requests in flight. */
  concurrency: number;
  elapsedMs: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  opsPerSecond: number;
  latency: LatencySummary;
  /** Successful operations' latencies (ms), in completion order. */
  latencies: number[];
  /** performance.now() at the start and end of the measured interval. */
  startMs: number;
  endMs: number;
  /** Every operation that completed, warmup and stragglers included (for per-operation request counts). */
  completed: number;
}

export type Progress = (line: string) => void;

/** Prints a progress line every `everyMs` while a phase runs. */
function progressTicker(label: string, everyMs: number, progress: Progress | undefined, state: () => { elapsedMs: number; ok: number; failed: number }): () => void {
  if (progress === undefined) return () => {};
  const timer = setInterval(() => {
    const { elapsedMs, ok, failed } = state();
    progress(`  ${label}: ${(elapsedMs / 1000).toFixed(0)} s, ${ok} ok${failed > 0 ? `, ${failed} failed` : ''}, ${rate(ok, elapsedMs).toFixed(0)}/s`);
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

function finish(label: string, concurrency: number, startMs: number, endMs: number, latencies: number[], failed: number, errors: Record<string, number>, completed: number): PhaseResult {
  const elapsedMs = endMs - startMs;
  return {
    label,
    concurrency,
    elapsedMs,
    ok: latencies.length,
    failed,
    errors,
    opsPerSecond: rate(latencies.length, elapsedMs),
    latency: summarize(latencies),
    latencies,
    startMs,
    endMs,
    completed,
  };
}

/**
 * `concurrency` workers each run `op` back to back for `durationMs` after an unmeasured warmup.
 * The operations that complete within the measured interval are counted, with their whole
 * latency; workers start no operation after it.
 */
export async function closedLoop(options: {
  label: string;
  concurrency: number;
  durationMs: number;
  warmupMs?: number;
  op: (worker: number, sequence: number) => Promise<Outcome>;
  progress?: Progress;
  progressEveryMs?: number;
}): Promise<PhaseResult> {
  const { label, concurrency, durationMs, op } = options;
  const warmupMs = options.warmupMs ?? 0;
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let failed = 0;
  let completed = 0;
  const begunMs = performance.now();
  const startMs = begunMs + warmupMs;
  const endMs = startMs + durationMs;
  const stop = progressTicker(label, options.progressEveryMs ?? 5_000, options.progress, () => ({ elapsedMs: Math.max(0, performance.now() - startMs), ok: latencies.length, failed }));
  try {
    await Promise.all(
      Array.from({ length: concurrency }, async (_, worker) => {
        for (let sequence = 0; performance.now() < endMs; sequence += 1) {
          const sentMs = performance.now();
          let outcome: Outcome;
          try {
            outcome = await op(worker, sequence);
          } catch (error) {
            outcome = { ok: false, code: error instanceof Error ? error.message.slice(0, 60) : String(error) };
          }
          const doneMs = performance.now();
          completed += 1;
          // Throughput counts completions inside the interval; a long operation that began in
          // the warmup still counts (dropping it would bias the latencies low).
          if (doneMs < startMs || doneMs > endMs) continue;
          if (outcome.ok) latencies.push(doneMs - sentMs);
          else {
            failed += 1;
            errors[outcome.code] = (errors[outcome.code] ?? 0) + 1;
          }
        }
      }),
    );
  } finally {
    stop();
  }
  return finish(label, concurrency, startMs, endMs, latencies, failed, errors, completed);
}

/**
 * Open loop: starts one operation every `1000 / ratePerSecond` ms for `durationMs`, whatever
 * the earlier ones are doing (up to `maxInFlight`; starts beyond it are counted as `skipped`).
 * Latency counts from the scheduled start, so a stalled system shows in the figures.
 */
export async function openLoop(options: {
  label: string;
  ratePerSecond: number;
  durationMs: number;
  maxInFlight: number;
  op: (sequence: number) => Promise<Outcome>;
  progress?: Progress;
  progressEveryMs?: number;
}): Promise<PhaseResult & { skipped: number; targetPerSecond: number }> {
  const { label, ratePerSecond, durationMs, maxInFlight, op } = options;
  const intervalMs = 1000 / ratePerSecond;
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let failed = 0;
  let skipped = 0;
  let inFlight = 0;
  let peak = 0;
  const running = new Set<Promise<void>>();
  const startMs = performance.now();
  const endMs = startMs + durationMs;
  const stop = progressTicker(label, options.progressEveryMs ?? 5_000, options.progress, () => ({ elapsedMs: Math.min(durationMs, performance.now() - startMs), ok: latencies.length, failed }));
  try {
    for (let sequence = 0; ; sequence += 1) {
      const scheduledMs = startMs + sequence * intervalMs;
      if (scheduledMs >= endMs) break;
      const waitMs = scheduledMs - performance.now();
      if (waitMs > 1) await new Promise((resolve) => setTimeout(resolve, waitMs));
      if (inFlight >= maxInFlight) {
        skipped += 1;
        continue;
      }
      inFlight += 1;
      peak = Math.max(peak, inFlight);
      const task = (async () => {
        let outcome: Outcome;
        try {
          outcome = await op(sequence);
        } catch (error) {
          outcome = { ok: false, code: error instanceof Error ? error.message.slice(0, 60) : String(error) };
        }
        const doneMs = performance.now();
        if (outcome.ok) latencies.push(doneMs - scheduledMs);
        else {
          failed += 1;
          errors[outcome.code] = (errors[outcome.code] ?? 0) + 1;
        }
        inFlight -= 1;
      })();
      running.add(task);
      void task.finally(() => running.delete(task));
    }
    await Promise.all([...running]);
  } finally {
    stop();
  }
  return { ...finish(label, peak, startMs, endMs, latencies, failed, errors, latencies.length + failed), skipped, targetPerSecond: ratePerSecond };
}
