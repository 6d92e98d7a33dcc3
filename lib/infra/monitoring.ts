import { Duration, Stack } from 'aws-cdk-lib';
import type * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { InfraConfig } from './config.ts';
import { clusterDimension, metricNames, metricNamespace, metricServices, serviceDimension } from './metrics.ts';
import type { HandlerFunction } from './handler-function.ts';
import { functionName, replicationQueueNames } from './names.ts';

const minute = Duration.minutes(1);

/** A custom metric of the cluster, in a given region (CloudWatch metrics are regional). */
export function clusterMetric(config: InfraConfig, service: string, metricName: string, statistic: string, region?: string): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: metricNamespace,
    metricName,
    dimensionsMap: { [serviceDimension]: service, [clusterDimension]: config.prefix },
    statistic,
    period: minute,
    ...(region === undefined ? {} : { region }),
  });
}

export interface MonitoringProps {
  config: InfraConfig;
  /** Every function of the region: one error alarm each. */
  functions: HandlerFunction[];
  api: apigateway.RestApi;
  /** Home region: the node fleet publishes LeaderlessShards. */
  home?: true;
  /** Replica regions: the dead-letter queue and the lag the heartbeat publishes. */
  replica?: { deadLetterQueue: sqs.IQueue };
  /** Home region: one dashboard over every region. */
  dashboard?: true;
}

/**
 * Alarms of one region, and (at home) the cluster dashboard. Custom metrics come from the
 * handlers through Powertools Metrics (see lib/infra/metrics.ts for who publishes what).
 */
export class Monitoring extends Construct {
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const { config } = props;
    const region = Stack.of(this).region;
    for (const handler of props.functions) {
      const fn = handler.function;
      this.#alarm(`Errors-${handler.name}`, {
        alarmDescription: `epochkv: function ${handler.name} threw or timed out (${region})`,
        metric: fn.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
    this.#alarm('ApiServerErrors', {
      alarmDescription: `epochkv: the API answered 5xx (store unavailable, no leader for long) in ${region}`,
      metric: props.api.metricServerError({ period: Duration.minutes(5), statistic: 'Sum' }),
      threshold: 10,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (props.home) {
      // Every node publishes the count it saw; the minimum over a minute is above zero only if
      // no observation in that minute saw every shard led. No data at all means no node runs.
      this.#alarm('NoLeader', {
        alarmDescription: 'epochkv: some shard had no live leader for two minutes (or no node function is running); writes to it are refused',
        metric: clusterMetric(config, metricServices.node, metricNames.leaderlessShards, 'Minimum'),
        threshold: 0,
        evaluationPeriods: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
    }
    if (props.replica !== undefined) {
      this.#alarm('ReplicaLag', {
        alarmDescription: `epochkv: replica ${region} stayed more than ${config.replicaLagEntriesAlarm} entries behind the home head for 5 minutes (or its heartbeat stopped reporting)`,
        metric: clusterMetric(config, metricServices.replicaHeartbeat, metricNames.replicaLagEntries, 'Maximum'),
        threshold: config.replicaLagEntriesAlarm,
        evaluationPeriods: 5,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
      this.#alarm('DeadLetters', {
        alarmDescription: `epochkv: poison replication messages in the dead-letter queue of ${region}; inspect them (the replica repairs from the home log meanwhile)`,
        metric: props.replica.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: minute, statistic: 'Maximum' }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
    if (props.dashboard) this.#dashboard(config);
  }

  #alarm(id: string, props: cloudwatch.AlarmProps): void {
    this.alarms.push(new cloudwatch.Alarm(this, id, props));
  }

  /** One dashboard at home over every region: widgets name the region of each metric. */
  #dashboard(config: InfraConfig): void {
    const lambdaErrors = (name: string, region: string) =>
      new cloudwatch.Metric({ namespace: 'AWS/Lambda', metricName: 'Errors', dimensionsMap: { FunctionName: name }, statistic: 'Sum', period: minute, region, label: `${name} ${region}` });
    const apiMetric = (metricName: string, region: string) =>
      new cloudwatch.Metric({ namespace: 'AWS/ApiGateway', metricName, dimensionsMap: { ApiName: `${config.prefix}-api` }, statistic: 'Sum', period: minute, region, label: `${metricName} ${region}` });
    const dlqName = replicationQueueNames(config.prefix).dlq;
    const regions = [config.homeRegion, ...config.replicaRegions];
    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `${config.prefix}-cluster`, defaultInterval: Duration.hours(3) });
    dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: `Alarms (${config.homeRegion})`, alarms: this.alarms, width: 24, height: 4 }),
      new cloudwatch.GraphWidget({
        title: 'Leaderless shards (as seen by the nodes)',
        left: [
          clusterMetric(config, metricServices.node, metricNames.leaderlessShards, 'Maximum').with({ label: 'max' }),
          clusterMetric(config, metricServices.node, metricNames.leaderlessShards, 'Minimum').with({ label: 'min' }),
        ],
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: 'Node tick errors',
        left: [clusterMetric(config, metricServices.node, metricNames.nodeTickErrors, 'Sum')],
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: 'Replica lag (entries behind the home head)',
        left: config.replicaRegions.map((region) => clusterMetric(config, metricServices.replicaHeartbeat, metricNames.replicaLagEntries, 'Maximum', region).with({ label: region })),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Replica apply lag (ms, commit to apply of the last entry)',
        left: config.replicaRegions.map((region) => clusterMetric(config, metricServices.replicaHeartbeat, metricNames.replicaApplyLagMs, 'Maximum', region).with({ label: region })),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Dead-letter queue depth',
        left: config.replicaRegions.map(
          (region) =>
            new cloudwatch.Metric({ namespace: 'AWS/SQS', metricName: 'ApproximateNumberOfMessagesVisible', dimensionsMap: { QueueName: dlqName }, statistic: 'Maximum', period: minute, region, label: region }),
        ),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'API requests and 5xx',
        left: regions.map((region) => apiMetric('Count', region)),
        right: regions.map((region) => apiMetric('5XXError', region)),
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: 'Function errors',
        left: [
          ...config.nodeIds.map((id) => lambdaErrors(functionName(config.prefix, id), config.homeRegion)),
          ...regions.map((region) => lambdaErrors(functionName(config.prefix, 'api'), region)),
          ...config.replicaRegions.flatMap((region) => [lambdaErrors(functionName(config.prefix, 'apply'), region), lambdaErrors(functionName(config.prefix, 'replica-heartbeat'), region)]),
        ],
        width: 12,
      }),
    );
  }
}
