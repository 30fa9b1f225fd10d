/**
 * Users, sharing and API tokens end to end: real relay, agent and `portway` CLI processes, a second user
 * with their own config home. Sharing one service reaches exactly that service; unsharing cuts access;
 * read-only, revoked and expired tokens are refused with their exact codes, by the HTTP API and by the data
 * plane (through the certificate issued with the token). Then the relay on PostgreSQL (`--db`): a stream
 * crosses, the relay restarts and nothing is lost.
 */
import path from 'node:path';
import type { CliResult, PortwayCluster } from '../../devtools/portway-cluster';
import { SqliteStore } from '../../relay/src/store';
import { Disposer, makeTempDir, startCluster, startEchoServer, waitFor } from '../helpers';
import { createTestDatabase } from '../helpers/pg';

const CLI_TIMEOUT_MS = 30_000;
const EXIT_FAILURE = 1;
const PAYLOAD = 'hello through the relay\n';

/** Run the CLI as another user (their own XDG_CONFIG_HOME), with optional stdin. */
async function runAs(cluster: PortwayCluster, home: string | undefined, args: readonly string[], input?: string): Promise<CliResult> {
  const proc = cluster.spawnCli(args, home === undefined ? {} : { XDG_CONFIG_HOME: home });
  proc.child.stdin?.end(input);
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), CLI_TIMEOUT_MS);
  try {
    const code = await proc.exited;
    return { code, stdout: proc.lines.join('\n') + (proc.lines.length ? '\n' : ''), stderr: proc.stderr };
  } finally {
    clearTimeout(timer);
  }
}

async function mustRunAs(cluster: PortwayCluster, home: string | undefined, args: readonly string[], input?: string): Promise<string> {
  const result = await runAs(cluster, home, args, input);
  if (result.code !== 0) throw new Error(`portway ${args.join(' ')} failed (${String(result.code)}): ${result.stderr}`);
  return result.stdout;
}

/** A new config home logged in with `token`. */
async function loginAs(cluster: PortwayCluster, disposer: Disposer, token: string): Promise<string> {
  const home = await makeTempDir(disposer, 'portway-home-');
  await mustRunAs(cluster, home, ['login', '--relay', cluster.relayAddress, '--token', '-', '--fingerprint', cluster.caFingerprint], token);
  return home;
}

/** `portway pipe` echoes the payload back (the echo service), exit 0. */
async function expectEcho(cluster: PortwayCluster, home: string | undefined, service: string): Promise<void> {
  const result = await runAs(cluster, home, ['pipe', cluster.deviceName, service], PAYLOAD);
  expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 0, stdout: PAYLOAD, stderr: '' });
}

/** `pipe` and `connect` both fail with exactly `line` on stderr and status 1. */
async function expectRefused(cluster: PortwayCluster, home: string | undefined, service: string, line: string): Promise<void> {
  for (const command of ['pipe', 'connect']) {
    const result = await runAs(cluster, home, [command, cluster.deviceName, service]);
    expect({ command, code: result.code, stderr: result.stderr, stdout: result.stdout }).toEqual({ command, code: EXIT_FAILURE, stderr: `${line}\n`, stdout: '' });
  }
}

async function devicesOf(cluster: PortwayCluster, home: string | undefined): Promise<{ name: string; services: { name: string }[] }[]> {
  return JSON.parse(await mustRunAs(cluster, home, ['devices', '--json'])) as { name: string; services: { name: string }[] }[];
}

describe('sharing and tokens through the CLI', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  async function startEchoCluster(extra: { relayDb?: string } = {}): Promise<PortwayCluster> {
    const echo = await startEchoServer(disposer);
    const target = `127.0.0.1:${echo.port}`;
    return startCluster(disposer, { services: [{ name: 'echo1', type: 'tcp', target }, { name: 'echo2', type: 'tcp', target }], ...extra });
  }

  it('shares one service with a second user, who reaches only that one until unshared; every change is audited', async () => {
    const cluster = await startEchoCluster();
    const bobToken = (await mustRunAs(cluster, undefined, ['relay', 'user', 'add', 'bob', '--data', cluster.relayDir])).trim();
    const bob = await loginAs(cluster, disposer, bobToken);

    expect(await devicesOf(cluster, bob)).toEqual([]);
    await expectRefused(cluster, bob, 'echo1', 'portway: PW_UNKNOWN_DEVICE: no device named "pi1"');
    expect(await runAs(cluster, bob, ['share', 'pi1', 'alice'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_UNKNOWN_DEVICE: no device named "pi1"\n' });

    expect(await mustRunAs(cluster, undefined, ['share', 'pi1', 'bob', '--service', 'echo1'])).toBe('shared pi1 with bob: echo1\n');
    const seen = await devicesOf(cluster, bob);
    expect(seen.map((d) => ({ name: d.name, services: d.services.map((s) => s.name) }))).toEqual([{ name: 'pi1', services: ['echo1'] }]);
    expect((await devicesOf(cluster, undefined))[0]?.services.map((s) => s.name)).toEqual(['echo1', 'echo2']);
    await expectEcho(cluster, bob, 'echo1');
    await expectRefused(cluster, bob, 'echo2', 'portway: PW_NOT_AUTHORIZED: not authorized to reach service "echo2" on pi1');
    expect(await runAs(cluster, bob, ['share', 'pi1', 'alice'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_NOT_AUTHORIZED: only the owner of a device or an admin may change its shares\n' });
    const shares = JSON.parse(await mustRunAs(cluster, undefined, ['shares', 'pi1', '--json'])) as unknown[];
    expect(shares).toEqual([expect.objectContaining({ deviceName: 'pi1', userName: 'bob', services: ['echo1'] })]);
    expect(JSON.parse(await mustRunAs(cluster, bob, ['shares', '--json']))).toEqual(shares);

    expect(await mustRunAs(cluster, undefined, ['unshare', 'pi1', 'bob'])).toBe('pi1 is no longer shared with bob\n');
    await expectRefused(cluster, bob, 'echo1', 'portway: PW_UNKNOWN_DEVICE: no device named "pi1"');
    expect(await devicesOf(cluster, bob)).toEqual([]);
    expect(await runAs(cluster, undefined, ['unshare', 'pi1', 'bob'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_NOT_FOUND: pi1 is not shared with bob\n' });
    // Alice is no admin: the audit log is not hers to read. An admin reads it with `portway audit`.
    expect(await runAs(cluster, undefined, ['audit'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_NOT_AUTHORIZED: the audit log is for admins\n' });
    const rootToken = (await mustRunAs(cluster, undefined, ['relay', 'user', 'add', 'root', '--admin', '--data', cluster.relayDir])).trim();
    const root = await loginAs(cluster, disposer, rootToken);
    const audit = JSON.parse(await mustRunAs(cluster, root, ['audit', '--json', '--limit', '3'])) as { action: string; outcome: string }[];
    expect(audit.map((e) => [e.action, e.outcome])).toEqual([
      ['user.login', 'ok'],
      ['user.create', 'ok'],
      ['share.delete', 'PW_NOT_FOUND'],
    ]);
    expect(await mustRunAs(cluster, root, ['audit', '--limit', '1'])).toMatch(/^TIME +ACTOR +ACTION +TARGET +SOURCE +OUTCOME\n\S+ +usr_\w+ +user\.login +tok_\w+ +127\.0\.0\.1 +ok\n$/);

    const store = await SqliteStore.open({ path: path.join(cluster.relayDir, 'relay.db') });
    try {
      const entries = (await store.listAudit({ limit: 100 })).filter((e) => e.action.startsWith('share.')).reverse();
      expect(entries.map((e) => [e.action, e.outcome])).toEqual([
        ['share.create', 'PW_UNKNOWN_DEVICE'],
        ['share.create', 'ok'],
        ['share.create', 'PW_NOT_AUTHORIZED'],
        ['share.delete', 'ok'],
        ['share.delete', 'PW_NOT_FOUND'],
      ]);
      expect(entries[1]).toMatchObject({ target: 'pi1/bob', source: '127.0.0.1' });
      const all = await store.listAudit({ limit: 100 });
      expect(all.filter((e) => e.action === 'device.enroll')).toEqual([expect.objectContaining({ actor: expect.stringMatching(/^key_/), outcome: 'ok', source: '127.0.0.1' })]);
      expect(all.filter((e) => e.action === 'user.login').length).toBe(3);
    } finally {
      await store.close();
    }
  });

  it('refuses read-only, revoked and expired tokens with their codes in the API and the data plane', async () => {
    const cluster = await startEchoCluster();
    const readToken = (await mustRunAs(cluster, undefined, ['token', 'create', '--scope', 'read', '--expires', '1h'])).trim();
    const reader = await loginAs(cluster, disposer, readToken);
    expect((await devicesOf(cluster, reader)).map((d) => d.name)).toEqual(['pi1']);
    await expectRefused(cluster, reader, 'echo1', 'portway: PW_SCOPE_INSUFFICIENT: this certificate was issued with a read token; opening streams needs scope connect');
    expect(await runAs(cluster, reader, ['token', 'create'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_SCOPE_INSUFFICIENT: this needs a token with scope connect; this one is read\n' });
    expect(await runAs(cluster, reader, ['share', 'pi1', 'alice'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_SCOPE_INSUFFICIENT: this needs a token with scope connect; this one is read\n' });

    const connectToken = (await mustRunAs(cluster, undefined, ['token', 'create'])).trim();
    const connector = await loginAs(cluster, disposer, connectToken);
    await expectEcho(cluster, connector, 'echo1');
    const tokens = JSON.parse(await mustRunAs(cluster, connector, ['token', 'list', '--json'])) as { id: string; scope: string; current: boolean; expiresAt?: number }[];
    expect(tokens.map((t) => [t.scope, t.current, t.expiresAt !== undefined])).toEqual([
      ['connect', false, false],
      ['read', false, true],
      ['connect', true, false],
    ]);
    const connectId = tokens[2]?.id as string;
    expect(await mustRunAs(cluster, undefined, ['token', 'revoke', connectId])).toBe(`revoked ${connectId}\n`);
    await expectRefused(cluster, connector, 'echo1', 'portway: PW_TOKEN_REVOKED: the token this certificate was issued with was revoked; log in again');
    expect(await runAs(cluster, connector, ['devices'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_TOKEN_REVOKED: this API token was revoked\n' });
    expect(await runAs(cluster, reader, ['token', 'revoke', connectId])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_SCOPE_INSUFFICIENT: this needs a token with scope connect; this one is read\n' });
    expect(await runAs(cluster, undefined, ['token', 'revoke', 'tok_aaaaaaaaaaaaaaaa'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_NOT_FOUND: no such token\n' });
    expect(await runAs(cluster, undefined, ['token', 'create', '--scope', 'admin'])).toMatchObject({ code: EXIT_FAILURE, stderr: 'portway: PW_BAD_REQUEST: --scope must be read or connect, got "admin"\n' });

    const shortToken = (await mustRunAs(cluster, undefined, ['token', 'create', '--expires', '3s'])).trim();
    const shortLived = await loginAs(cluster, disposer, shortToken);
    await expectEcho(cluster, shortLived, 'echo1');
    // Waiting for the clock, not for an event: the token's lifetime has to pass.
    await waitFor(async () => (await runAs(cluster, shortLived, ['devices'])).stderr === 'portway: PW_TOKEN_EXPIRED: this API token has expired\n', {
      timeoutMs: 15_000,
      intervalMs: 500,
      description: 'the 3 s token to expire',
    });
    await expectRefused(cluster, shortLived, 'echo1', 'portway: PW_TOKEN_EXPIRED: the token this certificate was issued with has expired; log in again');
    // `relay user add` still prints a connect token: the cluster logged alice in with one, and she still connects.
    await expectEcho(cluster, undefined, 'echo2');
  });

  it('runs on PostgreSQL (--db): a stream crosses, and a relay restart loses nothing', async () => {
    const db = await createTestDatabase();
    disposer.add(() => db.drop(), 'drop test database');
    const cluster = await startEchoCluster({ relayDb: db.url });
    const started = cluster.relay?.events('relay.started')[0];
    expect(started?.db).toBe(`postgres://postgres@127.0.0.1:5432/${db.name}`);
    await expectEcho(cluster, undefined, 'echo1');
    const bobToken = (await mustRunAs(cluster, undefined, ['relay', 'user', 'add', 'bob', '--data', cluster.relayDir, ...cluster.dbArgs])).trim();
    const bob = await loginAs(cluster, disposer, bobToken);
    await mustRunAs(cluster, undefined, ['share', 'pi1', 'bob', '--service', 'echo2']);

    await cluster.relay?.stop();
    await cluster.startRelay();
    await waitFor(async () => (await devicesOf(cluster, bob))[0]?.services.length === 1, { timeoutMs: 20_000, intervalMs: 250, description: 'the agent back online' });
    await expectEcho(cluster, undefined, 'echo1');
    await expectEcho(cluster, bob, 'echo2');
    await expectRefused(cluster, bob, 'echo1', 'portway: PW_NOT_AUTHORIZED: not authorized to reach service "echo1" on pi1');
    const users = await db.query('SELECT name FROM users ORDER BY name');
    expect(users.rows).toEqual([{ name: 'alice' }, { name: 'bob' }]);
    expect((await db.query("SELECT COUNT(*)::int AS n FROM audit_log WHERE action = 'share.create' AND outcome = 'ok'")).rows).toEqual([{ n: 1 }]);
  });
});
