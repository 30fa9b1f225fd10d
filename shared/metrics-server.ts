/**
 * The loopback-only HTTP endpoint that serves a prom-client registry at GET /metrics, for the relay and the
 * agent alike. It has no authentication, so it refuses any address but loopback (PW_CONFIG_INVALID).
 */
import http from 'node:http';
import { isIP } from 'node:net';
import type { Registry } from 'prom-client';
import { PortwayError } from '../protocol';

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

export class MetricsServer {
  private server: http.Server | undefined;

  constructor(private readonly registry: Registry) {}

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    if (!isLoopbackHost(host)) throw new PortwayError('PW_CONFIG_INVALID', `the metrics endpoint listens on loopback only, not ${host}`);
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    });
    server.on('clientError', (_err, socket) => socket.destroy());
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const a = server.address() as { address: string; port: number };
    return { host: a.address, port: a.port };
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
