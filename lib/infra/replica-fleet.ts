import { Duration, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { grantCompactionRead, grantLogTrim, grantReplicaReports, grantTableRead, grantTableTransactWrite, type ClusterReferences } from './access.ts';
import type { InfraConfig } from './config.ts';
import { applyTimeout } from './data.ts';
import { HandlerFunction, scheduledRunFindings } from './handler-function.ts';
import { scheduleRate, scheduleTargetFinding } from './node-fleet.ts';

/** SQS FIFO event source mappings take at most 10 messages a batch. */
export const applyBatchSize = 10;

export interface ReplicaApplyProps {
  config: InfraConfig;
  cluster: ClusterReferences;
  queue: sqs.IQueue;
}

/**
 * A replica region's `apply` function on its replication queue: batches of up to 10 messages,
 * partial batch responses (`ReportBatchItemFailures`) so a failure redelivers only the failed
 * message and the rest of its shard's group, in order.
 */
export class ReplicaApply extends Construct {
  readonly handler: HandlerFunction;

  constructor(scope: Construct, id: string, props: ReplicaApplyProps) {
    super(scope, id);
    const { config, cluster } = props;
    this.handler = new HandlerFunction(this, 'Apply', {
      config,
      handler: 'apply',
      name: 'apply',
      description: 'epochkv replica apply: replication queue to the region\'s log and kv copies, in order, exactly once',
      timeout: applyTimeout,
      memorySizeMb: 256,
    });
    const fn = this.handler.function;
    // One transaction per run of entries: progress in `control`, log copies, kv changes.
    grantTableRead(fn, cluster.localTables.control, cluster.localTables.log, cluster.localTables.kv);
    grantTableTransactWrite(fn, cluster.localTables.control, cluster.localTables.log, cluster.localTables.kv);
    // A gap or a broken chain is repaired from the home log; past the home's compaction point,
    // from a snapshot of the home kv items (lib/service/snapshot.ts).
    grantTableRead(fn, cluster.homeTables.log, cluster.homeTables.kv);
    fn.addEventSource(new SqsEventSource(props.queue, { batchSize: applyBatchSize, reportBatchItemFailures: true, enabled: true }));
    // Failures are kept by the queue, not the function: after maxReceiveCount receives a message
    // moves to the queue's dead-letter queue (alarmed on by DeadLetters).
    const queueKeepsFailures = 'Failed messages stay on the replication queue and, after maxReceiveCount receives, move to its FIFO dead-letter queue (the DeadLetters alarm watches it).';
    this.handler.acknowledge([
      { id: 'Serverless-LambdaDLQ', reason: `The function is invoked synchronously by its SQS event source mapping, never asynchronously. ${queueKeepsFailures}` },
      { id: 'Serverless-LambdaEventSourceMappingDestination', reason: `On-failure destinations exist for stream and Kafka event sources, not SQS. ${queueKeepsFailures}` },
    ]);
  }
}

/** The replica heartbeat loops for min(55 s, remaining - 5 s) (functions/replica-heartbeat.ts). */
export const replicaHeartbeatTimeout = Duration.seconds(70);

export interface ReplicaHeartbeatScheduleProps {
  config: InfraConfig;
  cluster: ClusterReferences;
}

/**
 * The replica heartbeat, started every minute: it reports the region's applied index per shard
 * to the home `control` table (the lag that `/cluster`, metrics and alarms show) and pulls from
 * the home log any shard that stood still behind the home head.
 */
export class ReplicaHeartbeatSchedule extends Construct {
  readonly handler: HandlerFunction;
  readonly rule: events.Rule;

  constructor(scope: Construct, id: string, props: ReplicaHeartbeatScheduleProps) {
    super(scope, id);
    const { config, cluster } = props;
    this.handler = new HandlerFunction(this, 'Heartbeat', {
      config,
      handler: 'replicaHeartbeat',
      name: 'replica-heartbeat',
      description: 'epochkv replica heartbeat: progress reports to home, pull repair of idle shards',
      timeout: replicaHeartbeatTimeout,
      memorySizeMb: 256,
      asyncRetry: { retryAttempts: 0, maxEventAge: scheduleRate },
    });
    const fn = this.handler.function;
    // Repairs apply through the same transaction as the apply function.
    grantTableRead(fn, cluster.localTables.control, cluster.localTables.log, cluster.localTables.kv);
    grantTableTransactWrite(fn, cluster.localTables.control, cluster.localTables.log, cluster.localTables.kv);
    // Home heads and missing ranges are read from the home log; reports go to home `control`.
    grantTableRead(fn, cluster.homeTables.log, cluster.homeTables.kv);
    grantReplicaReports(fn, cluster.homeTables.control);
    // The region's log copy follows the home's compaction points, trimmed like the home log.
    grantCompactionRead(fn, cluster.homeTables.control);
    grantLogTrim(fn, cluster.localTables.log);
    this.rule = new events.Rule(this, 'Schedule', {
      ruleName: `${config.prefix}-replica-heartbeat`,
      description: 'Starts the epochkv replica heartbeat every minute',
      schedule: events.Schedule.rate(scheduleRate),
      targets: [new targets.LambdaFunction(fn, { retryAttempts: 2, maxEventAge: Duration.minutes(1) })],
    });
    this.handler.acknowledge(scheduledRunFindings);
    Validations.of(this.rule).acknowledge(scheduleTargetFinding);
  }
}
