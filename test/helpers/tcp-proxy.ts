// A TCP proxy on 127.0.0.1 in front of a server, for tests that cut the network under the tool: it
// forwards every connection byte for byte, and on demand drops them all at once or refuses new ones.
import { createConnection, createServer, type Socket } from 'node:net';

export interface TcpProxy {
  /** The port to connect to instead of the server's. */
  readonly port: number;
  /** Connections accepted so far (refused ones included). */
  accepted(): number;
  /** Connections currently forwarded. */
  open(): number;
  /** Ends every forwarded connection on both sides at once (a dropped network path); returns how many. */
  dropAll(): number;
  /** Drops every connection and resets each new one as soon as it arrives, until accept(). */
  refuse(): number;
  /** Forwards new connections again. */
  accept(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(upstream: { host?: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<{ client: Socket; server: Socket }>();
  let refusing = false;
  let accepted = 0;
  const kill = (socket: Socket) => {
    // A reset, not a polite FIN: the peer sees what a broken path or a restarted middlebox produces.
    if (!socket.destroyed) socket.resetAndDestroy();
  };
  const drop = () => {
    const n = pairs.size;
    for (const pair of pairs) {
      kill(pair.client);
      kill(pair.server);
    }
    pairs.clear();
    return n;
  };
  const proxy = createServer((client) => {
    accepted += 1;
    client.on('error', () => undefined);
    if (refusing) {
      kill(client);
      return;
    }
    const server = createConnection({ host: upstream.host ?? '127.0.0.1', port: upstream.port });
    server.on('error', () => undefined);
    const pair = { client, server };
    pairs.add(pair);
    // One side gone (closed normally or not): the other follows, as a direct connection would.
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on('close', end);
    server.on('close', end);
    client.pipe(server);
    server.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    proxy.once('error', reject);
    proxy.listen(0, '127.0.0.1', () => resolve());
  });
  const address = proxy.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    accepted: () => accepted,
    open: () => pairs.size,
    dropAll: drop,
    refuse: () => {
      refusing = true;
      return drop();
    },
    accept: () => {
      refusing = false;
    },
    close: async () => {
      refusing = true;
      drop();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}
