/**
 * A device without a real-time clock (docs/security.md): the agent run under libfaketime with its system clock
 * (Date.now and OpenSSL's alike) at 2 January 1970 still connects and serves streams, its relay checks made
 * at the time floor; a relay certificate that has expired, or comes from another CA, is refused with the clock
 * unknown and with it known. Needs libfaketime (.ci/run installs faketime).
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { CertificateAuthority } from '../../relay/src/pki';
import { isEvent, type ManagedProcess, type PortwayCluster } from '../../devtools';
import { Disposer, startCluster, startEchoServer } from '../helpers';

const DAY_MS = 24 * 3600 * 1000;

/** libfaketime from Debian's libfaketime package (faketime in .ci/run); the test fails without it. */
function libfaketime(): string {
  const candidates = [`/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/faketime/libfaketime.so.1`];
  const found = candidates.find((file) => existsSync(file));
  if (!found) throw new Error(`libfaketime not found (${candidates.join(', ')}): apt-get install faketime`);
  return found;
}
const WAIT_MS = 20_000;

describe('agent clock without an RTC', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;

  beforeAll(async () => {
    const echo = await startEchoServer(suite);
    cluster = await startCluster(suite, { services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` }] });
  }, 60_000);
  afterAll(() => suite.run(), 30_000);

  /** Start the agent with its system clock at 2 January 1970 (libfaketime, ticking from there), or at the real time. */
  async function startAgent(clock: '1970' | 'real'): Promise<ManagedProcess> {
    const env = clock === '1970' ? { LD_PRELOAD: libfaketime(), FAKETIME: '@1970-01-02 00:00:00', FAKETIME_DONT_FAKE_MONOTONIC: '1' } : {};
    const agent = cluster.spawnCli(['agent', '--config', cluster.agentConfigFile], env);
    cluster.agent = agent;
    await agent.waitForLine(isEvent(clock === '1970' ? 'agent.clock.unknown' : 'agent.clock.known'), WAIT_MS, `agent.clock with a ${clock} clock`);
    return agent;
  }

  async function restartRelay(cert?: { certPem: string; keyPem: string }): Promise<void> {
    await cluster.relay?.stop();
    const args = ['relay', '--data', cluster.relayDir, '--listen', cluster.relayAddress, '--config', path.join(cluster.dir, 'relay.json')];
    if (cert) {
      const certFile = path.join(cluster.dir, 'relay-test.crt');
      const keyFile = path.join(cluster.dir, 'relay-test.key');
      await fs.writeFile(certFile, cert.certPem);
      await fs.writeFile(keyFile, cert.keyPem, { mode: 0o600 });
      args.push('--cert', certFile, '--key', keyFile);
    }
    cluster.relay = cluster.spawnCli(args);
    await cluster.relay.waitForLine(isEvent('relay.started'), WAIT_MS, 'relay.started');
  }

  it('with its clock in 1970 the agent connects and serves streams; it saved a time floor while the clock was right', async () => {
    const floorFile = path.join(cluster.dir, 'agent-state', 'time-floor.json');
    const { floorMs } = JSON.parse(await fs.readFile(floorFile, 'utf8')) as { floorMs: number };
    expect(Math.abs(floorMs - Date.now())).toBeLessThan(5 * 60_000);
    await cluster.agent?.stop();
    const agent = await startAgent('1970');
    const unknown = agent.events('agent.clock.unknown')[0] as { systemTime: string; floor: string };
    expect(unknown.systemTime.startsWith('1970-01-02')).toBe(true);
    expect(Date.parse(unknown.floor)).toBe(floorMs);
    await agent.waitForLine(isEvent('agent.control.online'), WAIT_MS, 'agent.control.online');
    const piped = await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'hello from 1970\n', timeoutMs: WAIT_MS });
    expect({ code: piped.code, stdout: piped.stdout, stderr: piped.stderr }).toEqual({ code: 0, stdout: 'hello from 1970\n', stderr: '' });
    // The floor is not written while the clock is wrong.
    expect((JSON.parse(await fs.readFile(floorFile, 'utf8')) as { floorMs: number }).floorMs).toBe(floorMs);
  }, 60_000);

  it('an expired relay certificate, or one from another CA, is refused with the clock unknown and known', async () => {
    const [caCert, caKey] = await Promise.all([fs.readFile(path.join(cluster.relayDir, 'ca.crt'), 'utf8'), fs.readFile(path.join(cluster.relayDir, 'ca.key'), 'utf8')]);
    // Issued 900 days ago for 825 days: expired 75 days ago (before the floor, and before the real time).
    const expired = CertificateAuthority.load({ certPem: caCert, keyPem: caKey }, { now: () => Date.now() - 900 * DAY_MS }).issueServerCert({ names: ['127.0.0.1'] });
    const otherCa = CertificateAuthority.create({ commonName: 'someone else' }).issueServerCert({ names: ['127.0.0.1'] });
    const cases: [string, { certPem: string; keyPem: string }, string, string][] = [
      ['expired', expired, 'relay certificate expired', 'CERT_HAS_EXPIRED'],
      ['other CA', otherCa, 'not issued by the pinned relay CA', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
    ];
    for (const [what, cert, unknownReason, knownCode] of cases) {
      await cluster.agent?.stop();
      await restartRelay(cert);
      for (const clock of ['1970', 'real'] as const) {
        const agent = await startAgent(clock);
        const line = clock === '1970'
          ? await agent.waitForLine(isEvent('agent.control.relay_refused'), WAIT_MS, 'agent.control.relay_refused')
          : await agent.waitForLine((l) => isEvent('agent.control.error')(l) && l.includes(knownCode), WAIT_MS, `agent.control.error ${knownCode}`);
        const event = JSON.parse(line) as { code: string; reason: string };
        if (clock === '1970') expect({ what, code: event.code, reason: event.reason.includes(unknownReason) }).toEqual({ what, code: 'PW_RELAY_CERT_MISMATCH', reason: true });
        else expect({ what, code: event.code }).toEqual({ what, code: knownCode });
        expect(agent.events('agent.control.online')).toEqual([]);
        await agent.stop();
      }
    }
    // The relay's own certificate again: the 1970 agent comes back.
    await restartRelay();
    const agent = await startAgent('1970');
    await agent.waitForLine(isEvent('agent.control.online'), WAIT_MS, 'agent.control.online');
  }, 90_000);
});
