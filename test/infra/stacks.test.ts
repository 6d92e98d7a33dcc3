import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { App, Stack, Validations } from 'aws-cdk-lib';
import { Capture, Match, Template } from 'aws-cdk-lib/assertions';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks, ServerlessChecks } from 'cdk-nag';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { localCredentials, makeDynamoClient } from '../../lib/adapters/aws/clients.ts';
import { DynamoStore } from '../../lib/adapters/aws/dynamo-store.ts';
import { ensureTables } from '../../lib/local/tables.ts';
import { configFromEnv, env } from '../../lib/config.ts';
import { dynamoActions } from '../../lib/infra/access.ts';
import { apiRoutes, apiStageName } from '../../lib/infra/api.ts';
import { clusterConfigFor, infraDefaults, validateInfraConfig } from '../../lib/infra/config.ts';
import { applyTimeout, statefulLogicalIds } from '../../lib/infra/data.ts';
import { projectRoot } from '../../lib/infra/handler-function.ts';
import { metricNames, metricNamespace } from '../../lib/infra/metrics.ts';
import { replicationQueueNames, tableNames } from '../../lib/infra/names.ts';
import { nodeTimeout } from '../../lib/infra/node-fleet.ts';
import { replicaHeartbeatTimeout } from '../../lib/infra/replica-fleet.ts';
import { compactionPartition, replicaReportPartition, replicationQueueDefinition, tableDefinitions } from '../../lib/infra/schema.ts';
import { DataStack, stackNames } from '../../lib/infra/stacks.ts';
import { policyDocuments, tableGrants, unauthenticatedMethods, wildcardAllowActions } from './policies.ts';
import { uniquePrefix } from '../support.ts';
import { synthesizeCluster, type SynthesizedCluster } from './synth.ts';

let cluster: SynthesizedCluster;
const template = (name: string): Template => {
  const found = cluster.templates.get(name);
  if (found === undefined) throw new Error(`no stack ${name}; stacks: ${[...cluster.templates.keys()].join(', ')}`);
  return found;
};
const homeTemplate = () => template(stackNames.home(cluster.config));
const replicaTemplate = (region: string) => template(stackNames.replica(cluster.config, region));
const dataTemplate = (region: string) => template(stackNames.data(cluster.config, region));
const regions = () => [cluster.config.homeRegion, ...cluster.config.replicaRegions];

/**
 * A scheduled handler loops min(invocationBudgetMs, remaining - timeoutMarginMs): both read from
 * its source, so a longer loop there cannot outgrow the function timeout here unnoticed.
 */
function loopBudgetOf(file: string): { budgetMs: number; marginMs: number } {
  const source = readFileSync(path.join(projectRoot, file), 'utf8');
  const constant = (name: string) => Number(new RegExp(`const ${name} = ([\\d_]+);`).exec(source)?.[1]?.replaceAll('_', ''));
  const found = { budgetMs: constant('invocationBudgetMs'), marginMs: constant('timeoutMarginMs') };
  expect(found.budgetMs, `${file}: invocationBudgetMs`).toBeGreaterThan(0);
  expect(found.marginMs, `${file}: timeoutMarginMs`).toBeGreaterThan(0);
  return found;
}

beforeAll(() => {
  // One synthesized app for the whole file: bundling runs once per handler. Its own prefix, so
  // the bundles can run against DynamoDB Local beside other tests.
  cluster = synthesizeCluster({ prefix: uniquePrefix('stacks') });
  console.log(`infra: built and synthesized ${cluster.stacks.all.length} stacks (4 esbuild bundles) in ${Math.round(cluster.synthMs)} ms`);
});

describe('App: stacks per region', () => {
  it('synthesizes a data stack and a service stack for every region, each with an explicit region, fast and with no lookups', () => {
    const { config, assembly } = cluster;
    expect(cluster.stacks.all.map((stack) => [stack.stackName, stack.region])).toEqual([
      ...regions().map((region) => [stackNames.data(config, region), region]),
      [stackNames.home(config), config.homeRegion],
      ...config.replicaRegions.map((region) => [stackNames.replica(config, region), region]),
    ]);
    // No context lookups pending: synthesis needs no credentials and no network.
    expect(assembly.manifest.missing ?? []).toEqual([]);
    expect(cluster.synthMs).toBeLessThan(60_000);
  });

  it('keeps tables and queues in the data stacks only, under pinned logical IDs', () => {
    const tableIds = Object.values(statefulLogicalIds.tables).sort();
    for (const region of regions()) {
      const data = dataTemplate(region);
      expect(Object.keys(data.findResources('AWS::DynamoDB::Table')).sort()).toEqual(tableIds);
      // Every region has its queue, so a promotion never changes a data stack.
      const queueIds = [statefulLogicalIds.queue, statefulLogicalIds.deadLetterQueue].sort();
      expect(Object.keys(data.findResources('AWS::SQS::Queue')).sort()).toEqual(queueIds);
    }
    // The IDs themselves, literally: changing one replaces a table with an empty one.
    expect(statefulLogicalIds).toEqual({
      tables: { control: 'ControlTable', log: 'LogTable', kv: 'KvTable' },
      queue: 'ReplicationQueue',
      deadLetterQueue: 'ReplicationDeadLetterQueue',
    });
    for (const name of [stackNames.home(cluster.config), ...cluster.config.replicaRegions.map((region) => stackNames.replica(cluster.config, region))]) {
      template(name).resourceCountIs('AWS::DynamoDB::Table', 0);
      template(name).resourceCountIs('AWS::SQS::Queue', 0);
    }
  });
});

describe('Tables', () => {
  it('are on-demand, with point-in-time recovery, AWS managed KMS encryption, TTL on the log, deletion protection and RETAIN', () => {
    for (const region of regions()) {
      const data = dataTemplate(region);
      for (const definition of tableDefinitions) {
        data.hasResource('AWS::DynamoDB::Table', {
          Properties: Match.objectLike({
            TableName: `${cluster.config.prefix}-${definition.suffix}`,
            BillingMode: 'PAY_PER_REQUEST',
            PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
            SSESpecification: { SSEEnabled: true },
            DeletionProtectionEnabled: true,
            KeySchema: [
              { AttributeName: definition.partitionKey.name, KeyType: 'HASH' },
              { AttributeName: definition.sortKey.name, KeyType: 'RANGE' },
            ],
            TimeToLiveSpecification: definition.timeToLiveAttribute === undefined ? Match.absent() : { AttributeName: definition.timeToLiveAttribute, Enabled: true },
          }),
          DeletionPolicy: 'Retain',
          UpdateReplacePolicy: 'Retain',
        });
      }
    }
  });

  it('drop deletion protection and RETAIN when configured for dev', () => {
    const config = validateInfraConfig({ ...infraDefaults, account: undefined, deletionProtection: false });
    const data = Template.fromStack(new DataStack(new App(), 'dev', { config, region: 'eu-west-1' }));
    for (const resource of Object.values({ ...data.findResources('AWS::DynamoDB::Table'), ...data.findResources('AWS::SQS::Queue') })) {
      expect(resource).toMatchObject({ DeletionPolicy: 'Delete' });
    }
    data.allResourcesProperties('AWS::DynamoDB::Table', { DeletionProtectionEnabled: false });
  });
});

describe('Node fleet', () => {
  it('has one function per node identity and one scheduled rule per node, rate(1 minute), targeting that node', () => {
    const home = homeTemplate();
    for (const nodeId of cluster.config.nodeIds) {
      const functionId = new Capture();
      home.hasResourceProperties('AWS::Events::Rule', {
        Name: `${cluster.config.prefix}-${nodeId}`,
        ScheduleExpression: 'rate(1 minute)',
        State: 'ENABLED',
        Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [functionId, 'Arn'] } })],
      });
      const target = home.toJSON().Resources[functionId.asString()];
      expect(target.Properties).toMatchObject({
        FunctionName: `${cluster.config.prefix}-${nodeId}`,
        Environment: { Variables: { [env.nodeId]: nodeId } },
      });
    }
    expect(Object.keys(home.findResources('AWS::Events::Rule'))).toHaveLength(cluster.config.nodeIds.length);
    // The rules use EventBridge (which LocalStack's free tier runs), not EventBridge Scheduler.
    home.resourceCountIs('AWS::Scheduler::Schedule', 0);
  });

  it('runs Node.js 24 on arm64 with a timeout above the loop budget of functions/node.ts', () => {
    const { budgetMs, marginMs } = loopBudgetOf('functions/node.ts');
    // Longer than the schedule, so consecutive invocations of a node overlap.
    expect(budgetMs).toBeGreaterThan(60_000);
    expect(nodeTimeout.toMilliseconds()).toBeGreaterThan(budgetMs + marginMs);
    for (const nodeId of cluster.config.nodeIds) {
      homeTemplate().hasResourceProperties('AWS::Lambda::Function', {
        FunctionName: `${cluster.config.prefix}-${nodeId}`,
        Runtime: 'nodejs24.x',
        Architectures: ['arm64'],
        Handler: 'index.handler',
        Timeout: nodeTimeout.toSeconds(),
      });
    }
    // A failed or late scheduled run is replaced by the next one, not retried.
    homeTemplate().resourcePropertiesCountIs('AWS::Lambda::EventInvokeConfig', { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 }, cluster.config.nodeIds.length);
  });

  it('gives every function the environment of the lib/config.ts contract, which the handlers accept', () => {
    const known = new Set<string>(Object.values(env));
    for (const stack of cluster.stacks.all) {
      for (const fn of Object.values(template(stack.stackName).findResources('AWS::Lambda::Function'))) {
        const variables = (fn as { Properties: { Environment: { Variables: Record<string, string> } } }).Properties.Environment.Variables;
        const unknown = Object.keys(variables).filter((name) => !known.has(name) && name !== 'NODE_OPTIONS');
        expect(unknown, `${stack.stackName}: variables outside the contract`).toEqual([]);
        // What the handler will read at cold start is what the stack meant.
        expect(configFromEnv(variables)).toEqual(clusterConfigFor(cluster.config, stack.region));
      }
    }
  });
});

describe('Replicas', () => {
  it('have a FIFO queue with an explicit 1 MiB message size, SQS-managed encryption and a FIFO DLQ', () => {
    for (const region of cluster.config.replicaRegions) {
      const data = dataTemplate(region);
      const names = replicationQueueNames(cluster.config.prefix);
      data.hasResourceProperties('AWS::SQS::Queue', {
        QueueName: names.dlq,
        FifoQueue: true,
        ContentBasedDeduplication: false,
        MaximumMessageSize: 1_048_576,
        MessageRetentionPeriod: replicationQueueDefinition.deadLetterRetentionS,
        SqsManagedSseEnabled: true,
      });
      data.hasResourceProperties('AWS::SQS::Queue', {
        QueueName: names.queue,
        FifoQueue: true,
        ContentBasedDeduplication: false,
        MaximumMessageSize: replicationQueueDefinition.messageBytesMax,
        MessageRetentionPeriod: replicationQueueDefinition.retentionS,
        SqsManagedSseEnabled: true,
        // Six times the apply timeout, as AWS advises for SQS event sources.
        VisibilityTimeout: applyTimeout.toSeconds() * 6,
        RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [statefulLogicalIds.deadLetterQueue, 'Arn'] }, maxReceiveCount: replicationQueueDefinition.maxReceiveCount },
      });
      expect(replicationQueueDefinition.messageBytesMax).toBe(1024 * 1024);
    }
  });

  it('run apply on the queue in batches of 10 with ReportBatchItemFailures', () => {
    for (const region of cluster.config.replicaRegions) {
      const replica = replicaTemplate(region);
      const functionId = new Capture();
      replica.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        BatchSize: 10,
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        Enabled: true,
        EventSourceArn: { 'Fn::ImportValue': Match.stringLikeRegexp(`^${stackNames.data(cluster.config, region)}:.*${statefulLogicalIds.queue}Arn`) },
        FunctionName: { Ref: functionId },
      });
      replica.resourceCountIs('AWS::Lambda::EventSourceMapping', 1);
      expect(replica.toJSON().Resources[functionId.asString()].Properties).toMatchObject({
        FunctionName: `${cluster.config.prefix}-apply`,
        Timeout: applyTimeout.toSeconds(),
        Runtime: 'nodejs24.x',
        Architectures: ['arm64'],
      });
    }
  });

  it('run the replica heartbeat every minute with a timeout above its loop budget', () => {
    const { budgetMs, marginMs } = loopBudgetOf('functions/replica-heartbeat.ts');
    expect(replicaHeartbeatTimeout.toMilliseconds()).toBeGreaterThan(budgetMs + marginMs);
    for (const region of cluster.config.replicaRegions) {
      const replica = replicaTemplate(region);
      const functionId = new Capture();
      replica.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(1 minute)', Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [functionId, 'Arn'] } })] });
      expect(replica.toJSON().Resources[functionId.asString()].Properties).toMatchObject({
        FunctionName: `${cluster.config.prefix}-replica-heartbeat`,
        Timeout: replicaHeartbeatTimeout.toSeconds(),
        Environment: { Variables: { [env.region]: region, [env.homeRegion]: cluster.config.homeRegion } },
      });
    }
  });
});

describe('API', () => {
  it('requires IAM (SigV4) on every method of every region but the readiness and liveness probes', () => {
    for (const region of regions()) {
      const name = region === cluster.config.homeRegion ? stackNames.home(cluster.config) : stackNames.replica(cluster.config, region);
      const api = template(name);
      expect(Object.keys(api.findResources('AWS::ApiGateway::Method')).length).toBe(apiRoutes.reduce((count, route) => count + route.methods.length, 0));
      expect(unauthenticatedMethods(api).map((method) => method.replace(/[0-9A-F]{8} /, ' ')), `${name}: methods without AWS_IAM`).toEqual(['ApihealthGET (GET: NONE)', 'ApilivezGET (GET: NONE)']);
    }
  });

  it('the IAM check fails on an API with an unauthenticated method', () => {
    const stack = new Stack(new App(), 'probe');
    const api = new apigw.RestApi(stack, 'Api');
    api.root.addResource('open').addMethod('GET', new apigw.MockIntegration());
    api.root.addResource('closed').addMethod('GET', new apigw.MockIntegration(), { authorizationType: apigw.AuthorizationType.IAM });
    expect(unauthenticatedMethods(Template.fromStack(stack))).toEqual([expect.stringContaining('(GET: NONE)')]);
  });

  it('serves /kv, /kv/{key+}, /watch, /txn, /cluster, /health, /livez by Lambda proxy, throttled, with JSON access logs, in every region', () => {
    for (const region of regions()) {
      const name = region === cluster.config.homeRegion ? stackNames.home(cluster.config) : stackNames.replica(cluster.config, region);
      const api = template(name);
      api.hasResourceProperties('AWS::ApiGateway::RestApi', { Name: `${cluster.config.prefix}-api`, BinaryMediaTypes: ['*/*'], EndpointConfiguration: { Types: ['REGIONAL'] } });
      const paths = Object.values(api.findResources('AWS::ApiGateway::Resource')).map((resource) => (resource as { Properties: { PathPart: string } }).Properties.PathPart);
      expect(paths.sort()).toEqual(['campaign', 'cluster', 'elections', 'health', 'keepalive', 'kv', 'leases', 'livez', 'locks', 'proclaim', 'txn', 'watch', '{id}', '{key+}', '{name}', '{name}']);
      api.allResourcesProperties('AWS::ApiGateway::Method', {
        Integration: Match.objectLike({ Type: 'AWS_PROXY', IntegrationHttpMethod: 'POST' }),
        RequestValidatorId: { Ref: Match.stringLikeRegexp('^ApiValidator') },
      });
      api.hasResourceProperties('AWS::ApiGateway::Method', { HttpMethod: 'PUT', RequestParameters: { 'method.request.path.key': true } });
      api.hasResourceProperties('AWS::ApiGateway::Stage', {
        StageName: apiStageName,
        AccessLogSetting: { DestinationArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^ApiAccessLogs'), 'Arn'] }, Format: Match.stringLikeRegexp('"requestId":"\\$context.requestId"') },
        MethodSettings: [
          Match.objectLike({ HttpMethod: '*', ResourcePath: '/*', LoggingLevel: 'ERROR', ThrottlingRateLimit: cluster.config.apiRateLimitPerSecond, ThrottlingBurstLimit: cluster.config.apiBurstLimit }),
        ],
      });
      // The replica API is the same handler; its environment names its own region.
      api.hasResourceProperties('AWS::Lambda::Function', {
        FunctionName: `${cluster.config.prefix}-api`,
        Timeout: 29,
        Environment: { Variables: Match.objectLike({ [env.region]: region, [env.homeRegion]: cluster.config.homeRegion }) },
      });
    }
  });
});

describe('Least privilege', () => {
  it('grants no wildcard action in any policy of any stack (roles, managed access policies, queue policies)', () => {
    for (const stack of cluster.stacks.all) expect(wildcardAllowActions(template(stack.stackName)), stack.stackName).toEqual([]);
    // Every kind of policy document is among those checked, the users' access policies included.
    const types = new Set(cluster.stacks.all.flatMap((stack) => policyDocuments(template(stack.stackName)).map((document) => document.type)));
    expect([...types].sort()).toEqual(['AWS::IAM::ManagedPolicy', 'AWS::IAM::Policy', 'AWS::SNS::TopicPolicy', 'AWS::SQS::QueuePolicy']);
  });

  it('the wildcard check fails on `*` and on `service:*`', () => {
    const stack = new Stack(new App(), 'probe');
    const role = new iam.Role(stack, 'Role', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
    role.addToPolicy(new iam.PolicyStatement({ actions: ['dynamodb:*'], resources: ['arn:aws:dynamodb:us-east-1:123456789012:table/x'] }));
    role.addToPolicy(new iam.PolicyStatement({ actions: ['*'], resources: ['arn:aws:s3:::bucket'] }));
    expect(wildcardAllowActions(Template.fromStack(stack))).toEqual([expect.stringContaining('dynamodb:*'), expect.stringContaining(': *')]);
  });

  it('grants every DynamoDB action the handlers issue (a command the code sends but no policy allows fails only on AWS)', () => {
    // The document client's commands and the IAM action each needs; a transaction's parts are
    // authorized as the single-item actions they perform.
    const actionOf: Record<string, readonly string[]> = {
      Get: ['dynamodb:GetItem'],
      Put: ['dynamodb:PutItem'],
      Update: ['dynamodb:UpdateItem'],
      Delete: ['dynamodb:DeleteItem'],
      Query: ['dynamodb:Query'],
      Scan: ['dynamodb:Scan'],
      BatchGet: ['dynamodb:BatchGetItem'],
      BatchWrite: ['dynamodb:BatchWriteItem'],
      TransactWrite: dynamoActions.transactWrite,
    };
    const sources = ['lib/adapters/aws', 'lib/service', 'functions'].flatMap((folder) =>
      readdirSync(path.join(projectRoot, folder))
        .filter((name) => name.endsWith('.ts'))
        .map((name) => readFileSync(path.join(projectRoot, folder, name), 'utf8')),
    );
    const issued = new Set(sources.flatMap((source) => [...source.matchAll(/new (\w+)Command\(/g)].map((match) => match[1] as string)).filter((name) => name in actionOf));
    const granted = new Set<string>(Object.values(dynamoActions).flat());
    const needed = [...issued].flatMap((name) => actionOf[name] ?? []);
    expect(issued.size).toBeGreaterThanOrEqual(6);
    expect(needed.filter((action) => !granted.has(action))).toEqual([]);
  });

  it('lets only the API (every region) and the nodes (shard leaders committing their intake) write the home log and kv; apply never writes home tables', () => {
    const { config } = cluster;
    const dataRegion = (stackName: string) => regions().find((region) => stackNames.data(config, region) === stackName);
    const grants = tableGrants(
      cluster.stacks.all.filter((stack) => !stack.stackName.includes('-data-')).map((stack) => ({ template: template(stack.stackName), region: stack.region })),
      config,
      dataRegion,
    );
    const home = (role: string) => `${config.homeRegion}/${config.prefix}-${role}`;
    const writersOf = (table: string, actions: readonly string[]) =>
      [...(grants.get(table) ?? new Map<string, Set<string>>()).entries()].filter(([, granted]) => actions.some((action) => granted.has(action))).map(([grantee]) => grantee).sort();
    const apis = regions().map((region) => `${config.prefix}-api@${region}`);
    const nodes = config.nodeIds.map((id) => `${config.prefix}-${id}@${config.homeRegion}`);
    const heartbeats = config.replicaRegions.map((region) => `${config.prefix}-replica-heartbeat@${region}`);
    const transactWrite = dynamoActions.transactWrite;
    // The fenced append: a TransactWriteItems of ConditionCheck(control) + Put(log) + Put/Delete(kv),
    // sent by the API (a quiet shard) or by the shard's leader (its intake, with Update(control)).
    expect(writersOf(home('log'), transactWrite)).toEqual([...apis, ...nodes].sort());
    expect(writersOf(home('kv'), transactWrite)).toEqual([...apis, ...nodes].sort());
    expect(writersOf(home('control'), ['dynamodb:ConditionCheckItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'])).toEqual([...apis, ...nodes].sort());
    // Replica heartbeats only write their progress reports into home control: PutItem and
    // BatchWriteItem, held to the reports' partition.
    const inReports = ` when ${JSON.stringify({ 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [replicaReportPartition] } })}`;
    expect(writersOf(home('control'), ['dynamodb:PutItem'])).toEqual([...apis, ...nodes].sort());
    expect(writersOf(home('control'), [`dynamodb:PutItem${inReports}`])).toEqual([...heartbeats].sort());
    for (const heartbeat of heartbeats) {
      expect([...(grants.get(home('control'))?.get(heartbeat) ?? [])].sort()).toEqual([`dynamodb:BatchWriteItem${inReports}`, `dynamodb:PutItem${inReports}`, `dynamodb:Query when ${JSON.stringify({ 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [compactionPartition] } })}`].sort());
    }
    // Home kv is read by the writers, and by the replica functions for snapshot seeds.
    const applies = config.replicaRegions.map((region) => `${config.prefix}-apply@${region}`);
    expect(writersOf(home('kv'), dynamoActions.read)).toEqual([...apis, ...nodes, ...applies, ...heartbeats].sort());
    // Log trims: the nodes on the home log, each heartbeat on its region's copy; a heartbeat
    // reads home control only in the compaction points' partition.
    const inCompaction = ` when ${JSON.stringify({ 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [compactionPartition] } })}`;
    expect(writersOf(home('log'), dynamoActions.logTrim)).toEqual([...nodes].sort());
    for (const region of config.replicaRegions) expect(writersOf(`${region}/${config.prefix}-log`, dynamoActions.logTrim)).toEqual([`${config.prefix}-replica-heartbeat@${region}`]);
    // Nobody gets Scan, batch (beyond those) or admin actions on any table.
    const allowed = new Set<string>([...dynamoActions.read, ...dynamoActions.transactWrite]);
    for (const [table, byGrantee] of grants) {
      for (const [grantee, actions] of byGrantee) {
        const reports = table === home('control') && heartbeats.includes(grantee) ? [...dynamoActions.replicaReports.map((action) => `${action}${inReports}`), `dynamodb:Query${inCompaction}`] : [];
        const trims: string[] = table.endsWith(`/${config.prefix}-log`) && (nodes.includes(grantee) || heartbeats.includes(grantee)) ? [...dynamoActions.logTrim] : [];
        expect([...actions].filter((action) => !allowed.has(action) && !reports.includes(action) && !trims.includes(action)), `${grantee} on ${table}`).toEqual([]);
      }
    }
    // A replica's own tables are written only by its apply function and heartbeat (repairs).
    for (const region of config.replicaRegions) {
      for (const role of ['control', 'log', 'kv']) {
        expect(writersOf(`${region}/${config.prefix}-${role}`, transactWrite)).toEqual([`${config.prefix}-apply@${region}`, `${config.prefix}-replica-heartbeat@${region}`]);
      }
    }
  });

  it('lets the writers (APIs, nodes) send to every replica queue, by convention across regions', () => {
    const { config } = cluster;
    const queueName = replicationQueueNames(config.prefix).queue;
    for (const stack of [stackNames.home(config), ...config.replicaRegions.map((region) => stackNames.replica(config, region))]) {
      const policies = JSON.stringify(template(stack).findResources('AWS::IAM::Policy'));
      for (const region of config.replicaRegions) {
        const sameRegion = stack === stackNames.replica(config, region);
        const reference = sameRegion ? `${stackNames.data(config, region)}:ExportsOutputFnGetAtt${statefulLogicalIds.queue}Arn` : `:sqs:${region}:`;
        expect(policies, `${stack} → ${region}`).toContain(reference);
      }
      if (!stack.includes('-replica-')) expect(policies).toContain(`:${queueName}`);
    }
    homeTemplate().hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Action: ['sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl'], Effect: 'Allow' })]) },
      Roles: [{ Ref: Match.stringLikeRegexp('^NodesnodeaRole') }],
    });
  });
});

describe('Monitoring', () => {
  it('alarms on no leader (node metric), replica lag (heartbeat metric), DLQ depth and function errors; one dashboard', () => {
    const { config } = cluster;
    const home = homeTemplate();
    home.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: metricNamespace,
      MetricName: metricNames.leaderlessShards,
      Statistic: 'Minimum',
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      TreatMissingData: 'breaching',
      Dimensions: Match.arrayWith([{ Name: 'cluster', Value: config.prefix }, { Name: 'service', Value: 'node' }]),
    });
    home.resourcePropertiesCountIs('AWS::CloudWatch::Alarm', { Namespace: 'AWS/Lambda', MetricName: 'Errors' }, config.nodeIds.length + 1);
    home.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    for (const region of config.replicaRegions) {
      const replica = replicaTemplate(region);
      replica.hasResourceProperties('AWS::CloudWatch::Alarm', { Namespace: metricNamespace, MetricName: metricNames.replicaLagEntries, Threshold: config.replicaLagEntriesAlarm, TreatMissingData: 'breaching' });
      replica.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/SQS',
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Dimensions: [{ Name: 'QueueName', Value: { 'Fn::ImportValue': Match.stringLikeRegexp(`${statefulLogicalIds.deadLetterQueue}QueueName`) } }],
        Threshold: 1,
      });
      replica.resourcePropertiesCountIs('AWS::CloudWatch::Alarm', { Namespace: 'AWS/Lambda', MetricName: 'Errors' }, 3);
      replica.resourceCountIs('AWS::CloudWatch::Dashboard', 0);
    }
    // The dashboard shows every region's metrics from the home region.
    const body = JSON.stringify(home.findResources('AWS::CloudWatch::Dashboard'));
    for (const region of config.replicaRegions) expect(body).toContain(region);
  });
});

describe('cdk-nag', () => {
  it('finds nothing unacknowledged under AwsSolutions and Serverless, and every acknowledgement carries a reason', () => {
    for (const pack of [new AwsSolutionsChecks(cluster.app), new ServerlessChecks(cluster.app)]) {
      const report = pack.validateScope(cluster.app);
      const findings = report.violations.map((violation) => `${violation.ruleName}: ${violation.violatingResources.map((resource) => resource.constructPath).join(', ')}`);
      expect(findings, pack.readPackName).toEqual([]);
    }
    // The acknowledgements, listed: a new one must be added here on purpose.
    const acknowledged = new Map<string, Set<string>>();
    for (const construct of cluster.app.node.findAll()) {
      for (const entry of construct.node.metadata) {
        if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
        for (const [qualifiedId, reason] of Object.entries(entry.data as Record<string, string>)) {
          // The access policies' IAM5 IDs name their region and the API's logical ID: one entry for all regions.
          const id = qualifiedId
            .replace(/^annotation::/i, '')
            .replace(/:execute-api:[a-z0-9-]+:/, ':execute-api:<region>:')
            .replace(/<Api[0-9A-F]{8}>/, '<Api>');
          expect(String(reason).length, id).toBeGreaterThan(40);
          const paths = acknowledged.get(id) ?? new Set<string>();
          paths.add(construct.node.path.replace(/^[^/]+\//, '').replace(/\/(GET|PUT|DELETE|POST)$/, '/<method>'));
          acknowledged.set(id, paths);
        }
      }
    }
    expect(Object.fromEntries([...acknowledged].map(([id, paths]) => [id, [...paths].sort()]))).toEqual({
      'AwsSolutions-COG4': [
        'Api/Api/Default/cluster/<method>',
        'Api/Api/Default/elections/{name}/<method>',
        'Api/Api/Default/elections/{name}/campaign/<method>',
        'Api/Api/Default/elections/{name}/proclaim/<method>',
        'Api/Api/Default/health/<method>',
        'Api/Api/Default/kv/<method>',
        'Api/Api/Default/kv/{key+}/<method>',
        'Api/Api/Default/leases/<method>',
        'Api/Api/Default/leases/{id}/<method>',
        'Api/Api/Default/leases/{id}/keepalive/<method>',
        'Api/Api/Default/livez/<method>',
        'Api/Api/Default/locks/{name}/<method>',
        'Api/Api/Default/txn/<method>',
        'Api/Api/Default/watch/<method>',
      ],
      'AwsSolutions-APIG4': ['Api/Api/Default/health/<method>', 'Api/Api/Default/livez/<method>'],
      'AwsSolutions-APIG3': ['Api/Api/DeploymentStage.v1'],
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]': ['Api/Api/CloudWatchRole'],
      // The greedy {key+} route in execute-api ARNs, per policy and only for the methods it grants.
      'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<region>:<AWS::AccountId>:<Api>/v1/GET/kv/*]': ['Api/Access/ReadOnly', 'Api/Access/ReadWrite'],
      'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<region>:<AWS::AccountId>:<Api>/v1/PUT/kv/*]': ['Api/Access/ReadWrite'],
      'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<region>:<AWS::AccountId>:<Api>/v1/DELETE/kv/*]': ['Api/Access/ReadWrite'],
      // Leases, locks and elections: their id or name in the path, per policy and only for the methods it grants.
      ...Object.fromEntries(
        ['GET/leases/*', 'GET/locks/*', 'GET/elections/*', 'POST/leases/*/keepalive', 'DELETE/leases/*', 'POST/locks/*', 'DELETE/locks/*', 'POST/elections/*/campaign', 'POST/elections/*/proclaim', 'DELETE/elections/*'].map((path) => [
          `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<region>:<AWS::AccountId>:<Api>/v1/${path}]`,
          path.startsWith('GET') ? ['Api/Access/ReadOnly', 'Api/Access/ReadWrite'] : ['Api/Access/ReadWrite'],
        ]),
      ),
      // X-Ray's segment upload (active tracing) takes Resource "*" only.
      'AwsSolutions-IAM5[Resource::*]': ['Api/Handler/Role', 'Apply/Apply/Role', 'Heartbeat/Heartbeat/Role', 'Nodes/node-a/Role', 'Nodes/node-b/Role', 'Nodes/node-c/Role'],
      // The alarm topic: CloudWatch cannot publish to a topic under the AWS managed key.
      'AwsSolutions-SNS2': ['Monitoring/AlarmTopic'],
      // Serverless: where failures are kept instead (the queue's DLQ; a schedule has nothing to replay; a synchronous caller gets the error).
      'Serverless-LambdaDLQ': ['Api/Handler/Function', 'Apply/Apply/Function', 'Heartbeat/Heartbeat/Function', 'Nodes/node-a/Function', 'Nodes/node-b/Function', 'Nodes/node-c/Function'],
      'Serverless-LambdaAsyncFailureDestination': ['Heartbeat/Heartbeat/Function', 'Nodes/node-a/Function', 'Nodes/node-b/Function', 'Nodes/node-c/Function'],
      'Serverless-EventBusDLQ': ['Heartbeat/Schedule', 'Nodes/node-a-schedule', 'Nodes/node-b-schedule', 'Nodes/node-c-schedule'],
      'Serverless-LambdaEventSourceMappingDestination': ['Apply/Apply/Function'],
      'Serverless-SQSRedrivePolicy': ['Replication/ReplicationDeadLetterQueue'],
    });
  });
});

describe('Bundles: the code the stacks deploy runs', () => {
  /** The bundle directory of a function, and the environment its template gives it. */
  function deployed(stackName: string, functionName: string): { bundle: string; environment: Record<string, string> } {
    const functions = Object.values(template(stackName).findResources('AWS::Lambda::Function')) as { Properties: { FunctionName: string; Code: { S3Key: string }; Environment: { Variables: Record<string, string> } } }[];
    const fn = functions.find((candidate) => candidate.Properties.FunctionName === functionName);
    if (fn === undefined) throw new Error(`no function ${functionName} in ${stackName}`);
    // The asset's S3 key is `<hash>.zip`; the staged bundle is `asset.<hash>/index.mjs` in the assembly.
    const hash = fn.Properties.Code.S3Key.replace(/\.zip$/, '');
    return { bundle: path.join(cluster.assembly.directory, `asset.${hash}`, 'index.mjs'), environment: fn.Properties.Environment.Variables };
  }

  /** Invokes a bundle's `handler` in a fresh Node.js process, as Lambda would: ES module, environment only. */
  function invoke(target: { bundle: string; environment: Record<string, string> }, event: unknown, options: { remainingMs?: number; environment?: Record<string, string> } = {}) {
    const runner = `
      const { handler } = await import(${JSON.stringify(pathToFileURL(target.bundle).href)});
      const started = Date.now();
      const context = { functionName: 'test', functionVersion: '$LATEST', invokedFunctionArn: 'arn:aws:lambda:us-east-1:000000000000:function:test', memoryLimitInMB: '256', awsRequestId: 'request-1', getRemainingTimeInMillis: () => ${options.remainingMs ?? 10_000} - (Date.now() - started) };
      const result = await handler(JSON.parse(process.env.TEST_EVENT), context);
      process.stdout.write('\\nRESULT ' + JSON.stringify(result) + '\\n');`;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', runner], {
      env: {
        PATH: process.env.PATH ?? '',
        AWS_REGION: target.environment[env.region] ?? 'us-east-1',
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        ...target.environment,
        [env.dynamoEndpoint]: inject('dynamoEndpoint'),
        [env.sqsEndpoint]: inject('sqsEndpoint'),
        ...options.environment,
        TEST_EVENT: JSON.stringify(event),
      },
      encoding: 'utf8',
      timeout: 30_000,
    });
    const lines = result.stdout.split('\n');
    const resultLine = lines.find((line) => line.startsWith('RESULT '));
    if (result.status !== 0 || resultLine === undefined) throw new Error(`bundle ${target.bundle} failed (${result.status}):\n${result.stderr}\n${result.stdout}`);
    const json = lines.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>);
    return { result: JSON.parse(resultLine.slice('RESULT '.length)) as Record<string, unknown>, json };
  }

  const metricsOf = (json: Record<string, unknown>[]) =>
    json.filter((line) => line._aws !== undefined).flatMap((line) => {
      const directive = (line._aws as { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[] }).CloudWatchMetrics[0];
      // The dimension set must be exactly what the alarms name, or they watch another metric.
      const dimensions = (directive?.Dimensions ?? []).map((set) => [...set].sort().join(','));
      return (directive?.Metrics ?? []).map((metric) => ({ namespace: directive?.Namespace, name: metric.Name, value: line[metric.Name], cluster: line.cluster, service: line.service, dimensions }));
    });

  beforeAll(async () => {
    const names = tableNames(cluster.config.prefix);
    for (const region of [cluster.config.homeRegion, cluster.config.replicaRegions[0] as string]) {
      const admin = new DynamoDBClient({ region, endpoint: inject('dynamoEndpoint'), credentials: localCredentials });
      await ensureTables(admin, names);
      admin.destroy();
    }
  });

  it('a node bundle takes leases, logs JSON and publishes LeaderlessShards with the cluster dimension', () => {
    const node = deployed(stackNames.home(cluster.config), `${cluster.config.prefix}-node-a`);
    // The local cloud's timings: a leader steps down when a renewal goes unanswered for a lease
    // less a tick, so a shorter lease would make a loaded machine's slow renewal look like a hang.
    const { result, json } = invoke(node, { source: 'aws.events', 'detail-type': 'Scheduled Event' }, { remainingMs: 12_000, environment: { [env.leaseMs]: '2000', [env.tickMs]: '250' } });
    expect(result).toMatchObject({ acquired: cluster.config.shardCount, errors: 0 });
    expect(json.some((line) => line.level === 'INFO' && line.service === 'node' && line.node === 'node-a')).toBe(true);
    const leaderless = metricsOf(json).filter((metric) => metric.name === metricNames.leaderlessShards);
    expect(leaderless.length).toBeGreaterThan(0);
    expect(leaderless.at(-1)).toMatchObject({ namespace: metricNamespace, value: 0, cluster: cluster.config.prefix, service: 'node', dimensions: ['cluster,service'] });
    expect(metricsOf(json).find((metric) => metric.name === metricNames.nodeTickErrors)).toMatchObject({ value: 0 });
  });

  it('an api bundle answers /health, /livez and /cluster from the home tables, and publishes Requests and LatencyMs by route and status', () => {
    const api = deployed(stackNames.home(cluster.config), `${cluster.config.prefix}-api`);
    const request = (requestPath: string) => ({ httpMethod: 'GET', path: requestPath, headers: {}, multiValueHeaders: {}, queryStringParameters: null, multiValueQueryStringParameters: null, pathParameters: null, body: null, isBase64Encoded: false });
    // /health is readiness: the node invocation before this one has ended and its leases lapse,
    // so it may say 503 with its reasons; /livez only says the function answers.
    const readiness = invoke(api, request('/health')).result;
    expect([200, 503]).toContain(readiness.statusCode);
    if (readiness.statusCode === 503) expect(JSON.parse(String(readiness.body))).toMatchObject({ status: 'unavailable', reasons: expect.any(Array) });
    const health = invoke(api, request('/livez'));
    expect(health.result).toMatchObject({ statusCode: 200 });
    // Two metric lines per request: totals (cluster,service) and the breakdown by route and status.
    expect(metricsOf(health.json).filter((metric) => metric.name === metricNames.apiRequests)).toEqual([
      expect.objectContaining({ namespace: metricNamespace, value: 1, cluster: cluster.config.prefix, service: 'api', dimensions: ['cluster,route,service,status'] }),
      expect.objectContaining({ namespace: metricNamespace, value: 1, cluster: cluster.config.prefix, service: 'api', dimensions: ['cluster,service'] }),
    ]);
    const requestLine = health.json.find((line) => line[metricNames.apiRequests] !== undefined);
    expect(requestLine).toMatchObject({ route: 'GET /livez', status: String(health.result.statusCode) });
    expect(metricsOf(health.json).find((metric) => metric.name === metricNames.apiLatencyMs)?.value).toBeGreaterThanOrEqual(0);
    const status = invoke(api, request('/cluster')).result;
    expect(status.statusCode).toBe(200);
    const body = JSON.parse(String(status.body)) as { shards: { epoch: number }[] };
    expect(body.shards).toHaveLength(cluster.config.shardCount);
    expect(body.shards.every((shard) => shard.epoch >= 1)).toBe(true);
  });

  it('a replica heartbeat bundle reports its progress to home and publishes ReplicaLagEntries', async () => {
    const region = cluster.config.replicaRegions[0] as string;
    const heartbeat = deployed(stackNames.replica(cluster.config, region), `${cluster.config.prefix}-replica-heartbeat`);
    const { json } = invoke(heartbeat, {}, { remainingMs: 6_500, environment: { [env.leaseMs]: '600', [env.tickMs]: '100' } });
    const lag = metricsOf(json).filter((metric) => metric.name === metricNames.replicaLagEntries);
    expect(lag.at(-1)).toMatchObject({ namespace: metricNamespace, cluster: cluster.config.prefix, service: 'replica-heartbeat', dimensions: ['cluster,service'] });
    const home = new DynamoStore(makeDynamoClient({ region: cluster.config.homeRegion, endpoint: inject('dynamoEndpoint') }), tableNames(cluster.config.prefix), cluster.config.shardCount);
    const reports = (await home.readReplicaReports()).filter((report) => report.region === region);
    expect(reports).toHaveLength(cluster.config.shardCount);
  });

  it('an apply bundle reports a poison message as a batch item failure, and publishes ApplyFailures', () => {
    const region = cluster.config.replicaRegions[0] as string;
    const apply = deployed(stackNames.replica(cluster.config, region), `${cluster.config.prefix}-apply`);
    const record = { messageId: 'm-1', receiptHandle: 'r', body: 'not a log entry', attributes: { MessageGroupId: '0' }, messageAttributes: {}, md5OfBody: '', eventSource: 'aws:sqs', eventSourceARN: 'arn', awsRegion: region };
    const applied = invoke(apply, { Records: [record] });
    expect(applied.result).toEqual({ batchItemFailures: [{ itemIdentifier: 'm-1' }] });
    const metrics = metricsOf(applied.json);
    expect(metrics.find((metric) => metric.name === metricNames.applyFailures)).toMatchObject({ namespace: metricNamespace, value: 1, service: 'apply', dimensions: ['cluster,service'] });
    expect(metrics.find((metric) => metric.name === metricNames.appliedEntries)).toMatchObject({ value: 0 });
  });
});
