import http from 'node:http';
import path from 'node:path';
import { PortwayError } from '../../protocol';
import { silentLogger } from '../../shared/logger';
import { parseRelayOptions } from '../../relay/src/config';
import { relayInit } from '../../relay/src/main';
import { isLoopbackHost as isLoopback } from '../../shared/metrics-server';
import { Relay } from '../../relay/src/relay';
import net from 'node:net';
import { type ManagedProcess, pseudoRandomBytes } from '../../devtools';
import { Disposer, collectBytes, connectTcp, findFreePort, makeTempDir, startCluster, startEchoServer } from '../helpers';
import { AGENT_METRICS_CONFIG, RELIABILITY_RELAY_CONFIG, relayMetricsPort, sample, scrape, startAgentWithMetrics } from '../helpers/reliability';

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('relay metrics endpoint', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('serves Prometheus text on loopback with the live gauges and counters', async () => {
    const dir = await makeTempDir(disposer);
    const data = path.join(dir, 'relay');
    await relayInit({ data }, []);
    const relay = new Relay({ log: silentLogger() }, parseRelayOptions({ dataDir: data, listen: { host: '127.0.0.1', port: 0 }, metricsListen: { host: '127.0.0.1', port: 0 } }));
    await relay.start();
    disposer.add(() => relay.stop());
    const address = relay.metricsAddress;
    expect(address).toBeDefined();
    const res = await get(`http://127.0.0.1:${address?.port ?? 0}/metrics`);
    expect(res.status).toBe(200);
    expect(res.body).toMatch(/^portway_relay_streams_open 0$/m);
    expect(res.body).toMatch(/^portway_relay_mqtt_clients 1$/m);
    expect(res.body).toMatch(/^portway_relay_streams_total 0$/m);
    expect(res.body).toMatch(/portway_relay_process_resident_memory_bytes \d+/);
    expect((await get(`http://127.0.0.1:${address?.port ?? 0}/other`)).status).toBe(404);
  });

  it('relay and agent count stream bytes both ways (live and ended), device sessions, and refusals by code', async () => {
    const echo = await startEchoServer(disposer);
    // Nothing listens on `closed`'s port: the agent refuses that stream itself (PW_SERVICE_REFUSED).
    const closedPort = await findFreePort();
    const services = [
      { name: 'echo', type: 'tcp' as const, target: `127.0.0.1:${echo.port}` },
      { name: 'closed', type: 'tcp' as const, target: `127.0.0.1:${closedPort}` },
    ];
    const cluster = await startCluster(disposer, { services, relayConfig: RELIABILITY_RELAY_CONFIG });
    const port = relayMetricsPort(cluster.relay as ManagedProcess);
    await (cluster.agent as ManagedProcess).stop();
    await cluster.writeAgentConfig({ ...AGENT_METRICS_CONFIG });
    const { metricsPort: agentPort } = await startAgentWithMetrics(cluster);
    const before = await scrape(port);
    expect(sample(before, 'portway_relay_device_sessions_total')).toBe(2);
    const relayBytes = (m: Map<string, number>, direction: string): number => sample(m, `portway_relay_stream_bytes_total{direction="${direction}"}`);
    const agentBytes = (m: Map<string, number>, direction: string): number => sample(m, `portway_agent_stream_bytes_total{direction="${direction}"}`);
    const agentBefore = await scrape(agentPort);

    // 256 KiB through one stream: counted while it is open, and still after it ended.
    const { port: local } = await cluster.connect('echo');
    const socket = await connectTcp(disposer, { host: '127.0.0.1', port: local });
    const received = collectBytes(socket);
    const payload = pseudoRandomBytes('metrics', 256 * 1024);
    socket.write(payload);
    expect((await received.waitForLength(payload.length, 20_000)).equals(payload)).toBe(true);
    const live = await scrape(port);
    const agentLive = await scrape(agentPort);
    const liveBytes = {
      relayToDevice: relayBytes(live, 'to_device') - relayBytes(before, 'to_device'),
      relayToClient: relayBytes(live, 'to_client') - relayBytes(before, 'to_client'),
      agentFromRelay: agentBytes(agentLive, 'from_relay') - agentBytes(agentBefore, 'from_relay'),
      agentToRelay: agentBytes(agentLive, 'to_relay') - agentBytes(agentBefore, 'to_relay'),
    };
    for (const [name, n] of Object.entries(liveBytes)) expect([name, n >= payload.length]).toEqual([name, true]);
    socket.end();
    await received.waitForEnd(10_000);
    const deadline = Date.now() + 10_000;
    let ended = live;
    while (sample(ended, 'portway_relay_streams_open') > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100)); // poll interval of a bounded wait
      ended = await scrape(port);
    }
    expect(sample(ended, 'portway_relay_streams_open')).toBe(0);
    expect(relayBytes(ended, 'to_device') - relayBytes(before, 'to_device')).toBeGreaterThanOrEqual(liveBytes.relayToDevice);
    expect(relayBytes(ended, 'to_client') - relayBytes(before, 'to_client')).toBeGreaterThanOrEqual(liveBytes.relayToClient);
    const agentEnded = await scrape(agentPort);
    expect(agentBytes(agentEnded, 'from_relay') - agentBytes(agentBefore, 'from_relay')).toBeGreaterThanOrEqual(liveBytes.agentFromRelay);

    // A stream the agent refuses: counted by its code.
    expect((await cluster.runCli(['pipe', cluster.deviceName, 'closed'], { input: 'x', timeoutMs: 15_000 })).code).toBe(1);
    expect(sample(await scrape(agentPort), 'portway_agent_streams_refused_total{code="PW_SERVICE_REFUSED"}')).toBe(1);

    // Plain text on the TLS port: refused before any TLS layer, counted by its code.
    const garbage = net.connect({ host: '127.0.0.1', port: cluster.relayPort });
    garbage.on('error', () => undefined);
    garbage.end('GET / HTTP/1.0\r\n\r\n');
    await new Promise((resolve) => garbage.once('close', resolve));
    let refused = await scrape(port);
    for (let i = 0; i < 50 && !refused.has('portway_relay_rejects_total{code="PW_NOT_TLS"}'); i++) {
      await new Promise((r) => setTimeout(r, 100)); // poll interval of a bounded wait
      refused = await scrape(port);
    }
    expect(sample(refused, 'portway_relay_rejects_total{code="PW_NOT_TLS"}')).toBe(1);

    // The agent reconnects: one more device session.
    await (cluster.agent as ManagedProcess).stop();
    await startAgentWithMetrics(cluster);
    expect(sample(await scrape(port), 'portway_relay_device_sessions_total')).toBe(3);
  }, 120_000);

  it('refuses a non-loopback metrics address', async () => {
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback('0.0.0.0')).toBe(false);
    expect(isLoopback('10.0.0.1')).toBe(false);
    const dir = await makeTempDir(disposer);
    const data = path.join(dir, 'relay');
    await relayInit({ data }, []);
    const relay = new Relay({ log: silentLogger() }, parseRelayOptions({ dataDir: data, listen: { host: '127.0.0.1', port: 0 }, metricsListen: { host: '0.0.0.0', port: 0 } }));
    await expect(relay.start()).rejects.toMatchObject({ code: 'PW_CONFIG_INVALID' } as Partial<PortwayError>);
  });
});
