import { limits } from '../core/limits.ts';
import type { LogEntry } from '../core/log.ts';
import type { ReplicationMode } from '../core/replication.ts';
import { ReplicationUnmetError } from '../ports/errors.ts';

/**
 * A quorum/all write's entry, from the moment its commit is sent until it is known durable in
 * the replica regions its mode needs.
 */
export class DurabilityGuard {
  readonly id: string;
  /** true: durable, or the index holds no entry of this write; false: committed (or maybe), replication unmet. */
  readonly durable: Promise<boolean>;
  #resolve: (durable: boolean) => void = () => undefined;
  #settled = false;

  constructor(
    readonly entry: Pick<LogEntry, 'shard' | 'index'>,
    readonly key: string,
    readonly deletes: boolean,
    readonly mode: ReplicationMode,
  ) {
    this.id = `${entry.shard}:${entry.index}`;
    this.durable = new Promise<boolean>((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** Settles once: false when it already was (the later call changes nothing). */
  settle(durable: boolean): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#resolve(durable);
    return true;
  }
}

/** Whether the replica regions report the entry applied where the mode needs it. */
export type ConfirmApplied = (shard: number, index: number, mode: ReplicationMode) => Promise<boolean>;

/**
 * What one API instance knows of its own quorum/all writes that are not yet durable, so that
 * nothing it answers — a strong read, a strong list, a refused condition (which tells the
 * current state as surely as a read) — shows a state the loss of the home region could take
 * back. The item of a write is visible the moment DynamoDB applies its transaction, before the
 * writer hears back: a guard opens before the commit is sent.
 */
export class DurabilityGuards {
  readonly #byEntry = new Map<string, DurabilityGuard>();
  /** A missing key may be a delete's work: the open delete guards per key. */
  readonly #deletesByKey = new Map<string, Set<DurabilityGuard>>();
  /** Committed writes whose replication failed, oldest first (bounded by limits.unconfirmedWritesMax). */
  readonly #unconfirmed = new Set<DurabilityGuard>();

  constructor(
    private readonly confirmApplied: ConfirmApplied,
    private readonly log?: (line: string) => void,
  ) {}

  open(entry: LogEntry, key: string, deletes: boolean, mode: ReplicationMode): DurabilityGuard {
    const guard = new DurabilityGuard(entry, key, deletes, mode);
    this.#byEntry.set(guard.id, guard);
    if (deletes) {
      const open = this.#deletesByKey.get(key) ?? new Set<DurabilityGuard>();
      open.add(guard);
      this.#deletesByKey.set(key, open);
    }
    return guard;
  }

  /** Durable, or the index holds no entry of this write: nothing to hide. */
  release(guard: DurabilityGuard | undefined): void {
    if (guard === undefined) return;
    guard.settle(true);
    this.#forget(guard);
  }

  /** Committed (or maybe), not known durable: answers that show it first ask the replicas' reports. */
  unconfirm(guard: DurabilityGuard | undefined): void {
    if (guard === undefined || !guard.settle(false)) return;
    this.#unconfirmed.add(guard);
    if (this.#unconfirmed.size <= limits.unconfirmedWritesMax) return;
    // Bounded memory through a long replica outage: the oldest is forgotten, so shown again.
    const [oldest] = this.#unconfirmed;
    if (oldest === undefined) return;
    this.#forget(oldest);
    this.log?.(`durability guard: more than ${limits.unconfirmedWritesMax} unconfirmed writes; shard:index ${oldest.id} is no longer hidden`);
  }

  /** Settles the guard with the replication's outcome. */
  follow(guard: DurabilityGuard | undefined, replicated: Promise<unknown>): void {
    if (guard === undefined) return;
    replicated.then(
      () => this.release(guard),
      () => this.unconfirm(guard),
    );
  }

  /**
   * Waits while the state found — the key's item at `index`, or the key missing — may come from
   * a write of this instance that is not yet durable; throws ReplicationUnmetError (503) when
   * it is not. `answer` says what would reveal the state, for the message.
   */
  async check(shard: number, key: string, index: number | undefined, answer: 'read' | 'refusal'): Promise<void> {
    const guards = index === undefined ? [...(this.#deletesByKey.get(key) ?? [])] : [this.#byEntry.get(`${shard}:${index}`)];
    for (const guard of guards) {
      if (guard === undefined || (await guard.durable)) continue;
      // Its replication failed; the replicas repair from the home log since.
      if (await this.confirmApplied(guard.entry.shard, guard.entry.index, guard.mode)) {
        this.release(guard);
        continue;
      }
      const change = guard.deletes ? 'delete' : 'write';
      throw new ReplicationUnmetError(
        answer === 'read'
          ? `the latest ${change} of "${key}" (index ${guard.entry.index}) has not reached the replica regions ${guard.mode} replication needs, so its outcome is unknown and it is not shown; retry shortly`
          : `"${key}" was last changed by a ${change} (index ${guard.entry.index}) that has not reached the replica regions ${guard.mode} replication needs, so whether this write's condition holds is unknown; nothing was written; retry shortly`,
        guard.entry.index,
      );
    }
  }

  #forget(guard: DurabilityGuard): void {
    if (this.#byEntry.get(guard.id) === guard) this.#byEntry.delete(guard.id);
    this.#unconfirmed.delete(guard);
    const open = this.#deletesByKey.get(guard.key);
    if (open?.delete(guard) === true && open.size === 0) this.#deletesByKey.delete(guard.key);
  }
}
