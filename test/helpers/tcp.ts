/** TCP clients for tests: connect with a bound wait, and collect what arrives with event-driven waits. */
import { type Socket, connect, createServer } from 'node:net';
import type { Disposer } from './disposer';
import { once } from './wait';

export interface TcpTarget {
  readonly host: string;
  readonly port: number;
}

/**
 * Connected socket (TCP_NODELAY, allowHalfOpen unless told otherwise) destroyed by the disposer. An
 * `'error'` listener is attached at once; the last error is kept on the returned collector.
 */
export async function connectTcp(
  disposer: Disposer,
  target: TcpTarget,
  options: { readonly timeoutMs?: number; readonly allowHalfOpen?: boolean } = {},
): Promise<Socket> {
  const socket = connect({ host: target.host, port: target.port, allowHalfOpen: options.allowHalfOpen ?? true });
  socket.on('error', () => undefined); // tests observe errors through collectBytes() or once(socket, 'error')
  disposer.add(() => socket.destroy(), 'destroy tcp client');
  await once(socket, 'connect', options.timeoutMs ?? 5000);
  socket.setNoDelay(true);
  return socket;
}

/** Accumulates a socket's bytes; waits resolve on the data, end or close event that satisfies them. */
export class ByteCollector {
  private chunks: Buffer[] = [];
  private total = 0;
  state: 'open' | 'ended' | 'closed' = 'open';
  error: (Error & { code?: string }) | null = null;
  private readonly waiters = new Set<() => void>();

  constructor(socket: Socket) {
    socket.on('data', (data: Buffer) => {
      this.chunks.push(data);
      this.total += data.length;
      this.notify();
    });
    socket.on('end', () => {
      if (this.state === 'open') this.state = 'ended';
      this.notify();
    });
    socket.on('error', (err: Error) => {
      this.error = err;
      this.notify();
    });
    socket.on('close', () => {
      this.state = 'closed';
      this.notify();
    });
  }

  get length(): number {
    return this.total;
  }

  bytes(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  /** Resolves when at least `length` bytes have arrived; rejects if the socket ends first or on timeout. */
  waitForLength(length: number, timeoutMs = 5000): Promise<Buffer> {
    return this.waitUntil(() => {
      if (this.total >= length) return true;
      if (this.state !== 'open') throw new Error(`socket ${this.state} after ${this.total} of ${length} bytes`);
      return false;
    }, timeoutMs, `${length} bytes`).then(() => this.bytes());
  }

  /** Resolves when the peer's FIN (or a close) has arrived. */
  waitForEnd(timeoutMs = 5000): Promise<Buffer> {
    return this.waitUntil(() => this.state !== 'open', timeoutMs, 'end').then(() => this.bytes());
  }

  /** Resolves when the socket has closed; with the error it died of, if any. */
  async waitForClose(timeoutMs = 5000): Promise<Error | null> {
    await this.waitUntil(() => this.state === 'closed', timeoutMs, 'close');
    return this.error;
  }

  private waitUntil(isDone: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        try {
          if (!isDone()) return;
          finish();
          resolve();
        } catch (err) {
          finish();
          reject(err);
        }
      };
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (have ${this.total} bytes)`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

export function collectBytes(socket: Socket): ByteCollector {
  return new ByteCollector(socket);
}

export interface TestTcpServer {
  readonly host: string;
  readonly port: number;
  /** Every socket accepted so far, in order. */
  readonly sockets: readonly Socket[];
  /** Resolves with the next accepted socket (or one accepted before this call and not yet taken). */
  nextConnection(timeoutMs?: number): Promise<Socket>;
}

/**
 * A TCP server on 127.0.0.1:0 that only accepts (allowHalfOpen, TCP_NODELAY, an 'error' listener on every
 * socket) and leaves the sockets to the test; closed, with every socket destroyed, by the disposer.
 */
export async function startTcpServer(disposer: Disposer): Promise<TestTcpServer> {
  const sockets: Socket[] = [];
  const waiting: Socket[] = [];
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => undefined); // tests observe errors through collectBytes() or once()
    socket.setNoDelay(true);
    sockets.push(socket);
    waiting.push(socket);
    server.emit('test-connection');
  });
  disposer.add(async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  }, 'stop tcp server');
  server.listen(0, '127.0.0.1');
  await once(server, 'listening', 5000);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('tcp server: no TCP address');
  return {
    host: '127.0.0.1',
    port: address.port,
    sockets,
    nextConnection: async (timeoutMs = 5000) => {
      if (waiting.length === 0) await once(server, 'test-connection', timeoutMs);
      const socket = waiting.shift();
      if (socket === undefined) throw new Error('tcp server: connection vanished');
      return socket;
    },
  };
}
