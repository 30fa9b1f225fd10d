/**
 * Claim codes end to end, every part a real process (relay, agents, `portway` CLI): a device configured with a
 * printed code waits to be claimed and can do nothing else; `portway claim` makes the caller its owner and the
 * agent goes online and serves a stream without a restart; the code is single-use; of two racing claims
 * exactly one wins; the pins made at claim time refuse a user key the owner did not pin (even when the relay
 * lets the user through) and a device key the relay operator swapped in with a certificate from its own CA.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { parseClaimCode } from '../../protocol';
import { loadCa } from '../../relay/src/data-dir';
import { SqliteStore } from '../../relay/src/store';
import { spkiOfKeyPem } from '../../shared/claim-tag';
import { generateKeyPair, certFingerprint, spkiFingerprint } from '../../shared/x509';
import { isEvent, type PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, startCluster, startEchoServer } from '../helpers';
import { addUser, CLAIM_RELAY_CONFIG, relayApi, runAs, startClaimAgent } from '../helpers/claims';

const PAYLOAD = 'hello from the claimed device\n';
const EXIT_FAILURE = 1;

async function newCode(cluster: PortwayCluster): Promise<string> {
  const result = await runAs(cluster, undefined, ['claim-code', 'new']);
  expect(result).toMatchObject({ code: 0, stderr: '' });
  return result.stdout.trim();
}

/** A TLS connection with ALPN mqtt and no client certificate, sending CONNECT: the relay must close it unanswered. */
async function mqttWithoutCertificate(cluster: PortwayCluster, clientId: string): Promise<{ received: number }> {
  const ca = await fs.readFile(path.join(cluster.configHome, 'portway', 'relay-ca.crt'), 'utf8');
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: cluster.relayPort, ca, ALPNProtocols: ['mqtt'] });
    let received = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the relay kept an MQTT connection without a certificate open'));
    }, 10_000);
    socket.on('data', (d: Buffer) => (received += d.length));
    socket.on('error', () => undefined); // a reset is also a refusal; 'close' follows
    socket.on('secureConnect', () => {
      const id = Buffer.from(clientId);
      const variable = Buffer.concat([Buffer.from([0, 4]), Buffer.from('MQTT'), Buffer.from([4, 2, 0, 60, 0, id.length]), id]);
      socket.write(Buffer.concat([Buffer.from([0x10, variable.length]), variable]));
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ received });
    });
  });
}

/** Real processes on a loaded 2-core CI machine: a cluster alone can take 10 s to start. */
const TEST_TIMEOUT_MS = 120_000;

describe('claim codes', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('claims a device end to end; it serves without a restart; single use; racing claims; owner and device pins hold against the relay', async () => {
    const echo = await startEchoServer(disposer);
    const services = [{ name: 'echo', type: 'tcp' as const, target: `127.0.0.1:${echo.port}` }];
    const cluster = await startCluster(disposer, { services, relayConfig: CLAIM_RELAY_CONFIG });
    const bob = await addUser(cluster, disposer, 'bob');
    const gardenCode = await newCode(cluster);
    const shedCode = await newCode(cluster);
    const garden = await startClaimAgent(cluster, disposer, { name: 'garden', services, claimCode: gardenCode });
    const shed = await startClaimAgent(cluster, disposer, { name: 'shed', services, claimCode: shedCode });

    // Unclaimed: no certificate, unknown to users, no MQTT; its poll token opens no other claim.
    await expect(fs.access(path.join(garden.stateDir, 'device.crt'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await runAs(cluster, undefined, ['pipe', 'garden', 'echo'], PAYLOAD)).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_UNKNOWN_DEVICE: no device named "garden"\n' });
    expect(await mqttWithoutCertificate(cluster, 'garden')).toEqual({ received: 0 });
    const shedPoll = (JSON.parse(await fs.readFile(path.join(shed.stateDir, 'claim.json'), 'utf8')) as { pollToken: string }).pollToken;
    const gardenId = parseClaimCode(gardenCode).claimId;
    for (const route of ['wait', 'answer']) {
      const reply = await relayApi(cluster, { method: 'POST', path: `/v1/claims/device/${route}`, body: { claimId: gardenId, pollToken: shedPoll, offerId: 'x', ok: false, code: 'PW_CLAIM_BINDING_FAILED' } });
      expect([route, reply.status, reply.body.code]).toEqual([route, 404, 'PW_CLAIM_NOT_FOUND']);
    }
    // Nor can anyone list or claim without a token.
    expect((await relayApi(cluster, { method: 'GET', path: `/v1/claims/${gardenId}` })).body.code).toBe('PW_UNAUTHENTICATED');

    // Claim: the caller owns it, the device key is pinned, the agent goes online in the same process.
    const claimed = await runAs(cluster, undefined, ['claim', gardenCode.toLowerCase(), '--name', 'garden']);
    expect(claimed).toMatchObject({ code: 0, stderr: '' });
    const [, deviceId, pinned] = /^claimed garden \((dev_[a-z2-7]{16})\); device key ([0-9a-f]{64}) pinned\n$/.exec(claimed.stdout) ?? [];
    expect(deviceId).toBeDefined();
    const known = JSON.parse(await fs.readFile(path.join(cluster.configHome, 'portway', 'known_devices.json'), 'utf8')) as Record<string, string>;
    expect(known[deviceId as string]).toBe(pinned);
    await garden.proc.waitForLine(isEvent('agent.control.online'), 20_000, 'the claimed agent online');
    expect(garden.proc.child.exitCode).toBeNull();
    expect(garden.proc.events('agent.claim.owner_pinned')).toHaveLength(1);
    expect(await runAs(cluster, undefined, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    await expect(fs.access(path.join(garden.stateDir, 'claim.json'))).rejects.toMatchObject({ code: 'ENOENT' });

    // Logging in again keeps this machine's key, so the device still knows its owner.
    expect((await runAs(cluster, undefined, ['login', '--relay', cluster.relayAddress, '--token', '-', '--fingerprint', cluster.caFingerprint], cluster.token)).code).toBe(0);
    expect(await runAs(cluster, undefined, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });

    // Single use.
    expect(await runAs(cluster, bob.home, ['claim', gardenCode])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_CLAIM_USED: this claim code was already used\n' });

    // A user the relay lets through (a relay-side share, no owner grant) but whose key the device never pinned: refused inside E2E.
    expect((await relayApi(cluster, { method: 'POST', path: '/v1/shares', token: cluster.token, body: { device: 'garden', user: 'bob' } })).status).toBe(200);
    const refused = await runAs(cluster, bob.home, ['pipe', 'garden', 'echo'], PAYLOAD);
    expect(refused).toMatchObject({ code: EXIT_FAILURE, stdout: '', stderr: 'portway: PW_E2E_OWNER_KEY_MISMATCH: this device accepts only its owner keys and keys its owner granted\n' });

    // Racing claims of one device: exactly one wins, the other is told why.
    const race = await Promise.all([runAs(cluster, undefined, ['claim', shedCode]), runAs(cluster, bob.home, ['claim', shedCode])]);
    const winners = race.filter((r) => r.code === 0);
    expect(winners).toHaveLength(1);
    const loser = race.find((r) => r.code !== 0);
    expect(loser?.stderr).toMatch(/^portway: (PW_CLAIM_IN_PROGRESS|PW_CLAIM_USED): /);
    await shed.proc.waitForLine(isEvent('agent.control.online'), 20_000, 'the raced agent online');
    expect(shed.proc.events('agent.claim.owner_pinned')).toHaveLength(1);

    // The relay operator swaps the device: a new key, a certificate from the relay's own CA for the same device
    // ID, the store updated to match. The relay routes the stream to it; the client's pin refuses it.
    await garden.proc.stop();
    const impostorDir = path.join(path.dirname(garden.stateDir), 'impostor');
    await fs.mkdir(impostorDir);
    for (const f of ['ca.crt', 'relay-ca.crt', 'device.json']) await fs.copyFile(path.join(garden.stateDir, f), path.join(impostorDir, f));
    const impostorKey = generateKeyPair().privateKeyPem;
    const ca = await loadCa(cluster.relayDir);
    const forged = ca.issueDeviceCert({ deviceId: deviceId as string, name: 'garden', publicKeySpkiDer: spkiOfKeyPem(impostorKey), validityMs: 3_600_000 });
    await fs.writeFile(path.join(impostorDir, 'device.key'), impostorKey, { mode: 0o600 });
    await fs.writeFile(path.join(impostorDir, 'device.crt'), forged);
    const store = await SqliteStore.open({ path: path.join(cluster.relayDir, 'relay.db') });
    await store.updateDeviceCert(deviceId as string, { certFingerprint: certFingerprint(forged), keyFingerprint: spkiFingerprint(spkiOfKeyPem(impostorKey)) });
    await store.close();
    const configFile = path.join(path.dirname(garden.stateDir), 'impostor.json');
    await fs.writeFile(configFile, JSON.stringify({ relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, stateDir: impostorDir, name: 'garden', services, timers: cluster.options.agentTimers }));
    const impostor = cluster.spawnCli(['agent', '--config', configFile]);
    disposer.add(() => impostor.stop('SIGTERM', 5_000));
    await impostor.waitForLine(isEvent('agent.control.online'), 20_000, 'impostor online');
    const swapped = await runAs(cluster, undefined, ['pipe', 'garden', 'echo'], PAYLOAD);
    expect(swapped.code).toBe(EXIT_FAILURE);
    expect(swapped.stdout).toBe('');
    expect(swapped.stderr).toMatch(/^portway: PW_E2E_DEVICE_KEY_MISMATCH: /);

    // Every claim went to the audit log.
    const audit = await SqliteStore.open({ path: path.join(cluster.relayDir, 'relay.db') });
    const entries = await audit.listAudit({ limit: 100 });
    await audit.close();
    const claims = entries.filter((e) => e.action === 'device.claim');
    const ok = claims.filter((e) => e.outcome === 'ok').map((e) => e.target);
    expect(ok).toHaveLength(2);
    expect(ok).toContain(deviceId);
    expect(claims.some((e) => e.outcome === 'PW_CLAIM_USED' && e.source === '127.0.0.1')).toBe(true);
  }, TEST_TIMEOUT_MS);
});
