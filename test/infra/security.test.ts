import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import { apiAccessLevels, apiAccessOutputs, apiAccessPolicyNames, executeApiPath, managedPolicyNameLengthMax } from '../../lib/infra/api-access.ts';
import { apiRoutes, apiStageName } from '../../lib/infra/api.ts';
import { nagPacks, stackNames } from '../../lib/infra/stacks.ts';
import { executeApiGrants, publicAllowStatements, queuesWithoutTlsOnlyPolicy, tablesWithoutKmsEncryption, unauthenticatedMethods, unencryptedQueues, wildcardAllowActions } from './policies.ts';
import { synthesizeCluster, type SynthesizedCluster } from './synth.ts';

/**
 * Issue 9, infrastructure: who may call the API (IAM managed policies per region, exact methods
 * and paths), encryption at rest, TLS-only queues, no wildcard actions, no public grants, no
 * unauthenticated method, in every stack. Each check is a plain function over template JSON and
 * is shown to fail on a bad template.
 */

let cluster: SynthesizedCluster;
const template = (name: string): Template => {
  const found = cluster.templates.get(name);
  if (found === undefined) throw new Error(`no stack ${name}`);
  return found;
};
/** The stacks that own a REST API, with their region: home and every replica region. */
const apiStacks = () => [
  { region: cluster.config.homeRegion, stack: stackNames.home(cluster.config) },
  ...cluster.config.replicaRegions.map((region) => ({ region, stack: stackNames.replica(cluster.config, region) })),
];
const apiLogicalId = (api: Template): string => {
  const ids = Object.keys(api.findResources('AWS::ApiGateway::RestApi'));
  expect(ids).toHaveLength(1);
  return ids[0] as string;
};
/** The read-only and read-write sets, as `METHOD /path`. */
const expected = {
  read: ['GET /cluster', 'GET /elections/*', 'GET /health', 'GET /kv', 'GET /kv/*', 'GET /leases/*', 'GET /livez', 'GET /locks/*', 'GET /watch'],
  readWrite: [
    'DELETE /elections/*',
    'DELETE /kv/*',
    'DELETE /leases/*',
    'DELETE /locks/*',
    'GET /cluster',
    'GET /elections/*',
    'GET /health',
    'GET /kv',
    'GET /kv/*',
    'GET /leases/*',
    'GET /livez',
    'GET /locks/*',
    'GET /watch',
    'POST /elections/*/campaign',
    'POST /elections/*/proclaim',
    'POST /leases',
    'POST /leases/*/keepalive',
    'POST /locks/*',
    'POST /txn',
    'PUT /kv/*',
  ],
};

beforeAll(() => {
  // No function code is read here: skip bundling.
  cluster = synthesizeCluster({}, { bundle: false });
});

describe('API access policies (read-only, read-write) per region', () => {
  it('name exactly the routes the API serves: read-write all of them, read-only the GETs', () => {
    const served = apiRoutes.flatMap((route) => route.methods.map((method) => `${method} ${executeApiPath(route.path)}`)).sort();
    const levels = Object.fromEntries(Object.entries(apiAccessLevels).map(([level, grants]) => [level, grants.map((grant) => `${grant.method} ${grant.path}`).sort()]));
    expect(levels).toEqual(expected);
    // A new route or method is granted to nobody until it is added to a level on purpose.
    expect(levels.readWrite).toEqual(served);
    expect(levels.read).toEqual(served.filter((grant) => grant.startsWith('GET ')));
  });

  it('exist in every API stack under their documented names, allowing only execute-api:Invoke on the exact method/path set', () => {
    for (const { region, stack } of apiStacks()) {
      const api = template(stack);
      const names = apiAccessPolicyNames(cluster.config.prefix, region);
      expect(names).toEqual({ read: `epochkv-${region}-kv-read`, readWrite: `epochkv-${region}-kv-readwrite` });
      api.resourceCountIs('AWS::IAM::ManagedPolicy', 2);
      const target = { logicalId: apiLogicalId(api), region, stage: apiStageName };
      const read = executeApiGrants(api, names.read, target);
      const readWrite = executeApiGrants(api, names.readWrite, target);
      // Nothing besides execute-api:Invoke on this API's v1 stage: no other action, API or stage.
      expect(read.other, `${stack} read-only`).toEqual([]);
      expect(readWrite.other, `${stack} read-write`).toEqual([]);
      expect(read.grants, `${stack} read-only`).toEqual(expected.read);
      expect(readWrite.grants, `${stack} read-write`).toEqual(expected.readWrite);
      // Said twice on purpose: read-only never writes or deletes.
      expect(read.grants.filter((grant) => /^(PUT|DELETE|POST|PATCH|\*) /.test(grant)), `${stack} read-only`).toEqual([]);
      // Managed policies only: attached to no role, user or group by the stack itself.
      for (const policy of Object.values(api.findResources('AWS::IAM::ManagedPolicy'))) {
        expect((policy as { Properties: Record<string, unknown> }).Properties).not.toHaveProperty('Roles');
        expect((policy as { Properties: Record<string, unknown> }).Properties).not.toHaveProperty('Users');
        expect((policy as { Properties: Record<string, unknown> }).Properties).not.toHaveProperty('Groups');
      }
    }
    // The data stacks own no API and no access policy.
    for (const region of [cluster.config.homeRegion, ...cluster.config.replicaRegions]) template(stackNames.data(cluster.config, region)).resourceCountIs('AWS::IAM::ManagedPolicy', 0);
  });

  it('are exported as the outputs ReadOnlyPolicyArn and ReadWritePolicyArn of each API stack', () => {
    expect(apiAccessOutputs).toEqual({ read: 'ReadOnlyPolicyArn', readWrite: 'ReadWritePolicyArn' });
    for (const { region, stack } of apiStacks()) {
      const api = template(stack);
      const names = apiAccessPolicyNames(cluster.config.prefix, region);
      const policyIds = Object.fromEntries(
        Object.entries(api.findResources('AWS::IAM::ManagedPolicy')).map(([logicalId, policy]) => [(policy as { Properties: { ManagedPolicyName: string } }).Properties.ManagedPolicyName, logicalId]),
      );
      api.hasOutput(apiAccessOutputs.read, { Value: { Ref: policyIds[names.read] } });
      api.hasOutput(apiAccessOutputs.readWrite, { Value: { Ref: policyIds[names.readWrite] } });
    }
  });

  it('the grant check sees an extra method, another stage or another action', () => {
    const stack = new Stack(new App(), 'probe', { env: { region: 'us-east-1' } });
    const api = new apigw.RestApi(stack, 'Api');
    api.root.addMethod('GET', new apigw.MockIntegration());
    new iam.ManagedPolicy(stack, 'Tampered', {
      managedPolicyName: 'tampered',
      statements: [
        new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources: [api.arnForExecuteApi('GET', '/kv', 'v1'), api.arnForExecuteApi('PUT', '/kv/*', 'v1'), api.arnForExecuteApi('GET', '/kv', '*')] }),
        new iam.PolicyStatement({ actions: ['execute-api:ManageConnections'], resources: [api.arnForExecuteApi('GET', '/kv', 'v1')] }),
      ],
    });
    const found = executeApiGrants(Template.fromStack(stack), 'tampered', { logicalId: apiLogicalId(Template.fromStack(stack)), region: 'us-east-1', stage: 'v1' });
    expect(found.grants).toEqual(['GET /kv', 'PUT /kv/*']);
    // Had the read-only policy gained PUT, its read-only assertion above would fail.
    expect(() => expect(found.grants.filter((grant) => /^(PUT|DELETE|POST|PATCH|\*) /.test(grant))).toEqual([])).toThrow();
    expect(found.other).toEqual([expect.stringContaining('/*/GET/kv'), expect.stringContaining('execute-api:ManageConnections')]);
  });

  it('have names within the IAM limit for the longest prefix the configuration accepts', () => {
    const longestPrefix = `a${'b'.repeat(58)}`;
    for (const name of Object.values(apiAccessPolicyNames(longestPrefix, 'ap-southeast-2'))) expect(name.length).toBeLessThanOrEqual(managedPolicyNameLengthMax);
    expect(() => apiAccessPolicyNames('x'.repeat(120), 'ap-southeast-2')).toThrow(/IAM policy name/);
  });
});

describe('Every stack', () => {
  it('encrypts every table with a KMS key and every queue with SQS-managed SSE', () => {
    let tables = 0;
    let queues = 0;
    for (const stack of cluster.stacks.all) {
      const t = template(stack.stackName);
      tables += Object.keys(t.findResources('AWS::DynamoDB::Table')).length;
      queues += Object.keys(t.findResources('AWS::SQS::Queue')).length;
      expect(tablesWithoutKmsEncryption(t), stack.stackName).toEqual([]);
      expect(unencryptedQueues(t), stack.stackName).toEqual([]);
      for (const queue of Object.values(t.findResources('AWS::SQS::Queue'))) expect(queue, stack.stackName).toMatchObject({ Properties: { SqsManagedSseEnabled: true } });
    }
    const regionCount = 1 + cluster.config.replicaRegions.length;
    expect(tables).toBe(3 * regionCount);
    expect(queues).toBe(2 * regionCount);
  });

  it('lets every queue be used over TLS only (a deny on aws:SecureTransport false for everyone)', () => {
    for (const stack of cluster.stacks.all) {
      const t = template(stack.stackName);
      expect(queuesWithoutTlsOnlyPolicy(t), stack.stackName).toEqual([]);
      // One guard per queue: the replication queue and its DLQ.
      expect(Object.keys(t.findResources('AWS::SQS::QueuePolicy')).length).toBe(Object.keys(t.findResources('AWS::SQS::Queue')).length);
    }
  });

  it('grants no wildcard action (the access policies included), nothing to the public, and has no unauthenticated method but the probes', () => {
    let managedPolicies = 0;
    for (const stack of cluster.stacks.all) {
      const t = template(stack.stackName);
      managedPolicies += Object.keys(t.findResources('AWS::IAM::ManagedPolicy')).length;
      expect(wildcardAllowActions(t), stack.stackName).toEqual([]);
      expect(publicAllowStatements(t), stack.stackName).toEqual([]);
      // GET /health and GET /livez only (open on purpose: readiness and liveness probes).
      const open = unauthenticatedMethods(t);
      expect(open.every((method) => /^Api(health|livez)GET[0-9A-F]{8} \(GET: NONE\)$/.test(method)), `${stack.stackName}: ${open.join(', ')}`).toBe(true);
      expect(open.length === 0 || open.length === 2, stack.stackName).toBe(true);
    }
    // The access policies were among the documents checked.
    expect(managedPolicies).toBe(2 * apiStacks().length);
  });

  it('the checks fail on an unencrypted queue, a queue without the TLS guard, a public allow, an unencrypted table', () => {
    const stack = new Stack(new App(), 'probe');
    const plain = new sqs.Queue(stack, 'Plain', { encryption: sqs.QueueEncryption.UNENCRYPTED });
    new sqs.Queue(stack, 'Guarded', { encryption: sqs.QueueEncryption.SQS_MANAGED, enforceSSL: true });
    plain.addToResourcePolicy(new iam.PolicyStatement({ principals: [new iam.AnyPrincipal()], actions: ['sqs:SendMessage'], resources: [plain.queueArn] }));
    const t = Template.fromStack(stack);
    expect(unencryptedQueues(t)).toEqual([expect.stringMatching(/^Plain/)]);
    expect(queuesWithoutTlsOnlyPolicy(t)).toEqual([expect.stringMatching(/^Plain/)]);
    expect(publicAllowStatements(t)).toEqual([expect.stringContaining('sqs:SendMessage')]);
    const tables = Template.fromJSON({ Resources: { Open: { Type: 'AWS::DynamoDB::Table', Properties: {} }, Closed: { Type: 'AWS::DynamoDB::Table', Properties: { SSESpecification: { SSEEnabled: true } } } } });
    expect(tablesWithoutKmsEncryption(tables)).toEqual(['Open']);
  });

  it('the wildcard check also fails on a managed policy and on an Allow with NotAction', () => {
    const stack = new Stack(new App(), 'probe');
    new iam.ManagedPolicy(stack, 'Managed', { statements: [new iam.PolicyStatement({ actions: ['execute-api:*'], resources: ['arn:aws:execute-api:us-east-1:123456789012:abc/v1/GET/kv'] })] });
    new iam.ManagedPolicy(stack, 'Inverted', { statements: [new iam.PolicyStatement({ notActions: ['iam:CreateUser'], resources: ['arn:aws:s3:::bucket'] })] });
    expect(wildcardAllowActions(Template.fromStack(stack))).toEqual([expect.stringContaining('execute-api:*'), expect.stringContaining('NotAction')]);
  });
});

describe('cdk-nag with an explicit account', () => {
  it('stays clean under both packs (AwsSolutions, Serverless): the access policies acknowledge their {key+} resources under the account number too', () => {
    const withAccount = synthesizeCluster({ account: '123456789012' }, { bundle: false });
    for (const pack of nagPacks(withAccount.app)) {
      const report = pack.validateScope(withAccount.app);
      expect(report.violations.map((violation) => violation.ruleName), pack.readPackName).toEqual([]);
    }
  });
});
