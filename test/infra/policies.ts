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
  Action: string | string[];
  Resource?: unknown;
}

export function actionsOf(statement: Statement): string[] {
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
      for (const action of actionsOf(statement)) if (action.includes('*')) found.push(`${document.logicalId}: ${action}`);
    }
  }
  return found;
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
            for (const action of actionsOf(statement)) actions.add(action);
            byGrantee.set(grantee, actions);
            grants.set(table, byGrantee);
          }
        }
      }
    }
  }
  return grants;
}
