/**
 * The Store contract, second half: token-bound certificates, shares, the audit log, concurrency and a
 * restart that loses nothing. Run from describeStoreContract (store-contract.ts), inside its beforeEach/afterEach.
 */
import { PortwayError, type ErrorCode } from '../../protocol';
import type { Store } from '../../relay/src/store';
import type { StoreFactory } from './store-contract';

const FP_A = 'a'.repeat(64);
const FP_B = 'b'.repeat(64);
const FP_C = 'c'.repeat(64);
const HOUR_MS = 3_600_000;
const RACERS = 20;

const GARBAGE: readonly string[] = ['', ' ', "' OR 1=1 --", '%', '_', 'dev_%', 'usr_%', '\u0000', '\ud800', 'x'.repeat(100_000), 'dev_aaaaaaaaaaaaaaaa', 'usr_aaaaaaaaaaaaaaaa'];

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await expect(promise).rejects.toBeInstanceOf(PortwayError);
  await expect(promise).rejects.toMatchObject({ code });
}

export interface ContractContext {
  readonly store: Store;
  readonly clock: number;
  setClock(ms: number): void;
}

export function describeStoreContractMore(factory: StoreFactory, ctx: () => ContractContext): void {
  const now = (): number => ctx().clock;

  describe('certificates bound to tokens', () => {
    it('records the token with the certificate and revokes both together', async () => {
      const { store } = ctx();
      const alice = await store.createUser('alice');
      const bob = await store.createUser('bob');
      const read = await store.createToken(alice.id, { scope: 'read', expiresAt: now() + HOUR_MS });
      const cert = await store.recordUserCert(alice.id, FP_A, FP_B, { tokenId: read.tokenId });
      expect(cert.token).toEqual({ id: read.tokenId, userId: alice.id, scope: 'read', createdAt: now(), expiresAt: now() + HOUR_MS });
      expect(await store.getUserCert(FP_A)).toEqual(cert);
      const other = await store.recordUserCert(alice.id, FP_C, FP_B);
      await expectCode(store.recordUserCert(bob.id, FP_B, FP_B, { tokenId: read.tokenId }), 'PW_NOT_FOUND');
      expect(await store.getUserCert(FP_B)).toBeUndefined();
      const at = now();
      expect(await store.revokeToken(read.tokenId)).toBe(true);
      ctx().setClock(at + 5);
      const after = await store.getUserCert(FP_A);
      expect(after?.revokedAt).toBe(at);
      expect(after?.token?.revokedAt).toBe(at);
      expect(await store.getUserCert(FP_C)).toEqual(other);
      expect(() => store.recordUserCert(alice.id, FP_A, FP_B, { tokenId: 'nope' })).toThrow(TypeError);
    });
  });

  describe('shares', () => {
    it('shares every service or some, replaces, lists, unshares', async () => {
      const { store } = ctx();
      const owner = await store.createUser('owner');
      const bob = await store.createUser('bob');
      const carol = await store.createUser('carol');
      const pi = await store.createDevice({ name: 'pi', ownerUserId: owner.id, certFingerprint: FP_A, keyFingerprint: FP_B });
      const all = await store.shareDevice({ deviceId: pi.id, userId: bob.id, createdBy: owner.id });
      expect(all).toEqual({ deviceId: pi.id, userId: bob.id, createdAt: now(), createdBy: owner.id });
      expect(all.services).toBeUndefined();
      const some = await store.shareDevice({ deviceId: pi.id, userId: carol.id, services: ['ssh', 'http', 'ssh'], createdBy: owner.id });
      expect(some.services).toEqual(['http', 'ssh']);
      expect(await store.getShare(pi.id, carol.id)).toEqual(some);
      expect(await store.listShares({ deviceId: pi.id })).toEqual([all, some].sort((a, b) => (a.userId < b.userId ? -1 : 1)));
      expect(await store.listShares({ userId: bob.id })).toEqual([all]);
      ctx().setClock(now() + 10);
      const replaced = await store.shareDevice({ deviceId: pi.id, userId: bob.id, services: ['ssh'], createdBy: owner.id });
      expect(await store.getShare(pi.id, bob.id)).toEqual(replaced);
      expect(replaced).toMatchObject({ services: ['ssh'], createdAt: now() });
      expect(await store.unshareDevice(pi.id, bob.id)).toBe(true);
      expect(await store.unshareDevice(pi.id, bob.id)).toBe(false);
      expect(await store.getShare(pi.id, bob.id)).toBeUndefined();
      expect(await store.listShares({ deviceId: pi.id })).toEqual([some]);
    });

    it('refuses unknown devices and users with codes, bad arguments synchronously, garbage lookups with nothing', async () => {
      const { store } = ctx();
      const owner = await store.createUser('owner');
      const pi = await store.createDevice({ name: 'pi', ownerUserId: owner.id, certFingerprint: FP_A, keyFingerprint: FP_B });
      await expectCode(store.shareDevice({ deviceId: 'dev_aaaaaaaaaaaaaaaa', userId: owner.id, createdBy: owner.id }), 'PW_UNKNOWN_DEVICE');
      await expectCode(store.shareDevice({ deviceId: pi.id, userId: 'usr_aaaaaaaaaaaaaaaa', createdBy: owner.id }), 'PW_NOT_FOUND');
      const good = { deviceId: pi.id, userId: owner.id, createdBy: owner.id };
      expect(() => store.shareDevice({ ...good, deviceId: 'pi' })).toThrow(TypeError);
      expect(() => store.shareDevice({ ...good, userId: 'owner' })).toThrow(TypeError);
      expect(() => store.shareDevice({ ...good, services: [] })).toThrow(RangeError);
      expect(() => store.shareDevice({ ...good, services: Array.from({ length: 65 }, (_, i) => `s${i}`) })).toThrow(RangeError);
      expect(() => store.shareDevice({ ...good, services: ['bad name'] })).toThrow(TypeError);
      expect(() => store.shareDevice({ ...good, createdBy: '\u0000' })).toThrow(TypeError);
      for (const garbage of GARBAGE) {
        expect(await store.getShare(garbage, owner.id)).toBeUndefined();
        expect(await store.getShare(pi.id, garbage)).toBeUndefined();
        expect(await store.listShares({ deviceId: garbage })).toEqual([]);
        expect(await store.listShares({ userId: garbage })).toEqual([]);
        expect(await store.unshareDevice(garbage, garbage)).toBe(false);
        expect(await store.revokeDevice(garbage)).toBe(garbage === pi.id);
        expect(await store.revokeEnrollKey(garbage)).toBe(false);
        expect(await store.revokeUserCert(garbage)).toBe(false);
      }
    });
  });

  describe('audit log', () => {
    it('appends entries and lists them newest first, in pages', async () => {
      const { store } = ctx();
      const first = await store.appendAudit({ actor: 'usr_aaaaaaaaaaaaaaaa', action: 'share.create', target: 'pi/bob', source: '127.0.0.1', outcome: 'ok' });
      expect(first).toEqual({ id: first.id, at: now(), actor: 'usr_aaaaaaaaaaaaaaaa', action: 'share.create', target: 'pi/bob', source: '127.0.0.1', outcome: 'ok' });
      ctx().setClock(now() + 1);
      const second = await store.appendAudit({ actor: 'relay', action: 'device.revoke', outcome: 'PW_NOT_AUTHORIZED' });
      expect(second.id).toBeGreaterThan(first.id);
      expect(second.target).toBeUndefined();
      expect(await store.listAudit({ limit: 10 })).toEqual([second, first]);
      expect(await store.listAudit({ limit: 1 })).toEqual([second]);
      expect(await store.listAudit({ limit: 10, beforeId: second.id })).toEqual([first]);
      expect(await store.listAudit({ limit: 10, beforeId: first.id })).toEqual([]);
    });

    it('refuses malformed entries and limits synchronously', async () => {
      const { store } = ctx();
      for (const bad of ['', '\u0000', 'ü', 'x'.repeat(257), 7 as unknown as string]) {
        expect(() => store.appendAudit({ actor: bad, action: 'a', outcome: 'ok' })).toThrow(TypeError);
        expect(() => store.appendAudit({ actor: 'a', action: 'a', target: bad, outcome: 'ok' })).toThrow(TypeError);
      }
      for (const limit of [0, -1, 1001, 1.5, Number.NaN]) expect(() => store.listAudit({ limit })).toThrow(RangeError);
      expect(() => store.listAudit({ limit: 1, beforeId: -1 })).toThrow(RangeError);
      expect(await store.listAudit({ limit: 1000 })).toEqual([]);
    });
  });

  describe('concurrency', () => {
    it(`lets exactly one of ${RACERS} concurrent consumers use a single-use enrollment key`, async () => {
      const { store } = ctx();
      const { key } = await store.createEnrollKey({ uses: 1, expiresAt: now() + HOUR_MS });
      const results = await Promise.allSettled(Array.from({ length: RACERS }, () => store.consumeEnrollKey(key)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'PW_ENROLL_KEY_INVALID' });
    });

    it('keeps every revocation when tokens are revoked and authenticated concurrently', async () => {
      const { store } = ctx();
      const alice = await store.createUser('alice');
      const tokens = await Promise.all(Array.from({ length: 10 }, () => store.createToken(alice.id)));
      await Promise.all(tokens.flatMap((t) => [store.revokeToken(t.tokenId), store.authenticateToken(t.token).catch((err: PortwayError) => err.code)]));
      for (const t of tokens) await expectCode(store.authenticateToken(t.token), 'PW_TOKEN_REVOKED');
    });
  });

  if (factory.reopen) {
    const reopen = factory.reopen.bind(factory);
    describe('restart', () => {
      it('loses nothing when the database is opened again: users, owners, tokens, keys, certificates, shares, audit', async () => {
        const { store } = ctx();
        const owner = await store.createUser('owner', { isAdmin: true });
        const bob = await store.createUser('bob');
        const token = await store.createToken(owner.id, { scope: 'read', expiresAt: now() + HOUR_MS });
        const revoked = await store.createToken(bob.id);
        await store.revokeToken(revoked.tokenId);
        const key = await store.createEnrollKey({ ownerUserId: owner.id, uses: 2, expiresAt: now() + HOUR_MS });
        await store.consumeEnrollKey(key.key);
        const pi = await store.createDevice({ name: 'pi', ownerUserId: owner.id, certFingerprint: FP_A, keyFingerprint: FP_B });
        const cert = await store.recordUserCert(owner.id, FP_C, FP_B, { tokenId: token.tokenId });
        const share = await store.shareDevice({ deviceId: pi.id, userId: bob.id, services: ['ssh'], createdBy: owner.id });
        const entry = await store.appendAudit({ actor: owner.id, action: 'share.create', target: 'pi/bob', outcome: 'ok' });
        await store.close();

        const again = await reopen({ now });
        try {
          const byId = (a: { id: string }, b: { id: string }): number => (a.id < b.id ? -1 : 1);
          expect((await again.listUsers()).sort(byId)).toEqual([owner, bob].sort(byId));
          expect((await again.authenticateToken(token.token)).token).toEqual({ id: token.tokenId, userId: owner.id, scope: 'read', createdAt: now(), expiresAt: now() + HOUR_MS });
          await expectCode(again.authenticateToken(revoked.token), 'PW_TOKEN_REVOKED');
          expect(await again.consumeEnrollKey(key.key)).toEqual({ keyId: key.keyId, ownerUserId: owner.id });
          await expectCode(again.consumeEnrollKey(key.key), 'PW_ENROLL_KEY_INVALID');
          expect(await again.getDevice(pi.id)).toEqual(pi);
          expect(await again.getUserCert(FP_C)).toEqual(cert);
          expect(await again.getShare(pi.id, bob.id)).toEqual(share);
          expect(await again.listAudit({ limit: 10 })).toEqual([entry]);
        } finally {
          await again.close();
        }
      });
    });
  }
}
