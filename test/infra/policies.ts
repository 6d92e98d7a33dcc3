import type { Template } from 'aws-cdk-lib/assertions';
import { statefulLogicalIds } from '../../lib/infra/data.ts';

/**
 * Reading IAM out of synthesized templates: which function may do what to which table. The
 * helpers are plain functions over template JSON so the tests can also show they catch a bad
 * template (a test that cannot fail proves nothing).
 */

type Json = Record<string, unknown>;
export interface Statement {
  Effect: 'Allow' | 'Deny';
  Action?: string | string[];
  /** An Allow with NotAction grants every action but those listed: a wildcard in disguise. */
  NotAction?: string | string[];
  Resource?: unknown;
  Principal?: unknown;
  Condition?: unknown;
}

export function actionsOf(statement: Statement): string[] {
  if (statement.Action === undefined) return [];
  return Array.isArray(statement.Action) ? statement.Action : [statement.Action];
}

function resourcesOfStatement(statement: Statement): unknown[] {
  if (statement.Resource === undefined) return [];
  return Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource];
}

/** Every policy document of a template: identity policies, inline role policies, resource policies. */
export function policyDocuments(template: Template): { logicalId: string; type: string; statements: Statement[] }[] {
  const out: { logicalId: string; type: string; statements: Statement[] }[] = [];
  for (const [logicalId, resource] of Object.entries(template.toJSON().Resources as Record<string, { Type: string; Properties?: Json }>)) {
    const properties = resource.Properties ?? {};
    const documents: unknown[] = [];
    if (properties.PolicyDocument !== undefined) documents.push(properties.PolicyDocument);
    for (const inline of (properties.Policies as { PolicyDocument: unknown }[] | undefined) ?? []) documents.push(inline.PolicyDocument);
    for (const document of documents) out.push({ logicalId, type: resource.Type, statements: (document as { Statement: Statement[] }).Statement });
  }
  return out;
}

/**
 * Allow statements whose action is `*` or `service:*` (or any action pattern with a wildcard).
 * Deny statements are guards (the queues' "deny anything without TLS") and are not grants.
 */
export function wildcardAllowActions(template: Template): string[] {
  const found: string[] = [];
  for (const document of policyDocuments(template)) {
    for (const statement of document.statements) {
      if (statement.Effect !== 'Allow') continue;
      if (statement.NotAction !== undefined) found.push(`${document.logicalId}: NotAction ${JSON.stringify(statement.NotAction)}`);
      for (const action of actionsOf(statement)) if (action.includes('*')) found.push(`${document.logicalId}: ${action}`);
    }
  }
  return found;
}

/** Allow statements open to anyone (`Principal: "*"` or `{ AWS: "*" }`) in any resource policy. */
export function publicAllowStatements(template: Template): string[] {
  const found: string[] = [];
  for (const document of policyDocuments(template)) {
    for (const statement of document.statements) {
      if (statement.Effect !== 'Allow' || statement.Principal === undefined) continue;
      const principal = JSON.stringify(statement.Principal);
      if (principal === '"*"' || /"AWS":(\[[^\]]*)?"\*"/.test(principal)) found.push(`${document.logicalId}: ${actionsOf(statement).join(',')} for ${principal}`);
    }
  }
  return found;
}

/**
 * The queues of a template that accept plain HTTP: a queue is TLS-only when a queue policy
 * attached to it (`Queues: [{Ref}]`) denies everyone every SQS action on it (`Resource` its
 * ARN) when `aws:SecureTransport` is false, as `enforceSSL: true` writes it.
 */
export function queuesWithoutTlsOnlyPolicy(template: Template): string[] {
  const queues = Object.keys(template.findResources('AWS::SQS::Queue'));
  const policies = Object.values(template.findResources('AWS::SQS::QueuePolicy')) as { Properties: { Queues: unknown[]; PolicyDocument: { Statement: Statement[] } } }[];
  return queues.filter((queue) => {
    const guarded = policies.some((policy) => {
      if (!policy.Properties.Queues.some((ref) => JSON.stringify(ref) === JSON.stringify({ Ref: queue }))) return false;
      return policy.Properties.PolicyDocument.Statement.some(
        (statement) =>
          statement.Effect === 'Deny' &&
          actionsOf(statement).some((action) => action === 'sqs:*' || action === '*') &&
          ['"*"', '{"AWS":"*"}'].includes(JSON.stringify(statement.Principal)) &&
          JSON.stringify(statement.Condition) === JSON.stringify({ Bool: { 'aws:SecureTransport': 'false' } }) &&
          resourcesOfStatement(statement).some((resource) => JSON.stringify(resource) === JSON.stringify({ 'Fn::GetAtt': [queue, 'Arn'] })),
      );
    });
    return !guarded;
  });
}

/** Queues with no encryption at rest (neither SQS-managed SSE nor a KMS key). */
export function unencryptedQueues(template: Template): string[] {
  return Object.entries(template.findResources('AWS::SQS::Queue'))
    .filter(([, queue]) => {
      const properties = (queue as { Properties?: Json }).Properties ?? {};
      return properties.SqsManagedSseEnabled !== true && properties.KmsMasterKeyId === undefined;
    })
    .map(([logicalId]) => logicalId);
}

/**
 * Tables not encrypted under a KMS key. DynamoDB always encrypts; `SSESpecification.SSEEnabled`
 * makes the key a KMS key (the AWS managed `aws/dynamodb` unless one is named), whose use shows
 * in CloudTrail, instead of the AWS owned key.
 */
export function tablesWithoutKmsEncryption(template: Template): string[] {
  return Object.entries(template.findResources('AWS::DynamoDB::Table'))
    .filter(([, table]) => ((table as { Properties?: Json }).Properties?.SSESpecification as { SSEEnabled?: unknown } | undefined)?.SSEEnabled !== true)
    .map(([logicalId]) => logicalId);
}

/** A CloudFormation string expression (`Fn::Join` of strings and `Ref`s) as text, references as `<LogicalId>`. */
function expressionText(value: unknown): string {
  if (typeof value === 'string') return value;
  const object = value as { Ref?: string; 'Fn::Join'?: [string, unknown[]] };
  if (object.Ref !== undefined) return `<${object.Ref}>`;
  if (object['Fn::Join'] !== undefined) return object['Fn::Join'][1].map(expressionText).join(object['Fn::Join'][0]);
  return `<${JSON.stringify(value)}>`;
}

/**
 * What a managed policy (found by its `ManagedPolicyName`) lets its holder call on a REST API:
 * `METHOD /path` for every `execute-api:Invoke` resource on `apiLogicalId`'s `stage` in `region`.
 * Anything else it allows (another action, API, stage or ARN shape) is returned in `other`.
 */
export function executeApiGrants(template: Template, policyName: string, api: { logicalId: string; region: string; stage: string }): { grants: string[]; other: string[] } {
  const policies = Object.values(template.findResources('AWS::IAM::ManagedPolicy', { Properties: { ManagedPolicyName: policyName } })) as { Properties: { PolicyDocument: { Statement: Statement[] } } }[];
  if (policies.length !== 1) throw new Error(`expected one managed policy named ${policyName}, found ${policies.length}`);
  const prefix = `arn:<AWS::Partition>:execute-api:${api.region}:<AWS::AccountId>:<${api.logicalId}>/${api.stage}/`;
  const grants: string[] = [];
  const other: string[] = [];
  for (const statement of (policies[0] as { Properties: { PolicyDocument: { Statement: Statement[] } } }).Properties.PolicyDocument.Statement) {
    const actions = actionsOf(statement);
    if (statement.Effect !== 'Allow' || statement.NotAction !== undefined || actions.length !== 1 || actions[0] !== 'execute-api:Invoke' || statement.Condition !== undefined) {
      other.push(JSON.stringify(statement));
      continue;
    }
    for (const resource of resourcesOfStatement(statement)) {
      const text = expressionText(resource);
      const match = text.startsWith(prefix) ? /^([A-Z]+)(\/.*)$/.exec(text.slice(prefix.length)) : null;
      if (match === null) other.push(text);
      else grants.push(`${match[1]} ${match[2]}`);
    }
  }
  return { grants: grants.sort(), other };
}

/** Methods of a REST API that do not require SigV4 (IAM) authorization. */
export function unauthenticatedMethods(template: Template): string[] {
  return Object.entries(template.findResources('AWS::ApiGateway::Method'))
    .filter(([, method]) => (method as { Properties: Json }).Properties.AuthorizationType !== 'AWS_IAM')
    .map(([logicalId, method]) => `${logicalId} (${String((method as { Properties: Json }).Properties.HttpMethod)}: ${String((method as { Properties: Json }).Properties.AuthorizationType ?? 'NONE')})`);
}

/**
 * Names a table an ARN points at, as `<region>/<table name>`: a same-region reference comes as an
 * import of the data stack's export (its pinned logical ID in the export name), a cross-region
 * one as an ARN built by convention.
 */
export function tableOfResource(resource: unknown, config: { prefix: string }, dataStackRegion: (stackName: string) => string | undefined): string | undefined {
  const json = JSON.stringify(resource);
  const imported = /"Fn::ImportValue":"([^:"]+):ExportsOutputFnGetAtt(\w+?)Arn[0-9A-F]{8}"/.exec(json);
  if (imported !== null) {
    const [, stackName, logicalId] = imported;
    const role = Object.entries(statefulLogicalIds.tables).find(([, id]) => id === logicalId)?.[0];
    const region = dataStackRegion(stackName as string);
    return role === undefined || region === undefined ? undefined : `${region}/${config.prefix}-${role}`;
  }
  const byConvention = /:dynamodb:([a-z0-9-]+):.*?:table\/([A-Za-z0-9_.-]+)"/.exec(json);
  if (byConvention !== null) return `${byConvention[1]}/${byConvention[2]}`;
  return undefined;
}

/** The function (by name) each role of a template belongs to. */
export function functionNamesByRole(template: Template): Map<string, string> {
  const out = new Map<string, string>();
  for (const fn of Object.values(template.findResources('AWS::Lambda::Function'))) {
    const properties = (fn as { Properties: Json }).Properties;
    const role = (properties.Role as { 'Fn::GetAtt'?: [string, string] } | undefined)?.['Fn::GetAtt']?.[0];
    if (role !== undefined) out.set(role, String(properties.FunctionName));
  }
  return out;
}

/** For each `<region>/<table>`: `<function>@<region>` → the actions granted on it. */
export function tableGrants(
  templates: { template: Template; region: string }[],
  config: { prefix: string },
  dataStackRegion: (stackName: string) => string | undefined,
): Map<string, Map<string, Set<string>>> {
  const grants = new Map<string, Map<string, Set<string>>>();
  for (const { template, region } of templates) {
    const functions = functionNamesByRole(template);
    for (const [, policy] of Object.entries(template.findResources('AWS::IAM::Policy'))) {
      const properties = (policy as { Properties: Json }).Properties;
      const roles = ((properties.Roles as { Ref: string }[] | undefined) ?? []).map((role) => role.Ref);
      const statements = (properties.PolicyDocument as { Statement: Statement[] }).Statement;
      for (const roleId of roles) {
        const grantee = `${functions.get(roleId) ?? roleId}@${region}`;
        for (const statement of statements) {
          if (statement.Effect !== 'Allow') continue;
          for (const resource of resourcesOfStatement(statement)) {
            const table = tableOfResource(resource, config, dataStackRegion);
            if (table === undefined) continue;
            const byGrantee = grants.get(table) ?? new Map<string, Set<string>>();
            const actions = byGrantee.get(grantee) ?? new Set<string>();
            // A conditional grant is only part of the action: its condition goes with it.
            const condition = statement.Condition === undefined ? '' : ` when ${JSON.stringify(statement.Condition)}`;
            for (const action of actionsOf(statement)) actions.add(`${action}${condition}`);
            byGrantee.set(grantee, actions);
            grants.set(table, byGrantee);
          }
        }
      }
    }
  }
  return grants;
}
