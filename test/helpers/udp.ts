/** UDP for tests: an echo server on 127.0.0.1:0, client sockets and bounded request/reply exchanges. */
import dgram from 'node:dgram';
import type { Disposer } from './disposer';

export interface UdpEchoServer {
  readonly port: number;
  /** Datagrams echoed so far. */
  readonly count: () => number;
}

/** Echoes every datagram to its sender; closed by the disposer. */
export async function startUdpEchoServer(disposer: Disposer): Promise<UdpEchoServer> {
  const socket = dgram.createSocket('udp4');
  let count = 0;
  socket.on('error', () => {
    // ECONNREFUSED for a reply to a client that already closed its socket.
  });
  socket.on('message', (datagram, rinfo) => {
    count++;
    socket.send(datagram, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  disposer.add(() => new Promise<void>((resolve) => socket.close(() => resolve())), 'close udp echo server');
  return { port: socket.address().port, count: () => count };
}

/** A client socket bound to 127.0.0.1:0 (its own source port), closed by the disposer or by `close()`. */
export class UdpClient {
  private readonly queue: Buffer[] = [];
  private waiter: ((datagram: Buffer) => void) | undefined;
  private isClosed = false;

  /** The client's source port. */
  readonly port: number;

  private constructor(readonly socket: dgram.Socket) {
    this.port = socket.address().port;
    socket.on('error', () => {
      // ECONNREFUSED when nothing listens yet; the exchange times out and says so.
    });
    socket.on('message', (datagram) => {
      const waiter = this.waiter;
      this.waiter = undefined;
      if (waiter) waiter(datagram);
      else if (this.queue.length < 1024) this.queue.push(datagram);
    });
  }

  static async open(disposer: Disposer | undefined): Promise<UdpClient> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
    const client = new UdpClient(socket);
    disposer?.add(() => client.close(), 'close udp client');
    return client;
  }

  /** Send `payload` to 127.0.0.1:`port` and resolve with the next datagram received, within `timeoutMs`. */
  async exchange(port: number, payload: Buffer, timeoutMs: number): Promise<Buffer> {
    const reply = this.next(timeoutMs);
    await new Promise<void>((resolve, reject) => this.socket.send(payload, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
    return reply;
  }

  next(timeoutMs: number): Promise<Buffer> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no datagram on udp port ${this.port} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (datagram) => {
        clearTimeout(timer);
        resolve(datagram);
      };
    });
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.socket.close();
  }
}

/** A UDP port free at the time of asking (for programs that cannot bind port 0 and report it, like dnsmasq). */
export async function findFreeUdpPort(): Promise<number> {
  const [port] = await findFreeUdpPorts(1);
  return port as number;
}

/**
 * `count` distinct UDP ports free at the time of asking: all are bound at once (so none repeats), then
 * released. For clients whose source port must differ, like dig runs that must be separate sessions.
 */
export async function findFreeUdpPorts(count: number): Promise<number[]> {
  const sockets = Array.from({ length: count }, () => dgram.createSocket('udp4'));
  try {
    await Promise.all(sockets.map((socket) => new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()))));
    return sockets.map((socket) => socket.address().port);
  } finally {
    await Promise.all(sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
  }
}
