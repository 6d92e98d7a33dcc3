import { ArnFormat, CfnOutput, Duration, Stack, Validations } from 'aws-cdk-lib';
import type * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { InfraConfig } from './config.ts';
import { clusterDimension, metricNames, metricNamespace, metricServices, serviceDimension } from './metrics.ts';
import type { HandlerFunction } from './handler-function.ts';
import { functionName, replicationQueueNames, tableNames } from './names.ts';

/** Logical ID (and so output key) of the alarm topic's ARN in each service stack. */
export const alarmTopicOutput = 'AlarmTopicArn';

/** The API 5xx alarm: the share of requests answered 5xx over 5 minutes, once there are enough to judge. */
export const apiServerErrorRatePercent = 5;
export const apiServerErrorRateMinRequests = 20;
/** DynamoDB throttle events (reads and writes, over the region's three tables) in one minute that raise the alarm. */
export const dynamoThrottleEventsAlarm = 1;

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
 * Alarms of one region, the region's alarm topic they notify, and (at home) the cluster
 * dashboard. Custom metrics come from the handlers through Powertools Metrics (see
 * lib/infra/metrics.ts for who publishes what).
 */
export class Monitoring extends Construct {
  readonly alarms: cloudwatch.Alarm[] = [];
  /** Every alarm of the region notifies this topic on ALARM and OK (output `AlarmTopicArn`). */
  readonly topic: sns.Topic;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const { config } = props;
    const stack = Stack.of(this);
    const region = stack.region;
    this.topic = this.#alarmTopic(config);
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
    // A rate, not a count: 10 errors mean an outage at 20 requests and noise at 100 000. API
    // Gateway's metrics include the 5xx it answers itself (timeouts, a failed function).
    const window = Duration.minutes(5);
    this.#alarm('ApiServerErrorRate', {
      alarmDescription: `epochkv: more than ${apiServerErrorRatePercent}% of API requests answered 5xx over 5 minutes (store unavailable, no leader for long, function failing) in ${region}`,
      metric: new cloudwatch.MathExpression({
        expression: `IF(requests >= ${apiServerErrorRateMinRequests}, 100 * errors / requests, 0)`,
        usingMetrics: { errors: props.api.metricServerError({ period: window, statistic: 'Sum' }), requests: props.api.metricCount({ period: window, statistic: 'Sum' }) },
        period: window,
        label: 'API 5xx (% of requests)',
      }),
      threshold: apiServerErrorRatePercent,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    // On-demand tables still throttle (a hot partition, a sudden doubling past the previous
    // peak); a throttled renewal can cost a lease, a throttled write answers 503.
    const tables = Object.values(tableNames(config.prefix));
    const throttleMetrics: Record<string, cloudwatch.IMetric> = {};
    for (const [position, table] of tables.entries()) {
      for (const metricName of ['ReadThrottleEvents', 'WriteThrottleEvents']) {
        throttleMetrics[`${metricName === 'ReadThrottleEvents' ? 'read' : 'write'}${position}`] = new cloudwatch.Metric({
          namespace: 'AWS/DynamoDB',
          metricName,
          dimensionsMap: { TableName: table },
          statistic: 'Sum',
          period: minute,
        });
      }
    }
    this.#alarm('DynamoThrottles', {
      alarmDescription: `epochkv: DynamoDB throttled requests to ${tables.join(', ')} in ${region} (leases may lapse, writes answer 503)`,
      metric: new cloudwatch.MathExpression({ expression: `SUM([${Object.keys(throttleMetrics).join(', ')}])`, usingMetrics: throttleMetrics, period: minute, label: 'DynamoDB throttle events' }),
      threshold: dynamoThrottleEventsAlarm,
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
    const alarm = new cloudwatch.Alarm(this, id, props);
    // OK too: whoever was paged learns that it cleared.
    const action = new cloudwatchActions.SnsAction(this.topic);
    alarm.addAlarmAction(action);
    alarm.addOkAction(action);
    this.alarms.push(alarm);
  }

  /**
   * The region's alarm topic (alarms notify a topic in their own region), with its ARN as an
   * exported output for other subscribers (chat, paging), and the configured email if any.
   */
  #alarmTopic(config: InfraConfig): sns.Topic {
    const stack = Stack.of(this);
    const topic = new sns.Topic(this, 'AlarmTopic', {
      topicName: `${config.prefix}-alarms`,
      displayName: `epochkv ${config.prefix} alarms (${stack.region})`,
      enforceSSL: true,
    });
    // The TLS guard replaces the default topic policy, so CloudWatch is let in explicitly: this
    // account's alarms only.
    topic.grantPublish(
      new iam.PrincipalWithConditions(new iam.ServicePrincipal('cloudwatch.amazonaws.com'), {
        StringEquals: { 'aws:SourceAccount': stack.account },
        ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
      }),
    );
    if (config.alarmEmail !== undefined) topic.addSubscription(new subscriptions.EmailSubscription(config.alarmEmail));
    new CfnOutput(this, 'AlarmTopicArn', {
      value: topic.topicArn,
      description: `SNS topic every epochkv alarm in ${stack.region} notifies; subscribe to it (email: -c epochkv:alarmEmail=...)`,
      exportName: `${stack.stackName}-${alarmTopicOutput}`,
    }).overrideLogicalId(alarmTopicOutput);
    Validations.of(topic).acknowledge({
      id: 'AwsSolutions-SNS2',
      reason: 'CloudWatch alarms cannot publish to a topic encrypted with the AWS managed SNS key, and a customer managed key (USD 1 a month per region) would protect only alarm names and states, which hold no data.',
    });
    for (const subscription of topic.node.findAll().filter((child) => child instanceof sns.Subscription)) {
      Validations.of(subscription).acknowledge({
        id: 'Serverless-SNSRedrivePolicy',
        reason: 'An alarm notification that email could not deliver is not worth replaying later; the alarm state and its history stay in CloudWatch, and the next state change notifies again.',
      });
    }
    return topic;
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
        title: 'Writes: commits and lost races (per region of the API that took them)',
        left: regions.map((region) => clusterMetric(config, metricServices.api, metricNames.commits, 'Sum', region).with({ label: `commits ${region}` })),
        right: regions.map((region) => clusterMetric(config, metricServices.api, metricNames.lostRaces, 'Sum', region).with({ label: `lost races ${region}` })),
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: 'API handler latency p99 (ms) and replica applied entries',
        left: regions.map((region) => clusterMetric(config, metricServices.api, metricNames.apiLatencyMs, 'p99', region).with({ label: `p99 ${region}` })),
        right: config.replicaRegions.map((region) => clusterMetric(config, metricServices.apply, metricNames.appliedEntries, 'Sum', region).with({ label: `applied ${region}` })),
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
