/**
 * The token and share route modules over a real (in-memory SQLite) store: scope and expiry never grow,
 * foreign tokens look missing, admins revoke any token, share changes are owner-only, every change and
 * refusal is audited. The same routes through real processes: test/integration/sharing-tokens.test.ts.
 */
import type { ApiReply, ApiRequest } from '../../relay/src/api/api-route';
import { auditRoutes } from '../../relay/src/api/audit-routes';
import { shareRoutes } from '../../relay/src/api/share-routes';
import { tokenRoutes } from '../../relay/src/api/token-routes';
import { SqliteStore, type Store, type TokenAuth, type TokenScope } from '../../relay/src/store';

const HOUR_MS = 3_600_000;
const NOW = Date.UTC(2030, 0, 1);

let store: Store;
beforeEach(async () => {
  store = await SqliteStore.open({ path: ':memory:' }, { now: () => NOW });
});
afterEach(() => store.close());

async function authAs(name: string, options: { scope?: TokenScope; expiresAt?: number; isAdmin?: boolean } = {}): Promise<TokenAuth> {
  const user = (await store.getUserByName(name)) ?? (await store.createUser(name, { isAdmin: options.isAdmin ?? false }));
  const { token } = await store.createToken(user.id, { scope: options.scope ?? 'connect', ...(options.expiresAt === undefined ? {} : { expiresAt: options.expiresAt }) });
  return store.authenticateToken(token);
}

function request(auth: TokenAuth, method: string, url: string, body?: unknown): ApiRequest {
  const parsed = new URL(url, 'https://relay');
  return { method, path: parsed.pathname, query: parsed.searchParams, auth, source: '127.0.0.1', body: () => Promise.resolve(body) };
}

const call = (routes: (req: ApiRequest) => Promise<ApiReply | undefined>, req: ApiRequest): Promise<ApiReply | undefined> => routes(req);

describe('token routes', () => {
  const routes = (): ((req: ApiRequest) => Promise<ApiReply | undefined>) => tokenRoutes({ store, now: () => NOW });

  it('creates tokens no wider and no longer-lived than the caller, lists them, marks the current one', async () => {
    const caller = await authAs('alice', { expiresAt: NOW + HOUR_MS });
    const open = await call(routes(), request(caller, 'POST', '/v1/tokens', {}));
    expect(open).toMatchObject({ status: 201, body: { scope: 'connect', expiresAt: NOW + HOUR_MS } });
    const longer = await call(routes(), request(caller, 'POST', '/v1/tokens', { scope: 'read', expiresInMs: 2 * HOUR_MS }));
    expect(longer).toMatchObject({ status: 201, body: { scope: 'read', expiresAt: NOW + HOUR_MS } });
    const shorter = await call(routes(), request(caller, 'POST', '/v1/tokens', { expiresInMs: 60_000 }));
    expect(shorter).toMatchObject({ body: { expiresAt: NOW + 60_000 } });
    const listed = (await call(routes(), request(caller, 'GET', '/v1/tokens')))?.body as { tokens: { id: string; current: boolean }[] };
    expect(listed.tokens).toHaveLength(4);
    expect(listed.tokens.filter((t) => t.current).map((t) => t.id)).toEqual([caller.token.id]);
    const bob = await authAs('bob');
    await expect(call(routes(), request(bob, 'GET', '/v1/tokens?user=alice'))).rejects.toMatchObject({ code: 'PW_NOT_AUTHORIZED' });
    expect(((await call(routes(), request(bob, 'GET', '/v1/tokens?user=bob')))?.body as { tokens: unknown[] }).tokens).toHaveLength(1);
    const admin = await authAs('root', { isAdmin: true, scope: 'read' });
    const seen = (await call(routes(), request(admin, 'GET', '/v1/tokens?user=alice')))?.body as { tokens: { userId: string; current: boolean }[] };
    expect(seen.tokens.map((t) => [t.userId, t.current])).toEqual(Array.from({ length: 4 }, () => [caller.user.id, false]));
    await expect(call(routes(), request(admin, 'GET', '/v1/tokens?user=nobody'))).rejects.toMatchObject({ code: 'PW_NOT_FOUND' });
  });

  it('refuses read tokens, bad bodies and escalation with codes', async () => {
    const reader = await authAs('alice', { scope: 'read' });
    await expect(call(routes(), request(reader, 'POST', '/v1/tokens', { scope: 'read' }))).rejects.toMatchObject({ code: 'PW_SCOPE_INSUFFICIENT' });
    await expect(call(routes(), request(reader, 'DELETE', `/v1/tokens/${reader.token.id}`))).rejects.toMatchObject({ code: 'PW_SCOPE_INSUFFICIENT' });
    const writer = await authAs('alice');
    for (const body of [{ scope: 'admin' }, { expiresInMs: -1 }, { expiresInMs: 1.5 }, { expiresInMs: 11 * 365 * 24 * HOUR_MS }, null, 'x']) {
      await expect(call(routes(), request(writer, 'POST', '/v1/tokens', body))).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    }
    expect(await call(routes(), request(writer, 'PUT', '/v1/tokens'))).toBeUndefined();
  });

  it("lets users revoke their own tokens, hides others' (PW_NOT_FOUND), lets admins revoke any; audits each attempt on a token ID", async () => {
    const alice = await authAs('alice');
    const bob = await authAs('bob');
    const admin = await authAs('root', { isAdmin: true });
    await expect(call(routes(), request(bob, 'DELETE', `/v1/tokens/${alice.token.id}`))).rejects.toMatchObject({ code: 'PW_NOT_FOUND' });
    await expect(call(routes(), request(bob, 'DELETE', '/v1/tokens/%E0%A4%A'))).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    expect(await call(routes(), request(bob, 'DELETE', `/v1/tokens/${bob.token.id}`))).toEqual({ status: 200, body: { ok: true, tokenId: bob.token.id, streamsEnded: 0 } });
    expect(await call(routes(), request(admin, 'DELETE', `/v1/tokens/${alice.token.id}`))).toMatchObject({ status: 200 });
    expect((await store.getToken(alice.token.id))?.revokedAt).toBe(NOW);
    const audit = await store.listAudit({ limit: 10 });
    expect(audit.map((e) => [e.actor, e.action, e.outcome])).toEqual([
      [admin.user.id, 'token.revoke', 'ok'],
      [bob.user.id, 'token.revoke', 'ok'],
      [bob.user.id, 'token.revoke', 'PW_NOT_FOUND'],
    ]);
  });
});

describe('share routes and the audit route', () => {
  it('lets the owner share and unshare, nobody else; admins read the audit log', async () => {
    const routes = shareRoutes({ store });
    const alice = await authAs('alice');
    const bob = await authAs('bob');
    const admin = await authAs('root', { isAdmin: true });
    const pi = await store.createDevice({ name: 'pi', ownerUserId: alice.user.id, certFingerprint: 'a'.repeat(64), keyFingerprint: 'b'.repeat(64) });
    await expect(call(routes, request(bob, 'POST', '/v1/shares', { device: 'pi', user: 'bob' }))).rejects.toMatchObject({ code: 'PW_UNKNOWN_DEVICE' });
    await expect(call(routes, request(alice, 'POST', '/v1/shares', { device: 'pi', user: 'alice' }))).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    await expect(call(routes, request(alice, 'POST', '/v1/shares', { device: 'pi', user: 'nobody' }))).rejects.toMatchObject({ code: 'PW_NOT_FOUND' });
    await expect(call(routes, request(alice, 'POST', '/v1/shares', { device: 'pi', user: 'bob', services: [] }))).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    const shared = await call(routes, request(alice, 'POST', '/v1/shares', { device: 'pi', user: 'bob', services: ['ssh'] }));
    expect(shared).toMatchObject({ status: 200, body: { deviceId: pi.id, deviceName: 'pi', userName: 'bob', services: ['ssh'], createdBy: alice.user.id } });
    await expect(call(routes, request(bob, 'DELETE', '/v1/shares/pi/bob'))).rejects.toMatchObject({ code: 'PW_NOT_AUTHORIZED' });
    await expect(call(routes, request(bob, 'GET', '/v1/shares?device=pi'))).rejects.toMatchObject({ code: 'PW_NOT_AUTHORIZED' });
    expect((await call(routes, request(bob, 'GET', '/v1/shares')))?.body).toEqual({ shares: [(shared as ApiReply).body] });
    expect(await call(routes, request(admin, 'DELETE', '/v1/shares/pi/bob'))).toEqual({ status: 200, body: { ok: true, streamsEnded: 0 } });
    expect(await store.getShare(pi.id, bob.user.id)).toBeUndefined();

    const audit = auditRoutes({ store });
    await expect(call(audit, request(alice, 'GET', '/v1/audit'))).rejects.toMatchObject({ code: 'PW_NOT_AUTHORIZED' });
    await expect(call(audit, request(admin, 'GET', '/v1/audit?limit=0'))).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    await expect(call(audit, request(admin, 'GET', '/v1/audit?before=x'))).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    const entries = ((await call(audit, request(admin, 'GET', '/v1/audit?limit=3')))?.body as { entries: { action: string; outcome: string }[] }).entries;
    expect(entries.map((e) => [e.action, e.outcome])).toEqual([
      ['share.delete', 'ok'],
      ['share.delete', 'PW_NOT_AUTHORIZED'],
      ['share.create', 'ok'],
    ]);
  });
});
