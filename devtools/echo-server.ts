/**
 * TCP echo server on loopback: every byte comes back in order; a FIN is answered with a FIN after the
 * echo (half-close), backpressure is honoured (pipe). Listens on port 0 unless told otherwise.
 */
import { type Server, type Socket, createServer } from 'node:net';

export interface EchoServerOptions {
  readonly host?: string;
  readonly port?: number;
}

export interface EchoServer {
  readonly host: string;
  readonly port: number;
  /** Connections accepted so far, and open now. */
  stats(): { readonly connectionsAccepted: number; readonly connectionsOpen: number; readonly bytes: number };
  stop(): Promise<void>;
}

export async function startEchoServer(options: EchoServerOptions = {}): Promise<EchoServer> {
  const sockets = new Set<Socket>();
  let connectionsAccepted = 0;
  let bytes = 0;
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => undefined); // a peer reset only ends this connection
    socket.setNoDelay(true);
    connectionsAccepted += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('data', (data: Buffer) => (bytes += data.length));
    socket.pipe(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('echo server: no TCP address');
  let stopping: Promise<void> | null = null;
  return {
    host: address.address,
    port: address.port,
    stats: () => ({ connectionsAccepted, connectionsOpen: sockets.size, bytes }),
    stop: () => {
      stopping ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return stopping;
    },
  };
}
