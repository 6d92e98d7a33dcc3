import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { limits } from '../core/limits.ts';

export type LocalRoute = (method: string, segments: string[], body: Buffer, query: URLSearchParams) => Promise<{ status: number; body: unknown } | undefined>;

/** Bodies are refused past this size; API Gateway's own payload limit is 10 MB. */
const bodyBytesMax = 10 * 1024 * 1024;

function send(response: ServerResponse, status: number, headers: Record<string, string | number | boolean>, body: Buffer | string): void {
  response.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

function sendProblem(response: ServerResponse, status: number, error: string, message: string): void {
  send(response, status, { 'content-type': 'application/json; charset=utf-8' }, JSON.stringify({ error, message }));
}

async function readBody(request: IncomingMessage): Promise<{ bytes: Buffer; tooLarge: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > bodyBytesMax) {
      tooLarge = true;
      continue;
    }
    chunks.push(buffer);
  }
  return { bytes: Buffer.concat(chunks), tooLarge };
}

/**
 * Builds the event API Gateway's REST (v1) Lambda proxy integration would send: path
 * parameters URL-decoded, single- and multi-value headers and query parameters, and the
 * body base64-encoded so binary values pass unchanged.
 */
export function toProxyEvent(request: IncomingMessage, body: Buffer, stage: string): APIGatewayProxyEvent | { error: string } {
  const target = request.url ?? '/';
  // The path exactly as sent: no dot-segment resolution, so `/kv/a/../b` names the key
  // "a/../b" and never another key. Query parameters are parsed separately.
  const rawPath = rawPathOf(target);
  if (!rawPath.startsWith('/')) return { error: 'the request target must be a path starting with /' };
  const url = new URL(`http://localhost${target.includes('?') ? target.slice(target.indexOf('?')) : ''}`);
  let path: string;
  const pathParameters: Record<string, string> = {};
  let resource = rawPath;
  if (rawPath.startsWith('/kv/')) {
    let key: string;
    try {
      key = decodeURIComponent(rawPath.slice('/kv/'.length));
    } catch {
      return { error: 'the key in the path is not valid percent-encoded UTF-8' };
    }
    pathParameters.key = key;
    resource = '/kv/{key+}';
    path = `/kv/${key}`;
  } else {
    path = rawPath;
  }
  const headers: Record<string, string> = {};
  const multiValueHeaders: Record<string, string[]> = {};
  for (let index = 0; index + 1 < request.rawHeaders.length; index += 2) {
    const name = request.rawHeaders[index] as string;
    const value = request.rawHeaders[index + 1] as string;
    headers[name] = value;
    (multiValueHeaders[name] ??= []).push(value);
  }
  const multiValueQueryStringParameters: Record<string, string[]> = {};
  const queryStringParameters: Record<string, string> = {};
  for (const [name, value] of url.searchParams) {
    (multiValueQueryStringParameters[name] ??= []).push(value);
    queryStringParameters[name] = value;
  }
  const hasQuery = Object.keys(queryStringParameters).length > 0;
  return {
    resource,
    path,
    httpMethod: request.method ?? 'GET',
    headers,
    multiValueHeaders,
    queryStringParameters: hasQuery ? queryStringParameters : null,
    multiValueQueryStringParameters: hasQuery ? multiValueQueryStringParameters : null,
    pathParameters: Object.keys(pathParameters).length > 0 ? pathParameters : null,
    stageVariables: null,
    body: body.length > 0 ? body.toString('base64') : null,
    isBase64Encoded: body.length > 0,
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      authorizer: null,
      protocol: 'HTTP/1.1',
      httpMethod: request.method ?? 'GET',
      identity: { sourceIp: request.socket.remoteAddress ?? '127.0.0.1' } as APIGatewayProxyEvent['requestContext']['identity'],
      path: `/${stage}${path}`,
      stage,
      requestId: randomUUID(),
      requestTimeEpoch: Date.now(),
      resourceId: 'local',
      resourcePath: resource,
    },
  };
}

/**
 * A token bucket: `ratePerSecond` refill up to `burst`. The local cloud's stand-in for API
 * Gateway throttling; an empty bucket answers 429 with Retry-After.
 */
export class TokenBucket {
  #tokens: number;
  #refilledAtMs: number;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    nowMs: number,
  ) {
    this.#tokens = burst;
    this.#refilledAtMs = nowMs;
  }

  take(nowMs: number): boolean {
    this.#tokens = Math.min(this.burst, this.#tokens + ((nowMs - this.#refilledAtMs) / 1_000) * this.ratePerSecond);
    this.#refilledAtMs = nowMs;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Whole seconds until a token is back (HTTP Retry-After has a resolution of seconds). */
  retryAfterSeconds(): number {
    return Math.max(1, Math.ceil((1 - this.#tokens) / this.ratePerSecond));
  }
}

/** The request target's path exactly as sent (URL parsing would resolve `..` and `//`). */
function rawPathOf(target: string | undefined): string {
  const value = target ?? '/';
  const queryStart = value.indexOf('?');
  return queryStart === -1 ? value : value.slice(0, queryStart);
}

/** A bearer token compared in constant time, so its bytes cannot be guessed from timing. */
function bearerMatches(header: string | undefined, token: string): boolean {
  if (header === undefined) return false;
  const presented = Buffer.from(header.replace(/^Bearer\s+/i, ''), 'utf8');
  const expected = Buffer.from(token, 'utf8');
  return /^Bearer\s+/i.test(header) && presented.length === expected.length && timingSafeEqual(presented, expected);
}

export interface ApiServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves a Lambda proxy handler over HTTP on loopback as API Gateway would, with optional
 * extra routes under `/_local/` (the local cloud's fault controls).
 */
export async function serveApi(
  handler: (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>,
  options: {
    port: number;
    stage?: string;
    localRoute?: LocalRoute;
    log?: (line: string) => void;
    /** An HTML page served at `/` (the local cloud's dashboard). */
    page?: string;
    /** Called for every API request answered (the dashboard's request rates). */
    onAnswer?: (method: string, path: string, status: number) => void;
    /** When set, every request but the dashboard page needs `Authorization: Bearer <token>`. */
    bearerToken?: string | undefined;
    /** Requests beyond this rate are answered 429 with Retry-After. */
    rateLimit?: TokenBucket | undefined;
  },
): Promise<ApiServer> {
  const stage = options.stage ?? 'local';
  const server: Server = createServer(async (request, response) => {
    try {
      const pathname = rawPathOf(request.url);
      if (pathname === '/' && options.page !== undefined && request.method === 'GET') {
        // The page holds no data; what it shows comes from requests that carry the token.
        send(response, 200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }, options.page);
        return;
      }
      if (options.bearerToken !== undefined && !bearerMatches(request.headers.authorization, options.bearerToken)) {
        send(
          response,
          401,
          { 'content-type': 'application/json; charset=utf-8', 'www-authenticate': 'Bearer realm="epochkv local cloud"' },
          JSON.stringify({ error: 'Unauthorized', message: 'this local cloud requires Authorization: Bearer <token> (the EPOCHKV_TOKEN it was started with)' }),
        );
        return;
      }
      if (options.rateLimit !== undefined && !options.rateLimit.take(Date.now())) {
        const retryAfter = options.rateLimit.retryAfterSeconds();
        send(
          response,
          429,
          { 'content-type': 'application/json; charset=utf-8', 'retry-after': String(retryAfter) },
          JSON.stringify({ error: 'TooManyRequests', message: `over ${options.rateLimit.ratePerSecond} requests per second (burst ${options.rateLimit.burst}); retry after ${retryAfter} s` }),
        );
        return;
      }
      // Authorization and rate first: a refused request costs no body read.
      const { bytes, tooLarge } = await readBody(request);
      if (tooLarge) {
        sendProblem(response, 413, 'TooLarge', `the request body exceeds ${bodyBytesMax} bytes; values are limited to ${limits.valueBytesMax} bytes`);
        return;
      }
      if (pathname === '/_local' || pathname.startsWith('/_local/')) {
        const segments = pathname.split('/').filter(Boolean).slice(1);
        const query = new URLSearchParams((request.url ?? '').includes('?') ? (request.url ?? '').slice((request.url ?? '').indexOf('?') + 1) : '');
        const result = options.localRoute ? await options.localRoute(request.method ?? 'GET', segments, bytes, query) : undefined;
        if (result === undefined) {
          sendProblem(response, 404, 'NotFound', 'unknown local control; use POST /_local/nodes/{id}/kill|pause|resume|start or GET /_local/nodes');
          return;
        }
        send(response, result.status, { 'content-type': 'application/json; charset=utf-8' }, JSON.stringify(result.body));
        return;
      }
      const event = toProxyEvent(request, bytes, stage);
      if ('error' in event) {
        sendProblem(response, 400, 'BadRequest', event.error);
        return;
      }
      const result = await handler(event);
      options.onAnswer?.(event.httpMethod, event.path, result.statusCode);
      const body = result.isBase64Encoded ? Buffer.from(result.body, 'base64') : result.body;
      const headers: Record<string, string | number | boolean> = { ...(result.headers ?? {}) };
      send(response, result.statusCode, headers, body);
    } catch (error) {
      options.log?.(`http: ${request.method} ${request.url} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      if (!response.headersSent) sendProblem(response, 500, 'InternalError', 'the local API failed; see the local cloud output');
    }
  });
  // Requests Node's HTTP parser refuses (raw non-ASCII in the target, oversized headers,
  // conflicting Content-Length) still get a JSON problem, as every other rejection does.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
    const body = JSON.stringify({
      error: tooLarge ? 'HeadersTooLarge' : 'BadRequest',
      message: tooLarge ? 'the request headers are too large' : `malformed HTTP request (${error.code ?? 'parse error'}): send a valid HTTP/1.1 request with a percent-encoded path`,
    });
    socket.end(`HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  // Keep-alive connections must not hold the process open at shutdown.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? new Error(`port ${options.port} is in use: stop what uses it or set EPOCHKV_BASE_PORT`) : error),
    );
    server.listen(options.port, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
