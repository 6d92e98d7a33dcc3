import { describe, expect, it } from 'vitest';
import { apiGatewayIntegration, LambdaFunctionError, LambdaPool, LambdaThrottledError, LambdaTimeoutError, type LambdaEnvironment } from '../../lib/local/lambda-pool.ts';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { waitUntil } from '../support.ts';

/** A promise the test resolves when it chooses: the handlers' work ends on the test's word, not after a delay. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

interface Probe {
  /** Invocations in flight per environment right now, and the most ever seen in one. */
  inFlight: Map<string, number>;
  inFlightMax: number;
  closed: string[];
  /** Per environment: its `alive` as the pool handed it over. */
  alive: Map<string, () => boolean>;
}

/** A pool whose handler records who runs where and waits for `work` of each event before answering. */
function probedPool(options: { concurrencyMax?: number; timeoutMs?: number; idleReclaimMs?: number } = {}) {
  const probe: Probe = { inFlight: new Map(), inFlightMax: 0, closed: [], alive: new Map() };
  const pool = new LambdaPool<{ work: Promise<void>; fail?: boolean }, string>({
    name: 'fn',
    ...options,
    factory: (environmentId, alive): LambdaEnvironment<{ work: Promise<void>; fail?: boolean }, string> => {
      probe.alive.set(environmentId, alive);
      return {
        handler: async (event) => {
          const count = (probe.inFlight.get(environmentId) ?? 0) + 1;
          probe.inFlight.set(environmentId, count);
          probe.inFlightMax = Math.max(probe.inFlightMax, count);
          try {
            await event.work;
            if (event.fail === true) throw new TypeError('the handler failed');
            return environmentId;
          } finally {
            probe.inFlight.set(environmentId, (probe.inFlight.get(environmentId) ?? 1) - 1);
          }
        },
        close: () => probe.closed.push(environmentId),
      };
    },
  });
  return { pool, probe };
}

function proxyEvent(path: string): APIGatewayProxyEvent {
  return { httpMethod: 'GET', path } as APIGatewayProxyEvent;
}

describe('Class: LambdaPool', () => {
  describe('Method: invoke', () => {
    it('runs one invocation at a time per environment: N concurrent invocations make N environments, and idle ones are reused', async () => {
      // Prepare
      const { pool, probe } = probedPool();
      const work = gate();

      // Act: 8 invocations at once, all held until the gate opens.
      const first = Array.from({ length: 8 }, () => pool.invoke({ work: work.promise }));
      await waitUntil('8 busy environments', () => (pool.stats().busy === 8 ? true : undefined), 2_000);
      work.open();
      const firstIds = await Promise.all(first);

      // Assess
      expect(new Set(firstIds).size).toBe(8);
      expect(probe.inFlightMax).toBe(1);
      expect(pool.stats()).toMatchObject({ environments: 8, busy: 0, idle: 8, busyMax: 8, coldStarts: 8, invocations: 8, throttles: 0 });

      // Act: the same again, and a burst of 40 more in waves: idle environments are reused.
      const second = await Promise.all(Array.from({ length: 8 }, () => pool.invoke({ work: Promise.resolve() })));
      for (let wave = 0; wave < 5; wave += 1) {
        const released = gate();
        const running = Array.from({ length: 8 }, () => pool.invoke({ work: released.promise }));
        released.open();
        await Promise.all(running);
      }

      // Assess: no new cold start, never two at once in one environment.
      expect(new Set(second)).toEqual(new Set(firstIds));
      expect(probe.inFlightMax).toBe(1);
      expect(pool.stats()).toMatchObject({ environments: 8, coldStarts: 8, invocations: 56 });
      // A lone invocation takes the most recently used environment, so a burst's extras go idle.
      const lone = await pool.invoke({ work: Promise.resolve() });
      expect(await pool.invoke({ work: Promise.resolve() })).toBe(lone);
    });

    it('throttles beyond concurrencyMax as Lambda does, and API Gateway answers 500 Internal server error', async () => {
      // Prepare: both environments busy.
      const { pool } = probedPool({ concurrencyMax: 2 });
      const work = gate();
      const running = [pool.invoke({ work: work.promise }), pool.invoke({ work: work.promise })];
      await waitUntil('2 busy environments', () => (pool.stats().busy === 2 ? true : undefined), 2_000);

      // Act + Assess: a third is refused at once.
      await expect(pool.invoke({ work: Promise.resolve() })).rejects.toBeInstanceOf(LambdaThrottledError);
      expect(pool.stats()).toMatchObject({ environments: 2, throttles: 1, invocations: 2 });

      // Through API Gateway's proxy integration: Lambda's 429 becomes a 500.
      const apiPool = new LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>({
        name: 'api',
        concurrencyMax: 1,
        factory: () => ({ handler: async () => (await work.promise, { statusCode: 200, body: '{}' }), close: () => {} }),
      });
      const api = apiGatewayIntegration(apiPool);
      const held = api(proxyEvent('/health'));
      await waitUntil('the api environment busy', () => (apiPool.stats().busy === 1 ? true : undefined), 2_000);
      const throttled = await api(proxyEvent('/health'));
      expect(throttled.statusCode).toBe(500);
      expect(JSON.parse(throttled.body)).toEqual({ error: 'LambdaThrottled', message: 'Internal server error' });

      // Once the environments are free, invocations go through again.
      work.open();
      await Promise.all(running);
      expect((await held).statusCode).toBe(200);
      expect(await pool.invoke({ work: Promise.resolve() })).toMatch(/^fn-/);
    });

    it('reports a handler that throws as a function error (API Gateway: 502) and keeps the environment', async () => {
      const { pool } = probedPool();
      await expect(pool.invoke({ work: Promise.resolve(), fail: true })).rejects.toMatchObject({ name: 'LambdaFunctionError', errorType: 'TypeError' });
      expect(pool.stats()).toMatchObject({ environments: 1, idle: 1, functionErrors: 1 });
      expect(await pool.invoke({ work: Promise.resolve() })).toBe('fn-1');
    });

    it('fails an invocation past timeoutMs (API Gateway: 504 Endpoint request timed out) and resets its environment', async () => {
      // Prepare
      const work = gate();
      const apiPool = new LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>({
        name: 'api',
        timeoutMs: 50,
        factory: () => ({ handler: async () => (await work.promise, { statusCode: 200, body: '{}' }), close: () => {} }),
      });

      // Act
      const answer = await apiGatewayIntegration(apiPool)(proxyEvent('/watch'));

      // Assess
      expect(answer.statusCode).toBe(504);
      expect(JSON.parse(answer.body)).toEqual({ error: 'IntegrationTimeout', message: 'Endpoint request timed out' });
      expect(apiPool.stats()).toMatchObject({ environments: 0, timeouts: 1, functionErrors: 1 });
      await expect(new LambdaPool({ name: 'direct', timeoutMs: 20, factory: () => ({ handler: () => work.promise, close: () => {} }) }).invoke({})).rejects.toBeInstanceOf(LambdaTimeoutError);
      work.open();
    });

    it('closes environments idle for idleReclaimMs', async () => {
      const { pool, probe } = probedPool({ idleReclaimMs: 20 });
      await pool.invoke({ work: Promise.resolve() });
      await waitUntil('the idle environment reclaimed', () => (pool.stats().environments === 0 ? true : undefined), 2_000);
      expect(probe.closed).toEqual(['fn-1']);
      expect(pool.stats()).toMatchObject({ reclaimed: 1, coldStarts: 1 });
      await pool.invoke({ work: Promise.resolve() });
      expect(pool.stats().coldStarts).toBe(2);
    });
  });

  describe('Method: kill', () => {
    it('kills an environment mid-request: its caller gets API Gateway 502 at once, it is gone, and it closes when its code settles', async () => {
      // Prepare: an api function whose handler "sends" a call once the test lets it, as an SDK client with `alive` would.
      const work = gate();
      const closed: string[] = [];
      const sent: string[] = [];
      const refused: string[] = [];
      const apiPool = new LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>({
        name: 'api',
        factory: (environmentId, alive) => ({
          handler: async (event) => {
            await work.promise;
            if (!alive()) {
              refused.push(event.path);
              throw new Error('EnvironmentKilledError');
            }
            sent.push(event.path);
            return { statusCode: 200, body: '{}' };
          },
          close: () => closed.push(environmentId),
        }),
      });
      const api = apiGatewayIntegration(apiPool);
      const answer = api(proxyEvent('/kv/a'));
      await waitUntil('the environment busy', () => (apiPool.environments().some((environment) => environment.state === 'busy') ? true : undefined), 2_000);
      const [busy] = apiPool.environments();

      // Act
      expect(apiPool.kill(busy?.id as string)).toBe(true);

      // Assess: answered before the handler's work is done.
      const killed = await answer;
      expect(killed.statusCode).toBe(502);
      expect(JSON.parse(killed.body)).toEqual({ error: 'LambdaFunctionError', message: 'Internal server error' });
      expect(apiPool.environments()).toEqual([]);
      expect(apiPool.stats()).toMatchObject({ environments: 0, kills: 1, functionErrors: 1 });
      expect(closed).toEqual([]);

      // The dead environment's code runs on; its next call is refused, then it is closed.
      work.open();
      await waitUntil('the killed environment closed', () => (closed.length === 1 ? true : undefined), 2_000);
      expect(refused).toEqual(['/kv/a']);
      expect(sent).toEqual([]);

      // The next invocation is a cold start in a new environment.
      expect((await api(proxyEvent('/kv/b'))).statusCode).toBe(200);
      expect(apiPool.stats()).toMatchObject({ coldStarts: 2, environments: 1 });
      expect(apiPool.kill('api-404')).toBe(false);
    });

    it('closes an idle environment at once', async () => {
      const { pool, probe } = probedPool();
      await pool.invoke({ work: Promise.resolve() });
      expect(pool.kill('fn-1')).toBe(true);
      expect(probe.closed).toEqual(['fn-1']);
      expect(probe.alive.get('fn-1')?.()).toBe(false);
      expect(pool.stats()).toMatchObject({ environments: 0, kills: 1, functionErrors: 0 });
      await expect(pool.invoke({ work: Promise.resolve() })).resolves.toBe('fn-2');
    });
  });

  it('reports a crashed environment as Runtime.ExitError', async () => {
    const { pool } = probedPool();
    const work = gate();
    const running = pool.invoke({ work: work.promise });
    await waitUntil('busy', () => (pool.stats().busy === 1 ? true : undefined), 2_000);
    pool.kill('fn-1');
    const error = await running.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(LambdaFunctionError);
    expect(error).toMatchObject({ errorType: 'Runtime.ExitError', environmentId: 'fn-1' });
    work.open();
  });

  describe('Function: apiGatewayIntegration (Lambda payload caps)', () => {
    function bodyPool(bodyBytes: number) {
      return new LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>({
        name: 'api',
        factory: () => ({ handler: async () => ({ statusCode: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data: 'x'.repeat(bodyBytes) }) }), close: () => undefined }),
      });
    }

    it('answers 502 ResponseSizeTooLarge when the function returns more than 6,291,556 bytes, and passes an answer just under it', async () => {
      // Prepare
      const api = apiGatewayIntegration(bodyPool(6_291_556));
      const fits = apiGatewayIntegration(bodyPool(6_200_000));

      // Act
      const tooLarge = await api(proxyEvent('/kv'));
      const passed = await fits(proxyEvent('/kv'));

      // Assess
      expect(tooLarge.statusCode).toBe(502);
      expect(JSON.parse(tooLarge.body)).toMatchObject({ error: 'ResponseSizeTooLarge', message: expect.stringMatching(/^Internal server error \(the function's answer is \d+ bytes; Lambda returns at most 6291556\)$/) });
      expect(passed.statusCode).toBe(200);
    });

    it('answers 500 without invoking the function when the event is over 6 MiB (the Lambda API refuses it)', async () => {
      // Prepare
      let invoked = 0;
      const pool = new LambdaPool<APIGatewayProxyEvent, APIGatewayProxyResult>({
        name: 'api',
        factory: () => ({ handler: async () => ((invoked += 1), { statusCode: 200, body: '{}' }), close: () => undefined }),
      });
      const event = { httpMethod: 'PUT', path: '/kv/big', body: 'a'.repeat(7 * 1024 * 1024), isBase64Encoded: false } as APIGatewayProxyEvent;

      // Act
      const answer = await apiGatewayIntegration(pool)(event);

      // Assess
      expect(answer.statusCode).toBe(500);
      expect(JSON.parse(answer.body)).toMatchObject({ error: 'LambdaRequestTooLarge' });
      expect(invoked).toBe(0);
    });
  });
});
