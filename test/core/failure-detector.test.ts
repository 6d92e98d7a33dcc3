import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../lib/core/assert.ts';
import { FailureDetector, type HeartbeatRecord } from '../../lib/core/failure-detector.ts';
import { limits } from '../../lib/core/limits.ts';

const tickMs = 100;
// Suspected after 3 ticks of silence (300 ms), dead after 8 (800 ms).
const options = { tickMs, suspectAfterTicks: 3, deadAfterTicks: 8 };

function heartbeat(node: string, seq: number, incarnation = 'incarnation-1'): HeartbeatRecord {
  return { node, incarnation, seq };
}

/** Feeds `count` ticks in which the heartbeat table holds `records` unchanged. */
function tick(detector: FailureDetector, count: number, records: readonly HeartbeatRecord[] = []): void {
  for (let tickIndex = 0; tickIndex < count; tickIndex += 1) detector.observe(tickMs, records);
}

describe('Class: FailureDetector', () => {
  describe('Method: observe', () => {
    it('moves a silent node from alive to suspected to dead as ticks are missed', () => {
      // Prepare
      const detector = new FailureDetector(options);
      detector.observe(0, [heartbeat('node-a', 1)]);
      const trace: string[] = [];

      // Act
      for (let tickIndex = 1; tickIndex <= 9; tickIndex += 1) {
        tick(detector, 1);
        trace.push(`${detector.silenceMs('node-a')}:${detector.status('node-a')}`);
      }

      // Assess
      expect(trace).toEqual([
        '100:alive',
        '200:alive',
        '300:suspected',
        '400:suspected',
        '500:suspected',
        '600:suspected',
        '700:suspected',
        '800:dead',
        '900:dead',
      ]);
    });

    it('keeps a node alive while its seq changes every tick', () => {
      // Prepare
      const detector = new FailureDetector(options);

      // Act
      for (let seq = 1; seq <= 20; seq += 1) detector.observe(tickMs, [heartbeat('node-a', seq)]);

      // Assess
      expect(detector.status('node-a')).toBe('alive');
      expect(detector.silenceMs('node-a')).toBe(0);
    });

    it('brings a dead node back to alive when its seq changes', () => {
      // Prepare
      const detector = new FailureDetector(options);
      detector.observe(0, [heartbeat('node-a', 1)]);
      tick(detector, 10, [heartbeat('node-a', 1)]);
      expect(detector.status('node-a')).toBe('dead');

      // Act
      detector.observe(tickMs, [heartbeat('node-a', 2)]);

      // Assess
      expect(detector.status('node-a')).toBe('alive');
      expect(detector.silenceMs('node-a')).toBe(0);
    });

    it('counts a new incarnation with the same seq as a sign of life', () => {
      // Prepare
      const detector = new FailureDetector(options);
      detector.observe(0, [heartbeat('node-a', 5, 'incarnation-1')]);
      tick(detector, 5, [heartbeat('node-a', 5, 'incarnation-1')]);
      expect(detector.status('node-a')).toBe('suspected');

      // Act
      detector.observe(tickMs, [heartbeat('node-a', 5, 'incarnation-2')]);

      // Assess
      expect(detector.status('node-a')).toBe('alive');
      expect(detector.silenceMs('node-a')).toBe(0);
    });

    it('leaves a node dead while its stale record stays in the table', () => {
      // Prepare
      const detector = new FailureDetector(options);
      const staleRecord = heartbeat('node-a', 41);
      detector.observe(0, [staleRecord]);

      // Act
      tick(detector, 50, [staleRecord]);

      // Assess
      expect(detector.status('node-a')).toBe('dead');
      expect(detector.silenceMs('node-a')).toBe(50 * tickMs);
    });

    it('counts the first sight of a node as a change, even after a stale start', () => {
      // Prepare
      const detector = new FailureDetector({ ...options, knownNodes: ['node-a'] });
      tick(detector, 10);
      expect(detector.status('node-a')).toBe('dead');

      // Act
      detector.observe(tickMs, [heartbeat('node-a', 0)]);

      // Assess
      expect(detector.status('node-a')).toBe('alive');
    });

    it('measures silence by the elapsed time fed in, whatever the size of each step', () => {
      // Prepare
      const detector = new FailureDetector(options);
      detector.observe(0, [heartbeat('node-a', 1)]);

      // Act
      detector.observe(299, []);
      const beforeSuspicion = detector.status('node-a');
      detector.observe(1, []);
      const atSuspicion = detector.status('node-a');
      detector.observe(0, []);
      const afterZeroElapsed = detector.status('node-a');
      detector.observe(500, []);
      const atDeath = detector.status('node-a');

      // Assess
      expect([beforeSuspicion, atSuspicion, afterZeroElapsed, atDeath]).toEqual(['alive', 'suspected', 'suspected', 'dead']);
    });

    it('refuses negative or non-finite elapsed time', () => {
      // Prepare
      const detector = new FailureDetector(options);

      // Act / Assess
      expect(() => detector.observe(-1, [])).toThrow(AssertionError);
      expect(() => detector.observe(Number.NaN, [])).toThrow(AssertionError);
      expect(() => detector.observe(Number.POSITIVE_INFINITY, [])).toThrow(AssertionError);
    });
  });

  describe('Option: knownNodes', () => {
    it('starts known nodes alive and lets them die after deadAfterTicks if never seen', () => {
      // Prepare
      const detector = new FailureDetector({ ...options, knownNodes: ['node-a', 'node-b'] });
      const statusesAtStart = [detector.status('node-a'), detector.status('node-b')];

      // Act
      tick(detector, 2);
      const afterTwoTicks = detector.status('node-b');
      tick(detector, 1);
      const afterThreeTicks = detector.status('node-b');
      tick(detector, 4);
      const afterSevenTicks = detector.status('node-b');
      tick(detector, 1);
      const afterEightTicks = detector.status('node-b');

      // Assess
      expect(statusesAtStart).toEqual(['alive', 'alive']);
      expect([afterTwoTicks, afterThreeTicks, afterSevenTicks, afterEightTicks]).toEqual([
        'alive',
        'suspected',
        'suspected',
        'dead',
      ]);
      expect(detector.silenceMs('node-b')).toBe(8 * tickMs);
    });
  });

  describe('Method: status', () => {
    it('reports an unknown node as dead with infinite silence', () => {
      // Prepare
      const detector = new FailureDetector({ ...options, knownNodes: ['node-a'] });

      // Act
      const status = detector.status('node-z');
      const silenceMs = detector.silenceMs('node-z');

      // Assess
      expect(status).toBe('dead');
      expect(silenceMs).toBe(Number.POSITIVE_INFINITY);
    });
  });

  describe('Method: statuses', () => {
    it('lists known and observed nodes sorted by node', () => {
      // Prepare
      const detector = new FailureDetector({ ...options, knownNodes: ['node-c', 'node-a'] });
      detector.observe(0, [heartbeat('node-b', 1), heartbeat('node-a', 1)]);
      tick(detector, 4, [heartbeat('node-b', 1), heartbeat('node-a', 1)]);

      // Act
      detector.observe(tickMs, [heartbeat('node-b', 2), heartbeat('node-a', 1)]);
      const statuses = detector.statuses();

      // Assess
      expect(statuses).toEqual([
        { node: 'node-a', status: 'suspected', silenceMs: 500 },
        { node: 'node-b', status: 'alive', silenceMs: 0 },
        { node: 'node-c', status: 'suspected', silenceMs: 500 },
      ]);
    });
  });

  describe('Method: aliveNodes', () => {
    it('lists only alive nodes, sorted', () => {
      // Prepare
      const detector = new FailureDetector({ ...options, knownNodes: ['node-d'] });
      tick(detector, 9);

      // Act
      detector.observe(tickMs, [heartbeat('node-c', 1), heartbeat('node-a', 1)]);
      const alive = detector.aliveNodes();

      // Assess
      expect(alive).toEqual(['node-a', 'node-c']);
      expect(detector.status('node-d')).toBe('dead');
    });
  });

  describe('Constructor', () => {
    it('takes its thresholds from limits by default', () => {
      // Prepare
      const detector = new FailureDetector({ tickMs, knownNodes: ['node-a'] });

      // Act
      tick(detector, limits.suspectAfterTicks - 1);
      const beforeSuspicion = detector.status('node-a');
      tick(detector, 1);
      const atSuspicion = detector.status('node-a');
      tick(detector, limits.deadAfterTicks - limits.suspectAfterTicks - 1);
      const beforeDeath = detector.status('node-a');
      tick(detector, 1);
      const atDeath = detector.status('node-a');

      // Assess
      expect([beforeSuspicion, atSuspicion, beforeDeath, atDeath]).toEqual(['alive', 'suspected', 'suspected', 'dead']);
    });

    it.each([
      [{ tickMs: 0 }],
      [{ tickMs: -5 }],
      [{ tickMs, suspectAfterTicks: 0 }],
      [{ tickMs, suspectAfterTicks: 4, deadAfterTicks: 4 }],
      [{ tickMs, suspectAfterTicks: 2.5 }],
      [{ tickMs, knownNodes: [''] }],
    ])('refuses impossible options %j', (badOptions) => {
      // Act
      const act = () => new FailureDetector(badOptions);

      // Assess
      expect(act).toThrow(AssertionError);
    });
  });
});
