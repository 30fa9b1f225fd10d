/**
 * The relay's metrics endpoint (Prometheus text format, prom-client). It listens only on a loopback
 * address: metrics reveal fleet size and activity, and the endpoint has no authentication.
 * Gauges are read from the live components at scrape time, so they cannot drift from the truth.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import { collectedCounter, collectedGauge } from '../../shared/collected-counter';
import { MetricsServer } from '../../shared/metrics-server';
import type { RelayStats } from './relay';

export interface MetricsSource {
  stats(): RelayStats;
}

export class RelayMetrics {
  readonly registry = new Registry();
  private readonly endpoint = new MetricsServer(this.registry);

  constructor(source: MetricsSource) {
    collectDefaultMetrics({ register: this.registry, prefix: 'portway_relay_' });
    const gauge = (name: string, help: string, pick: (s: ReturnType<MetricsSource['stats']>) => number): void => collectedGauge(this.registry, name, help, () => pick(source.stats()));
    gauge('portway_relay_connections', 'TCP connections on the relay port', (s) => s.connections);
    gauge('portway_relay_mqtt_clients', 'MQTT sessions (devices plus the relay itself)', (s) => s.mqttClients);
    gauge('portway_relay_streams_open', 'paired streams', (s) => s.streamsOpen);
    gauge('portway_relay_streams_primed', 'primed client sockets waiting', (s) => s.primed);
    gauge('portway_relay_agent_sockets_pooled', 'idle pooled agent data sockets', (s) => s.pooled);
    gauge('portway_relay_dials_pending', 'streams waiting for a dialed agent socket', (s) => s.pendingDials);
    gauge('portway_relay_buffered_bytes', 'bytes held in the relay for spliced streams (queued socket writes)', (s) => s.bufferedBytes);
    collectedCounter(this.registry, { name: 'portway_relay_streams_total', help: 'streams paired since start' }, () => source.stats().streamsTotal);
    collectedCounter(
      this.registry,
      { name: 'portway_relay_device_sessions_total', help: 'device MQTT sessions accepted since start (with a steady fleet, the reconnects)' },
      () => source.stats().deviceSessionsTotal,
    );
    collectedCounter(
      this.registry,
      { name: 'portway_relay_stream_bytes_total', help: 'bytes written to the sockets of streams, ended and live, by direction (outer TLS before the handoff, the inner session after)', label: 'direction' },
      () => {
        const stats = source.stats();
        return { to_device: stats.bytesToDevice, to_client: stats.bytesToClient };
      },
    );
    collectedCounter(this.registry, { name: 'portway_relay_rejects_total', help: 'connections refused before routing and data sockets refused, by error code', label: 'code' }, () => source.stats().rejects);
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return this.endpoint.listen(host, port);
  }

  stop(): Promise<void> {
    return this.endpoint.stop();
  }
}
