import { assert } from './assert.ts';
import { limits } from './limits.ts';

export type NodeStatus = 'alive' | 'suspected' | 'dead';

/** What a node writes on every tick; a change of either field is a sign of life. */
export interface HeartbeatRecord {
  node: string;
  incarnation: string;
  seq: number;
}

export interface FailureDetectorOptions {
  tickMs: number;
  suspectAfterTicks?: number;
  deadAfterTicks?: number;
  knownNodes?: readonly string[];
}

interface Observation {
  /** Undefined for a known node whose heartbeat has never been seen. */
  record: { incarnation: string; seq: number } | undefined;
  silenceMs: number;
}

/**
 * A heartbeat failure detector that never reads a clock: the caller feeds it the local
 * monotonic time elapsed between observations. Comparing two machines' clocks is never safe,
 * so silence is measured only as the time this node has waited without seeing a record change.
 */
export class FailureDetector {
  private readonly suspectAfterMs: number;
  private readonly deadAfterMs: number;
  private readonly observations = new Map<string, Observation>();

  constructor(options: FailureDetectorOptions) {
    const { tickMs } = options;
    const suspectAfterTicks = options.suspectAfterTicks ?? limits.suspectAfterTicks;
    const deadAfterTicks = options.deadAfterTicks ?? limits.deadAfterTicks;
    assert(Number.isFinite(tickMs) && tickMs > 0, `tickMs must be a positive number, got ${tickMs}`);
    assert(
      Number.isInteger(suspectAfterTicks) && suspectAfterTicks >= 1,
      `suspectAfterTicks must be an integer >= 1, got ${suspectAfterTicks}`,
    );
    assert(
      Number.isInteger(deadAfterTicks) && deadAfterTicks > suspectAfterTicks,
      `deadAfterTicks must be an integer > suspectAfterTicks (${suspectAfterTicks}), got ${deadAfterTicks}`,
    );
    this.suspectAfterMs = suspectAfterTicks * tickMs;
    this.deadAfterMs = deadAfterTicks * tickMs;
    // Known nodes start optimistically alive: a cluster starting together must not see its
    // peers as dead before their first heartbeat had a chance to arrive.
    for (const node of options.knownNodes ?? []) {
      assertNodeName(node);
      this.observations.set(node, { record: undefined, silenceMs: 0 });
    }
  }

  /** Feed one observation: `elapsedMs` is local monotonic time elapsed since the previous observe call (>= 0). */
  observe(elapsedMs: number, heartbeats: readonly HeartbeatRecord[]): void {
    assert(Number.isFinite(elapsedMs) && elapsedMs >= 0, `elapsedMs must be a finite number >= 0, got ${elapsedMs}`);
    for (const observation of this.observations.values()) {
      observation.silenceMs += elapsedMs;
    }
    for (const heartbeat of heartbeats) {
      assertNodeName(heartbeat.node);
      const observation = this.observations.get(heartbeat.node);
      if (observation === undefined) {
        this.observations.set(heartbeat.node, { record: recordOf(heartbeat), silenceMs: 0 });
        continue;
      }
      // Only a change is a sign of life: a dead node's last record stays in the table forever.
      const changed =
        observation.record === undefined ||
        observation.record.incarnation !== heartbeat.incarnation ||
        observation.record.seq !== heartbeat.seq;
      if (changed) {
        observation.record = recordOf(heartbeat);
        observation.silenceMs = 0;
      }
    }
  }

  status(node: string): NodeStatus {
    return this.statusOf(this.silenceMs(node));
  }

  /** Local elapsed ms since this node's (incarnation, seq) last changed, or since the detector started if never seen. */
  silenceMs(node: string): number {
    return this.observations.get(node)?.silenceMs ?? Number.POSITIVE_INFINITY;
  }

  /** Known and observed nodes, sorted by node. */
  statuses(): { node: string; status: NodeStatus; silenceMs: number }[] {
    return [...this.observations.entries()]
      .map(([node, { silenceMs }]) => ({ node, status: this.statusOf(silenceMs), silenceMs }))
      .sort((left, right) => compareStrings(left.node, right.node));
  }

  /** Nodes whose status is 'alive', sorted. */
  aliveNodes(): string[] {
    return this.statuses()
      .filter(({ status }) => status === 'alive')
      .map(({ node }) => node);
  }

  private statusOf(silenceMs: number): NodeStatus {
    if (silenceMs < this.suspectAfterMs) return 'alive';
    if (silenceMs < this.deadAfterMs) return 'suspected';
    return 'dead';
  }
}

function recordOf(heartbeat: HeartbeatRecord): { incarnation: string; seq: number } {
  return { incarnation: heartbeat.incarnation, seq: heartbeat.seq };
}

function assertNodeName(node: string): void {
  assert(typeof node === 'string' && node.length > 0, `a node name must be a non-empty string, got ${String(node)}`);
}

/** Code-unit order, the same on every machine (localeCompare depends on the locale). */
function compareStrings(left: string, right: string): number {
  if (left < right) return -1;
  if (left > right) return 1;
  return 0;
}
