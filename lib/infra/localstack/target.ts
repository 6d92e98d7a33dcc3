import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { contextKeys, infraConfigFromContext, type InfraConfig } from '../config.ts';
import { projectRoot } from '../handler-function.ts';

/**
 * Where LocalStack is and how the scripts talk to it. LocalStack accepts any credentials and
 * puts everything in account 000000000000; the endpoint can be moved with AWS_ENDPOINT_URL
 * (cdklocal then also wants AWS_ENDPOINT_URL_S3).
 */
export const localstack = {
  endpoint: process.env.AWS_ENDPOINT_URL ?? 'http://localhost:4566',
  account: '000000000000',
  credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  composeFile: 'lib/infra/localstack/docker-compose.yml',
};

/**
 * What deploy:localstack deployed, for test:localstack: the configuration and the stack outputs
 * (in the local cloud's git-ignored data directory, which `cdk synth` never rewrites).
 */
export const deploymentDirectory = path.join(projectRoot, '.epochkv', 'localstack');
export const deploymentFile = path.join(deploymentDirectory, 'deployment.json');
export const outputsFile = path.join(deploymentDirectory, 'outputs.json');

export interface Deployment {
  endpoint: string;
  config: InfraConfig;
  deployedAt: string;
}

/** LocalStack's health endpoint, with a short deadline: a reason when it does not answer. */
export async function probeLocalstack(endpoint: string, timeoutMs = 3_000): Promise<{ reachable: true; services: Record<string, string> } | { reachable: false; reason: string }> {
  try {
    const response = await fetch(`${endpoint}/_localstack/health`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return { reachable: false, reason: `${endpoint}/_localstack/health answered HTTP ${response.status}` };
    const body = (await response.json()) as { services?: Record<string, string> };
    return { reachable: true, services: body.services ?? {} };
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return { reachable: false, reason: `${endpoint}/_localstack/health did not answer (${error instanceof Error ? error.message : String(error)}${cause})` };
  }
}

/** `-c key=value` pairs among command-line arguments (forwarded to cdklocal as they are). */
export function contextFromArguments(args: string[]): Record<string, string> {
  const context: Record<string, string> = {};
  for (let position = 0; position < args.length; position += 1) {
    const arg = args[position] as string;
    const pair = arg === '-c' || arg === '--context' ? args[(position += 1)] : arg.startsWith('--context=') ? arg.slice('--context='.length) : undefined;
    if (pair === undefined) continue;
    const separator = pair.indexOf('=');
    if (separator > 0) context[pair.slice(0, separator)] = pair.slice(separator + 1);
  }
  return context;
}

/** The configuration cdk.json and the forwarded `-c` flags give, with deletion protection off (LocalStack is disposable). */
export function localstackConfig(args: string[]): { config: InfraConfig; context: Record<string, unknown> } {
  const cdkJson = JSON.parse(readFileSync(path.join(projectRoot, 'cdk.json'), 'utf8')) as { context?: Record<string, unknown> };
  const context: Record<string, unknown> = { ...cdkJson.context, ...contextFromArguments(args), [contextKeys.deletionProtection]: false, [contextKeys.account]: localstack.account };
  return { config: infraConfigFromContext((key) => context[key], { keys: Object.keys(context), environment: {} }), context };
}

export function writeDeployment(deployment: Deployment): void {
  mkdirSync(deploymentDirectory, { recursive: true });
  writeFileSync(deploymentFile, `${JSON.stringify(deployment, null, 2)}\n`);
}

export function readDeployment(): Deployment | undefined {
  try {
    return JSON.parse(readFileSync(deploymentFile, 'utf8')) as Deployment;
  } catch {
    return undefined;
  }
}
