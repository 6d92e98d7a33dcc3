import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import { ServerlessChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { limits } from '../../lib/core/limits.ts';
import { apiStageName, routeNames } from '../../lib/infra/api.ts';
import { contextKeys, infraConfigFromContext, infraDefaults, InfraConfigError, nodeConcurrencyNeeded, validateInfraConfig } from '../../lib/infra/config.ts';
import { addGatewayErrors, gatewayErrors, gatewayErrorTemplate } from '../../lib/infra/gateway-responses.ts';
import { alarmTopicOutput, apiServerErrorRatePercent } from '../../lib/infra/monitoring.ts';
import { nodeTimeout, scheduleRate } from '../../lib/infra/node-fleet.ts';
import { nagPacks, stackNames } from '../../lib/infra/stacks.ts';
import { policyDocuments, actionsOf } from './policies.ts';
import { synthesizeCluster, type SynthesizedCluster } from './synth.ts';

/**
 * Issue 22, sections 5 and 6, infrastructure: alarms that reach someone (a topic per region,
 * every alarm wired to it, an optional email), tracing on every function and stage, reserved
 * concurrency for the nodes, API Gateway's own errors in the handler's `{"error","message"}`
 * shape, and both cdk-nag packs clean.
 */

type Resource = { Properties: Record<string, unknown> };
let cluster: SynthesizedCluster;
/** The same app with an alarm email and node reservation turned off. */
let variant: SynthesizedCluster;
const template = (from: SynthesizedCluster, name: string): Template => {
  const found = from.templates.get(name);
  if (found === undefined) throw new Error(`no stack ${name}`);
  return found;
};
const serviceStacks = (from: SynthesizedCluster) => [
  { region: from.config.homeRegion, name: stackNames.home(from.config) },
  ...from.config.replicaRegions.map((region) => ({ region, name: stackNames.replica(from.config, region) })),
];
const resources = (t: Template, type: string) => Object.entries(t.findResources(type)) as [string, Resource][];

beforeAll(() => {
  // No function code is read here: skip bundling.
  cluster = synthesizeCluster({}, { bundle: false });
  variant = synthesizeCluster({ alarmEmail: 'oncall@example.com', nodeReservedConcurrency: 0 }, { bundle: false });
});

describe('Alarms reach someone', () => {
  it('every alarm of every stack notifies its own region\'s alarm topic on ALARM and on OK', () => {
    let alarms = 0;
    for (const stack of cluster.stacks.all) {
      const t = template(cluster, stack.stackName);
      const topics = resources(t, 'AWS::SNS::Topic');
      const stackAlarms = resources(t, 'AWS::CloudWatch::Alarm');
      if (stackAlarms.length === 0) continue;
      expect(topics, stack.stackName).toHaveLength(1);
      const [topicId] = topics[0] as [string, Resource];
      for (const [alarmId, alarm] of stackAlarms) {
        expect(alarm.Properties.AlarmActions, `${stack.stackName}/${alarmId}`).toEqual([{ Ref: topicId }]);
        expect(alarm.Properties.OKActions, `${stack.stackName}/${alarmId}`).toEqual([{ Ref: topicId }]);
        alarms += 1;
      }
    }
    // Home: node and API errors, API 5xx rate, DynamoDB throttles, NoLeader. Each replica: apply,
    // heartbeat and API errors, API 5xx rate, DynamoDB throttles, lag, dead letters.
    const { config } = cluster;
    expect(alarms).toBe(config.nodeIds.length + 4 + 7 * config.replicaRegions.length);
    // The data stacks hold no alarm and no topic: alarms live beside what they watch.
    for (const region of [config.homeRegion, ...config.replicaRegions]) template(cluster, stackNames.data(config, region)).resourceCountIs('AWS::SNS::Topic', 0);
  });

  it('exports each region\'s topic ARN as the output AlarmTopicArn; the topic is TLS-only and lets CloudWatch of this account publish', () => {
    expect(alarmTopicOutput).toBe('AlarmTopicArn');
    for (const { region, name } of serviceStacks(cluster)) {
      const t = template(cluster, name);
      const [[topicId, topic]] = resources(t, 'AWS::SNS::Topic') as [[string, Resource]];
      expect(topic.Properties).toMatchObject({ TopicName: `${cluster.config.prefix}-alarms` });
      t.hasOutput(alarmTopicOutput, { Value: { Ref: topicId }, Export: { Name: `${name}-${alarmTopicOutput}` } });
      const statements = policyDocuments(t).filter((document) => document.type === 'AWS::SNS::TopicPolicy').flatMap((document) => document.statements);
      expect(statements).toContainEqual(expect.objectContaining({ Effect: 'Deny', Principal: '*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }));
      const allow = statements.filter((statement) => statement.Effect === 'Allow');
      expect(allow, region).toHaveLength(1);
      expect(allow[0]).toMatchObject({ Principal: { Service: 'cloudwatch.amazonaws.com' }, Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } } });
      expect(actionsOf(allow[0] as never)).toEqual(['sns:Publish']);
      // No email unless configured.
      t.resourceCountIs('AWS::SNS::Subscription', 0);
    }
  });

  it('subscribes the email given as -c epochkv:alarmEmail to every region\'s topic, and refuses one that is not an address', () => {
    for (const { name } of serviceStacks(variant)) {
      const t = template(variant, name);
      const [[topicId]] = resources(t, 'AWS::SNS::Topic') as [[string, Resource]];
      t.resourcePropertiesCountIs('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@example.com', TopicArn: { Ref: topicId } }, 1);
    }
    expect(infraConfigFromContext((key) => (key === contextKeys.alarmEmail ? 'oncall@example.com' : undefined)).alarmEmail).toBe('oncall@example.com');
    expect(() => infraConfigFromContext((key) => (key === contextKeys.alarmEmail ? 'oncall' : undefined))).toThrow(/epochkv:alarmEmail must be an email address/);
  });

  it('alarms on the API\'s 5xx rate (not a count) and on DynamoDB throttles of the region\'s tables, in every region', () => {
    for (const { name } of serviceStacks(cluster)) {
      const t = template(cluster, name);
      const alarms = resources(t, 'AWS::CloudWatch::Alarm').map(([, alarm]) => alarm.Properties);
      const rate = alarms.find((alarm) => JSON.stringify(alarm.Metrics ?? []).includes('5XXError'));
      expect(rate, name).toMatchObject({ Threshold: apiServerErrorRatePercent, ComparisonOperator: 'GreaterThanThreshold' });
      const metrics = JSON.stringify(rate?.Metrics);
      expect(metrics).toContain('100 * errors / requests');
      expect(metrics).toContain('"MetricName":"Count"');
      const throttles = alarms.find((alarm) => JSON.stringify(alarm.Metrics ?? []).includes('ThrottleEvents'));
      const watched = JSON.stringify(throttles?.Metrics);
      for (const table of ['control', 'log', 'kv']) {
        for (const metric of ['ReadThrottleEvents', 'WriteThrottleEvents']) {
          expect(watched, `${name}: ${metric} of ${table}`).toMatch(new RegExp(`"Name":"TableName","Value":"${cluster.config.prefix}-${table}"\\}\\],"MetricName":"${metric}"`));
        }
      }
      expect(throttles).toMatchObject({ Threshold: 1, TreatMissingData: 'notBreaching' });
    }
  });
});

describe('Tracing', () => {
  it('is active on every function and enabled on every REST API stage', () => {
    let functions = 0;
    let stages = 0;
    for (const stack of cluster.stacks.all) {
      const t = template(cluster, stack.stackName);
      for (const [id, fn] of resources(t, 'AWS::Lambda::Function')) {
        expect(fn.Properties.TracingConfig, `${stack.stackName}/${id}`).toEqual({ Mode: 'Active' });
        functions += 1;
      }
      for (const [id, stage] of resources(t, 'AWS::ApiGateway::Stage')) {
        expect(stage.Properties, `${stack.stackName}/${id}`).toMatchObject({ StageName: apiStageName, TracingEnabled: true });
        stages += 1;
      }
    }
    const { config } = cluster;
    expect(functions).toBe(config.nodeIds.length + 1 + 3 * config.replicaRegions.length);
    expect(stages).toBe(1 + config.replicaRegions.length);
  });

  it('adds only X-Ray\'s own actions on Resource "*" (the one wildcard resource the roles hold)', () => {
    for (const stack of cluster.stacks.all) {
      for (const document of policyDocuments(template(cluster, stack.stackName)).filter((candidate) => candidate.type === 'AWS::IAM::Policy')) {
        for (const statement of document.statements.filter((candidate) => candidate.Effect === 'Allow' && candidate.Resource === '*')) {
          expect(actionsOf(statement).sort(), `${stack.stackName}/${document.logicalId}`).toEqual(['xray:PutTelemetryRecords', 'xray:PutTraceSegments']);
        }
      }
    }
  });
});

describe('Reserved concurrency', () => {
  it('sets aside executions for each node function, sized to overlapping scheduled runs; other functions share the pool', () => {
    // Runs start every scheduleRate and last up to nodeTimeout: that many overlap, plus one for a late schedule.
    expect(nodeConcurrencyNeeded).toBeGreaterThanOrEqual(Math.ceil(nodeTimeout.toSeconds() / scheduleRate.toSeconds()) + 1);
    expect(cluster.config.nodeReservedConcurrency).toBe(nodeConcurrencyNeeded);
    const nodeNames = new Set(cluster.config.nodeIds.map((id) => `${cluster.config.prefix}-${id}`));
    for (const stack of cluster.stacks.all) {
      for (const [, fn] of resources(template(cluster, stack.stackName), 'AWS::Lambda::Function')) {
        const reserved = fn.Properties.ReservedConcurrentExecutions;
        if (nodeNames.has(String(fn.Properties.FunctionName))) expect(reserved, String(fn.Properties.FunctionName)).toBe(nodeConcurrencyNeeded);
        else expect(reserved, String(fn.Properties.FunctionName)).toBeUndefined();
      }
    }
  });

  it('is configurable: 0 reserves nothing; too little or more than the default account quota allows is refused', () => {
    for (const [, fn] of resources(template(variant, stackNames.home(variant.config)), 'AWS::Lambda::Function')) expect(fn.Properties.ReservedConcurrentExecutions).toBeUndefined();
    const attempt = (value: number, nodes = infraDefaults.nodeIds) => () => validateInfraConfig({ ...infraDefaults, account: undefined, nodeIds: nodes, nodeReservedConcurrency: value });
    expect(attempt(1)).toThrow(InfraConfigError);
    expect(attempt(1)).toThrow(/epochkv:nodeReservedConcurrency must be 0 \(reserve nothing\) or an integer of at least 2/);
    expect(attempt(2)).not.toThrow();
    expect(attempt(300, ['a', 'b', 'c', 'd'])).toThrow(/stays within 900/);
  });
});

describe('API Gateway\'s own errors', () => {
  const messageString = JSON.stringify('User: arn:aws:iam::123456789012:user/x is not authorized to perform: execute-api:Invoke with "quotes"');
  /** A gateway response body as API Gateway renders it: `$context.error.messageString` is a quoted string. */
  const render = (body: string) => JSON.parse(body.replaceAll('$context.error.messageString', messageString)) as unknown;

  it('answer in the handler\'s {"error","message"} shape for 403 (IAM), 429 (throttle), the 4xx/5xx defaults, timeouts and a missing route, in every region', () => {
    const types = gatewayErrors(cluster.config, routeNames()).map((entry) => entry.type.responseType);
    for (const required of ['ACCESS_DENIED', 'MISSING_AUTHENTICATION_TOKEN', 'INVALID_SIGNATURE', 'EXPIRED_TOKEN', 'THROTTLED', 'DEFAULT_4XX', 'DEFAULT_5XX', 'INTEGRATION_TIMEOUT', 'REQUEST_TOO_LARGE']) {
      expect(types).toContain(required);
    }
    for (const { name } of serviceStacks(cluster)) {
      const found = resources(template(cluster, name), 'AWS::ApiGateway::GatewayResponse');
      expect(found.map(([, response]) => response.Properties.ResponseType).sort(), name).toEqual([...types].sort());
      for (const [id, response] of found) {
        const { ResponseTemplates: templates, ResponseParameters: headers, StatusCode: status } = response.Properties as { ResponseTemplates: Record<string, string>; ResponseParameters: Record<string, string>; StatusCode?: string };
        expect(Object.keys(templates), id).toEqual(['application/json']);
        const body = render(templates['application/json'] as string);
        expect(Object.keys(body as object).sort(), id).toEqual(['error', 'message']);
        expect(body, id).toEqual({ error: expect.stringMatching(/^[A-Z][A-Za-z]+$/), message: expect.any(String) });
        expect(headers['gatewayresponse.header.Content-Type'], id).toBe("'application/json; charset=utf-8'");
        // API Gateway's status per type stands (a default 4xx given one status would answer every 4xx with it).
        expect(status, id).toBeUndefined();
      }
    }
  });

  it('429 carries Retry-After and names the configured rate; a missing route names the routes', () => {
    const t = template(cluster, stackNames.home(cluster.config));
    const responses = Object.fromEntries(resources(t, 'AWS::ApiGateway::GatewayResponse').map(([, response]) => [response.Properties.ResponseType as string, response.Properties]));
    const throttled = responses.THROTTLED as { ResponseParameters: Record<string, string>; ResponseTemplates: Record<string, string> };
    expect(throttled.ResponseParameters['gatewayresponse.header.Retry-After']).toBe(`'${limits.retryAfterSeconds}'`);
    expect(render(throttled.ResponseTemplates['application/json'] as string)).toEqual({
      error: 'Throttled',
      message: `too many requests: this API takes ${cluster.config.apiRateLimitPerSecond} requests a second (bursts of ${cluster.config.apiBurstLimit}); retry after ${limits.retryAfterSeconds} s`,
    });
    const missing = responses.MISSING_AUTHENTICATION_TOKEN as { ResponseTemplates: Record<string, string> };
    const message = (render(missing.ResponseTemplates['application/json'] as string) as { message: string }).message;
    for (const route of routeNames()) expect(message).toContain(route);
    expect(routeNames()).toContain('GET|PUT|DELETE /kv/{key}');
    const denied = responses.ACCESS_DENIED as { ResponseTemplates: Record<string, string> };
    // IAM's own reason reaches the caller, quotes escaped.
    expect(render(denied.ResponseTemplates['application/json'] as string)).toEqual({ error: 'AccessDenied', message: JSON.parse(messageString) });
  });

  it('the template check fails on a body that is not the shape', () => {
    expect(gatewayErrorTemplate({ error: 'X', message: '"m"' })).toBe('{"error":"X","message":"m"}');
    const stack = new Stack(new App(), 'probe');
    const api = new apigw.RestApi(stack, 'Api');
    api.root.addMethod('GET', new apigw.MockIntegration());
    api.addGatewayResponse('Plain', { type: apigw.ResponseType.DEFAULT_4XX, templates: { 'application/json': '{"message":$context.error.messageString}' } });
    const [[, plain]] = resources(Template.fromStack(stack), 'AWS::ApiGateway::GatewayResponse') as [[string, Resource]];
    const body = render((plain.Properties.ResponseTemplates as Record<string, string>)['application/json'] as string);
    expect(() => expect(Object.keys(body as object).sort()).toEqual(['error', 'message'])).toThrow();
    // And the real ones on a fresh API have the shape.
    const fresh = new Stack(new App(), 'fresh');
    const freshApi = new apigw.RestApi(fresh, 'Api');
    freshApi.root.addMethod('GET', new apigw.MockIntegration());
    expect(addGatewayErrors(freshApi, cluster.config, ['GET /']).length).toBe(gatewayErrors(cluster.config, ['GET /']).length);
  });
});

describe('cdk-nag: AwsSolutions and Serverless', () => {
  it('runs both packs on the app, and the Serverless pack finds nothing unacknowledged (with and without an alarm email)', () => {
    expect(nagPacks(new App()).map((pack) => pack.readPackName).sort()).toEqual(['AwsSolutions', 'Serverless']);
    for (const from of [cluster, variant]) {
      const report = new ServerlessChecks(from.app).validateScope(from.app);
      expect(report.violations.map((violation) => `${violation.ruleName}: ${violation.violatingResources.map((resource) => resource.constructPath).join(', ')}`)).toEqual([]);
    }
  });
});
