/**
 * A TCP "link" with a fixed one-way delay each way, for the benchmark's "10 ms one-way delay on the
 * client-relay and relay-agent links": a FaultProxy with latency in both directions and delayConnect, so
 * connect + first byte costs the handshake round trip as well (see fault-proxy.ts for what is modelled).
 *
 *   const link = await startDelayLink({ upstream: relayAddress, oneWayDelayMs: 10 });
 *   // point the client at link.host:link.port instead of the relay; await link.stop() at the end.
 */
import { type FaultProxyStats, FaultProxy } from './fault-proxy';
import type { HostPort } from './fault-connection';

export interface DelayLinkOptions {
  readonly upstream: HostPort;
  readonly oneWayDelayMs: number;
  readonly jitterMs?: number;
  /** Default 127.0.0.1 on a free port. */
  readonly listen?: HostPort;
  /** Optional serialisation rate each way. */
  readonly bytesPerSecond?: number;
  /** Bytes in flight per direction and connection before the sender is paused. Default 4 MiB. */
  readonly maxBufferedBytes?: number;
}

export interface DelayLink {
  readonly host: string;
  readonly port: number;
  readonly proxy: FaultProxy;
  stats(): FaultProxyStats;
  stop(): Promise<void>;
}

export async function startDelayLink(options: DelayLinkOptions): Promise<DelayLink> {
  const proxy = new FaultProxy({
    listen: options.listen ?? { host: '127.0.0.1', port: 0 },
    upstream: options.upstream,
    delayConnect: true,
    ...(options.maxBufferedBytes === undefined ? {} : { maxBufferedBytes: options.maxBufferedBytes }),
  });
  proxy.setLatency('both', { latencyMs: options.oneWayDelayMs, jitterMs: options.jitterMs ?? 0 });
  if (options.bytesPerSecond !== undefined) proxy.setBandwidth('both', { bytesPerSecond: options.bytesPerSecond });
  const { host, port } = await proxy.start();
  return { host, port, proxy, stats: () => proxy.stats(), stop: () => proxy.stop() };
}
