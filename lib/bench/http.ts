import http from 'node:http';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A small keep-alive HTTP/1.1 client for load generation: one pooled connection per
 * concurrent request, no per-request allocation beyond the request itself (lighter than
 * `fetch` when the client shares the CPU with the server it measures).
 */
export class HttpClient {
  readonly #agent: http.Agent;

  constructor(maxSockets = 256) {
    this.#agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  request(method: string, url: string, options: { body?: Uint8Array | string; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      const target = new URL(url);
      const body = options.body === undefined ? undefined : typeof options.body === 'string' ? Buffer.from(options.body) : options.body;
      const request = http.request(
        {
          method,
          hostname: target.hostname,
          port: target.port,
          path: `${target.pathname}${target.search}`,
          agent: this.#agent,
          headers: { ...(options.headers ?? {}), ...(body === undefined ? {} : { 'content-length': String(body.length) }) },
          timeout: options.timeoutMs ?? 10_000,
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
          response.on('error', reject);
        },
      );
      request.on('timeout', () => request.destroy(new Error(`timeout after ${options.timeoutMs ?? 10_000} ms`)));
      request.on('error', reject);
      request.end(body);
    });
  }

  destroy(): void {
    this.#agent.destroy();
  }
}

/** Short code for a failed answer: `HTTP 503 NoLeader`, or the error's message class. */
export function failureCode(answer: HttpAnswer | undefined, error?: unknown): string {
  if (answer === undefined) {
    const message = error instanceof Error ? error.message : String(error);
    return message.startsWith('timeout') ? 'timeout' : `no answer (${(error as NodeJS.ErrnoException)?.code ?? message.slice(0, 40)})`;
  }
  let name = '';
  try {
    const parsed = JSON.parse(answer.body.toString('utf8')) as { error?: unknown };
    if (typeof parsed.error === 'string') name = ` ${parsed.error}`;
  } catch {
    // not JSON
  }
  return `HTTP ${answer.status}${name}`;
}
