import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

let ticksPerSecond: number | undefined;
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/**
 * The name and CPU seconds (user + system) in a /proc `stat` file (of a process or of one of
 * its threads); undefined when it cannot be read (no /proc, or the process or thread is gone).
 */
function readStat(path: string): { name: string; cpuSeconds: number } | undefined {
  try {
    const stat = readFileSync(path, 'utf8');
    // The name is in parentheses and may contain spaces: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / clockTicks() };
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) a process has used, from /proc; undefined where there is no /proc or no such process. */
export function processCpuSeconds(pid: number): number | undefined {
  return readStat(`/proc/${pid}/stat`)?.cpuSeconds;
}

/**
 * CPU seconds (user + system) of the threads of a process whose name matches, from
 * /proc/<pid>/task; undefined where there is no /proc or no such process. A thread that ended
 * meanwhile is not counted (its time is gone with it).
 */
export function threadCpuSeconds(pid: number, name: RegExp): number | undefined {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  return tasks.reduce((seconds, task) => {
    const stat = readStat(`/proc/${pid}/task/${task}/stat`);
    return stat !== undefined && name.test(stat.name) ? seconds + stat.cpuSeconds : seconds;
  }, 0);
}

/** Whole-machine busy CPU seconds (all cores) from /proc/stat. */
function machineBusySeconds(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] as string;
    const values = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (values[3] ?? 0) + (values[4] ?? 0);
    const total = values.reduce((sum, value) => sum + value, 0);
    return (total - idle) / clockTicks();
  } catch {
    return undefined;
  }
}

export type CpuProcesses = () => Record<string, number[]>;

/** Threads of one process measured on their own, named `<group> <what>` (e.g. `dynamodb-local JIT`). */
export type CpuThreads = Record<string, { pid: number; threads: RegExp }>;

/**
 * Cores used per named group of processes between `start()` and `stop()`: the benchmark
 * process itself (`bench+api`: load generator, API, apply pollers, replica heartbeats),
 * DynamoDB Local's JVM, the node processes, and the whole machine (others included); and the
 * share of some threads (`parts`), which are in their process's figure already.
 */
export function cpuMeter(processes: CpuProcesses, parts: CpuThreads = {}): { stop(): Record<string, number> } {
  const startedMs = performance.now();
  const self = process.cpuUsage();
  const groups = processes();
  const before = Object.fromEntries(Object.entries(groups).map(([name, pids]) => [name, pids.map((pid) => processCpuSeconds(pid) ?? 0)]));
  const partsBefore = Object.fromEntries(Object.entries(parts).map(([name, { pid, threads }]) => [name, threadCpuSeconds(pid, threads)]));
  const machine = machineBusySeconds();
  return {
    stop() {
      const seconds = (performance.now() - startedMs) / 1000;
      const used = process.cpuUsage(self);
      const out: Record<string, number> = { 'bench+api': (used.user + used.system) / 1e6 / seconds };
      for (const [name, pids] of Object.entries(groups)) {
        const spent = pids.reduce((sum, pid, position) => sum + Math.max(0, (processCpuSeconds(pid) ?? 0) - (before[name]?.[position] ?? 0)), 0);
        out[name] = spent / seconds;
      }
      const machineAfter = machineBusySeconds();
      if (machine !== undefined && machineAfter !== undefined) {
        out.machine = (machineAfter - machine) / seconds;
        // Everything else on the machine (other users' processes): the noise in the figures.
        out.others = Math.max(0, out.machine - Object.entries(out).filter(([name]) => name !== 'machine').reduce((sum, [, cores]) => sum + cores, 0));
      }
      for (const [name, { pid, threads }] of Object.entries(parts)) {
        const spent = threadCpuSeconds(pid, threads);
        const earlier = partsBefore[name];
        if (spent !== undefined && earlier !== undefined) out[name] = Math.max(0, spent - earlier) / seconds;
      }
      for (const name of Object.keys(out)) out[name] = Math.round((out[name] as number) * 100) / 100;
      return out;
    },
  };
}

/** How busy this process's event loop was over a phase. */
export interface EventLoopLoad {
  /** The share of the phase the loop spent running callbacks (Node's event loop utilization), 0..1. */
  utilization: number;
  /** How late a timer due every 10 ms fired, p99, in ms: how long a callback waited for the loop. */
  delayP99Ms: number;
}

const delayResolutionMs = 10;

/**
 * Measures this process's event loop between the call and `stop()`. In the benchmark it is
 * the loop of the API, the SQS emulator, the apply pollers and the load generator: when it is
 * busy all the time, every step of a write and of an apply waits for it.
 */
export function eventLoopMeter(): { stop(): EventLoopLoad } {
  const delay = monitorEventLoopDelay({ resolution: delayResolutionMs });
  delay.enable();
  const before = performance.eventLoopUtilization();
  return {
    stop() {
      const utilization = performance.eventLoopUtilization(before).utilization;
      delay.disable();
      // The histogram is in ns and includes the resolution itself.
      const delayP99Ms = Math.max(0, delay.percentile(99) / 1e6 - delayResolutionMs);
      return { utilization: Math.round(utilization * 100) / 100, delayP99Ms: Math.round(delayP99Ms * 10) / 10 };
    },
  };
}
