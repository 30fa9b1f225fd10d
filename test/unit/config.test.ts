/**
 * Configuration schemas: relay options (relay/src/config.ts) and the agent's JSON config
 * (agent/src/config.ts). Defaults come from the schema, unknown keys are refused at every level, every
 * problem is reported at once with its key path under PW_CONFIG_INVALID, and the result is deep-frozen.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { loadAgentConfig, parseAgentConfig } from '../../agent/src/config';
import { PortwayError } from '../../protocol';
import { parseRelayOptions } from '../../relay/src/config';
import { Disposer, makeTempDir } from '../helpers';

/** Run `fn`, expect PW_CONFIG_INVALID, and return the message. */
function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PortwayError);
    expect((err as PortwayError).code).toBe('PW_CONFIG_INVALID');
    expect((err as PortwayError).retryable).toBe(false);
    return (err as Error).message;
  }
  throw new Error('expected PW_CONFIG_INVALID, nothing was thrown');
}

function expectDeepFrozen(value: unknown, where = '(root)'): void {
  if (value === null || typeof value !== 'object') return;
  expect({ where, frozen: Object.isFrozen(value) }).toEqual({ where, frozen: true });
  for (const [key, child] of Object.entries(value)) expectDeepFrozen(child, `${where}.${key}`);
}

describe('relay options (parseRelayOptions)', () => {
  it('fills every default from the schema', () => {
    expect(parseRelayOptions({ dataDir: '/var/lib/portway-relay' })).toEqual({
      dataDir: '/var/lib/portway-relay',
      listen: { host: '127.0.0.1', port: 8443 },
      logLevel: 'info',
      deviceCertValidityMs: 30 * 24 * 3600 * 1000,
      userCertValidityMs: 30 * 24 * 3600 * 1000,
      timers: {
        tlsHandshakeTimeoutMs: 10_000,
        firstFrameTimeoutMs: 10_000,
        dialTimeoutMs: 10_000,
        primedIdleMs: 60_000,
        poolTtlMs: 120_000,
        streamCloseGraceMs: 30_000,
        mqttConnectTimeoutMs: 10_000,
        httpRequestTimeoutMs: 15_000,
        revocationPollMs: 1_000,
        deviceAdmissionWaitMs: 5_000,
      },
      limits: {
        maxConnections: 20_000,
        maxStreamsPerDevice: 1024,
        maxPendingDialsPerDevice: 256,
        maxPooledPerDevice: 8,
        maxPrimedPerUser: 64,
        poolSize: 2,
        maxHttpBodyBytes: 64 * 1024,
        deviceReconnectSpreadS: 15,
        minDeviceSessionsPerSecond: 20,
        maxDeviceSessionsPerSecond: 1_000,
      },
      claims: {
        ttlMs: 7 * 24 * 3600 * 1000,
        answerTimeoutMs: 30_000,
        maxWaitMs: 25_000,
        pollMs: 1_000,
        maxSourceFailures: 10,
        maxUserFailures: 20,
        failureWindowMs: 15 * 60 * 1000,
      },
    });
  });

  it('fills defaults inside a partly given timers or limits object', () => {
    const options = parseRelayOptions({ dataDir: '/d', timers: { dialTimeoutMs: 5_000 }, limits: { poolSize: 0 } });
    expect(options.timers.dialTimeoutMs).toBe(5_000);
    expect(options.timers.firstFrameTimeoutMs).toBe(10_000);
    expect(options.limits.poolSize).toBe(0);
    expect(options.limits.maxStreamsPerDevice).toBe(1024);
  });

  it('accepts everything set explicitly', () => {
    const options = parseRelayOptions({
      dataDir: '/d',
      listen: { host: '0.0.0.0', port: 443 },
      metricsListen: { host: '127.0.0.1', port: 9464 },
      certFile: '/etc/ssl/relay.crt',
      keyFile: '/etc/ssl/relay.key',
      logLevel: 'debug',
    });
    expect(options.listen).toEqual({ host: '0.0.0.0', port: 443 });
    expect(options.certFile).toBe('/etc/ssl/relay.crt');
  });

  it('is deep-frozen', () => {
    const options = parseRelayOptions({ dataDir: '/d', timers: { dialTimeoutMs: 5_000 } });
    expectDeepFrozen(options);
    expect(() => {
      (options.timers as { dialTimeoutMs: number }).dialTimeoutMs = 1;
    }).toThrow(TypeError);
  });

  it.each([
    [{ dataDir: '/d', bogus: 1 }, '(root): Unrecognized key: "bogus"'],
    [{ dataDir: '/d', timers: { dialTimeoutMS: 1 } }, 'timers: Unrecognized key: "dialTimeoutMS"'],
    [{ dataDir: '/d', limits: { maxStreams: 1 } }, 'limits: Unrecognized key: "maxStreams"'],
    [{ dataDir: '/d', listen: { host: 'h', port: 1, tls: true } }, 'listen: Unrecognized key: "tls"'],
  ])('refuses unknown keys at every level: %p', (input, problem) => {
    expect(configError(() => parseRelayOptions(input))).toContain(problem);
  });

  it('reports every problem at once, each with its key path', () => {
    const message = configError(() =>
      parseRelayOptions({
        dataDir: '',
        listen: { host: '', port: 70_000 },
        logLevel: 'loud',
        timers: { dialTimeoutMs: -1, primedIdleMs: 1.5 },
        limits: { poolSize: 17, maxPooledPerDevice: 65 },
        extra: true,
      }),
    );
    expect(message).toMatch(/^relay options invalid: /);
    for (const keyPath of ['dataDir:', 'listen.host:', 'listen.port:', 'logLevel:', 'timers.dialTimeoutMs:', 'timers.primedIdleMs:', 'limits.poolSize:', 'limits.maxPooledPerDevice:', '(root): Unrecognized key: "extra"']) {
      expect(message).toContain(keyPath);
    }
  });

  it('requires --cert and --key together (cross-field check)', () => {
    expect(configError(() => parseRelayOptions({ dataDir: '/d', certFile: '/c' }))).toContain('certFile: --cert and --key go together');
    expect(configError(() => parseRelayOptions({ dataDir: '/d', keyFile: '/k' }))).toContain('certFile: --cert and --key go together');
  });

  it('device session pacing: bounds in order, a positive spread, a wait within a minute', () => {
    expect(configError(() => parseRelayOptions({ dataDir: '/d', limits: { minDeviceSessionsPerSecond: 50, maxDeviceSessionsPerSecond: 10 } }))).toContain(
      'limits.minDeviceSessionsPerSecond: minDeviceSessionsPerSecond must not exceed maxDeviceSessionsPerSecond',
    );
    const message = configError(() => parseRelayOptions({ dataDir: '/d', limits: { deviceReconnectSpreadS: 0, minDeviceSessionsPerSecond: 0 }, timers: { deviceAdmissionWaitMs: 61_000 } }));
    for (const keyPath of ['limits.deviceReconnectSpreadS:', 'limits.minDeviceSessionsPerSecond:', 'timers.deviceAdmissionWaitMs:']) expect(message).toContain(keyPath);
    expect(parseRelayOptions({ dataDir: '/d', timers: { deviceAdmissionWaitMs: 0 } }).timers.deviceAdmissionWaitMs).toBe(0);
  });

  it.each([undefined, null, 'dataDir=/d', [], 42])('refuses a non-object %p', (input) => {
    configError(() => parseRelayOptions(input));
  });

  it('requires dataDir', () => {
    expect(configError(() => parseRelayOptions({}))).toContain('dataDir:');
  });
});

const MINIMAL_AGENT = { relay: 'relay.example.com:443', caFingerprint: 'ab'.repeat(32), stateDir: '/var/lib/portway', name: 'pi1' };

describe('agent config (parseAgentConfig)', () => {
  it('fills every default from the schema', () => {
    expect(parseAgentConfig(MINIMAL_AGENT)).toEqual({
      ...MINIMAL_AGENT,
      services: [],
      claimCodeFile: '/boot/firmware/portway-claim-code.txt',
      claimConsole: '/dev/console',
      logLevel: 'info',
      maxStreams: 256,
      maxUdpSessions: 4096,
      telemetryIntervalMs: 60_000,
      timers: {
        keepaliveS: 25,
        connectTimeoutMs: 10_000,
        backoffBaseMs: 500,
        backoffCapMs: 60_000,
        backoffStableMs: 20_000,
        serviceConnectTimeoutMs: 5_000,
        streamHandshakeTimeoutMs: 10_000,
        streamHeartbeatMs: 20_000,
        closeGraceMs: 10_000,
        serialPollMs: 1_000,
      },
    });
  });

  it('checks claimCode: a real code passes, a typo is named, and it never goes with enrollKey', () => {
    const code = 'A94Q-PXGV-QRD2-MB8P-GTYS-J6C5';
    expect(parseAgentConfig({ ...MINIMAL_AGENT, claimCode: code }).claimCode).toBe(code);
    expect(() => parseAgentConfig({ ...MINIMAL_AGENT, claimCode: code.replace('PXGV', 'PXGW') })).toThrow(
      'config: claimCode: not a claim code: the check character does not match (a typo?)',
    );
    expect(() => parseAgentConfig({ ...MINIMAL_AGENT, enrollKey: 'k', claimCode: code })).toThrow('claimCode: give at most one of enrollKey or claimCode');
  });

  it('accepts a full config with services and partial timers', () => {
    const config = parseAgentConfig({
      relay: '[2001:db8::1]:8443',
      caFile: '/etc/portway/relay-ca.crt',
      stateDir: '/var/lib/portway',
      enrollKey: 'fleet-key',
      name: 'gateway-7',
      services: [
        { name: 'ssh', type: 'tcp', target: '127.0.0.1:22' },
        { name: 'web', type: 'tcp', target: 'localhost:8080' },
      ],
      logLevel: 'warn',
      maxStreams: 16,
      timers: { keepaliveS: 60 },
    });
    expect(config.services.map((s) => s.name)).toEqual(['ssh', 'web']);
    expect(config.timers.keepaliveS).toBe(60);
    expect(config.timers.backoffCapMs).toBe(60_000);
  });

  it('is deep-frozen', () => {
    const config = parseAgentConfig({ ...MINIMAL_AGENT, services: [{ name: 'ssh', type: 'tcp', target: '127.0.0.1:22' }] });
    expectDeepFrozen(config);
  });

  it.each([
    [{ ...MINIMAL_AGENT, relayHost: 'x' }, '(root): Unrecognized key: "relayHost"'],
    [{ ...MINIMAL_AGENT, timers: { keepalive: 5 } }, 'timers: Unrecognized key: "keepalive"'],
    [{ ...MINIMAL_AGENT, services: [{ name: 'ssh', type: 'tcp', target: '127.0.0.1:22', port: 22 }] }, 'services.0: Unrecognized key: "port"'],
  ])('refuses unknown keys at every level: %p', (input, problem) => {
    expect(configError(() => parseAgentConfig(input))).toContain(problem);
  });

  it('reports every problem at once, each with its key path, prefixed by the source', () => {
    const message = configError(() =>
      parseAgentConfig(
        {
          relay: 'no-port',
          stateDir: '',
          name: 'bad name',
          services: [
            { name: 'ssh', type: 'tcp', target: '127.0.0.1' },
            { name: 'ssh', type: 'tcp', target: '127.0.0.1:22' },
            { name: 'x', type: 'sctp', target: '127.0.0.1:1' },
          ],
          maxStreams: 0,
          timers: { keepaliveS: 0, closeGraceMs: -5 },
        },
        '/etc/portway/agent.json',
      ),
    );
    expect(message).toMatch(/^\/etc\/portway\/agent\.json: /);
    for (const keyPath of ['relay: must be HOST:PORT', 'stateDir:', 'name:', 'services.0.target: must be HOST:PORT', 'services.2.type:', 'maxStreams:', 'timers.keepaliveS:', 'timers.closeGraceMs:']) {
      expect(message).toContain(keyPath);
    }
  });

  it('requires exactly one of caFile and caFingerprint', () => {
    const { caFingerprint: _omit, ...neither } = MINIMAL_AGENT;
    expect(configError(() => parseAgentConfig(neither))).toContain('caFile: exactly one of caFile or caFingerprint is required');
    expect(configError(() => parseAgentConfig({ ...MINIMAL_AGENT, caFile: '/ca.crt' }))).toContain('caFile: exactly one of caFile or caFingerprint is required');
  });

  it('refuses duplicate service names, naming the later one', () => {
    const message = configError(() =>
      parseAgentConfig({ ...MINIMAL_AGENT, services: [{ name: 'ssh', type: 'tcp', target: 'h:22' }, { name: 'web', type: 'tcp', target: 'h:80' }, { name: 'ssh', type: 'tcp', target: 'h:2222' }] }),
    );
    expect(message).toContain('services.2.name: duplicate service name ssh');
  });

  it('never repeats a secret in its errors', () => {
    const secret = `SECRET-${'k'.repeat(300)}`;
    const message = configError(() => parseAgentConfig({ ...MINIMAL_AGENT, enrollKey: secret }));
    expect(message).toContain('enrollKey:');
    expect(message).not.toContain('SECRET');
  });

  it.each([undefined, null, 'relay=x', [], 1])('refuses a non-object %p', (input) => {
    configError(() => parseAgentConfig(input));
  });
});

describe('agent config files (loadAgentConfig)', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('loads a JSON file', async () => {
    const dir = await makeTempDir(disposer);
    const file = path.join(dir, 'agent.json');
    await fs.writeFile(file, JSON.stringify(MINIMAL_AGENT));
    expect(loadAgentConfig(file).name).toBe('pi1');
  });

  it('a missing file is PW_CONFIG_INVALID naming the file', async () => {
    const dir = await makeTempDir(disposer);
    const file = path.join(dir, 'missing.json');
    expect(configError(() => loadAgentConfig(file))).toContain(file);
  });

  it.each(['', '{', '{"relay": }', 'relay = "x"', '\u0000\u0001'])('a file that is not JSON (%p) is PW_CONFIG_INVALID', async (text) => {
    const dir = await makeTempDir(disposer);
    const file = path.join(dir, 'agent.json');
    await fs.writeFile(file, text);
    expect(configError(() => loadAgentConfig(file))).toContain('not valid JSON');
  });

  it('schema problems in a file carry the file name and the key path', async () => {
    const dir = await makeTempDir(disposer);
    const file = path.join(dir, 'agent.json');
    await fs.writeFile(file, JSON.stringify({ ...MINIMAL_AGENT, maxStreams: 'many' }));
    expect(configError(() => loadAgentConfig(file))).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: maxStreams:`));
  });
});
