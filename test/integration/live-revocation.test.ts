/**
 * Revoking credentials ends live streams, not only new ones (real relay, agent and `portway connect`):
 * `portway token revoke` ends the streams opened with certificates issued under that token, a token revoked in the
 * store (as through another relay) ends them within the revocation poll, and `portway unshare` ends the unshared
 * user's streams to that device; other users' streams carry on.
 */
import type { Socket } from 'node:net';
import path from 'node:path';
import { SqliteStore } from '../../relay/src/store';
import type { ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { collectBytes, connectTcp, Disposer, makeTempDir, startCluster, startEchoServer, type ByteCollector } from '../helpers';
import { addUser, runAs } from '../helpers/claims';

const WAIT_MS = 5_000;
const TEST_TIMEOUT_MS = 120_000;

interface LiveStream {
  readonly bytes: ByteCollector;
  roundTrip(text: string): Promise<void>;
}

/** `portway connect` as the user of `home`, one TCP client through it, checked with one round trip. */
async function openStream(disposer: Disposer, cluster: PortwayCluster, home: string | undefined): Promise<LiveStream> {
  const proc: ManagedProcess = cluster.spawnCli(['connect', cluster.deviceName, 'echo'], home === undefined ? {} : { XDG_CONFIG_HOME: home });
  disposer.add(() => proc.stop(), 'stop portway connect');
  const line = await proc.waitForLine((l) => l.startsWith('listening on '), 30_000, 'connect to listen');
  const app: Socket = await connectTcp(disposer, { host: '127.0.0.1', port: Number(/:(\d+) ->/.exec(line)?.[1]) }, { allowHalfOpen: false });
  const bytes = collectBytes(app);
  let sent = '';
  const roundTrip = async (text: string): Promise<void> => {
    sent += text;
    app.write(text);
    expect((await bytes.waitForLength(sent.length, WAIT_MS)).toString()).toBe(sent);
  };
  await roundTrip('hello\n');
  return { bytes, roundTrip };
}

describe('revocation ends live streams', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('token revoke ends the streams of its certificates; unshare ends the user\'s streams to the device; others carry on', async () => {
    const echo = await startEchoServer(disposer);
    const cluster = await startCluster(disposer, { services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` }] });
    const bob = await addUser(cluster, disposer, 'bob');
    expect((await runAs(cluster, undefined, ['share', cluster.deviceName, 'bob'])).code).toBe(0);

    // A second login of alice's with its own token: its stream ends when that token is revoked, alice's main one stays.
    const created = await runAs(cluster, undefined, ['token', 'create']);
    const tokenId = /^token (tok_[a-z2-7]{16}),/.exec(created.stderr)?.[1] as string;
    const laptop = await loginHome(cluster, disposer, created.stdout.trim());
    const main = await openStream(disposer, cluster, undefined);
    const onLaptop = await openStream(disposer, cluster, laptop);
    const ofBob = await openStream(disposer, cluster, bob.home);
    expect(await runAs(cluster, undefined, ['token', 'revoke', tokenId])).toMatchObject({ code: 0, stdout: `revoked ${tokenId}\n` });
    await onLaptop.bytes.waitForEnd(WAIT_MS);
    await main.roundTrip('still here\n');
    await ofBob.roundTrip('bob too\n');

    // A token revoked elsewhere (another relay on the same database; here written into the store): the running
    // relay's revocation poll ends the stream within about a second.
    const other = await runAs(cluster, undefined, ['token', 'create']);
    const otherId = /^token (tok_[a-z2-7]{16}),/.exec(other.stderr)?.[1] as string;
    const desktop = await loginHome(cluster, disposer, other.stdout.trim());
    const onDesktop = await openStream(disposer, cluster, desktop);
    const store = await SqliteStore.open({ path: path.join(cluster.relayDir, 'relay.db') });
    expect(await store.revokeToken(otherId)).toBe(true);
    await store.close();
    await onDesktop.bytes.waitForEnd(WAIT_MS);
    expect(JSON.parse(await (cluster.relay as ManagedProcess).waitForLine((l) => l.includes('"msg":"relay.user_certs.revoked"'), WAIT_MS, 'relay.user_certs.revoked'))).toMatchObject({ streams: 1 });
    await main.roundTrip('still here too\n');

    // Unsharing ends bob's stream at once; alice's carries on.
    expect((await runAs(cluster, undefined, ['unshare', cluster.deviceName, 'bob'])).code).toBe(0);
    await ofBob.bytes.waitForEnd(WAIT_MS);
    await main.roundTrip('and still\n');
  }, TEST_TIMEOUT_MS);
});

async function loginHome(cluster: PortwayCluster, disposer: Disposer, token: string): Promise<string> {
  const home = await makeTempDir(disposer, 'portway-home-laptop-');
  const login = await runAs(cluster, home, ['login', '--relay', cluster.relayAddress, '--token', '-', '--fingerprint', cluster.caFingerprint], token);
  if (login.code !== 0) throw new Error(`login failed: ${login.stderr}`);
  return home;
}
