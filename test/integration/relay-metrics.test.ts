import http from 'node:http';
import path from 'node:path';
import { PortwayError } from '../../protocol';
import { silentLogger } from '../../shared/logger';
import { parseRelayOptions } from '../../relay/src/config';
import { relayInit } from '../../relay/src/main';
import { isLoopbackHost as isLoopback } from '../../shared/metrics-server';
import { Relay } from '../../relay/src/relay';
import { Disposer, makeTempDir } from '../helpers';

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
