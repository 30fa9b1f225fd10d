/**
 * Telemetry end to end with real processes: the agent publishes samples (retained, at telemetryIntervalMs and on
 * each reconnect) over real MQTT; the relay keeps the latest per device and serves it through the HTTP API only
 * to users who can reach the device; `portway devices` and `portway device show` print it. A device that
 * publishes garbage on its telemetry topic gets each sample dropped with a logged reason, the relay keeps
 * running and keeps the last good sample.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { ALPN_MQTT, deviceTopic, MAX_TELEMETRY_BYTES, type DeviceTelemetry } from '../../protocol';
import type { PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, makeTempDir, startCluster, waitFor } from '../helpers';

interface View {
  id: string;
  name: string;
  online: boolean;
  lastSeenAt?: number;
  telemetry?: DeviceTelemetry;
  telemetryReceivedAt?: number;
}

async function devicesJson(cluster: PortwayCluster, env: NodeJS.ProcessEnv = {}): Promise<View[]> {
  const proc = cluster.spawnCli(['devices', '--json'], env);
  proc.child.stdin?.end();
  const code = await proc.exited;
  if (code !== 0) throw new Error(`portway devices failed (${String(code)}): ${proc.stderr}`);
  return JSON.parse(proc.lines.join('\n')) as View[];
}

async function showJson(cluster: PortwayCluster, device: string): Promise<View> {
  const r = await cluster.runCli(['device', 'show', device, '--json']);
  if (r.code !== 0) throw new Error(`portway device show failed (${String(r.code)}): ${r.stderr}`);
  return JSON.parse(r.stdout) as View;
}

/** An MQTT session with the device's own certificate (what a buggy or hostile agent could send). */
async function connectAsDevice(disposer: Disposer, cluster: PortwayCluster): Promise<{ client: MqttClient; deviceId: string }> {
  const state = path.join(cluster.dir, 'agent-state');
  const read = (f: string): string => readFileSync(path.join(state, f), 'utf8');
  const deviceId = (JSON.parse(read('device.json')) as { deviceId: string }).deviceId;
  const client = mqtt.connect({
    protocol: 'mqtts',
    host: '127.0.0.1',
    port: cluster.relayPort,
    clientId: deviceId,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    key: read('device.key'),
    cert: read('device.crt'),
    ca: read('relay-ca.crt'),
    ALPNProtocols: [ALPN_MQTT],
  } as mqtt.IClientOptions);
  disposer.add(() => client.endAsync(true), 'end device mqtt');
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return { client, deviceId };
}

/** Regular files (not /dev, sockets or pipes) a process holds open with O_WRONLY or O_RDWR. */
function filesOpenForWriting(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      const flags = Number.parseInt(/^flags:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0', 8);
      if (target.startsWith('/') && !target.startsWith('/dev/') && (flags & 0o3) !== 0) out.push(target);
    } catch (err) {
      // ENOENT: the descriptor was closed while listing
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return out;
}

describe('telemetry', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('reaches the relay, updates at the interval, and shows in portway devices and device show', async () => {
    const cluster = await startCluster(disposer, { services: [], agentConfig: { telemetryIntervalMs: 1_000 } });
    const first = await waitFor(async () => (await devicesJson(cluster)).find((d) => d.telemetry), { timeoutMs: 15_000, intervalMs: 200, description: 'telemetry in portway devices' });
    const t = first!.telemetry as DeviceTelemetry;
    expect(first!.online).toBe(true);
    // Figures of this very machine (agent and test share it).
    expect(t.os).toMatchObject({ platform: 'linux', kernel: os.release(), arch: os.arch(), hostname: os.hostname() });
    expect(t.memory?.totalBytes).toBe(os.totalmem());
    expect(t.cpu?.cores).toBe(os.availableParallelism());
    expect(t.uptimeS).toBeGreaterThan(0);
    expect(t.loadAverage).toHaveLength(3);
    expect(t.rootFs?.totalBytes).toBeGreaterThan(0);
    expect(t.agent?.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(t.agent?.rssBytes).toBeGreaterThan(10 * 1024 * 1024);
    const external = Object.entries(os.networkInterfaces()).filter(([, a]) => a?.some((x) => !x.internal)).map(([n]) => n);
    expect((t.network ?? []).map((n) => n.name).sort()).toEqual(external.sort());
    expect(t.throttle).toBeUndefined(); // no Pi firmware here: the field is left out

    // A later sample replaces it (interval 1 s).
    await waitFor(async () => ((await showJson(cluster, cluster.deviceName)).telemetry?.at ?? 0) > t.at, { timeoutMs: 10_000, intervalMs: 300, description: 'a newer sample' });

    const table = await cluster.runCli(['devices']);
    expect(table.code).toBe(0);
    const [header, row] = table.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^NAME\s+ID\s+ONLINE\s+UPTIME\s+CPU TEMP\s+MEMORY\s+SERVICES$/);
    expect(row).toMatch(new RegExp(`^${cluster.deviceName}\\s+dev_\\w+\\s+yes\\s+\\S.*\\d+(\\.\\d)? [KMG]iB/\\d+(\\.\\d)? [KMG]iB \\(\\d+%\\)`));
    const detail = await cluster.runCli(['device', 'show', cluster.deviceName]);
    expect(detail.code).toBe(0);
    for (const key of ['name:', 'online:', 'os:', 'uptime:', 'cpu:', 'load average:', 'memory:', 'root fs:', 'agent process:']) expect(detail.stdout).toContain(key);
    expect(detail.stdout).toContain(`kernel ${os.release()}`);

    // Steady state writes nothing to the card: the identity files keep their mtimes over several samples, and the
    // agent holds no regular file open for writing (its logs go to stdout, i.e. the journal).
    const stateDir = path.join(cluster.dir, 'agent-state');
    const mtimes = (): Record<string, number> => Object.fromEntries(readdirSync(stateDir).map((f) => [f, statSync(path.join(stateDir, f)).mtimeMs]));
    const before = mtimes();
    const at = (await showJson(cluster, cluster.deviceName)).telemetry?.at ?? 0;
    await waitFor(async () => ((await showJson(cluster, cluster.deviceName)).telemetry?.at ?? 0) >= at + 2_000, { timeoutMs: 15_000, intervalMs: 300, description: 'two more samples' });
    expect(mtimes()).toEqual(before);
    const pid = cluster.agent?.child.pid as number;
    const writable = filesOpenForWriting(cluster.agent?.child.pid as number);
    expect(writable).toEqual([]);

    // Offline: presence says when it was last seen, the last sample stays.
    await cluster.agent?.stop();
    const offline = await waitFor(async () => (await devicesJson(cluster)).find((d) => !d.online), { timeoutMs: 10_000, intervalMs: 200, description: 'device offline' });
    expect(offline!.telemetry).toBeDefined();
    expect(offline!.lastSeenAt).toBeGreaterThan(0);
    expect((await cluster.runCli(['devices'])).stdout).toMatch(/no \(seen \d+s ago\)/);
  }, 90_000);

  it('a user who cannot reach the device sees neither it nor its telemetry', async () => {
    const cluster = await startCluster(disposer, { services: [], agentConfig: { telemetryIntervalMs: 1_000 } });
    await waitFor(async () => (await devicesJson(cluster)).find((d) => d.telemetry), { timeoutMs: 15_000, intervalMs: 200, description: 'telemetry' });
    const bobToken = (await cluster.mustRun(['relay', 'user', 'add', 'bob', '--data', cluster.relayDir])).stdout.trim();
    const bobHome = await makeTempDir(disposer, 'portway-bob-');
    const bob = { XDG_CONFIG_HOME: bobHome };
    const login = cluster.spawnCli(['login', '--relay', cluster.relayAddress, '--token', bobToken, '--fingerprint', cluster.caFingerprint], bob);
    login.child.stdin?.end();
    expect(await login.exited).toBe(0);
    expect(await devicesJson(cluster, bob)).toEqual([]);
    const show = cluster.spawnCli(['device', 'show', cluster.deviceName], bob);
    show.child.stdin?.end();
    expect(await show.exited).toBe(1);
    expect(show.stderr).toContain('PW_UNKNOWN_DEVICE');
    expect(show.lines.join('')).toBe('');
  }, 60_000);

  it('garbage telemetry is dropped with a logged reason; the relay keeps running and keeps the last good sample', async () => {
    const cluster = await startCluster(disposer, { services: [], agentConfig: { telemetryIntervalMs: 60_000 } });
    const good = await waitFor(async () => (await devicesJson(cluster)).find((d) => d.telemetry), { timeoutMs: 15_000, intervalMs: 200, description: 'first telemetry' });
    await cluster.agent?.stop();
    const { client, deviceId } = await connectAsDevice(disposer, cluster);
    const topic = deviceTopic(deviceId, 'telemetry');
    const garbage: [string, Buffer][] = [
      ['bad_json', Buffer.from('{"at": 1, "uptimeS":')],
      ['bad_json', Buffer.from([0xff, 0xfe, 0x00, 0x01])],
      ['invalid', Buffer.from('null')],
      ['invalid', Buffer.from('[]')],
      ['invalid', Buffer.from('{"at":-1,"uptimeS":5}')],
      ['invalid', Buffer.from(JSON.stringify({ at: 1, uptimeS: 1, cpu: { temperatureC: 1e9 } }))],
      ['invalid', Buffer.from(JSON.stringify({ at: 1, uptimeS: 1, network: Array.from({ length: 33 }, (_, i) => ({ name: `eth${i}`, addresses: [] })) }))],
      ['invalid', Buffer.from(JSON.stringify({ at: 1, uptimeS: 1, os: { platform: 'x'.repeat(10_000), kernel: 'k', arch: 'a', hostname: 'h' } }))],
      ['invalid', Buffer.from('{"__proto__":{"at":1,"uptimeS":1}}')],
      ['too_large', Buffer.from(JSON.stringify({ at: 1, uptimeS: 1, pad: 'x'.repeat(MAX_TELEMETRY_BYTES) }))],
    ];
    // The good sample first; the garbage after it must not replace it.
    const marker = { at: good!.telemetry!.at + 1, uptimeS: 4242, memory: { totalBytes: 1000, usedBytes: 400, availableBytes: 600 }, futureField: { x: 1 } };
    await client.publishAsync(topic, JSON.stringify(marker), { qos: 1, retain: true });
    for (const [, payload] of garbage) await client.publishAsync(topic, payload, { qos: 1, retain: true });
    // The relay handles its subscription in order: once the last (too_large) drop is logged, all were handled.
    const relay = cluster.relay!;
    await relay.waitForLine((l) => l.includes('"relay.telemetry.dropped"') && l.includes('"too_large"'), 10_000, 'the too_large drop');
    const dropped = relay.events('relay.telemetry.dropped');
    // One line per device and reason per minute (later drops are counted into the next line).
    expect(dropped.map((d) => ({ deviceId: d.deviceId, reason: d.reason, droppedSinceLastLog: d.droppedSinceLastLog }))).toEqual(
      ['bad_json', 'invalid', 'too_large'].map((reason) => ({ deviceId, reason, droppedSinceLastLog: 0 })),
    );
    expect(dropped.every((d) => typeof d.detail === 'string' && d.detail.length > 0 && d.detail.length <= 200)).toBe(true);
    const after = await showJson(cluster, cluster.deviceName);
    expect(after.telemetry).toEqual({ at: marker.at, uptimeS: 4242, memory: marker.memory }); // unknown field stripped
    expect(relay.child.exitCode).toBeNull();
    expect(relay.stderr).toBe('');
    expect(garbage.map(([reason]) => reason).filter((r, i, a) => a.indexOf(r) === i)).toEqual(['bad_json', 'invalid', 'too_large']);
  }, 60_000);
});
