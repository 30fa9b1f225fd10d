/**
 * Claim codes under attack and bad input, against a real relay and agents: a device that makes its own code
 * shows it in its log, on its console and in the boot-partition file; malformed codes are refused locally
 * and by the API with PW_CLAIM_CODE_INVALID; 10,000 guesses from one address all fail and the address is
 * throttled (PW_RATE_LIMITED) while the real owner, from another address, still claims; the per-user limit
 * follows a guesser to a new address; every failure and lockout is audited (a flood is not copied into it).
 */
import { promises as fs } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { parseClaimCode } from '../../protocol';
import { SqliteStore } from '../../relay/src/store';
import { claimTag, isClaimTagValid, newClaimCode, spkiOfKeyPem } from '../../shared/claim-tag';
import { isEvent } from '../../devtools/portway-cluster';
import { Disposer, makeTempDir, startCluster, startEchoServer } from '../helpers';
import { addUser, CLAIM_RELAY_CONFIG, relayApi, runAs, startClaimAgent } from '../helpers/claims';

const GUESSES = 10_000;
const WORKERS = 16;
const GUESS_BUDGET_MS = 60_000;
const PAYLOAD = 'hello\n';

/** Real processes on a loaded 2-core CI machine: a cluster alone can take 10 s to start. */
const TEST_TIMEOUT_MS = 120_000;

describe('claim codes: bad input and guessing', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('10,000 guesses from one address fail and are throttled; the owner from another address still claims the code the device made itself', async () => {
    const echo = await startEchoServer(disposer);
    const services = [{ name: 'echo', type: 'tcp' as const, target: `127.0.0.1:${echo.port}` }];
    const cluster = await startCluster(disposer, { services, relayConfig: CLAIM_RELAY_CONFIG });
    const mallory = await addUser(cluster, disposer, 'mallory');
    const field = await startClaimAgent(cluster, disposer, { name: 'field', services });

    // The device's own code: on its console and in the boot-partition file, the same; the log names only its
    // lookup part and where it was shown (the whole code is logged only when neither could be written).
    const shown = /^Portway: claim this device with: portway claim ([0-9A-Z-]+)\n$/.exec(await fs.readFile(field.codeFile, 'utf8'))?.[1] as string;
    const code = parseClaimCode(shown);
    const line = `Portway: claim this device with: portway claim ${code.text}\n`;
    expect(await fs.readFile(field.consoleFile, 'utf8')).toBe(line);
    expect(field.proc.events('agent.claim.code')).toEqual([expect.objectContaining({ claimId: code.claimId, shownIn: [field.codeFile, field.consoleFile] })]);
    expect(field.proc.lines.some((l) => l.includes(code.secret))).toBe(false);

    // Malformed codes: refused before anything is sent (no settings needed), and by the API.
    const nobody = await makeTempDir(disposer, 'portway-nobody-');
    expect(await runAs(cluster, nobody, ['claim', 'NOT-A-CODE'])).toMatchObject({ code: 1, stderr: 'portway: PW_CLAIM_CODE_INVALID: not a claim code: it has 8 characters, a code has 24 (without the dashes)\n' });
    const typo = code.text.slice(0, 10) + (code.text[10] === 'A' ? 'B' : 'A') + code.text.slice(11);
    expect(await runAs(cluster, nobody, ['claim', typo])).toMatchObject({ code: 1, stderr: 'portway: PW_CLAIM_CODE_INVALID: not a claim code: the check character does not match (a typo?)\n' });
    const odd = { localAddress: '127.0.0.5', token: cluster.token };
    expect(await relayApi(cluster, { ...odd, method: 'GET', path: '/v1/claims/ILOU%00' })).toMatchObject({ status: 400, body: { code: 'PW_CLAIM_CODE_INVALID' } });
    expect(await relayApi(cluster, { ...odd, method: 'POST', path: `/v1/claims/${code.claimId}`, body: { ownerKey: '!!', ownerTag: 'x' } })).toMatchObject({ status: 400, body: { code: 'PW_BAD_REQUEST' } });
    for (const body of [{}, { claimId: code.claimId }, { claimId: 'x'.repeat(5000), name: 'a', csr: 'b', pollToken: 'c' }, [1, 2], null]) {
      expect(await relayApi(cluster, { method: 'POST', path: '/v1/claims/device/register', body })).toMatchObject({ status: 400, body: { code: 'PW_BAD_REQUEST' } });
    }
    expect(await relayApi(cluster, { method: 'POST', path: '/v1/claims/device/register', body: { claimId: 'ABCDEFG', name: 'x', csr: 'not a csr', pollToken: 'a'.repeat(43) } })).toMatchObject({ status: 400, body: { code: 'PW_BAD_CSR' } });

    // 10,000 guesses from 127.0.0.1 as mallory: wrong MACs for the real ID, and made-up IDs.
    const ownerKey = spkiOfKeyPem(await fs.readFile(path.join(mallory.home, 'portway', 'user.key'), 'utf8')).toString('base64');
    const agent = new https.Agent({ keepAlive: true, maxSockets: WORKERS });
    disposer.add(() => agent.destroy());
    const outcomes = new Map<string, number>();
    let sent = 0;
    const deadline = Date.now() + GUESS_BUDGET_MS;
    const worker = async (): Promise<void> => {
      while (sent < GUESSES && Date.now() < deadline) {
        const n = sent++;
        const guess = newClaimCode();
        const reply = n % 2 === 0
          ? await relayApi(cluster, { agent, token: mallory.token, method: 'POST', path: `/v1/claims/${code.claimId}`, body: { ownerKey, ownerTag: claimTag(guess.secret, 'owner', code.claimId, Buffer.alloc(1), Buffer.alloc(1)).toString('base64') } })
          : await relayApi(cluster, { agent, token: mallory.token, method: 'GET', path: `/v1/claims/${guess.claimId}` });
        const key = reply.status === 200 ? 'SUCCESS' : String(reply.body.code);
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    expect(sent).toBe(GUESSES);
    expect(outcomes.get('SUCCESS')).toBeUndefined();
    const limited = outcomes.get('PW_RATE_LIMITED') ?? 0;
    expect(limited).toBeGreaterThan(GUESSES - 100);
    expect([...outcomes.keys()].sort()).toEqual(expect.arrayContaining(['PW_RATE_LIMITED']));
    for (const k of outcomes.keys()) expect(['PW_RATE_LIMITED', 'PW_CLAIM_BINDING_FAILED', 'PW_CLAIM_NOT_FOUND', 'PW_CLAIM_IN_PROGRESS']).toContain(k);
    expect(field.proc.events('agent.claim.binding_failed').length).toBeLessThanOrEqual(WORKERS + 10);

    // The per-user limit follows mallory to new addresses (a new one for every guess).
    for (let i = 0; i < 40; i++) {
      const reply = await relayApi(cluster, { localAddress: `127.0.1.${i + 1}`, token: mallory.token, method: 'GET', path: `/v1/claims/${newClaimCode().claimId}` });
      if (reply.body.code === 'PW_RATE_LIMITED') {
        expect(String(reply.body.message)).toMatch(/from this user/);
        break;
      }
      expect([i, reply.body.code]).toEqual([i, 'PW_CLAIM_NOT_FOUND']);
      expect(i).toBeLessThan(30);
    }

    // The owner, from 127.0.0.2, claims with the real code; the device answers and goes online.
    const alice = { localAddress: '127.0.0.2', token: cluster.token };
    const info = await relayApi(cluster, { ...alice, method: 'GET', path: `/v1/claims/${code.claimId}` });
    expect(info.status).toBe(200);
    const deviceKey = Buffer.from(String(info.body.deviceKey), 'base64');
    const aliceKey = spkiOfKeyPem(await fs.readFile(path.join(cluster.configHome, 'portway', 'user.key'), 'utf8'));
    const ownerTag = claimTag(code.secret, 'owner', code.claimId, deviceKey, aliceKey).toString('base64');
    const result = await relayApi(cluster, { ...alice, method: 'POST', path: `/v1/claims/${code.claimId}`, body: { ownerKey: aliceKey.toString('base64'), ownerTag } });
    expect(result).toMatchObject({ status: 200, body: { name: 'field', deviceKey: info.body.deviceKey } });
    expect(isClaimTagValid(String(result.body.deviceTag), code.secret, 'device', code.claimId, deviceKey, aliceKey)).toBe(true);
    await field.proc.waitForLine(isEvent('agent.control.online'), 20_000, 'claimed agent online');
    expect(await runAs(cluster, undefined, ['pipe', 'field', 'echo'], PAYLOAD)).toMatchObject({ code: 0, stdout: PAYLOAD });
    await expect(fs.access(field.codeFile)).rejects.toMatchObject({ code: 'ENOENT' });

    // The audit log has the claim, the counted failures and both lockouts, not the 10,000 throttled requests.
    const store = await SqliteStore.open({ path: path.join(cluster.relayDir, 'relay.db') });
    const entries = await store.listAudit({ limit: 1000 });
    await store.close();
    expect(entries.filter((e) => e.action === 'device.claim' && e.outcome === 'ok')).toHaveLength(1);
    const lockouts = entries.filter((e) => e.action === 'claim.lockout').map((e) => e.target);
    expect(lockouts).toHaveLength(2);
    expect(lockouts).toContain('source:127.0.0.1');
    expect(lockouts.some((t) => t?.startsWith('usr_'))).toBe(true);
    const failures = entries.filter((e) => e.action === 'device.claim' && e.outcome !== 'ok');
    expect(failures.length).toBeGreaterThanOrEqual(10);
    expect(failures.length).toBeLessThan(200);
  }, TEST_TIMEOUT_MS);
});
