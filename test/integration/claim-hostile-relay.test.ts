/**
 * A relay that lies during claims (PORTWAY_TEST_MISBEHAVE=swap-claim-keys, honoured only with PORTWAY_TEST=1):
 * it hands the claimer its own key instead of the device's, the device its own key instead of the owner's, and
 * forges a "claimed" answer. The device refuses the owner MAC, the claimer refuses the device MAC, both with
 * PW_CLAIM_BINDING_FAILED, and nothing is pinned. On the same relay, codes expire (PW_CLAIM_EXPIRED) and an
 * agent whose configured code expired stops with that code.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PortwayError } from '../../protocol';
import { newClaimCode, newPollToken } from '../../shared/claim-tag';
import { createCsr, generateKeyPair } from '../../shared/x509';
import { isEvent } from '../../devtools/portway-cluster';
import { Disposer, findFreePort, startCluster, startEchoServer, waitFor } from '../helpers';
import { CLAIM_RELAY_CONFIG, relayApi, runAs, startClaimAgent } from '../helpers/claims';

const TTL_MS = 8_000;

/** Real processes on a loaded 2-core CI machine: a cluster alone can take 10 s to start. */
const TEST_TIMEOUT_MS = 120_000;

describe('claim codes: a hostile relay, expiry', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('a relay that swaps the keys fails the claim on both sides; codes expire', async () => {
    const echo = await startEchoServer(disposer);
    const services = [{ name: 'echo', type: 'tcp' as const, target: `127.0.0.1:${echo.port}` }];
    process.env.PORTWAY_TEST = '1';
    process.env.PORTWAY_TEST_MISBEHAVE = 'swap-claim-keys';
    let cluster;
    try {
      cluster = await startCluster(disposer, { services, relayConfig: { claims: { ...CLAIM_RELAY_CONFIG.claims, ttlMs: TTL_MS } } });
    } finally {
      delete process.env.PORTWAY_TEST;
      delete process.env.PORTWAY_TEST_MISBEHAVE;
    }
    expect(cluster.relay?.events('relay.test_misbehaviour.enabled')).toHaveLength(1);

    // Without PORTWAY_TEST=1 the switch stops the relay from starting at all.
    const guarded = cluster.spawnCli(['relay', '--data', cluster.relayDir, '--listen', `127.0.0.1:${await findFreePort()}`], { PORTWAY_TEST_MISBEHAVE: 'swap-claim-keys', PORTWAY_TEST: '' });
    expect(await guarded.exited).toBe(78);
    expect(guarded.stderr).toBe('portway: PW_CONFIG_INVALID: PORTWAY_TEST_MISBEHAVE is for tests only (it needs PORTWAY_TEST=1 and a known name)\n');

    // A pending claim registered now, to expire later (a device speaking the API directly).
    const old = newClaimCode();
    const key = generateKeyPair().privateKeyPem;
    const registered = await relayApi(cluster, { method: 'POST', path: '/v1/claims/device/register', body: { claimId: old.claimId, name: 'old', csr: createCsr({ privateKeyPem: key, commonName: 'old' }), pollToken: newPollToken() } });
    expect(registered).toMatchObject({ status: 200, body: { state: 'pending' } });

    const code = newClaimCode().text;
    const lab = await startClaimAgent(cluster, disposer, { name: 'lab', services, claimCode: code });
    const result = await runAs(cluster, undefined, ['claim', code]);
    expect(result).toMatchObject({ code: 1, stdout: '', stderr: "portway: PW_CLAIM_BINDING_FAILED: the device's claim MAC does not verify: the relay changed a key on the way; nothing was pinned\n" });
    const refusal = await lab.proc.waitForLine(isEvent('agent.claim.binding_failed'), 10_000, 'the device refusing the owner MAC');
    expect(JSON.parse(refusal)).toMatchObject({ code: 'PW_CLAIM_BINDING_FAILED' });
    expect(lab.proc.events('agent.claim.owner_pinned')).toHaveLength(0);
    await expect(fs.access(path.join(lab.stateDir, 'owners.json'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fs.access(path.join(lab.stateDir, 'device.crt'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fs.access(path.join(cluster.configHome, 'portway', 'known_devices.json'))).rejects.toMatchObject({ code: 'ENOENT' });

    // Expiry: the old code is refused once its time is up; the agent with an expired configured code stops.
    const bob = { token: cluster.token, localAddress: '127.0.0.4' };
    const expired = await waitFor(async () => {
      const reply = await relayApi(cluster, { ...bob, method: 'GET', path: `/v1/claims/${old.claimId}` });
      return reply.status === 200 ? undefined : reply;
    }, { timeoutMs: TTL_MS + 10_000, intervalMs: 500, description: 'the code to expire' });
    expect(expired).toMatchObject({ status: 410, body: { code: 'PW_CLAIM_EXPIRED', message: 'this claim code has expired' } });
    const stopped = await lab.proc.waitForLine(isEvent('agent.start_failed'), TTL_MS + 10_000, 'the agent with an expired code to stop');
    expect(JSON.parse(stopped)).toMatchObject({ code: 'PW_CLAIM_EXPIRED' });
    expect(await lab.proc.exited).not.toBe(0);
    expect(new PortwayError('PW_CLAIM_EXPIRED').retryable).toBe(false);
  }, TEST_TIMEOUT_MS);
});
