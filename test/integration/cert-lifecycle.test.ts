/**
 * Certificate lifecycle with real relay, agent and client processes (docs/security.md):
 * - a short-lived device certificate is renewed over MQTT by the relay; the agent switches to it without a
 *   restart, an open stream survives the switch, and new streams work after the first certificate has expired;
 * - expired, not-yet-valid and wrong-CA device and user certificates are refused with their own codes; CSRs
 *   with a wrong name or a weak or wrong-curve key are refused with PW_BAD_CSR;
 * - `portway device remove` and `portway relay device revoke` end the device's MQTT session and open streams
 *   within 5 s and refuse new ones; the removed device reconnecting is refused (PW_DEVICE_REVOKED) and its key
 *   cannot enroll again; revocations and renewals are audited.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import Database from 'better-sqlite3';
import { encodeFrame, encodePreamble, FrameDecoder, FrameType, MAX_FRAME_BYTES } from '../../protocol';
import { CertificateAuthority } from '../../relay/src/pki';
import { createCsr, parseCsr } from '../../shared/x509';
import { isEvent, type ManagedProcess, type PortwayCluster } from '../../devtools';
import { Disposer, FAST_RELAY_CONFIG, collectBytes, connectTcp, makeTempDir, once, startCluster, startEchoServer, waitFor } from '../helpers';

const LOG_WAIT_MS = 10_000;
const DAY_MS = 24 * 3600 * 1000;

interface Credentials {
  readonly key: string;
  readonly cert: string;
}

/** The next `event` line `proc` logs after this call that matches `fields`. */
function nextEvent(proc: ManagedProcess, event: string, timeoutMs: number, fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const earlier = new Set(proc.lines.filter(isEvent(event)));
  const matches = (line: string): boolean => {
    if (!isEvent(event)(line) || earlier.has(line)) return false;
    const json = JSON.parse(line) as Record<string, unknown>;
    return Object.entries(fields).every(([k, v]) => json[k] === v);
  };
  return proc.waitForLine(matches, timeoutMs, `${event} ${JSON.stringify(fields)}`).then((line) => JSON.parse(line) as Record<string, unknown>);
}

/** One data socket with `credentials`: send `frame`, return the code of the RELAY_STATUS refusal. */
async function dataRefusal(disposer: Disposer, port: number, credentials: Credentials, frame: Buffer): Promise<string> {
  const raw = await connectTcp(disposer, { host: '127.0.0.1', port }, { allowHalfOpen: false });
  const socket = tls.connect({ socket: raw, rejectUnauthorized: false, ALPNProtocols: ['portway-data/1'], key: credentials.key, cert: credentials.cert });
  socket.on('error', () => undefined);
  disposer.add(() => socket.destroy(), 'destroy data probe');
  const bytes = collectBytes(socket as unknown as import('node:net').Socket);
  await once(socket, 'secureConnect', 5_000);
  socket.write(Buffer.concat([encodePreamble(), frame]));
  await bytes.waitForEnd(LOG_WAIT_MS);
  const result = new FrameDecoder({ expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES }).push(bytes.bytes());
  if (result.kind !== 'frame' || result.frame.type !== FrameType.RELAY_STATUS) throw new Error(`expected a RELAY_STATUS frame, got ${result.kind}`);
  const payload = result.frame.payload as { ok: boolean; code?: string };
  expect(payload.ok).toBe(false);
  return payload.code ?? '';
}

function api(port: number, method: string, urlPath: string, body: unknown, token?: string): Promise<{ status: number; json: { ok?: boolean; code?: string; message?: string } }> {
  return new Promise((resolve, reject) => {
    const text = JSON.stringify(body);
    const headers: Record<string, string> = { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) };
    const req = https.request({ host: '127.0.0.1', port, method, path: urlPath, headers, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], agent: false, timeout: 10_000 } as https.RequestOptions, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as { code?: string } }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
    req.on('error', reject);
    req.end(text);
  });
}

function auditActions(cluster: PortwayCluster, target: string): string[] {
  const db = new Database(path.join(cluster.relayDir, 'relay.db'), { readonly: true });
  try {
    return (db.prepare('SELECT action, outcome FROM audit_log WHERE target = ? ORDER BY id').all(target) as { action: string; outcome: string }[]).map((r) => `${r.action}:${r.outcome}`);
  } finally {
    db.close();
  }
}

/** An open echo stream through `portway connect`, checked with one round trip. */
async function openEchoStream(disposer: Disposer, cluster: PortwayCluster, device: string): Promise<{ bytes: ReturnType<typeof collectBytes>; roundTrip: (text: string) => Promise<void> }> {
  const { port, proc } = await cluster.connect('echo', device);
  disposer.add(() => proc.stop(), 'stop portway connect');
  const app = await connectTcp(disposer, { host: '127.0.0.1', port }, { allowHalfOpen: false });
  const bytes = collectBytes(app);
  let sent = '';
  const roundTrip = async (text: string): Promise<void> => {
    sent += text;
    app.write(text);
    expect((await bytes.waitForLength(sent.length, LOG_WAIT_MS)).toString()).toBe(sent);
  };
  await roundTrip('hello before\n');
  return { bytes, roundTrip };
}

describe('certificate lifecycle', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  afterEach(() => disposer.run());
  afterAll(() => suite.run(), 30_000);

  it('renews a short-lived device certificate over MQTT without an agent restart; streams work on and past the old one', async () => {
    const local = new Disposer();
    disposer.add(() => local.run());
    const echo = await startEchoServer(local);
    // 18 s certificates: renewed 12 s after issue (a third left), the first one expires at 18 s, the next renewal is at 24 s.
    const cluster = await startCluster(local, { services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` }], relayConfig: { ...FAST_RELAY_CONFIG, deviceCertValidityMs: 18_000 } });
    const relay = cluster.relay as ManagedProcess;
    const agent = cluster.agent as ManagedProcess;
    const certFile = path.join(cluster.dir, 'agent-state', 'device.crt');
    const first = new X509Certificate(await fs.readFile(certFile, 'utf8'));
    const stream = await openEchoStream(local, cluster, cluster.deviceName);
    const renewed = await nextEvent(agent, 'agent.cert.renewed', 20_000);
    await nextEvent(agent, 'agent.control.online', LOG_WAIT_MS);
    await stream.roundTrip('hello after the switch\n');
    const second = new X509Certificate(await fs.readFile(certFile, 'utf8'));
    expect(second.fingerprint256).not.toBe(first.fingerprint256);
    expect(second.publicKey.export({ type: 'spki', format: 'der' }).equals(first.publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
    expect(Date.parse(second.validTo)).toBeGreaterThan(Date.parse(first.validTo));
    expect(renewed.certFingerprint).toBe(second.fingerprint256.replace(/:/g, '').toLowerCase());
    expect(agent.events('agent.started')).toHaveLength(1); // same process
    // Past the first certificate's end: a new stream (new data sockets) works, the control session is up.
    await waitFor(() => Date.now() > Date.parse(first.validTo) + 500, { timeoutMs: 20_000, description: 'the first certificate to expire' });
    const piped = await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'after expiry\n', timeoutMs: 20_000 });
    expect({ code: piped.code, stdout: piped.stdout, stderr: piped.stderr }).toEqual({ code: 0, stdout: 'after expiry\n', stderr: '' });
    await stream.roundTrip('hello past the old end\n');
    expect(relay.events('relay.connection.rejected').filter((e) => e.code === 'PW_CERT_EXPIRED')).toEqual([]);
    const { deviceId } = JSON.parse(await fs.readFile(path.join(cluster.dir, 'agent-state', 'device.json'), 'utf8')) as { deviceId: string };
    expect(relay.events('relay.cert.renewed')[0]).toMatchObject({ deviceId });
    expect(auditActions(cluster, deviceId)).toContain('device.cert.renew:ok');
  }, 60_000);

  describe('a running cluster', () => {
    let cluster: PortwayCluster;
    let echoPort: number;
    let deviceKey: string;
    let user: Credentials;
    let deviceId: string;

    beforeAll(async () => {
      const echo = await startEchoServer(suite);
      echoPort = echo.port;
      cluster = await startCluster(suite, { services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echoPort}` }] });
      deviceKey = await fs.readFile(path.join(cluster.dir, 'agent-state', 'device.key'), 'utf8');
      deviceId = (JSON.parse(await fs.readFile(path.join(cluster.dir, 'agent-state', 'device.json'), 'utf8')) as { deviceId: string }).deviceId;
      const home = path.join(cluster.configHome, 'portway');
      user = { key: await fs.readFile(path.join(home, 'user.key'), 'utf8'), cert: await fs.readFile(path.join(home, 'user.crt'), 'utf8') };
    }, 60_000);

    /** The relay CA with a shifted clock (test-only: the CA key is read from the relay's data directory). */
    async function relayCa(shiftMs: number): Promise<CertificateAuthority> {
      const [certPem, keyPem] = await Promise.all([fs.readFile(path.join(cluster.relayDir, 'ca.crt'), 'utf8'), fs.readFile(path.join(cluster.relayDir, 'ca.key'), 'utf8')]);
      return CertificateAuthority.load({ certPem, keyPem }, { now: () => Date.now() + shiftMs });
    }

    it('expired, not-yet-valid and wrong-CA device and user certificates are refused with their own codes', async () => {
      const deviceSpki = parseCsr(createCsr({ privateKeyPem: deviceKey, commonName: 'pi1' })).publicKeySpkiDer;
      const userSpki = parseCsr(createCsr({ privateKeyPem: user.key, commonName: 'alice' })).publicKeySpkiDer;
      const userId = new X509Certificate(user.cert).subject.match(/CN=(usr_[a-z2-7]+)/)?.[1] as string;
      const cases: [string, CertificateAuthority, number][] = [
        ['PW_CERT_EXPIRED', await relayCa(-3 * DAY_MS), DAY_MS],
        ['PW_CERT_NOT_YET_VALID', await relayCa(3 * 3600 * 1000), DAY_MS],
        ['PW_CERT_UNTRUSTED', CertificateAuthority.create({ commonName: 'not the relay' }), DAY_MS],
      ];
      const agentHello = encodeFrame(FrameType.AGENT_HELLO, { kind: 'pool' });
      const clientOpen = encodeFrame(FrameType.CLIENT_OPEN, { device: 'pi1', service: 'echo' });
      for (const [code, ca, validityMs] of cases) {
        const deviceCert = ca.issueDeviceCert({ deviceId, name: 'pi1', publicKeySpkiDer: deviceSpki, validityMs });
        const userCert = ca.issueUserCert({ userId, name: 'alice', publicKeySpkiDer: userSpki, validityMs });
        expect({ code, device: await dataRefusal(disposer, cluster.relayPort, { key: deviceKey, cert: deviceCert }, agentHello) }).toEqual({ code, device: code });
        expect({ code, user: await dataRefusal(disposer, cluster.relayPort, { key: user.key, cert: userCert }, clientOpen) }).toEqual({ code, user: code });
        // MQTT with that device certificate: dropped, logged with the code.
        const logged = nextEvent(cluster.relay as ManagedProcess, 'relay.connection.rejected', LOG_WAIT_MS, { code });
        const raw = await connectTcp(disposer, { host: '127.0.0.1', port: cluster.relayPort });
        const mqtt = tls.connect({ socket: raw, rejectUnauthorized: false, ALPNProtocols: ['mqtt'], key: deviceKey, cert: deviceCert });
        mqtt.on('error', () => undefined);
        disposer.add(() => mqtt.destroy(), 'destroy mqtt probe');
        await logged;
      }
      // The real credentials still work.
      const piped = await cluster.runCli(['pipe', 'pi1', 'echo'], { input: 'still fine\n', timeoutMs: 20_000 });
      expect(piped.stdout).toBe('still fine\n');
    });

    it('CSRs with a wrong name, a weak RSA key or a wrong curve are refused with PW_BAD_CSR', async () => {
      const dir = await makeTempDir(disposer, 'portway-csr-');
      const opensslCsr = (keyArgs: string[], name: string): string => {
        const keyFile = path.join(dir, `${name}.key`);
        execFileSync('openssl', [...keyArgs, '-out', keyFile], { stdio: 'pipe' });
        return execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-sha256'], { stdio: 'pipe' }).toString();
      };
      const bad: [string, string][] = [
        ['rsa-1024', opensslCsr(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'], 'rsa1024')],
        ['p-192', opensslCsr(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime192v1'], 'p192')],
        ['secp256k1', opensslCsr(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1'], 'k256')],
      ];
      for (const [what, csr] of bad) {
        const name = /CN ?= ?(\w+)/.exec(execFileSync('openssl', ['req', '-noout', '-subject'], { input: csr }).toString())?.[1] as string;
        const enrolled = await api(cluster.relayPort, 'POST', '/v1/enroll', { enrollKey: cluster.enrollKey, name, csr });
        expect({ what, status: enrolled.status, code: enrolled.json.code }).toEqual({ what, status: 400, code: 'PW_BAD_CSR' });
        const login = await api(cluster.relayPort, 'POST', '/v1/login', { csr }, cluster.token);
        expect({ what, status: login.status, code: login.json.code }).toEqual({ what, status: 400, code: 'PW_BAD_CSR' });
      }
      const wrongName = await api(cluster.relayPort, 'POST', '/v1/enroll', { enrollKey: cluster.enrollKey, name: 'pi-new', csr: createCsr({ privateKeyPem: deviceKey, commonName: 'someone-else' }) });
      expect({ status: wrongName.status, code: wrongName.json.code, message: wrongName.json.message }).toEqual({
        status: 400, code: 'PW_BAD_CSR', message: 'the CSR names another device than the request (its common name must be the device name)',
      });
    });

    it('portway relay device revoke (store write, relay running) ends a second device\'s session and stream within 5 s', async () => {
      const configFile = path.join(cluster.dir, 'agent2.json');
      const config = JSON.parse(await fs.readFile(cluster.agentConfigFile, 'utf8')) as Record<string, unknown>;
      await fs.writeFile(configFile, JSON.stringify({ ...config, name: 'pi2', stateDir: path.join(cluster.dir, 'agent2-state') }));
      const agent2 = cluster.spawnCli(['agent', '--config', configFile]);
      disposer.add(() => agent2.stop(), 'stop agent pi2');
      await agent2.waitForLine(isEvent('agent.control.online'), 30_000, 'pi2 online');
      const stream = await openEchoStream(disposer, cluster, 'pi2');
      const revokedLog = nextEvent(cluster.relay as ManagedProcess, 'relay.device.revoked', 5_000, { via: 'poll' });
      const revoked = await cluster.mustRun(['relay', 'device', 'revoke', 'pi2', '--data', cluster.relayDir]);
      const pi2 = /^revoked (dev_[a-z2-7]{16})$/.exec(revoked.stdout.trim())?.[1] as string;
      expect(pi2).toMatch(/^dev_/);
      expect(await revokedLog).toMatchObject({ deviceId: pi2, mqttSessions: 1, streams: 1 });
      await stream.bytes.waitForEnd(5_000);
      await nextEvent(agent2, 'agent.control.disconnected', 5_000).catch(() => agent2.events('agent.control.disconnected')[0]);
      expect(agent2.events('agent.control.disconnected').length).toBeGreaterThan(0);
      expect(auditActions(cluster, pi2)).toEqual(['device.enroll:ok', 'device.revoke:ok']);
      // pi1 is untouched.
      const piped = await cluster.runCli(['pipe', 'pi1', 'echo'], { input: 'pi1 fine\n', timeoutMs: 20_000 });
      expect(piped.stdout).toBe('pi1 fine\n');
    }, 60_000);

    it('portway device remove ends the live MQTT session and an open stream within 5 s, then refuses the device and its key', async () => {
      const relay = cluster.relay as ManagedProcess;
      const agent = cluster.agent as ManagedProcess;
      const stream = await openEchoStream(disposer, cluster, 'pi1');
      const revokedLog = nextEvent(relay, 'relay.device.revoked', 5_000, { via: 'api' });
      const disconnected = nextEvent(agent, 'agent.control.disconnected', 5_000);
      const removed = await cluster.mustRun(['device', 'remove', 'pi1']);
      expect(removed.stdout).toBe(`removed ${deviceId}\n`);
      expect(await revokedLog).toMatchObject({ deviceId, mqttSessions: 1, streams: 1 });
      await disconnected;
      await stream.bytes.waitForEnd(5_000);
      // New streams: the device is gone for its users.
      const piped = await cluster.runCli(['pipe', 'pi1', 'echo'], { input: 'x', timeoutMs: 20_000 });
      expect(piped).toEqual({ code: 1, stdout: '', stderr: 'portway: PW_UNKNOWN_DEVICE: no device named "pi1"\n' });
      // The device reconnecting (the agent keeps trying): refused with PW_DEVICE_REVOKED on MQTT and data sockets.
      await nextEvent(relay, 'relay.connection.rejected', LOG_WAIT_MS, { deviceId, code: 'PW_DEVICE_REVOKED' });
      const cert = await fs.readFile(path.join(cluster.dir, 'agent-state', 'device.crt'), 'utf8');
      expect(await dataRefusal(disposer, cluster.relayPort, { key: deviceKey, cert }, encodeFrame(FrameType.AGENT_HELLO, { kind: 'pool' }))).toBe('PW_DEVICE_REVOKED');
      // Its key cannot enroll again, nor register a claim.
      const enrolled = await api(cluster.relayPort, 'POST', '/v1/enroll', { enrollKey: cluster.enrollKey, name: 'pi1', csr: createCsr({ privateKeyPem: deviceKey, commonName: 'pi1' }) });
      expect({ status: enrolled.status, code: enrolled.json.code }).toEqual({ status: 403, code: 'PW_DEVICE_REVOKED' });
      // Removing it again: it is gone.
      const again = await cluster.runCli(['device', 'remove', 'pi1']);
      expect(again).toEqual({ code: 1, stdout: '', stderr: 'portway: PW_UNKNOWN_DEVICE: no device named "pi1"\n' });
      expect(auditActions(cluster, deviceId)).toEqual(['device.enroll:ok', 'device.revoke:ok', 'device.enroll:PW_DEVICE_REVOKED']);
    }, 60_000);
  });
});
