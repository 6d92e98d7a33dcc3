import { CfnOutput, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { KvApiAccess } from './api-access.ts';
import { grantTableRead, grantTableTransactWrite, type ClusterReferences } from './access.ts';
import type { InfraConfig } from './config.ts';
import { addGatewayErrors } from './gateway-responses.ts';
import { HandlerFunction } from './handler-function.ts';

/**
 * The routes of functions/api.ts; every one answers through the same Lambda proxy integration.
 * `open`: no IAM, for load balancers and deploy scripts that probe readiness (/health) and
 * liveness (/livez) without AWS credentials; they say nothing of the data.
 */
export const apiRoutes: { path: string; methods: string[]; open?: boolean }[] = [
  { path: '/kv', methods: ['GET'] },
  { path: '/kv/{key+}', methods: ['GET', 'PUT', 'DELETE'] },
  { path: '/watch', methods: ['GET'] },
  { path: '/txn', methods: ['POST'] },
  { path: '/leases', methods: ['POST'] },
  { path: '/leases/{id}', methods: ['GET', 'DELETE'] },
  { path: '/leases/{id}/keepalive', methods: ['POST'] },
  { path: '/locks/{name}', methods: ['GET', 'POST', 'DELETE'] },
  { path: '/elections/{name}', methods: ['GET', 'DELETE'] },
  { path: '/elections/{name}/campaign', methods: ['POST'] },
  { path: '/elections/{name}/proclaim', methods: ['POST'] },
  { path: '/cluster', methods: ['GET'] },
  { path: '/health', methods: ['GET'], open: true },
  { path: '/livez', methods: ['GET'], open: true },
];

/** The routes as users write them: `GET /kv`, `GET|PUT|DELETE /kv/{key}`. */
export function routeNames(): string[] {
  return apiRoutes.map((route) => `${route.methods.join('|')} ${route.path.replace('{key+}', '{key}')}`);
}

export const apiStageName = 'v1';

/** Logical IDs of the API's stack outputs. */
export const apiOutputs = { url: 'ApiUrl', id: 'ApiId' } as const;

/**
 * API Gateway's integration limit is 29 s; a watch long-polls up to 20 s and a session read waits
 * up to 500 ms, so the function has room for either and still answers before the gateway gives up.
 */
export const apiTimeout = Duration.seconds(29);

export interface KvApiProps {
  config: InfraConfig;
  cluster: ClusterReferences;
}

/**
 * The region's REST API (v1): Lambda proxy integration of functions/api.ts, IAM (SigV4)
 * authorization on every method, read-only and read-write managed policies for its users
 * (`api-access.ts`), stage throttling, JSON access logs, error-level execution logs, X-Ray
 * tracing, and gateway responses in the handler's error shape. At home it serves writes and strong reads; in a replica region the same handler reads
 * the region's copy for `session`/`eventual` reads and runs writes and strong reads against the
 * home tables (its environment says which region it is in).
 */
export class KvApi extends Construct {
  readonly handler: HandlerFunction;
  readonly api: apigateway.RestApi;
  readonly accessLogs: logs.LogGroup;
  /** `{"error","message"}` bodies for the errors API Gateway answers itself (`gateway-responses.ts`). */
  readonly gatewayResponses: apigateway.GatewayResponse[];
  /** The read-only and read-write managed policies for this API's users (outputs `ReadOnlyPolicyArn`, `ReadWritePolicyArn`). */
  readonly access: KvApiAccess;

  constructor(scope: Construct, id: string, props: KvApiProps) {
    super(scope, id);
    const { config, cluster } = props;
    const region = Stack.of(this).region;
    const isHome = region === config.homeRegion;
    this.handler = new HandlerFunction(this, 'Handler', {
      config,
      handler: 'api',
      name: 'api',
      description: `epochkv API (${isHome ? 'home' : 'replica'} region ${region})`,
      timeout: apiTimeout,
      memorySizeMb: 512,
    });
    const fn = this.handler.function;
    // The fenced write path: one TransactWriteItems over home `control` (lease check), `log` and `kv`.
    grantTableRead(fn, cluster.homeTables.control, cluster.homeTables.log, cluster.homeTables.kv);
    grantTableTransactWrite(fn, cluster.homeTables.control, cluster.homeTables.log, cluster.homeTables.kv);
    // Session and eventual reads, listings and watch read the region's own copy.
    if (!isHome) grantTableRead(fn, cluster.localTables.control, cluster.localTables.log, cluster.localTables.kv);
    // After commit the writer ships the entry to every replica region's queue.
    for (const queue of cluster.replicaQueues) queue.grantSendMessages(fn);

    this.accessLogs = new logs.LogGroup(this, 'AccessLogs', {
      retention: config.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.api = new apigateway.RestApi(this, 'Api', {
      restApiName: `${config.prefix}-api`,
      description: `epochkv key-value API, ${isHome ? 'home' : 'replica'} region ${region}`,
      endpointConfiguration: { types: [apigateway.EndpointType.REGIONAL] },
      // Values are bytes: bodies arrive base64-encoded, and base64 responses leave as bytes.
      binaryMediaTypes: ['*/*'],
      // Execution logs need API Gateway's account-level CloudWatch role (one per account and region).
      cloudWatchRole: true,
      cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN,
      deployOptions: {
        stageName: apiStageName,
        throttlingRateLimit: config.apiRateLimitPerSecond,
        throttlingBurstLimit: config.apiBurstLimit,
        accessLogDestination: new apigateway.LogGroupLogDestination(this.accessLogs),
        accessLogFormat: apigateway.AccessLogFormat.jsonWithStandardFields({
          caller: true,
          httpMethod: true,
          ip: true,
          protocol: true,
          requestTime: true,
          resourcePath: true,
          responseLength: true,
          status: true,
          user: true,
        }),
        loggingLevel: apigateway.MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        metricsEnabled: true,
        // X-Ray: the stage starts the trace the function's active tracing continues.
        tracingEnabled: true,
      },
    });
    // API Gateway's own refusals (IAM, throttle, size, timeouts) in the handler's error shape.
    this.gatewayResponses = addGatewayErrors(this.api, config, routeNames());
    const validator = this.api.addRequestValidator('Validator', {
      requestValidatorName: 'parameters-and-body',
      validateRequestParameters: true,
      validateRequestBody: true,
    });
    const integration = new apigateway.LambdaIntegration(fn, { proxy: true, allowTestInvoke: false, timeout: apiTimeout });
    for (const route of apiRoutes) {
      const resource = this.api.root.resourceForPath(route.path);
      // The greedy `{key+}` is required: API Gateway refuses a request without it before Lambda runs.
      const requestParameters = route.path.includes('{key+}') ? { 'method.request.path.key': true } : undefined;
      for (const method of route.methods) {
        const added = resource.addMethod(method, integration, {
          authorizationType: route.open === true ? apigateway.AuthorizationType.NONE : apigateway.AuthorizationType.IAM,
          requestValidator: validator,
          ...(requestParameters === undefined ? {} : { requestParameters }),
        });
        if (route.open === true) {
          Validations.of(added).acknowledge({
            id: 'AwsSolutions-APIG4',
            reason: 'Readiness and liveness probes are open on purpose (load balancers, deploy scripts); they read no user data, the answer is cached per instance, and the stage is throttled.',
          });
        }
      }
    }
    // Fixed output names: `cdk deploy --outputs-file` and the LocalStack check read them.
    new CfnOutput(this, 'Url', { value: this.api.url, description: `epochkv API in ${region} (SigV4, service execute-api)` }).overrideLogicalId(apiOutputs.url);
    new CfnOutput(this, 'Id', { value: this.api.restApiId, description: `epochkv REST API id in ${region}` }).overrideLogicalId(apiOutputs.id);
    // What users attach to call this API: exact methods and paths, `execute-api:Invoke` only.
    this.access = new KvApiAccess(this, 'Access', { config, api: this.api, stageName: apiStageName });

    // cdk-nag findings acknowledged here, each on the narrowest construct that carries it.
    this.handler.acknowledge([
      {
        id: 'Serverless-LambdaDLQ',
        reason: 'API Gateway invokes the function synchronously only: the caller receives every failure as the response (a 5xx in the error shape), so there is no asynchronous event to keep.',
      },
    ]);
    for (const method of this.api.methods) {
      Validations.of(method).acknowledge({
        id: 'AwsSolutions-COG4',
        reason: 'Callers are AWS principals authorized with IAM (SigV4) on every method, by design: the API serves services and operators, not end users with Cognito identities.',
      });
    }
    Validations.of(this.api.deploymentStage).acknowledge({
      id: 'AwsSolutions-APIG3',
      reason: 'Every method requires SigV4-signed IAM credentials and the stage is throttled; a WAF web ACL per region would add a fixed monthly cost to an idle cluster. Add one for internet-facing deployments.',
    });
    const cloudWatchRole = this.api.node.tryFindChild('CloudWatchRole');
    if (cloudWatchRole !== undefined) {
      Validations.of(cloudWatchRole).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
        reason: 'API Gateway execution logging needs the account-level CloudWatch role; AmazonAPIGatewayPushToCloudWatchLogs is the AWS managed policy made for exactly that role.',
      });
    }
  }
}
