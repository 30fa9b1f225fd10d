/**
 * A real node:http server on 127.0.0.1:0 for tunnel tests (curl, node clients):
 *
 *   GET  /hello                 200 text/plain HELLO_TEXT
 *   POST /echo                  200, the request body echoed, header x-body-sha256 = sha256 hex of the body
 *                               (bodies over MAX_ECHO_BYTES: 413)
 *   POST /sha256                200 text/plain "<sha256 hex>\n" of a streamed body of any size,
 *                               header x-body-bytes = its length
 *   GET  /bytes?n=N&seed=S      200, N bytes of pseudoRandomBytes(S, N) (devtools), streamed with backpressure;
 *        [&rate=B]              at most B bytes per second, paced at the source (every 10 ms what is due)
 *   anything else               404
 */
import { createHash } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { pseudoRandomBytes, pseudoRandomChunks } from '../../devtools';
import type { Disposer } from './disposer';

export const HELLO_TEXT = 'hello from the portway test server\n';
export const MAX_ECHO_BYTES = 16 * 1024 * 1024;
export const MAX_GENERATED_BYTES = 4 * 1024 * 1024 * 1024;

export interface TestHttpServer {
  readonly host: string;
  readonly port: number;
  readonly server: Server;
  url(path: string): string;
  stop(): Promise<void>;
}

export async function startHttpServer(disposer: Disposer): Promise<TestHttpServer> {
  const server = createServer((req, res) => route(req, res));
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('http server: no TCP address');
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return stopping;
  };
  disposer.add(stop, 'stop http server');
  const { port } = address;
  return { host: '127.0.0.1', port, server, url: (path) => `http://127.0.0.1:${port}${path}`, stop };
}

function route(req: IncomingMessage, res: ServerResponse): void {
  req.on('error', () => undefined); // an aborted request ends only itself
  res.on('error', () => undefined);
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/hello') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(HELLO_TEXT);
  } else if (req.method === 'POST' && url.pathname === '/echo') {
    echo(req, res);
  } else if (req.method === 'POST' && url.pathname === '/sha256') {
    digest(req, res);
  } else if (req.method === 'GET' && url.pathname === '/bytes') {
    sendBytes(url, res);
  } else {
    req.resume();
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
}

function echo(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > MAX_ECHO_BYTES) {
      res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('body too large\n');
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const sha256 = createHash('sha256').update(body).digest('hex');
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': body.length,
      'x-body-sha256': sha256,
    });
    res.end(body);
  });
}

function digest(req: IncomingMessage, res: ServerResponse): void {
  const hash = createHash('sha256');
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    hash.update(chunk);
  });
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-body-bytes': size }).end(`${hash.digest('hex')}\n`);
  });
}

function sendBytes(url: URL, res: ServerResponse): void {
  const n = Number(url.searchParams.get('n') ?? '');
  const seed = url.searchParams.get('seed') ?? '0';
  const rate = url.searchParams.has('rate') ? Number(url.searchParams.get('rate')) : undefined;
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_GENERATED_BYTES) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('n must be an integer in [0, 4 GiB]\n');
    return;
  }
  if (rate !== undefined && !(Number.isSafeInteger(rate) && rate >= 1024)) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('rate must be an integer of at least 1024 (bytes per second)\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
  if (rate === undefined) {
    pumpUnpaced(res, pseudoRandomChunks(seed, n));
    return;
  }
  pumpPaced(res, seed, n, rate);
}

function pumpUnpaced(res: ServerResponse, chunks: Generator<Buffer>): void {
  const pump = (): void => {
    for (let next = chunks.next(); !next.done; next = chunks.next()) {
      if (!res.write(next.value)) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => res.off('drain', pump));
  pump();
}

/** Every 10 ms, writes what `rate` allows since the start (never ahead of it); stops when the response closes. */
function pumpPaced(res: ServerResponse, seed: string, n: number, rate: number): void {
  const startedAt = Date.now();
  let sent = 0;
  const tick = (): void => {
    const due = Math.min(n, Math.floor(((Date.now() - startedAt) * rate) / 1000));
    if (due > sent) {
      res.write(pseudoRandomBytes(seed, due - sent, sent));
      sent = due;
    }
    if (sent >= n) {
      clearInterval(timer);
      res.end();
    }
  };
  const timer = setInterval(tick, 10);
  res.on('close', () => clearInterval(timer));
}
