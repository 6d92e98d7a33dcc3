import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, type BundlingOptions } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { configToEnv } from '../config.ts';
import { clusterConfigFor, type InfraConfig } from './config.ts';
import { functionName as functionNameOf } from './names.ts';

/** The repository root: entries, the lock file and tsconfig.json are found from it. */
export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The Lambda entry points the stacks deploy: the same handlers the local cloud drives. */
export const handlerEntries = {
  api: 'functions/api.ts',
  node: 'functions/node.ts',
  apply: 'functions/apply.ts',
  replicaHeartbeat: 'functions/replica-heartbeat.ts',
} as const;
export type HandlerName = keyof typeof handlerEntries;

/**
 * esbuild, locally (never Docker), to one ES module per function. esbuild reads the `.ts`
 * entries and their `.ts`-suffixed imports as they are. The AWS SDK is bundled rather than
 * taken from the runtime, so Lambda runs the SDK versions the tests ran. The banner gives
 * CommonJS dependencies bundled into an ES module the `require` they expect.
 */
export const bundlingOptions: BundlingOptions = {
  format: OutputFormat.ESM,
  target: 'node24',
  mainFields: ['module', 'main'],
  banner: "import { createRequire as __epochkvCreateRequire } from 'node:module'; const require = __epochkvCreateRequire(import.meta.url);",
  bundleAwsSDK: true,
  externalModules: [],
  minify: true,
  sourceMap: true,
  forceDockerBundling: false,
};

export interface HandlerFunctionProps {
  config: InfraConfig;
  handler: HandlerName;
  /** Physical name suffix: `<prefix>-<name>`; Lambda names are per region, so regions repeat them. */
  name: string;
  description: string;
  timeout: Duration;
  memorySizeMb: number;
  /** Extra environment on top of the cluster contract (`lib/config.ts` `configToEnv`). */
  environment?: Record<string, string>;
  /** For scheduled handlers: a failed or late run is not retried, the next minute's run replaces it. */
  asyncRetry?: { retryAttempts: number; maxEventAge: Duration };
  /** Executions set aside for this function alone (and its ceiling); undefined shares the account's pool. */
  reservedConcurrency?: number;
}

/**
 * One deployed handler: a `NodejsFunction` (Node.js 24, arm64), its own role and its own log
 * group. The role starts empty: the log group grants its own write access, and each capability
 * construct grants exactly the table and queue access its handler needs. X-Ray active tracing
 * is on (Lambda grants the role its own segment upload), so an API request is one trace from
 * API Gateway through the function.
 */
export class HandlerFunction extends Construct {
  readonly function: NodejsFunction;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
  /** The name suffix: `node-a`, `api`, `apply`, `replica-heartbeat`. */
  readonly name: string;

  constructor(scope: Construct, id: string, props: HandlerFunctionProps) {
    super(scope, id);
    const { config } = props;
    const region = Stack.of(this).region;
    this.name = props.name;
    const functionName = functionNameOf(config.prefix, props.name);
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `epochkv ${props.name} in ${region}: table and queue access granted per capability`,
    });
    // The Lambda default log group name, made by the stack with a retention and a removal policy.
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName: `/aws/lambda/${functionName}`,
      retention: config.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.logGroup.grantWrite(this.role);
    this.function = new NodejsFunction(this, 'Function', {
      functionName,
      description: props.description,
      entry: path.join(projectRoot, handlerEntries[props.handler]),
      handler: 'handler',
      projectRoot,
      depsLockFilePath: path.join(projectRoot, 'package-lock.json'),
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySizeMb,
      timeout: props.timeout,
      role: this.role,
      logGroup: this.logGroup,
      environment: { ...configToEnv(clusterConfigFor(config, region)), ...props.environment },
      bundling: bundlingOptions,
      tracing: lambda.Tracing.ACTIVE,
      ...(props.reservedConcurrency === undefined ? {} : { reservedConcurrentExecutions: props.reservedConcurrency }),
      ...(props.asyncRetry === undefined ? {} : props.asyncRetry),
    });
    Validations.of(this.role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Active tracing grants xray:PutTraceSegments and xray:PutTelemetryRecords, which support no resource-level permissions: X-Ray accepts only Resource "*" for them. Every other statement of the role names its table, queue or log group.',
    });
  }

  /** cdk-nag findings that do not apply to how this function is invoked, with the reason. */
  acknowledge(findings: { id: string; reason: string }[]): void {
    for (const finding of findings) Validations.of(this.function).acknowledge(finding);
  }
}

/**
 * Why the scheduled functions (nodes, replica heartbeat) keep no dead-letter queue or failure
 * destination: their event is EventBridge's "a minute passed", carrying no data to replay, and
 * the next minute's run does the same work. A failure is seen by the function's Errors alarm.
 */
export const scheduledRunFindings = [
  { id: 'Serverless-LambdaDLQ', reason: 'A scheduled run\'s event carries no data: a failed run has nothing to replay, and the next minute\'s run replaces it. Failures raise the function\'s Errors alarm.' },
  {
    id: 'Serverless-LambdaAsyncFailureDestination',
    reason: 'Scheduled runs are not retried (MaximumRetryAttempts 0) and their event carries no data; a failure destination would only collect empty "a minute passed" events. Failures raise the function\'s Errors alarm.',
  },
];
