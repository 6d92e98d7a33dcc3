import net from 'node:net';

/**
 * LOCAL CLOUD ONLY: a loopback TCP proxy in front of an emulator (DynamoDB Local, the SQS
 * emulator), so the local cloud can make the endpoint misbehave the way a network can.
 *
 * In `blackhole` mode it keeps accepting connections and never answers: bytes from clients are
 * read and dropped, nothing reaches the emulator, and answers the emulator was still sending on
 * connections open before are dropped too. A client sees a connection that is up and silent:
 * what an overloaded endpoint, a dead middlebox or a one-way partition looks like, and what only
 * a request timeout can end. Healing closes the connections that were blackholed (their clients
 * see them reset, which the SDK retries) and forwards again.
 */
export interface FaultProxy {
  /** `http://127.0.0.1:<port>`: give this to clients instead of the emulator's endpoint. */
  readonly endpoint: string;
  blackholed(): boolean;
  setBlackhole(on: boolean): void;
  /** Connections accepted since start, and how many were (or are) blackholed. */
  stats(): { connections: number; blackholedConnections: number; droppedBytes: number };
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket | undefined;
  blackholed: boolean;
}

export async function startFaultProxy(options: { target: string; port?: number }): Promise<FaultProxy> {
  const target = new URL(options.target);
  const targetPort = Number(target.port);
  const pairs = new Set<Pair>();
  let blackhole = false;
  const counters = { connections: 0, blackholedConnections: 0, droppedBytes: 0 };

  const swallow = (pair: Pair) => {
    if (pair.blackholed) return;
    pair.blackholed = true;
    counters.blackholedConnections += 1;
  };

  const server = net.createServer((client) => {
    counters.connections += 1;
    const pair: Pair = { client, upstream: undefined, blackholed: false };
    pairs.add(pair);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      pair.upstream?.destroy();
    };
    client.on('error', close);
    client.on('close', close);
    client.on('data', (chunk) => {
      if (pair.blackholed) {
        counters.droppedBytes += chunk.length;
        return;
      }
      pair.upstream?.write(chunk);
    });
    if (blackhole) {
      swallow(pair);
      return;
    }
    // Data that arrives before the upstream connects is queued by the upstream socket itself.
    const upstream = net.connect({ host: target.hostname, port: targetPort });
    pair.upstream = upstream;
    upstream.on('data', (chunk) => {
      if (pair.blackholed) {
        counters.droppedBytes += chunk.length;
        return;
      }
      client.write(chunk);
    });
    upstream.on('error', close);
    upstream.on('close', close);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    blackholed: () => blackhole,
    setBlackhole(on) {
      if (on === blackhole) return;
      blackhole = on;
      if (on) {
        for (const pair of pairs) swallow(pair);
        return;
      }
      // A blackholed connection may have lost half a request or an answer: end it.
      for (const pair of [...pairs]) {
        if (!pair.blackholed) continue;
        pairs.delete(pair);
        pair.client.destroy();
        pair.upstream?.destroy();
      }
    },
    stats: () => ({ ...counters }),
    close: async () => {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream?.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
