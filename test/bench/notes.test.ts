import { describe, expect, it } from 'vitest';
import type { LagRegion } from '../../lib/bench/report.ts';
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
