/**
 * Owner-signed grants on a claimed device, every part a real process (relay, agent, `portway` CLI for three users
 * and a second machine of the owner). The device admits its owner keys and the keys its owner granted, for the
 * services granted, whatever the relay says: a relay-side share alone (a relay skipping its ACL) is refused by the
 * device; unshare re-signs and the device refuses again; an older signed set replayed by the relay operator (written
 * back into the store) and a set signed by another key are refused with coded log lines and lose nothing; a key the
 * relay operator makes and certifies for a grantee is granted (and printed) when the owner trusts the relay's key
 * list, and refused by the device once the owner pins the grantee's key with --key-fingerprint; the grant set
 * survives relay and agent restarts; withdrawing a grant ends the grantee's live stream at the device. Run on SQLite and (smaller) on PostgreSQL.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { loadCa } from '../../relay/src/data-dir';
import { SqliteStore } from '../../relay/src/store';
import { spkiOfKeyPem } from '../../shared/claim-tag';
import { signGrantSet } from '../../shared/grant-signature';
import { certFingerprint, generateKeyPair, spkiFingerprint } from '../../shared/x509';
import { isEvent, type ManagedProcess, type PortwayCluster } from '../../devtools/portway-cluster';
import { collectBytes, connectTcp, Disposer, startCluster, startEchoServer } from '../helpers';
import { addUser, CLAIM_RELAY_CONFIG, relayApi, runAs, startClaimAgent } from '../helpers/claims';
import { createTestDatabase } from '../helpers/pg';

const PAYLOAD = 'hello through a grant\n';
const EXIT_FAILURE = 1;
const TEST_TIMEOUT_MS = 240_000;
const REFUSED_NOT_OWNER = 'portway: PW_E2E_OWNER_KEY_MISMATCH: this device accepts only its owner keys and keys its owner granted\n';

/** Resolves once `event` has been logged `count` times in all. */
function nthEvent(proc: ManagedProcess, event: string, count: number): Promise<string> {
  let seen = 0;
  return proc.waitForLine((line) => isEvent(event)(line) && ++seen >= count, 20_000, `${event} #${count}`);
}

async function keyOf(cluster: PortwayCluster, home: string | undefined): Promise<string> {
  const result = await runAs(cluster, home, ['key']);
  expect(result).toMatchObject({ code: 0, stderr: '' });
  return result.stdout.trim();
}

interface Claimed {
  readonly cluster: PortwayCluster;
  readonly agent: () => ManagedProcess;
  /** Stop the agent, run `between` (if any) while it is down, start it again and wait until it is online. */
  readonly restartAgent: (between?: () => Promise<void>) => Promise<void>;
  readonly restartRelay: () => Promise<void>;
  readonly stateDir: string;
}

async function claimedGarden(disposer: Disposer, relayDb?: string): Promise<Claimed> {
  const echo = await startEchoServer(disposer);
  const web = await startEchoServer(disposer);
  const services = [{ name: 'echo', type: 'tcp' as const, target: `127.0.0.1:${echo.port}` }, { name: 'web', type: 'tcp' as const, target: `127.0.0.1:${web.port}` }];
  const cluster = await startCluster(disposer, { services, relayConfig: CLAIM_RELAY_CONFIG, ...(relayDb ? { relayDb } : {}) });
  const code = (await runAs(cluster, undefined, ['claim-code', 'new'])).stdout.trim();
  const garden = await startClaimAgent(cluster, disposer, { name: 'garden', services, claimCode: code });
  expect(await runAs(cluster, undefined, ['claim', code, '--name', 'garden'])).toMatchObject({ code: 0 });
  await garden.proc.waitForLine(isEvent('agent.control.online'), 20_000, 'claimed agent online');
  let agent = garden.proc;
  return {
    cluster,
    agent: () => agent,
    stateDir: garden.stateDir,
    restartAgent: async (between) => {
      await agent.stop();
      await between?.();
      agent = cluster.spawnCli(['agent', '--config', path.join(path.dirname(garden.stateDir), 'agent.json')]);
      disposer.add(() => agent.stop('SIGTERM', 5_000));
      await agent.waitForLine(isEvent('agent.control.online'), 20_000, 'restarted agent online');
    },
    restartRelay: async () => {
      const online = agent.events('agent.control.online').length;
      await cluster.relay?.stop();
      await cluster.startRelay();
      await nthEvent(agent, 'agent.control.online', online + 1);
    },
  };
}

describe('owner grants on a claimed device', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('the device admits granted keys for granted services only, whatever the relay does; no replay, no foreign signer, no substituted key', async () => {
    const garden = await claimedGarden(disposer);
    const { cluster } = garden;
    const bob = await addUser(cluster, disposer, 'bob');
    const bobKey = await keyOf(cluster, bob.home);
    const alice = (args: string[], input?: string): ReturnType<typeof runAs> => runAs(cluster, undefined, args, input);
    const asBob = (args: string[]): ReturnType<typeof runAs> => runAs(cluster, bob.home, args, PAYLOAD);
    const relayShare = async (user: string): Promise<void> => {
      expect((await relayApi(cluster, { method: 'POST', path: '/v1/shares', token: cluster.token, body: { device: 'garden', user } })).status).toBe(200);
    };

    // A relay-side share alone (the relay letting bob through without the owner's grant): the device refuses.
    await relayShare('bob');
    expect(await asBob(['pipe', 'garden', 'echo'])).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });

    // The owner shares echo: relay share plus a signed grant for the key the relay names, printed with a note.
    const shared = await alice(['share', 'garden', 'bob', '--service', 'echo']);
    expect(shared.code).toBe(0);
    expect(shared.stdout).toBe(`shared garden with bob: echo\ngranted key ${bobKey} of bob on garden (grant set 1; delivered to the device)\n`);
    expect(shared.stderr).toBe('portway: note: bob\'s key was named by the relay; compare with "portway key" on bob\'s machine, or pin with --key-fingerprint\n');
    await nthEvent(garden.agent(), 'agent.grants.updated', 1);
    expect(await asBob(['pipe', 'garden', 'echo'])).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    // The relay refuses web; an operator who widens the relay's share gets the device's refusal instead.
    expect((await asBob(['pipe', 'garden', 'web'])).stderr).toMatch(/^portway: PW_NOT_AUTHORIZED: /);
    await relayShare('bob');
    expect(await asBob(['pipe', 'garden', 'web'])).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: 'portway: PW_E2E_NOT_GRANTED: the owner has not granted this key web, or the grant expired\n' });
    const db = (): Database.Database => new Database(path.join(cluster.relayDir, 'relay.db'));
    const read = db();
    const setOne = read.prepare<[], { grants: string }>('SELECT grants FROM device_grants').get()?.grants as string;
    read.close();

    // Unshare re-signs without bob; with the relay's share put back by the operator, the device still refuses.
    const unshared = await alice(['unshare', 'garden', 'bob']);
    expect(unshared).toEqual({ code: 0, stdout: `garden is no longer shared with bob\nrevoked key ${bobKey} of bob on garden (grant set 2; delivered to the device)\n`, stderr: '' });
    await nthEvent(garden.agent(), 'agent.grants.updated', 2);
    await relayShare('bob');
    expect(await asBob(['pipe', 'garden', 'echo'])).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });
    // The relay's API refuses the older set too (its store keeps set 2).
    const replayPut = await relayApi(cluster, { method: 'PUT', path: '/v1/devices/garden/grants', token: cluster.token, body: { grants: JSON.parse(setOne) as unknown } });
    expect([replayPut.status, replayPut.body.code]).toEqual([409, 'PW_GRANT_STALE']);

    // The operator replays set 1 (written back into its store) and restarts the relay, which delivers it: refused as stale.
    const write = db();
    write.prepare('UPDATE device_grants SET seq = 1, grants = ?').run(setOne);
    write.close();
    await garden.restartRelay();
    const stale = await nthEvent(garden.agent(), 'agent.grants.refused', 1);
    expect(JSON.parse(stale)).toMatchObject({ code: 'PW_GRANT_STALE', held: 2 });
    expect(await asBob(['pipe', 'garden', 'echo'])).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });

    // A set signed by bob's key (not the owner's), written into the store: refused, nothing lost.
    const { deviceId } = JSON.parse(Buffer.from((JSON.parse(setOne) as { document: string }).document, 'base64').toString('utf8')) as { deviceId: string };
    const bobKeyPem = await fs.readFile(path.join(bob.home, 'portway', 'user.key'), 'utf8');
    const forged = signGrantSet({ v: 1, deviceId, seq: 99, issuedAt: Date.now(), entries: [{ key: bobKey, user: 'bob' }] }, bobKeyPem);
    const forge = db();
    forge.prepare('UPDATE device_grants SET seq = 99, grants = ?').run(JSON.stringify(forged));
    forge.close();
    await garden.restartAgent();
    const foreign = await garden.agent().waitForLine(isEvent('agent.grants.refused'), 20_000, 'foreign set refused');
    expect(JSON.parse(foreign)).toMatchObject({ level: 40, code: 'PW_GRANT_INVALID', reason: 'grant set is not signed by an owner key pinned for this device', held: 2 });
    expect(await asBob(['pipe', 'garden', 'echo'])).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });
    expect(await alice(['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    const held = JSON.parse(await fs.readFile(path.join(garden.stateDir, 'grants.json'), 'utf8')) as { document: string };
    expect((JSON.parse(Buffer.from(held.document, 'base64').toString('utf8')) as { seq: number }).seq).toBe(2);
    // The relay's PUT checks the signer as well.
    const refusedPut = await relayApi(cluster, { method: 'PUT', path: `/v1/devices/${deviceId}/grants`, token: cluster.token, body: { grants: forged } });
    expect([refusedPut.status, refusedPut.body.code]).toEqual([400, 'PW_GRANT_INVALID']);

    // Put the store back to the truth (set 2) so the owner can go on. The operator then makes a key of its own,
    // issues itself a certificate for bob with it from the relay CA, and records it: the relay now names two keys for bob.
    const restore = db();
    restore.prepare('DELETE FROM device_grants').run();
    const bobId = restore.prepare<[], { id: string }>("SELECT id FROM users WHERE name = 'bob'").get()?.id as string;
    restore.close();
    const impostorKeyPem = generateKeyPair().privateKeyPem;
    const impostorCert = (await loadCa(cluster.relayDir)).issueUserCert({ userId: bobId, name: 'bob', publicKeySpkiDer: spkiOfKeyPem(impostorKeyPem), validityMs: 3_600_000 });
    const impostorKey = spkiFingerprint(spkiOfKeyPem(impostorKeyPem));
    const records = await SqliteStore.open({ path: path.join(cluster.relayDir, 'relay.db') });
    await records.recordUserCert(bobId, certFingerprint(impostorCert), impostorKey);
    await records.close();
    const impostor = path.join(path.dirname(cluster.configHome), 'impostor');
    await fs.cp(bob.home, impostor, { recursive: true });
    await fs.writeFile(path.join(impostor, 'portway', 'user.key'), impostorKeyPem, { mode: 0o600 });
    await fs.writeFile(path.join(impostor, 'portway', 'user.crt'), impostorCert, { mode: 0o600 });
    // Without --key-fingerprint the owner trusts the relay for bob's keys: both are granted, and printed.
    const substituted = await alice(['share', 'garden', 'bob']);
    expect(substituted.code).toBe(0);
    expect(substituted.stdout).toContain(`granted key ${impostorKey} of bob on garden (grant set 3;`);
    expect(substituted.stdout).toContain(`granted key ${bobKey} of bob on garden (grant set 3;`);
    expect(substituted.stderr).toContain("bob's keys were named by the relay");
    await nthEvent(garden.agent(), 'agent.grants.updated', 1);
    expect(await runAs(cluster, impostor, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    // With the key bob read out (portway key), only his is granted: the operator's certificate is refused by the device.
    expect((await alice(['unshare', 'garden', 'bob'])).stdout).toContain('(grant set 4; delivered to the device)');
    const pinned = await alice(['share', 'garden', 'bob', '--key-fingerprint', bobKey]);
    expect(pinned).toEqual({ code: 0, stdout: `shared garden with bob: all services\ngranted key ${bobKey} of bob on garden (grant set 5; delivered to the device)\n`, stderr: '' });
    const listed = await alice(['shares', 'garden']);
    expect(listed.stdout).toContain('signed device grants (set 5, signed by this machine):');
    expect(listed.stdout).toContain(`${bobKey}  bob   all`);
    expect(listed.stdout).not.toContain(impostorKey);
    await nthEvent(garden.agent(), 'agent.grants.updated', 3);
    expect(await runAs(cluster, impostor, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });
    expect(await asBob(['pipe', 'garden', 'web'])).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });

    // The owner's second machine: another key, refused until granted with `share garden alice --key-fingerprint`.
    const laptop = path.join(path.dirname(cluster.configHome), 'alice-laptop');
    expect((await runAs(cluster, laptop, ['login', '--relay', cluster.relayAddress, '--token', '-', '--fingerprint', cluster.caFingerprint], cluster.token)).code).toBe(0);
    const laptopKey = await keyOf(cluster, laptop);
    expect(await runAs(cluster, laptop, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });
    // The laptop cannot sign (it is not the claiming machine's key): told so, the device unchanged.
    const fromLaptop = await runAs(cluster, laptop, ['share', 'garden', 'bob']);
    expect(fromLaptop.stderr).toMatch(/^portway: note: garden was claimed with another key \([0-9a-f]{64}\); this machine cannot sign its grants/);
    const self = await alice(['share', 'garden', 'alice', '--key-fingerprint', laptopKey]);
    expect(self).toEqual({ code: 0, stdout: `granted key ${laptopKey} of alice on garden (grant set 6; delivered to the device)\n`, stderr: '' });
    await nthEvent(garden.agent(), 'agent.grants.updated', 4);
    expect(await runAs(cluster, laptop, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    expect((await runAs(cluster, laptop, ['shares', 'garden'])).stdout).toContain(`signed device grants (set 6, signed by owner key ${await keyOf(cluster, undefined)} (as the relay names it)):`);

    // An admin: the relay lets them in, the device does not, until the owner grants them.
    const carolAdded = await runAs(cluster, undefined, ['relay', 'user', 'add', 'carol', '--admin', '--data', cluster.relayDir]);
    const carolHome = path.join(path.dirname(cluster.configHome), 'carol');
    expect((await runAs(cluster, carolHome, ['login', '--relay', cluster.relayAddress, '--token', '-', '--fingerprint', cluster.caFingerprint], carolAdded.stdout.trim())).code).toBe(0);
    expect(await runAs(cluster, carolHome, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });
    expect((await alice(['share', 'garden', 'carol', '--service', 'echo'])).code).toBe(0);
    await nthEvent(garden.agent(), 'agent.grants.updated', 5);
    expect(await runAs(cluster, carolHome, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });

    // Relay and agent restarts lose nothing: the store keeps set 7, the device its grants.json.
    await garden.restartRelay();
    await garden.restartAgent();
    expect(garden.agent().events('agent.grants.loaded')[0]).toMatchObject({ seq: 7 });
    expect(await asBob(['pipe', 'garden', 'web'])).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    expect(await runAs(cluster, laptop, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    expect((await alice(['shares', 'garden'])).stdout).toContain('signed device grants (set 7, signed by this machine):');

    // A live stream of bob's ends when the owner withdraws his key's grant, by the device alone (the relay's share stays).
    const connect = cluster.spawnCli(['connect', 'garden', 'echo'], { XDG_CONFIG_HOME: bob.home });
    disposer.add(() => connect.stop(), 'stop portway connect');
    const port = Number(/:(\d+) ->/.exec(await connect.waitForLine((l) => l.startsWith('listening on '), 30_000, 'connect to listen'))?.[1]);
    const app = await connectTcp(disposer, { host: '127.0.0.1', port }, { allowHalfOpen: false });
    const bytes = collectBytes(app);
    app.write(PAYLOAD);
    expect((await bytes.waitForLength(PAYLOAD.length, 10_000)).toString()).toBe(PAYLOAD);
    expect((await alice(['unshare', 'garden', 'bob', '--key-fingerprint', bobKey])).stdout).toBe(`revoked key ${bobKey} of bob on garden (grant set 8; delivered to the device)\n`);
    await bytes.waitForEnd(10_000);
    expect(JSON.parse(await nthEvent(garden.agent(), 'agent.grants.updated', 1))).toMatchObject({ seq: 8, streamsEnded: 1 });
    expect(await asBob(['pipe', 'garden', 'echo'])).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });
    // The same `portway connect` resumes its inner session with the ticket of the stream above: no certificate is
    // sent, yet the device checks the key the ticket carries and refuses it all the same.
    const refusedFrom = garden.agent().events('agent.stream.refused').length;
    const again = await connectTcp(disposer, { host: '127.0.0.1', port }, { allowHalfOpen: false });
    const againBytes = collectBytes(again);
    again.write(PAYLOAD);
    await againBytes.waitForEnd(10_000).catch(() => undefined);
    expect(againBytes.length).toBe(0);
    await nthEvent(garden.agent(), 'agent.stream.refused', refusedFrom + 1);
    expect(garden.agent().events('agent.stream.refused').at(-1)).toMatchObject({ code: 'PW_E2E_OWNER_KEY_MISMATCH', resumed: true });
  }, TEST_TIMEOUT_MS);

  it('on PostgreSQL: share, unshare while the device is offline (delivered when it is back), a relay restart', async () => {
    const pg = await createTestDatabase();
    disposer.add(() => pg.drop(), 'drop test database');
    const garden = await claimedGarden(disposer, pg.url);
    const { cluster } = garden;
    const bob = await addUser(cluster, disposer, 'bob');
    const bobKey = await keyOf(cluster, bob.home);
    expect((await runAs(cluster, undefined, ['share', 'garden', 'bob', '--key-fingerprint', bobKey])).stdout).toContain(`granted key ${bobKey} of bob on garden (grant set 1; delivered to the device)\n`);
    await nthEvent(garden.agent(), 'agent.grants.updated', 1);
    expect(await runAs(cluster, bob.home, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
    await garden.restartRelay();
    expect((await pg.query('SELECT seq::int AS seq FROM device_grants')).rows).toEqual([{ seq: 1 }]);
    // The device is offline when bob is unshared: the relay keeps the set and delivers it when the device is back.
    await garden.restartAgent(async () => {
      expect((await runAs(cluster, undefined, ['unshare', 'garden', 'bob'])).stdout).toBe(
        `garden is no longer shared with bob\nrevoked key ${bobKey} of bob on garden (grant set 2; the relay delivers it when the device comes online)\n`,
      );
    });
    expect(JSON.parse(await nthEvent(garden.agent(), 'agent.grants.updated', 1))).toMatchObject({ seq: 2 });
    expect((await relayApi(cluster, { method: 'POST', path: '/v1/shares', token: cluster.token, body: { device: 'garden', user: 'bob' } })).status).toBe(200);
    expect(await runAs(cluster, bob.home, ['pipe', 'garden', 'echo'], PAYLOAD)).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: REFUSED_NOT_OWNER });
  }, TEST_TIMEOUT_MS);
});
