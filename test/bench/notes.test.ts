import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cpuMeter, eventLoopMeter, threadCpuSeconds } from '../../lib/bench/cpu.ts';
import { lagMachineNote, type LagRegion } from '../../lib/bench/report.ts';
import { profileNotes } from '../../lib/bench/run.ts';

const region = (overrides: Partial<LagRegion>): LagRegion => ({
  region: 'eu-west-1',
  entries: 100,
  unapplied: 0,
  p50Ms: 60,
  p99Ms: 200,
  maxMs: 250,
  meanShipMs: 30,
  meanQueueMs: 20,
  meanApplyMs: 40,
  viaRepair: 96,
  appliedPerSecond: 99.5,
  poller: { batches: 120, messagesPerBatch: 8, batchesPerSecond: 12 },
  ...overrides,
});

const notesOf = (lagRegions: LagRegion[]) => profileNotes([], lagRegions, null, [], 8, { nodesPerSecond: 100, inProcessPerSecond: 60, homeOnly: null });

describe('benchmark notes on the lag', () => {
  it('gives the queue and apply means with how few entries they are over', () => {
    const [note] = notesOf([region({})]);
    expect(note).toContain('mean commit → queue accepted 30 ms; over the 4 entries the poller delivered, mean → received 20 ms, → applied 40 ms; 96 of 100 entries applied by pull repair');
    expect(note).toContain('12 apply invocations per second with 8 messages each');
  });

  it('says so when every entry arrived by pull, instead of printing null means', () => {
    const [note] = notesOf([region({ meanQueueMs: null, meanApplyMs: null, viaRepair: 100, poller: null })]);
    expect(note).toContain('no entry reached the poller before a pull applied it; 100 of 100 entries applied by pull repair');
    expect(note).not.toContain('null');
  });
});

describe('the machine during the lag phase', () => {
  it('shows a share of threads inside its process group, not as a group of its own', () => {
    const note = lagMachineNote({ cores: { 'bench+api': 0.62, 'dynamodb-local': 1.02, 'dynamodb-local JIT': 0.21, nodes: 0.18, machine: 1.88, others: 0.06 }, eventLoop: { utilization: 0.99, delayP99Ms: 33.7 } }, 2);
    expect(note).toContain('1.88 of 2 cores busy (bench+api 0.62, dynamodb-local 1.02 (JIT 0.21), nodes 0.18, others 0.06)');
  });

  it('says how many cores were busy, per process group, and how busy and late the event loop was', () => {
    const note = lagMachineNote({ cores: { 'bench+api': 0.62, 'dynamodb-local': 1.02, nodes: 0.18, machine: 1.88, others: 0.06 }, eventLoop: { utilization: 0.99, delayP99Ms: 33.7 } }, 2);
    expect(note).toContain('1.88 of 2 cores busy (bench+api 0.62, dynamodb-local 1.02, nodes 0.18, others 0.06)');
    expect(note).toContain('busy 99% of the time');
    expect(note).toContain('fired 33.7 ms late at p99');
  });

  it('lists the process groups alone where the machine total is unknown (no /proc)', () => {
    const note = lagMachineNote({ cores: { 'bench+api': 0.5 }, eventLoop: { utilization: 0.4, delayP99Ms: 2 } }, 8);
    expect(note).toContain('The machine during the phase: cores bench+api 0.50.');
    expect(note).not.toContain('of 8 cores');
  });

  it('measures a blocked event loop as busy', () => {
    const meter = eventLoopMeter();
    const blockedUntilMs = performance.now() + 100;
    // Synchronous work: the loop runs no other callback meanwhile.
    while (performance.now() < blockedUntilMs);
    const load = meter.stop();
    expect(load.utilization).toBeGreaterThanOrEqual(0.9);
    expect(load.delayP99Ms).toBeGreaterThanOrEqual(0);
  });

  it.runIf(process.platform === 'linux')('counts the CPU of the threads whose name matches, inside its process and not in others', () => {
    // This process's main thread is named after the process ("node" or the test runner's name).
    const main = new RegExp(`^${readFileSync('/proc/self/comm', 'utf8').trim().slice(0, 15).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
    const meter = cpuMeter(() => ({}), { 'self main': { pid: process.pid, threads: main }, 'self none': { pid: process.pid, threads: /^no such thread$/ } });
    const busyUntilMs = performance.now() + 300;
    while (performance.now() < busyUntilMs);
    const cores = meter.stop();
    expect(cores['self main']).toBeGreaterThan(0.5);
    expect(cores['self none']).toBe(0);
    expect(threadCpuSeconds(process.pid, main)).toBeGreaterThan(0);
    expect(threadCpuSeconds(2 ** 22 + 7, main)).toBeUndefined();
  });
});
