/**
 * The grant routes (relay/src/api/grant-routes.ts) over a real in-memory store: only a claimed device's owner (or
 * an admin) reads and stores grant sets; a set is stored only if it is for that device, signed by the owner key
 * recorded at claim time and newer than the stored one; garbage bodies are answered with codes and store
 * nothing; every PUT is audited; a user's key list holds only current, unrevoked certificate keys.
 */
import type { ApiReply, ApiRequest } from '../../relay/src/api/api-route';
import { grantRoutes } from '../../relay/src/api/grant-routes';
import { SqliteStore, type Store, type TokenAuth, type TokenScope } from '../../relay/src/store';
import { spkiOfKeyPem } from '../../shared/claim-tag';
import { signGrantSet } from '../../shared/grant-signature';
import { generateKeyPair, spkiFingerprint } from '../../shared/x509';
import type { GrantDocument } from '../../protocol';

const NOW = Date.UTC(2030, 0, 1);
const DAY_MS = 86_400_000;
const CERT_VALIDITY_MS = 30 * DAY_MS;
const ownerKey = generateKeyPair().privateKeyPem;
const otherKey = generateKeyPair().privateKeyPem;
const FP = (c: string): string => c.repeat(64);

let store: Store;
let clock = NOW;
beforeEach(async () => {
  clock = NOW;
  store = await SqliteStore.open({ path: ':memory:' }, { now: () => clock });
});
afterEach(() => store.close());

async function authAs(name: string, options: { scope?: TokenScope; isAdmin?: boolean } = {}): Promise<TokenAuth> {
  const user = (await store.getUserByName(name)) ?? (await store.createUser(name, { isAdmin: options.isAdmin ?? false }));
  const { token } = await store.createToken(user.id, { scope: options.scope ?? 'connect' });
  return store.authenticateToken(token);
}

function request(auth: TokenAuth, method: string, url: string, body?: unknown): ApiRequest {
  const parsed = new URL(url, 'https://relay');
  return { method, path: parsed.pathname, query: parsed.searchParams, auth, source: '127.0.0.1', body: () => Promise.resolve(body) };
}

const routes = (): ((req: ApiRequest) => Promise<ApiReply | undefined>) => grantRoutes({ store, now: () => clock, userCertValidityMs: CERT_VALIDITY_MS });

/** alice claims `garden` with ownerKey; `shed` is enrolled with a fleet key. */
async function devices(alice: TokenAuth): Promise<{ garden: string; shed: string }> {
  await store.registerClaim({ claimId: 'ABCD123', name: 'garden', csr: 'csr', deviceKey: 'a2V5', keyFingerprint: FP('a'), pollHash: FP('b'), expiresAt: NOW + DAY_MS });
  await store.offerClaim('ABCD123', { offerId: 'o1', userId: alice.user.id, ownerKey: spkiOfKeyPem(ownerKey).toString('base64'), ownerTag: 't'.repeat(43) + '=' }, 0);
  await store.answerClaim('ABCD123', 'o1', { ok: true, deviceTag: 'tag' });
  const garden = await store.completeClaim('ABCD123', 'o1', { id: 'dev_gggggggggggggggg', name: 'garden', ownerUserId: alice.user.id, certFingerprint: FP('c'), keyFingerprint: FP('a'), certificate: 'pem' });
  const shed = await store.createDevice({ name: 'shed', ownerUserId: alice.user.id, certFingerprint: FP('d'), keyFingerprint: FP('e') });
  return { garden: garden.id, shed: shed.id };
}

const doc = (deviceId: string, seq: number): GrantDocument => ({ v: 1, deviceId, seq, issuedAt: NOW, entries: [{ key: FP('f'), user: 'bob', services: ['ssh'] }] });

describe('grant routes', () => {
  it('stores a set the owner signed, newer only; refuses other signers, devices and garbage with codes; audits every PUT', async () => {
    const alice = await authAs('alice');
    const { garden, shed } = await devices(alice);
    const get = await routes()(request(alice, 'GET', '/v1/devices/garden/grants'));
    expect(get).toEqual({ status: 200, body: { deviceId: garden, deviceName: 'garden', ownerKey: spkiFingerprint(spkiOfKeyPem(ownerKey)), seq: 0 } });
    const set1 = signGrantSet(doc(garden, 1), ownerKey);
    expect(await routes()(request(alice, 'PUT', '/v1/devices/garden/grants', { grants: set1 }))).toEqual({ status: 200, body: { ok: true, deviceId: garden, seq: 1, delivered: false } });
    expect(await routes()(request(alice, 'GET', `/v1/devices/${garden}/grants`))).toMatchObject({ body: { seq: 1, grants: set1 } });

    const put = (body: unknown, device = 'garden', auth = alice): Promise<ApiReply | undefined> => routes()(request(auth, 'PUT', `/v1/devices/${device}/grants`, body));
    await expect(put({ grants: set1 })).rejects.toMatchObject({ code: 'PW_GRANT_STALE' });
    await expect(put({ grants: signGrantSet(doc(garden, 2), otherKey) })).rejects.toMatchObject({ code: 'PW_GRANT_INVALID' });
    await expect(put({ grants: signGrantSet(doc(shed, 2), ownerKey) })).rejects.toMatchObject({ code: 'PW_GRANT_INVALID' });
    await expect(put({ grants: signGrantSet(doc(shed, 2), ownerKey) }, 'shed')).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    for (const garbage of [undefined, null, 'x', [], {}, { grants: {} }, { grants: { ...set1, signature: 'AAAA' } }, { grants: { ...set1, document: 'A'.repeat(60_000) } }, { grants: { ...set1, document: Buffer.from('{').toString('base64') } }]) {
      await expect(put(garbage)).rejects.toMatchObject({ code: expect.stringMatching(/^PW_(BAD_REQUEST|GRANT_INVALID)$/) as unknown });
    }
    expect((await store.getDeviceGrants(garden))?.seq).toBe(1);

    // Readers, strangers and people it is shared with.
    const reader = await authAs('alice', { scope: 'read' });
    await expect(put({ grants: signGrantSet(doc(garden, 2), ownerKey) }, 'garden', reader)).rejects.toMatchObject({ code: 'PW_SCOPE_INSUFFICIENT' });
    const bob = await authAs('bob');
    await expect(routes()(request(bob, 'GET', '/v1/devices/garden/grants'))).rejects.toMatchObject({ code: 'PW_UNKNOWN_DEVICE' });
    await store.shareDevice({ deviceId: garden, userId: bob.user.id, createdBy: alice.user.id });
    await expect(routes()(request(bob, 'GET', '/v1/devices/garden/grants'))).rejects.toMatchObject({ code: 'PW_NOT_AUTHORIZED' });
    await expect(put({ grants: signGrantSet(doc(garden, 2), ownerKey) }, 'garden', bob)).rejects.toMatchObject({ code: 'PW_NOT_AUTHORIZED' });
    // An admin may store a set the owner signed (the signature is what counts).
    const root = await authAs('root', { isAdmin: true });
    expect(await put({ grants: signGrantSet(doc(garden, 2), ownerKey) }, garden, root)).toMatchObject({ status: 200, body: { seq: 2 } });

    const audit = (await store.listAudit({ limit: 100 })).filter((e) => e.action === 'device.grants').map((e) => e.outcome);
    expect(audit.filter((o) => o === 'ok')).toHaveLength(2);
    expect(audit).toEqual(expect.arrayContaining(['PW_GRANT_STALE', 'PW_GRANT_INVALID', 'PW_BAD_REQUEST', 'PW_SCOPE_INSUFFICIENT', 'PW_NOT_AUTHORIZED']));
    expect(await routes()(request(alice, 'GET', '/v1/devices/garden/nothing'))).toBeUndefined();
    // A row changed behind the relay's back is answered as no set (the owner's client builds on its own copy).
    await store.putDeviceGrants({ deviceId: garden, seq: 9, grants: '{damaged', updatedBy: alice.user.id });
    expect(await routes()(request(alice, 'GET', '/v1/devices/garden/grants'))).toEqual({ status: 200, body: { deviceId: garden, deviceName: 'garden', ownerKey: spkiFingerprint(spkiOfKeyPem(ownerKey)), seq: 9 } });
  });

  it("lists a user's current keys: unrevoked, within the certificate lifetime, each key once", async () => {
    const alice = await authAs('alice', { scope: 'read' });
    const bob = await authAs('bob');
    await store.recordUserCert(bob.user.id, FP('1'), FP('7'));
    clock = NOW + DAY_MS;
    await store.recordUserCert(bob.user.id, FP('2'), FP('8'));
    await store.recordUserCert(bob.user.id, FP('3'), FP('8'));
    await store.recordUserCert(bob.user.id, FP('4'), FP('9'));
    await store.revokeUserCert(FP('4'));
    clock = NOW + CERT_VALIDITY_MS + DAY_MS / 2;
    expect(await routes()(request(alice, 'GET', '/v1/users/bob/keys'))).toEqual({ status: 200, body: { userId: bob.user.id, userName: 'bob', keys: [{ fingerprint: FP('8'), since: NOW + DAY_MS }] } });
    for (const name of ['nobody', '%', "' OR 1=1", '\u0000', 'x'.repeat(150)]) {
      await expect(routes()(request(alice, 'GET', `/v1/users/${encodeURIComponent(name)}/keys`))).rejects.toMatchObject({ code: 'PW_NOT_FOUND' });
    }
    await expect(routes()(request(alice, 'GET', '/v1/users/%E0%A4%A/keys'))).rejects.toMatchObject({ code: 'PW_BAD_REQUEST' });
    // Longer than any path segment: not this module's route (the API answers PW_NOT_FOUND).
    expect(await routes()(request(alice, 'GET', `/v1/users/${'x'.repeat(300)}/keys`))).toBeUndefined();
  });
});
