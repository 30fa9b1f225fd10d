/**
 * The agent's metrics endpoint (Prometheus text format, prom-client), for leak and fault tests and for a
 * device owner's own scraper. Loopback only: it has no authentication and tells what the device serves.
 * Gauges are read from the live agent at scrape time; process metrics (open fds, heap, active handles)
 * come from prom-client's defaults with the `portway_agent_` prefix.
 */
import http from 'node:http';
import { isIP } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { PortwayError } from '../../protocol';

export interface AgentMetricsSource {
  readonly isOnline: boolean;
  stats(): { pooled: number; streams: number; udpSessions: number; reconnects: number };
}

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/** `HOST:PORT` (IPv6 in brackets) of a loopback address; anything else is PW_CONFIG_INVALID. */
export function parseMetricsAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (host === undefined || !(port >= 0 && port <= 65_535)) throw new PortwayError('PW_CONFIG_INVALID', `metrics address must be HOST:PORT, not ${JSON.stringify(text)}`);
  if (!isLoopbackHost(host)) throw new PortwayError('PW_CONFIG_INVALID', `the metrics endpoint listens on loopback only, not ${host}`);
  return { host, port };
}

export class AgentMetrics {
  readonly registry = new Registry();
  private server: http.Server | undefined;

  constructor(source: AgentMetricsSource) {
    collectDefaultMetrics({ register: this.registry, prefix: 'portway_agent_' });
    const gauge = (name: string, help: string, pick: () => number): void => {
      new Gauge({ name, help, registers: [this.registry], collect() { this.set(pick()); } });
    };
    gauge('portway_agent_online', '1 while the control channel is up', () => (source.isOnline ? 1 : 0));
    gauge('portway_agent_streams_open', 'streams running (TCP, UDP and serial)', () => source.stats().streams);
    gauge('portway_agent_data_sockets_pooled', 'idle pooled data sockets', () => source.stats().pooled);
    gauge('portway_agent_udp_sessions', 'UDP sessions open', () => source.stats().udpSessions);
    new Counter({
      name: 'portway_agent_reconnects_total',
      help: 'control channel reconnect attempts since start',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(source.stats().reconnects);
      },
    });
  }

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
