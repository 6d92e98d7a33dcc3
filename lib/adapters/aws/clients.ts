import { performance } from 'node:perf_hooks';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { limits } from '../../core/limits.ts';
import { awsCallMs, awsLatencyEnabled } from '../../local/aws-latency.ts';
import { CachedDocumentClient, documentInputOf, type DocumentClient } from './document-client.ts';

/**
 * DynamoDB Local keeps separate tables per access key and region, so every local process
 * must present the same key. On AWS (no endpoint) the standard credential chain is used.
 */
export const localCredentials = { accessKeyId: 'epochkvlocal', secretAccessKey: 'epochkvlocal' } as const;

/**
 * Who makes the calls, which decides how long one may hang (lib/core/limits.ts): a node's must
 * end within its lease, the API's within API Gateway's 29 s, a long poll's after its wait.
 */
export type ClientRole = 'node' | 'api' | 'worker' | 'long-poll';

export const requestTimeoutMsByRole: Readonly<Record<ClientRole, number>> = {
  node: limits.nodeRequestTimeoutMs,
  api: limits.apiRequestTimeoutMs,
  worker: limits.workerRequestTimeoutMs,
  'long-poll': limits.longPollRequestTimeoutMs,
};

export interface ClientOptions {
  region: string;
  /** Default `worker`. */
  role?: ClientRole | undefined;
  /** Emulator endpoint (DynamoDB Local); omitted on AWS. */
  endpoint?: string | undefined;
  /**
   * The region the caller runs in. Local cloud only: a call across regions fails while either
   * region is cut off (see cutOffRegion).
   */
  from?: string | undefined;
  /**
   * Local cloud only: whether the Lambda execution environment that owns this client still
   * exists. Once it returns false every call throws `EnvironmentKilledError` before it is sent
   * (a crashed environment makes no more calls); a call already sent is not recalled.
   */
  alive?: (() => boolean) | undefined;
}

/** Regions the local cloud has cut off: their tables and queues are unreachable from other regions and vice versa. */
const cutOffRegions = new Set<string>();

/** A call between two regions while one of them is cut off: what a network partition looks like to the caller. */
export class RegionUnreachableError extends Error {
  override name = 'RegionUnreachableError';
  readonly $metadata = { attempts: 1 };
}

/**
 * LOCAL CLOUD ONLY (fault injection, disaster-recovery rehearsal): from now on every call of
 * this process between `region` and another region fails, as if the region were lost. Clients
 * on AWS (no endpoint) or made without `from` are never affected.
 */
export function cutOffRegion(region: string): void {
  cutOffRegions.add(region);
}

export function reconnectRegion(region: string): void {
  cutOffRegions.delete(region);
}

export function isCutOff(region: string): boolean {
  return cutOffRegions.has(region);
}

function addPartition(stack: Stack, region: string, from: string | undefined, endpoint: string | undefined): void {
  if (endpoint === undefined || from === undefined || from === region) return;
  (stack as DynamoDBClient['middlewareStack']).add(
    (next) => async (args) => {
      if (cutOffRegions.has(region) || cutOffRegions.has(from)) {
        throw new RegionUnreachableError(`${cutOffRegions.has(region) ? region : from} is cut off: a call from ${from} to ${region} cannot get through`);
      }
      return next(args);
    },
    { step: 'initialize', priority: 'low', name: 'epochkvRegionPartition', override: true },
  );
}

/** A call made by a client whose Lambda execution environment the local cloud killed (see ClientOptions.alive). */
export class EnvironmentKilledError extends Error {
  override name = 'EnvironmentKilledError';
  readonly $metadata = { attempts: 1 };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * LOCAL CLOUD ONLY, per attempt (the deserialize step runs once for every send the retry
 * strategy makes): the AWS latency model (lib/local/aws-latency.ts), when it is on, and the kill
 * switch of the environment that owns the client. Half the modelled time passes before the
 * request leaves and half after the answer is back, so a write lands at the emulator about when
 * it would land at AWS. The environment is checked after the first half, right before sending:
 * an environment killed meanwhile sends nothing more.
 */
function addLocalCallModel(stack: Stack, service: AwsRequestRecord['service'], { region, endpoint, from, alive }: ClientOptions): void {
  if (endpoint === undefined) return;
  const caller = from ?? region;
  (stack as DynamoDBClient['middlewareStack']).add(
    (next, context) => async (args) => {
      const delayMs = awsLatencyEnabled() ? awsCallMs(service, operationOf(context.commandName), caller, region) : 0;
      const outboundMs = Math.floor(delayMs / 2);
      if (outboundMs > 0) await sleep(outboundMs);
      if (alive !== undefined && !alive()) {
        throw new EnvironmentKilledError(`the Lambda execution environment of this ${service} client was killed: ${operationOf(context.commandName)} to ${region} is not sent`);
      }
      const result = await next(args);
      if (delayMs - outboundMs > 0) await sleep(delayMs - outboundMs);
      return result;
    },
    { step: 'deserialize', priority: 'low', name: 'epochkvLocalCallModel', override: true },
  );
}

/**
 * One AWS SDK call as a request observer sees it (the benchmark counts requests with it).
 * `input` is the command's input as given (document form for `lib-dynamodb` commands); retries
 * inside the SDK are one record with `attempts` > 1.
 */
export interface AwsRequestRecord {
  service: 'dynamodb' | 'sqs';
  region: string;
  /** The operation, e.g. `TransactWriteItems`, `SendMessageBatch`. */
  operation: string;
  input: Record<string, unknown>;
  output: Record<string, unknown> | undefined;
  /** The error's name when the call failed. */
  error: string | undefined;
  /** `performance.now()` when the call was sent and when it settled. */
  startMs: number;
  endMs: number;
  attempts: number;
}

export type AwsRequestObserver = (record: AwsRequestRecord) => void;

interface Registration {
  observer: AwsRequestObserver;
  consumedCapacity: boolean;
}

/** Off by default: with no observer registered the middleware only checks an empty set. */
const registrations = new Set<Registration>();

/** DynamoDB operations that accept `ReturnConsumedCapacity`. */
const capacityOperations = new Set(['GetItem', 'PutItem', 'UpdateItem', 'DeleteItem', 'Query', 'Scan', 'BatchGetItem', 'BatchWriteItem', 'TransactGetItems', 'TransactWriteItems']);

/**
 * Registers an observer of every request made by the clients of `makeDynamoClient` and
 * `makeSqsClient` in this process (including clients made before the call). With
 * `consumedCapacity`, DynamoDB calls also ask for `ReturnConsumedCapacity: TOTAL` (a field of
 * the answer, nothing else changes). Returns the function that unregisters it.
 */
export function observeAwsRequests(observer: AwsRequestObserver, options: { consumedCapacity?: boolean } = {}): () => void {
  const registration: Registration = { observer, consumedCapacity: options.consumedCapacity === true };
  registrations.add(registration);
  return () => {
    registrations.delete(registration);
  };
}

function operationOf(commandName: unknown): string {
  const name = typeof commandName === 'string' ? commandName : 'Unknown';
  return name.endsWith('Command') ? name.slice(0, -'Command'.length) : name;
}

type Stack = DynamoDBClient['middlewareStack'] | SQSClient['middlewareStack'];

function addObserver(stack: Stack, service: AwsRequestRecord['service'], region: string): void {
  // The outermost middleware (initialize, high): it sees one logical call (retries included).
  // DynamoDB inputs are reported in document form (see documentInputOf), outputs as DynamoDB
  // returned them.
  (stack as DynamoDBClient['middlewareStack']).add(
    (next, context) => async (args) => {
      if (registrations.size === 0) return next(args);
      const operation = operationOf(context.commandName);
      const sent = args.input as Record<string, unknown>;
      // What the adapters sent: the document form, when CachedDocumentClient translated it.
      let input = documentInputOf(sent) ?? sent;
      if (service === 'dynamodb' && capacityOperations.has(operation) && sent.ReturnConsumedCapacity === undefined && [...registrations].some((entry) => entry.consumedCapacity)) {
        input = { ...input, ReturnConsumedCapacity: 'TOTAL' };
        args = { ...args, input: { ...sent, ReturnConsumedCapacity: 'TOTAL' } as typeof args.input };
      }
      const startMs = performance.now();
      const notify = (output: Record<string, unknown> | undefined, error: unknown) => {
        const metadata = (output?.$metadata ?? (error as { $metadata?: unknown } | undefined)?.$metadata) as { attempts?: number } | undefined;
        const record: AwsRequestRecord = {
          service,
          region,
          operation,
          input,
          output,
          error: error === undefined ? undefined : ((error as { name?: string }).name ?? 'Error'),
          startMs,
          endMs: performance.now(),
          attempts: metadata?.attempts ?? 1,
        };
        for (const entry of registrations) {
          try {
            entry.observer(record);
          } catch {
            // An observer never breaks a request.
          }
        }
      };
      try {
        const result = await next(args);
        notify(result.output as unknown as Record<string, unknown>, undefined);
        return result;
      } catch (error) {
        notify(undefined, error);
        throw error;
      }
    },
    { step: 'initialize', priority: 'high', name: 'epochkvRequestObserver', override: true },
  );
}

/**
 * epochkv never gives the SDK a logger (it logs with Powertools), but the SDK's logger middleware
 * still runs every input and output through its sensitive-data filter for the no-op default:
 * 2.8% of the benchmark process's CPU in a profile at 200 writes/s. Removing it changes nothing else.
 */
function removeSdkLogger(stack: Stack): void {
  (stack as DynamoDBClient['middlewareStack']).remove('loggerMiddleware');
}

/**
 * What every SDK client of epochkv shares: a connection and a request timeout per attempt, by
 * role; the SDK retries only throttling and transient network errors (timeouts included), a
 * bounded number of times (the adapters retry lost races themselves, with jittered
 * backoff); the middleware stack is resolved once per command class instead of on every call
 * (`cacheMiddleware`: a SendMessageBatch cost this process 0.61–0.68 ms of CPU with it against
 * 0.86–0.97 ms without, client and in-process SQS emulator together); locally, the emulator's
 * endpoint and key.
 */
function clientConfig(region: string, endpoint: string | undefined, role: ClientRole) {
  return {
    region,
    maxAttempts: limits.awsAttemptsMax,
    cacheMiddleware: true,
    // The options of the SDK's NodeHttpHandler (@smithy/node-http-handler), which the client
    // builds from them. Without these an endpoint that accepts a connection and never answers
    // stalls the call for good (the defaults are 0: no timeout). `requestTimeout` runs from the
    // request's start to the answer's end and throws only with `throwOnRequestTimeout` (else it
    // logs a warning); the error is a TimeoutError, which the SDK retries as transient.
    requestHandler: { connectionTimeout: limits.awsConnectionTimeoutMs, requestTimeout: requestTimeoutMsByRole[role], throwOnRequestTimeout: true },
    ...(endpoint === undefined ? {} : { endpoint, credentials: localCredentials }),
  };
}

/** The middleware epochkv adds, all of it here: with a cached stack, nothing may be added after the first request. */
function prepareStack(stack: Stack, service: AwsRequestRecord['service'], options: ClientOptions): void {
  const { region, endpoint, from } = options;
  removeSdkLogger(stack);
  addObserver(stack, service, region);
  addPartition(stack, region, from, endpoint);
  addLocalCallModel(stack, service, options);
}

/** DynamoDB client for a region (see CachedDocumentClient); on the local cloud it points at DynamoDB Local with the local key. */
export function makeDynamoClient(options: ClientOptions): DocumentClient {
  const client = new DynamoDBClient(clientConfig(options.region, options.endpoint, options.role ?? 'worker'));
  prepareStack(client.middlewareStack, 'dynamodb', options);
  return new CachedDocumentClient(client) as unknown as DocumentClient;
}

/** SQS client for a region; on the local cloud it points at the emulator with the local key. */
export function makeSqsClient(options: ClientOptions): SQSClient {
  const client = new SQSClient(clientConfig(options.region, options.endpoint, options.role ?? 'worker'));
  prepareStack(client.middlewareStack, 'sqs', options);
  return client;
}
