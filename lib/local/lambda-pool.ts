import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { assert } from '../core/assert.ts';
import { limits } from '../core/limits.ts';

/**
 * Lambda's execution environments for one function, played in this process. On AWS an
 * environment serves one invocation at a time; an invocation that finds no idle environment
 * gets a new one (a cold start: the module scope runs again, so the function's caches and SDK
 * clients are per environment); past the concurrency limit Lambda refuses the invocation
 * (429 TooManyRequestsException). Sources:
 * - "For each concurrent request, Lambda provisions a separate instance of your execution
 *   environment"; the default concurrency limit is 1,000 per account and region (Understanding
 *   Lambda function scaling, https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html;
 *   Lambda quotas, https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
 * - "If requests arrive faster than a function can scale, or if a function reaches maximum
 *   capacity, additional requests will fail with a throttling error (status code 429)"
 *   (Lambda scaling behavior, https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html).
 * - After a crash or a timeout the environment is reset: the next invocation starts a new one
 *   (Lambda execution environment lifecycle,
 *   https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html).
 *
 * Not modelled: the scaling rate (1,000 new environments per 10 s per function), the time a
 * cold start takes, and the freeze between invocations (module-scope timers keep running here).
 */

/** What one cold start makes: the handler and what frees the environment's resources. */
export interface LambdaEnvironment<Event, Result> {
  handler: (event: Event) => Promise<Result>;
  close(): void;
}

/**
 * A cold start. `alive` answers false once the environment was killed or timed out: its SDK
 * clients use it to refuse further calls (ClientOptions.alive in lib/adapters/aws/clients.ts).
 */
export type LambdaEnvironmentFactory<Event, Result> = (environmentId: string, alive: () => boolean) => LambdaEnvironment<Event, Result> | Promise<LambdaEnvironment<Event, Result>>;

export interface LambdaPoolOptions<Event, Result> {
  /** The function's name: environment ids are `<name>-<n>`. */
  name: string;
  factory: LambdaEnvironmentFactory<Event, Result>;
  /** Environments at once; beyond it an invocation is throttled. Default 1000, the AWS account default per region. */
  concurrencyMax?: number;
  /** The function timeout: an invocation still running after it fails and its environment is reset. Default: none. */
  timeoutMs?: number;
  /**
   * An environment idle this long is closed. AWS does not document when it reclaims an idle
   * environment; default: never.
   */
  idleReclaimMs?: number;
  log?: (line: string) => void;
}

export type LambdaEnvironmentState = 'starting' | 'busy' | 'idle';

export interface LambdaEnvironmentInfo {
  id: string;
  state: LambdaEnvironmentState;
  invocations: number;
  /** Date.now() at the cold start and at the end of the last invocation. */
  createdAtMs: number;
  lastUsedAtMs: number;
}

export interface LambdaPoolStats {
  concurrencyMax: number;
  /** Environments that exist now, and of them the ones serving an invocation (or starting for one) and the idle ones. */
  environments: number;
  busy: number;
  idle: number;
  /** The most environments busy at once so far. */
  busyMax: number;
  /** Environments created: every one was a cold start. */
  coldStarts: number;
  /** Invocations accepted (throttled ones are not). */
  invocations: number;
  throttles: number;
  /** Invocations that failed: the handler threw, the environment was killed, or it timed out. */
  functionErrors: number;
  kills: number;
  timeouts: number;
  /** Idle environments closed after `idleReclaimMs`. */
  reclaimed: number;
}

/** Lambda refused the invocation: the function is at its concurrency limit (Invoke's 429 TooManyRequestsException). */
export class LambdaThrottledError extends Error {
  override name = 'TooManyRequestsException';
  readonly statusCode = 429;
}

/**
 * The function ran and failed: `errorType` as Lambda reports it, e.g. `Runtime.ExitError` when
 * the runtime died (a killed environment), `Sandbox.Timedout` on a timeout, or the thrown
 * error's name.
 */
export class LambdaFunctionError extends Error {
  override name = 'LambdaFunctionError';
  constructor(
    readonly errorType: string,
    message: string,
    readonly environmentId: string,
  ) {
    super(message);
  }
}

export class LambdaTimeoutError extends LambdaFunctionError {
  override name = 'LambdaTimeoutError';
}

interface Environment<Event, Result> {
  id: string;
  state: LambdaEnvironmentState;
  alive: boolean;
  instance: LambdaEnvironment<Event, Result> | undefined;
  invocations: number;
  createdAtMs: number;
  lastUsedAtMs: number;
  /** Ends the invocation in flight at once with this error (kill, timeout). */
  fail: ((error: LambdaFunctionError) => void) | undefined;
  /** The handler's promise of the invocation in flight; a dead environment closes when it settles. */
  running: Promise<unknown> | undefined;
  idleTimer: NodeJS.Timeout | undefined;
}

export const concurrencyMaxDefault = 1_000;

export class LambdaPool<Event, Result> {
  readonly name: string;
  readonly concurrencyMax: number;
  readonly #factory: LambdaEnvironmentFactory<Event, Result>;
  readonly #timeoutMs: number | undefined;
  readonly #idleReclaimMs: number | undefined;
  readonly #log: (line: string) => void;
  readonly #environments = new Map<string, Environment<Event, Result>>();
  /** Idle environments, the most recently used last: it is the one reused, so a burst's extras go idle and can be reclaimed. */
  readonly #idle: Environment<Event, Result>[] = [];
  #sequence = 0;
  #closed = false;
  readonly #counters = { busyMax: 0, coldStarts: 0, invocations: 0, throttles: 0, functionErrors: 0, kills: 0, timeouts: 0, reclaimed: 0 };

  constructor(options: LambdaPoolOptions<Event, Result>) {
    this.name = options.name;
    this.concurrencyMax = options.concurrencyMax ?? concurrencyMaxDefault;
    this.#factory = options.factory;
    this.#timeoutMs = options.timeoutMs;
    this.#idleReclaimMs = options.idleReclaimMs;
    this.#log = options.log ?? (() => {});
    assert(Number.isInteger(this.concurrencyMax) && this.concurrencyMax >= 1, `concurrencyMax must be a positive integer, got ${this.concurrencyMax}`);
    assert(this.#timeoutMs === undefined || this.#timeoutMs > 0, `timeoutMs must be positive, got ${this.#timeoutMs}`);
    assert(this.#idleReclaimMs === undefined || this.#idleReclaimMs > 0, `idleReclaimMs must be positive, got ${this.#idleReclaimMs}`);
  }

  /**
   * Runs `event` on an idle environment, or on a new one. Throws LambdaThrottledError at the
   * concurrency limit, LambdaFunctionError when the handler throws or its environment is
   * killed, LambdaTimeoutError after `timeoutMs`.
   */
  async invoke(event: Event): Promise<Result> {
    if (this.#closed) throw new LambdaThrottledError(`${this.name}: the function is being torn down`);
    const environment = this.#acquire();
    this.#counters.invocations += 1;
    environment.invocations += 1;
    let timer: NodeJS.Timeout | undefined;
    const failed = new Promise<never>((_, reject) => {
      environment.fail = reject;
    });
    try {
      if (environment.instance === undefined) {
        // A cold start: the module scope of a new environment runs before the handler. The
        // instance is kept even when the environment dies meanwhile, so that it is closed.
        const starting = Promise.resolve()
          .then(() => this.#factory(environment.id, () => environment.alive))
          .then((instance) => {
            environment.instance = instance;
            return instance;
          });
        starting.catch(() => {});
        environment.running = starting;
        await Promise.race([starting, failed]);
        environment.state = 'busy';
      }
      const instance = environment.instance as LambdaEnvironment<Event, Result>;
      const running = Promise.resolve().then(() => instance.handler(event));
      // A killed environment's handler keeps running to its end here (on AWS the process is
      // gone); nobody waits for it, so its failure must not be an unhandled rejection.
      running.catch(() => {});
      environment.running = running;
      if (this.#timeoutMs !== undefined) {
        const timeoutMs = this.#timeoutMs;
        timer = setTimeout(() => this.#end(environment, new LambdaTimeoutError('Sandbox.Timedout', `Task timed out after ${(timeoutMs / 1_000).toFixed(2)} seconds`, environment.id), 'timeouts'), timeoutMs);
      }
      return await Promise.race([running, failed]);
    } catch (error) {
      this.#counters.functionErrors += 1;
      // An environment whose start failed is not kept: the next invocation starts a new one.
      if (environment.instance === undefined && environment.alive) this.#discard(environment);
      if (error instanceof LambdaFunctionError) throw error;
      // The handler threw: Lambda reports a function error; the environment stays.
      throw new LambdaFunctionError(error instanceof Error ? error.name : 'Error', error instanceof Error ? error.message : String(error), environment.id);
    } finally {
      clearTimeout(timer);
      environment.fail = undefined;
      if (environment.alive) this.#release(environment);
    }
  }

  /**
   * The environment dies as a crashed Lambda's runtime does: an invocation in flight fails at
   * once with `Runtime.ExitError`, the environment is gone (never reused), and its SDK clients
   * send nothing more. A call already sent is not recalled: it may still change the tables.
   * Its `close()` runs when its handler's code settles (at once when it was idle). False when
   * there is no such environment.
   */
  kill(environmentId: string): boolean {
    const environment = this.#environments.get(environmentId);
    if (environment === undefined) return false;
    this.#end(environment, new LambdaFunctionError('Runtime.ExitError', 'RequestId: local Error: Runtime exited without providing a reason', environment.id), 'kills');
    this.#log(`lambda ${this.name}: killed ${environment.id}${environment.state === 'idle' ? ' (idle)' : ' mid-invocation'}`);
    return true;
  }

  environments(): LambdaEnvironmentInfo[] {
    return [...this.#environments.values()].map((environment) => ({
      id: environment.id,
      state: environment.state,
      invocations: environment.invocations,
      createdAtMs: environment.createdAtMs,
      lastUsedAtMs: environment.lastUsedAtMs,
    }));
  }

  stats(): LambdaPoolStats {
    const busy = [...this.#environments.values()].filter((environment) => environment.state !== 'idle').length;
    return { concurrencyMax: this.concurrencyMax, environments: this.#environments.size, busy, idle: this.#environments.size - busy, ...this.#counters };
  }

  /** No more invocations: idle environments close now, busy ones when their invocation ends. */
  close(): void {
    this.#closed = true;
    for (const environment of [...this.#idle]) this.#discard(environment);
  }

  #acquire(): Environment<Event, Result> {
    const reused = this.#idle.pop();
    let environment: Environment<Event, Result>;
    if (reused !== undefined) {
      clearTimeout(reused.idleTimer);
      reused.idleTimer = undefined;
      reused.state = 'busy';
      environment = reused;
    } else {
      if (this.#environments.size >= this.concurrencyMax) {
        this.#counters.throttles += 1;
        throw new LambdaThrottledError(`Rate Exceeded. ${this.name} is at its concurrency limit of ${this.concurrencyMax}`);
      }
      this.#sequence += 1;
      this.#counters.coldStarts += 1;
      const nowMs = Date.now();
      environment = { id: `${this.name}-${this.#sequence}`, state: 'starting', alive: true, instance: undefined, invocations: 0, createdAtMs: nowMs, lastUsedAtMs: nowMs, fail: undefined, running: undefined, idleTimer: undefined };
      this.#environments.set(environment.id, environment);
    }
    environment.state = environment.instance === undefined ? 'starting' : 'busy';
    const busy = [...this.#environments.values()].filter((candidate) => candidate.state !== 'idle').length;
    this.#counters.busyMax = Math.max(this.#counters.busyMax, busy);
    return environment;
  }

  #release(environment: Environment<Event, Result>): void {
    environment.running = undefined;
    environment.lastUsedAtMs = Date.now();
    if (this.#closed) {
      this.#discard(environment);
      return;
    }
    environment.state = 'idle';
    this.#idle.push(environment);
    if (this.#idleReclaimMs !== undefined) {
      environment.idleTimer = setTimeout(() => {
        this.#counters.reclaimed += 1;
        this.#discard(environment);
      }, this.#idleReclaimMs);
      environment.idleTimer.unref();
    }
  }

  /** Kill or timeout: the environment is gone at once; the caller of its invocation gets `error`. */
  #end(environment: Environment<Event, Result>, error: LambdaFunctionError, counter: 'kills' | 'timeouts'): void {
    if (!environment.alive) return;
    this.#counters[counter] += 1;
    environment.fail?.(error);
    this.#discard(environment);
  }

  #discard(environment: Environment<Event, Result>): void {
    environment.alive = false;
    clearTimeout(environment.idleTimer);
    this.#environments.delete(environment.id);
    const position = this.#idle.indexOf(environment);
    if (position !== -1) this.#idle.splice(position, 1);
    const close = () => {
      try {
        environment.instance?.close();
      } catch (error) {
        this.#log(`lambda ${this.name}: closing ${environment.id} failed: ${String(error)}`);
      }
    };
    // Closing the clients under a call in flight could cut off a request already on its way;
    // a crashed environment's sent calls still land, so close once its code has settled.
    if (environment.running === undefined) close();
    else void environment.running.then(close, close);
  }
}

export type ApiProxyHandler = (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>;

function gatewayProblem(statusCode: number, code: string, message: string): APIGatewayProxyResult {
  return { statusCode, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: code, message }) };
}

/**
 * What API Gateway's REST API answers the client when its Lambda proxy integration fails.
 * API Gateway's body is `{"message": ...}`; locally `error` is added (the shape of every
 * epochkv problem) and names the cause, which a client on AWS cannot see. Sources:
 * - "If the Lambda API rejects the invocation request, API Gateway returns a 500 error code.
 *   If the function runs but returns an error, or returns a response in the wrong format, API
 *   Gateway returns a 502. In both cases, the body of the response from API Gateway is
 *   {"message": "Internal server error"}" (Handling Lambda errors with an API Gateway API,
 *   https://docs.aws.amazon.com/lambda/latest/dg/services-apigateway-errors.html). A throttled
 *   invocation (Lambda's 429) is such a rejection: 500, not 429 — as reported in "API Gateway
 *   proxy integration does not forward Lambda throttling (HTTP 429) to client" (re:Post,
 *   https://repost.aws/questions/QUfI6bsdd0SOiPeyimzxSkfQ).
 * - A crash (the runtime exits) is a function error: 502.
 * - "If an integration request takes longer than your API Gateway REST API maximum integration
 *   timeout parameter, API Gateway returns an HTTP 504 status code"
 *   (https://repost.aws/knowledge-center/api-gateway-504-errors); the gateway response type
 *   INTEGRATION_TIMEOUT defaults to 504 (Gateway response types for API Gateway,
 *   https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html)
 *   with the message "Endpoint request timed out". epochkv's api function and its integration
 *   both time out at 29 s (lib/infra/api.ts `apiTimeout`): the client sees the 504.
 */
export function apiGatewayAnswer(error: unknown): APIGatewayProxyResult | undefined {
  const answer = gatewayProblem;
  if (error instanceof LambdaThrottledError) return answer(500, 'LambdaThrottled', 'Internal server error');
  if (error instanceof LambdaTimeoutError) return answer(504, 'IntegrationTimeout', 'Endpoint request timed out');
  if (error instanceof LambdaFunctionError) return answer(502, 'LambdaFunctionError', 'Internal server error');
  return undefined;
}

/**
 * API Gateway's Lambda proxy integration in front of a pool of the api function, with Lambda's
 * payload caps: an event over 6 MiB is refused by the Lambda API (API Gateway: 500), an answer
 * over 6,291,556 bytes fails the invocation (Function.ResponseSizeTooLarge; API Gateway: 502).
 */
export function apiGatewayIntegration(pool: LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>, log: (line: string) => void = () => {}): ApiProxyHandler {
  return async (event) => {
    const eventBytes = Buffer.byteLength(JSON.stringify(event));
    if (eventBytes > limits.lambdaRequestBytesMax) {
      log(`api gateway: ${event.httpMethod} ${event.path}: the event is ${eventBytes} bytes, over Lambda's ${limits.lambdaRequestBytesMax}: answered 500`);
      return gatewayProblem(500, 'LambdaRequestTooLarge', `Internal server error (the request is ${eventBytes} bytes as a Lambda event; Lambda takes at most ${limits.lambdaRequestBytesMax})`);
    }
    try {
      const result = await pool.invoke(event);
      const resultBytes = Buffer.byteLength(JSON.stringify(result));
      if (resultBytes > limits.lambdaResponseBytesMax) {
        log(`api gateway: ${event.httpMethod} ${event.path}: Function.ResponseSizeTooLarge (${resultBytes} bytes): answered 502`);
        return gatewayProblem(502, 'ResponseSizeTooLarge', `Internal server error (the function's answer is ${resultBytes} bytes; Lambda returns at most ${limits.lambdaResponseBytesMax})`);
      }
      return result;
    } catch (error) {
      const answer = apiGatewayAnswer(error);
      if (answer === undefined) throw error;
      log(`api gateway: ${event.httpMethod} ${event.path}: ${error instanceof LambdaFunctionError ? `${error.environmentId} ${error.errorType}` : (error as Error).name}: answered ${answer.statusCode}`);
      return answer;
    }
  };
}
