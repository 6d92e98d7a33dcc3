import { CfnOutput, Stack, Token, Validations } from 'aws-cdk-lib';
import type * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { assert } from '../core/assert.ts';
import type { InfraConfig } from './config.ts';

/**
 * Access to a region's REST API for people and services: two IAM managed policies per API,
 * to attach to a user, group or role. Every method of the API requires SigV4 (`AWS_IAM`), so a
 * caller needs `execute-api:Invoke` on the exact method and path; these policies grant exactly
 * that and nothing else.
 */

/** One grant: an HTTP method on an execute-api path (`*` stands for the greedy `{key+}`). */
export interface ApiGrant {
  method: 'GET' | 'PUT' | 'DELETE' | 'POST';
  path: string;
}

const readGrants: readonly ApiGrant[] = [
  { method: 'GET', path: '/kv' },
  { method: 'GET', path: '/kv/*' },
  { method: 'GET', path: '/watch' },
  { method: 'GET', path: '/cluster' },
  { method: 'GET', path: '/leases/*' },
  { method: 'GET', path: '/locks/*' },
  { method: 'GET', path: '/elections/*' },
  { method: 'GET', path: '/health' },
  // Open to anyone (no IAM, lib/infra/api.ts); granted too, so every route is in a level.
  { method: 'GET', path: '/livez' },
];

/**
 * The access levels, listed literally (not derived from `apiRoutes`): a new route is granted to
 * nobody until it is added here on purpose (a test compares both lists).
 */
export const apiAccessLevels = {
  /** Reads, listings, watches, cluster status, health and liveness. */
  read: readGrants,
  /** Everything `read` allows, plus writes (`PUT`, also compare-and-set), deletes of keys and transactions. */
  readWrite: [
    ...readGrants,
    { method: 'PUT', path: '/kv/*' }, { method: 'DELETE', path: '/kv/*' }, { method: 'POST', path: '/txn' },
    // Leases, locks and elections: granting, keeping alive, acquiring, proclaiming, releasing.
    { method: 'POST', path: '/leases' },
    { method: 'POST', path: '/leases/*/keepalive' },
    { method: 'DELETE', path: '/leases/*' },
    { method: 'POST', path: '/locks/*' },
    { method: 'DELETE', path: '/locks/*' },
    { method: 'POST', path: '/elections/*/campaign' },
    { method: 'POST', path: '/elections/*/proclaim' },
    { method: 'DELETE', path: '/elections/*' },
  ] as readonly ApiGrant[],
} as const;

export type ApiAccessLevel = keyof typeof apiAccessLevels;

/** The execute-api path of a route: path parameters become `*` (`/kv/{key+}` → `/kv/*`). */
export function executeApiPath(routePath: string): string {
  return routePath.replace(/\{[^}]+\}/g, '*');
}

/** IAM policy names are at most 128 characters of `[\w+=,.@-]`. */
export const managedPolicyNameLengthMax = 128;

/**
 * The managed policies' names. IAM names are global to the account, so each carries its region:
 * `<prefix>-<region>-kv-read` and `<prefix>-<region>-kv-readwrite`.
 */
export function apiAccessPolicyNames(prefix: string, region: string): Record<ApiAccessLevel, string> {
  const names = { read: `${prefix}-${region}-kv-read`, readWrite: `${prefix}-${region}-kv-readwrite` };
  for (const name of Object.values(names)) {
    assert(name.length <= managedPolicyNameLengthMax && /^[\w+=,.@-]+$/.test(name), `IAM policy name ${name} must be at most ${managedPolicyNameLengthMax} characters of letters, digits and +=,.@_-`);
  }
  return names;
}

/** Logical IDs (and so output keys) of the policies' ARNs in the stack that owns the API. */
export const apiAccessOutputs = { read: 'ReadOnlyPolicyArn', readWrite: 'ReadWritePolicyArn' } as const satisfies Record<ApiAccessLevel, string>;

export interface KvApiAccessProps {
  config: InfraConfig;
  api: apigateway.RestApi;
  /** The stage the ARNs name (the API's only stage). */
  stageName: string;
}

/**
 * The read-only and read-write managed policies of one region's API, with their ARNs as stack
 * outputs. The resources are `arn:<partition>:execute-api:<region>:<account>:<api id>/<stage>/<METHOD><path>`
 * for exactly the methods and paths of the level: no other API, stage or method is covered.
 */
export class KvApiAccess extends Construct {
  readonly policies: Record<ApiAccessLevel, iam.ManagedPolicy>;

  constructor(scope: Construct, id: string, props: KvApiAccessProps) {
    super(scope, id);
    const { config, api, stageName } = props;
    const region = Stack.of(this).region;
    const names = apiAccessPolicyNames(config.prefix, region);
    const descriptions: Record<ApiAccessLevel, string> = {
      read: `epochkv ${config.prefix}: read-only use of the ${region} API (GET /kv, /kv/*, /watch, /cluster, /health, /livez)`,
      readWrite: `epochkv ${config.prefix}: read-write use of the ${region} API (the read-only set plus PUT and DELETE /kv/*, POST /txn)`,
    };
    const policies: Partial<Record<ApiAccessLevel, iam.ManagedPolicy>> = {};
    for (const level of Object.keys(apiAccessLevels) as ApiAccessLevel[]) {
      const grants = apiAccessLevels[level];
      const resources = grants.map((grant) => api.arnForExecuteApi(grant.method, grant.path, stageName));
      const policy = new iam.ManagedPolicy(this, level === 'read' ? 'ReadOnly' : 'ReadWrite', {
        managedPolicyName: names[level],
        description: descriptions[level],
        statements: [new iam.PolicyStatement({ sid: level === 'read' ? 'InvokeRead' : 'InvokeReadWrite', effect: iam.Effect.ALLOW, actions: ['execute-api:Invoke'], resources })],
      });
      new CfnOutput(this, `${level}Arn`, {
        value: policy.managedPolicyArn,
        description: `IAM managed policy ${names[level]}: attach it to a user, group or role for ${level === 'read' ? 'read-only' : 'read-write'} access to the ${region} API`,
      }).overrideLogicalId(apiAccessOutputs[level]);
      // The `*` in `/kv/*` is the greedy `{key+}` path parameter: execute-api ARNs can name a
      // path-parameter route only with a wildcard segment. The action is the single
      // `execute-api:Invoke`, and API, stage and method are exact.
      const wildcardResources = grants.filter((grant) => grant.path.includes('*'));
      for (const grant of wildcardResources) {
        Validations.of(policy).acknowledge({
          id: `AwsSolutions-IAM5[Resource::${nagResource(Stack.of(this), grant, stageName, api)}]`,
          reason: `The execute-api resource ${grant.method} ${grant.path} stands for the greedy {key+} path parameter (any key); execute-api ARNs name such routes only with a wildcard segment. The action is execute-api:Invoke alone, on one API, stage and method.`,
        });
      }
      policies[level] = policy;
    }
    this.policies = policies as Record<ApiAccessLevel, iam.ManagedPolicy>;
  }
}

/**
 * How cdk-nag prints an execute-api ARN in a finding: pseudo parameters and references as
 * `<AWS::Partition>`, `<AWS::AccountId>`, `<LogicalId>`.
 */
function nagResource(stack: Stack, grant: ApiGrant, stageName: string, api: apigateway.RestApi): string {
  const ref = (stack.resolve(api.restApiId) as { Ref?: unknown }).Ref;
  assert(typeof ref === 'string', 'the REST API id must be a Ref to the API in the same stack');
  const account = Token.isUnresolved(stack.account) ? '<AWS::AccountId>' : stack.account;
  return `arn:<AWS::Partition>:execute-api:${stack.region}:${account}:<${ref}>/${stageName}/${grant.method}${grant.path}`;
}
