/**
 * The agent's metrics endpoint (Prometheus text format, prom-client), for leak and fault tests and for a
 * device owner's own scraper. Loopback only: it has no authentication and tells what the device serves.
 * Gauges are read from the live agent at scrape time; process metrics (open fds, heap, active handles)
 * come from prom-client's defaults with the `portway_agent_` prefix.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import { collectedCounter, collectedGauge } from '../../shared/collected-counter';
import { PortwayError } from '../../protocol';
import { isLoopbackHost, MetricsServer } from '../../shared/metrics-server';

export interface AgentStats {
  pooled: number;
  streams: number;
  udpSessions: number;
  reconnects: number;
  /** Bytes on the streams' data sockets (the end-to-end session as the relay carries it), ended and live. */
  bytesToRelay: number;
  bytesFromRelay: number;
  /** Streams the agent refused, by code. */
  refusals: Record<string, number>;
}

export interface AgentMetricsSource {
  readonly isOnline: boolean;
  stats(): AgentStats;
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
  private readonly endpoint = new MetricsServer(this.registry);

  constructor(source: AgentMetricsSource) {
    collectDefaultMetrics({ register: this.registry, prefix: 'portway_agent_' });
    const gauge = (name: string, help: string, pick: () => number): void => collectedGauge(this.registry, name, help, pick);
    gauge('portway_agent_online', '1 while the control channel is up', () => (source.isOnline ? 1 : 0));
    gauge('portway_agent_streams_open', 'streams running (TCP, UDP and serial)', () => source.stats().streams);
    gauge('portway_agent_data_sockets_pooled', 'idle pooled data sockets', () => source.stats().pooled);
    gauge('portway_agent_udp_sessions', 'UDP sessions open', () => source.stats().udpSessions);
    collectedCounter(this.registry, { name: 'portway_agent_reconnects_total', help: 'control channel reconnect attempts since start' }, () => source.stats().reconnects);
    collectedCounter(
      this.registry,
      { name: 'portway_agent_stream_bytes_total', help: 'bytes on the data sockets of streams, ended and live, by direction (the end-to-end session with its TLS overhead)', label: 'direction' },
      () => {
        const stats = source.stats();
        return { to_relay: stats.bytesToRelay, from_relay: stats.bytesFromRelay };
      },
    );
    collectedCounter(this.registry, { name: 'portway_agent_streams_refused_total', help: 'streams the agent refused, by error code', label: 'code' }, () => source.stats().refusals);
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return this.endpoint.listen(host, port);
  }

  stop(): Promise<void> {
    return this.endpoint.stop();
  }
}
