import { randomUUID } from 'node:crypto';
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
  const url = new URL(request.url ?? '/', 'http://localhost');
  const rawPath = url.pathname;
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
  },
): Promise<ApiServer> {
  const stage = options.stage ?? 'local';
  const server: Server = createServer(async (request, response) => {
    try {
      const { bytes, tooLarge } = await readBody(request);
      if (tooLarge) {
        sendProblem(response, 413, 'TooLarge', `the request body exceeds ${bodyBytesMax} bytes; values are limited to ${limits.valueBytesMax} bytes`);
        return;
      }
      const pathname = new URL(request.url ?? '/', 'http://localhost').pathname;
      if (pathname === '/' && options.page !== undefined && request.method === 'GET') {
        send(response, 200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }, options.page);
        return;
      }
      if (pathname === '/_local' || pathname.startsWith('/_local/')) {
        const segments = pathname.split('/').filter(Boolean).slice(1);
        const url = new URL(request.url ?? '/', 'http://localhost');
        const result = options.localRoute ? await options.localRoute(request.method ?? 'GET', segments, bytes, url.searchParams) : undefined;
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
