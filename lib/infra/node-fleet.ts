import { Duration, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import { Construct } from 'constructs';
import { env } from '../config.ts';
import { grantLogTrim, grantTableRead, grantTableTransactWrite, type ClusterReferences } from './access.ts';
import type { InfraConfig } from './config.ts';
import { HandlerFunction, scheduledRunFindings } from './handler-function.ts';

/**
 * How long one node invocation may run. The handler (functions/node.ts) loops for
 * min(70 s, remaining time - 5 s) and then returns; the timeout leaves room above that for the
 * cold start and the last tick, so a node always ends cleanly instead of being cut off mid-write.
 */
export const nodeLoopBudget = Duration.seconds(70);
export const nodeTimeout = Duration.seconds(90);

/** EventBridge rules fire at most once a minute; a node ticks every tickMs inside an invocation. */
export const scheduleRate = Duration.minutes(1);

/** Why a schedule's target has no dead-letter queue (nodes and the replica heartbeat). */
export const scheduleTargetFinding = {
  id: 'Serverless-EventBusDLQ',
  reason: 'The rule only says "a minute passed": an event EventBridge could not deliver has nothing to replay, and the next minute\'s event starts the same run. A function that stops running raises its alarms (NoLeader, ReplicaLag).',
};

export interface NodeFleetProps {
  config: InfraConfig;
  cluster: ClusterReferences;
}

/**
 * The N node identities of the home region: one function per identity (its id in
 * EPOCHKV_NODE_ID), each started every minute by its own EventBridge scheduled rule. An
 * invocation runs a little longer than the schedule, so consecutive invocations of a node
 * overlap and the newer one takes over its node's leases (see DESIGN.md §3).
 */
export class NodeFleet extends Construct {
  readonly nodes: { id: string; handler: HandlerFunction; rule: events.Rule }[] = [];

  constructor(scope: Construct, id: string, props: NodeFleetProps) {
    super(scope, id);
    const { config, cluster } = props;
    for (const nodeId of config.nodeIds) {
      const handler = new HandlerFunction(this, nodeId, {
        config,
        handler: 'node',
        name: nodeId,
        description: `epochkv node ${nodeId}: leases, heartbeats, leader markers, the shards' write intakes, re-shipping (one scheduled invocation a minute)`,
        timeout: nodeTimeout,
        memorySizeMb: config.nodeMemoryMb,
        environment: { [env.nodeId]: nodeId },
        // A failed or late run is not retried: the next minute's run takes its place.
        asyncRetry: { retryAttempts: 0, maxEventAge: scheduleRate },
        // Set aside so an API spike elsewhere in the account cannot throttle a node's run and so
        // its lease renewals; sized in config.ts (`nodeConcurrencyNeeded`), 0 turns it off.
        ...(config.nodeReservedConcurrency === 0 ? {} : { reservedConcurrency: config.nodeReservedConcurrency }),
      });
      // Leases, heartbeats and the shards' write intakes live in `control`; leader markers go to
      // `log`. A shard's leader is its single writer under load: it commits the intake's writes
      // (log entries and kv items) in its own fenced transactions, so it writes `kv` too.
      grantTableRead(handler.function, cluster.homeTables.control, cluster.homeTables.log, cluster.homeTables.kv);
      grantTableTransactWrite(handler.function, cluster.homeTables.control, cluster.homeTables.log, cluster.homeTables.kv);
      // A leader trims its shards' logs (lib/service/compaction.ts).
      grantLogTrim(handler.function, cluster.homeTables.log);
      // A leader re-ships a stuck replica's missing range to that replica's queue.
      for (const queue of cluster.replicaQueues) queue.grantSendMessages(handler.function);
      const rule = new events.Rule(this, `${nodeId}-schedule`, {
        ruleName: `${config.prefix}-${nodeId}`,
        description: `Starts epochkv node ${nodeId} every minute`,
        schedule: events.Schedule.rate(scheduleRate),
        targets: [new targets.LambdaFunction(handler.function, { retryAttempts: 2, maxEventAge: scheduleRate })],
      });
      handler.acknowledge(scheduledRunFindings);
      Validations.of(rule).acknowledge(scheduleTargetFinding);
      this.nodes.push({ id: nodeId, handler, rule });
    }
  }
}
