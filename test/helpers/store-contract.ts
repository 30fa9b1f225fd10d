/**
 * The Store contract: every implementation (SQLite, PostgreSQL) runs this suite.
 *
 *   describeStoreContract('SqliteStore', { make: (deps) => SqliteStore.open({ path: next() }, deps), reopen: (deps) => SqliteStore.open({ path: last() }, deps) });
 *
 * `make` returns a fresh, empty store using the given clock; the suite closes it after each test. `reopen`
 * (absent for in-memory stores) opens the database `make` last created again, as a relay restart would.
 */
import { PortwayError, idSchema, type ErrorCode } from '../../protocol';
import type { Store, User } from '../../relay/src/store';
import { describeClaimContract } from './store-contract-claims';
import { describeGrantContract } from './store-contract-grants';
import { describeStoreContractMore } from './store-contract-more';

export interface StoreContractDeps {
  readonly now: () => number;
}

export interface StoreFactory {
  make(deps: StoreContractDeps): Promise<Store>;
  reopen?(deps: StoreContractDeps): Promise<Store>;
}

const FP_A = 'a'.repeat(64);
const FP_B = 'b'.repeat(64);
const FP_C = 'c'.repeat(64);
const HOUR_MS = 3_600_000;

/** Strings a peer might send where a token, key, name or ID is expected. */
export const GARBAGE_STRINGS: readonly string[] = [
  '',
  ' ',
  'pwt_',
  'pwk_',
  `pwt_${'A'.repeat(43)}`,
  `pwk_${'A'.repeat(43)}`,
  `pwt_${'A'.repeat(42)}=`,
  "' OR 1=1 --",
  '"; DROP TABLE users; --',
  '%',
  '_',
  '*',
  'dev_%',
  'usr_aaaaaaaaaaaaaaaa',
  'dev_aaaaaaaaaaaaaaaa',
  '\u0000',
  '\ud800',
  'ü'.repeat(100),
  'x'.repeat(1_000_000),
];

export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await expect(promise).rejects.toBeInstanceOf(PortwayError);
  await expect(promise).rejects.toMatchObject({ code });
}

export function describeStoreContract(name: string, factory: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
    let clock: number;
    let store: Store;

    beforeEach(async () => {
      clock = Date.UTC(2030, 0, 1);
      store = await factory.make({ now: () => clock });
    });
    afterEach(async () => {
      await store.close();
    });

    describe('users', () => {
      it('creates, gets and lists users', async () => {
        const alice = await store.createUser('alice', { isAdmin: true });
        const bob = await store.createUser('bob');
        expect(idSchema.safeParse(alice.id).success).toBe(true);
        expect(alice.id.startsWith('usr_')).toBe(true);
        expect(alice).toEqual({ id: alice.id, name: 'alice', isAdmin: true, createdAt: clock });
        expect(bob.isAdmin).toBe(false);
        expect(await store.getUser(alice.id)).toEqual(alice);
        expect(await store.getUserByName('bob')).toEqual(bob);
        expect((await store.listUsers()).map((user) => user.name).sort()).toEqual(['alice', 'bob']);
      });

      it('refuses a taken name with PW_NAME_TAKEN', async () => {
        await store.createUser('alice');
        await expectCode(store.createUser('alice'), 'PW_NAME_TAKEN');
        expect(await store.listUsers()).toHaveLength(1);
      });

      it('throws TypeError synchronously for invalid names', () => {
        for (const bad of ['', ' alice', 'a b', '-x', 'x'.repeat(64), 'ü', 42, undefined]) {
          expect(() => store.createUser(bad as string)).toThrow(TypeError);
        }
        expect(() => store.createUser('ok', { isAdmin: 'yes' as unknown as boolean })).toThrow(TypeError);
      });

      it('answers undefined for unknown and garbage lookups', async () => {
        await store.createUser('alice');
        for (const garbage of GARBAGE_STRINGS) {
          expect(await store.getUser(garbage)).toBeUndefined();
          expect(await store.getUserByName(garbage)).toBeUndefined();
        }
      });
    });

    describe('API tokens', () => {
      let alice: User;
      beforeEach(async () => {
        alice = await store.createUser('alice');
      });

      it('authenticates a token to its user and scope (connect by default)', async () => {
        const created = await store.createToken(alice.id);
        expect(created.token).toMatch(/^pwt_[A-Za-z0-9_-]{43}$/);
        expect(idSchema.safeParse(created.tokenId).success).toBe(true);
        expect(created.tokenId.startsWith('tok_')).toBe(true);
        expect(created.scope).toBe('connect');
        const expected = { id: created.tokenId, userId: alice.id, scope: 'connect', createdAt: clock };
        expect(await store.authenticateToken(created.token)).toEqual({ user: alice, token: expected });
        const read = await store.createToken(alice.id, { scope: 'read' });
        expect(read.scope).toBe('read');
        expect((await store.authenticateToken(read.token)).token.scope).toBe('read');
        expect(await store.getToken(created.tokenId)).toEqual(expected);
        expect(await store.listTokens(alice.id)).toEqual([expected, { ...expected, id: read.tokenId, scope: 'read' }].sort((a, b) => (a.id < b.id ? -1 : 1)));
      });

      it('rejects near misses, revoked and expired tokens', async () => {
        const { token, tokenId } = await store.createToken(alice.id);
        const last = token.slice(-1) === 'A' ? 'B' : 'A';
        await expectCode(store.authenticateToken(token.slice(0, -1) + last), 'PW_UNAUTHENTICATED');
        await expectCode(store.authenticateToken(token.toUpperCase()), 'PW_UNAUTHENTICATED');
        await expectCode(store.authenticateToken(` ${token}`), 'PW_UNAUTHENTICATED');
        const revokedAt = clock;
        expect(await store.revokeToken(tokenId)).toBe(true);
        clock += 1;
        expect(await store.revokeToken(tokenId)).toBe(true);
        await expectCode(store.authenticateToken(token), 'PW_TOKEN_REVOKED');
        expect((await store.getToken(tokenId))?.revokedAt).toBe(revokedAt);

        const expiring = await store.createToken(alice.id, { expiresAt: clock + HOUR_MS });
        expect(expiring.expiresAt).toBe(clock + HOUR_MS);
        expect((await store.authenticateToken(expiring.token)).user).toEqual(alice);
        clock += HOUR_MS;
        await expectCode(store.authenticateToken(expiring.token), 'PW_TOKEN_EXPIRED');
      });

      it('answers undefined for garbage tokens and false for unknown token IDs', async () => {
        await store.createToken(alice.id);
        for (const garbage of [...GARBAGE_STRINGS, undefined, null, 42, {}] as unknown[]) {
          await expectCode(store.authenticateToken(garbage as string), 'PW_UNAUTHENTICATED');
        }
        for (const garbage of GARBAGE_STRINGS) {
          expect(await store.getToken(garbage)).toBeUndefined();
          expect(await store.revokeToken(garbage)).toBe(false);
        }
        expect(await store.revokeToken('tok_aaaaaaaaaaaaaaaa')).toBe(false);
      });

      it('refuses a token for an unknown user with PW_NOT_FOUND, bad arguments with TypeError/RangeError', async () => {
        await expectCode(store.createToken('usr_aaaaaaaaaaaaaaaa'), 'PW_NOT_FOUND');
        expect(() => store.createToken('alice')).toThrow(TypeError);
        expect(() => store.createToken(alice.id, { expiresAt: -1 })).toThrow(RangeError);
        expect(() => store.createToken(alice.id, { expiresAt: Number.NaN })).toThrow(RangeError);
        expect(() => store.createToken(alice.id, { scope: 'admin' as 'read' })).toThrow(TypeError);
        expect(() => store.listTokens('alice')).toThrow(TypeError);
      });
    });

    describe('enrollment keys', () => {
      it('consumes a single-use key once', async () => {
        const owner = await store.createUser('owner');
        const created = await store.createEnrollKey({ ownerUserId: owner.id, expiresAt: clock + HOUR_MS });
        expect(created.key).toMatch(/^pwk_[A-Za-z0-9_-]{43}$/);
        expect(created).toMatchObject({ uses: 1, expiresAt: clock + HOUR_MS, ownerUserId: owner.id });
        expect(idSchema.safeParse(created.keyId).success).toBe(true);
        expect(await store.consumeEnrollKey(created.key)).toEqual({ keyId: created.keyId, ownerUserId: owner.id });
        await expectCode(store.consumeEnrollKey(created.key), 'PW_ENROLL_KEY_INVALID');
      });

      it('consumes a key without an owner', async () => {
        const created = await store.createEnrollKey({ uses: 2, expiresAt: clock + HOUR_MS });
        expect(await store.consumeEnrollKey(created.key)).toEqual({ keyId: created.keyId });
      });

      it('grants exactly `uses` of many concurrent attempts', async () => {
        const { key } = await store.createEnrollKey({ uses: 3, expiresAt: clock + HOUR_MS });
        const results = await Promise.allSettled(Array.from({ length: 10 }, () => store.consumeEnrollKey(key)));
        expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(3);
        const rejected = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected');
        expect(rejected).toHaveLength(7);
        for (const result of rejected) expect(result.reason).toMatchObject({ code: 'PW_ENROLL_KEY_INVALID' });
      });

      it('refuses expired and revoked keys', async () => {
        const expiring = await store.createEnrollKey({ uses: 5, expiresAt: clock + HOUR_MS });
        clock += HOUR_MS;
        await expectCode(store.consumeEnrollKey(expiring.key), 'PW_ENROLL_KEY_INVALID');
        const revoked = await store.createEnrollKey({ uses: 5, expiresAt: clock + HOUR_MS });
        expect(await store.revokeEnrollKey(revoked.keyId)).toBe(true);
        await expectCode(store.consumeEnrollKey(revoked.key), 'PW_ENROLL_KEY_INVALID');
        expect(await store.revokeEnrollKey('key_aaaaaaaaaaaaaaaa')).toBe(false);
      });

      it('refuses garbage keys with PW_ENROLL_KEY_INVALID and bad arguments synchronously', async () => {
        await store.createEnrollKey({ expiresAt: clock + HOUR_MS });
        for (const garbage of [...GARBAGE_STRINGS, undefined, null, 7] as unknown[]) await expectCode(store.consumeEnrollKey(garbage as string), 'PW_ENROLL_KEY_INVALID');
        expect(() => store.createEnrollKey({ uses: 0, expiresAt: clock })).toThrow(RangeError);
        expect(() => store.createEnrollKey({ uses: 1.5, expiresAt: clock })).toThrow(RangeError);
        expect(() => store.createEnrollKey({ expiresAt: 'soon' as unknown as number })).toThrow(RangeError);
        expect(() => store.createEnrollKey({ ownerUserId: 'nobody', expiresAt: clock })).toThrow(TypeError);
        await expectCode(store.createEnrollKey({ ownerUserId: 'usr_aaaaaaaaaaaaaaaa', expiresAt: clock + HOUR_MS }), 'PW_NOT_FOUND');
      });
    });

    describe('devices', () => {
      it('creates devices with generated or given IDs and finds them by ID or name', async () => {
        const owner = await store.createUser('owner');
        const first = await store.createDevice({ name: 'pi', ownerUserId: owner.id, certFingerprint: FP_A, keyFingerprint: FP_B });
        expect(idSchema.safeParse(first.id).success).toBe(true);
        expect(first).toEqual({ id: first.id, name: 'pi', ownerUserId: owner.id, certFingerprint: FP_A, keyFingerprint: FP_B, createdAt: clock });
        clock += 1;
        const second = await store.createDevice({ id: 'dev_bbbbbbbbbbbbbbbb', name: 'pi', certFingerprint: FP_B, keyFingerprint: FP_C });
        expect(second.id).toBe('dev_bbbbbbbbbbbbbbbb');
        expect(second.ownerUserId).toBeUndefined();
        expect(await store.getDevice(first.id)).toEqual(first);
        expect(await store.findDevices(first.id)).toEqual([first]);
        expect(await store.findDevices('pi')).toEqual([first, second]);
        expect(await store.findDevices('other')).toEqual([]);
        expect(await store.listDevices()).toEqual([first, second]);
        expect(await store.countActiveDevices()).toBe(2);
      });

      it('updates the certificate of an active device only', async () => {
        const device = await store.createDevice({ name: 'pi', certFingerprint: FP_A, keyFingerprint: FP_B });
        const updated = await store.updateDeviceCert(device.id, { certFingerprint: FP_C, keyFingerprint: FP_A });
        expect(updated).toEqual({ ...device, certFingerprint: FP_C, keyFingerprint: FP_A });
        expect(await store.getDevice(device.id)).toEqual(updated);
        await expectCode(store.updateDeviceCert('dev_aaaaaaaaaaaaaaaa', { certFingerprint: FP_C, keyFingerprint: FP_A }), 'PW_UNKNOWN_DEVICE');
        await store.revokeDevice(device.id);
        await expectCode(store.updateDeviceCert(device.id, { certFingerprint: FP_A, keyFingerprint: FP_A }), 'PW_UNKNOWN_DEVICE');
      });

      it('revokes idempotently, keeping the first time, and hides revoked devices from findDevices', async () => {
        const device = await store.createDevice({ name: 'pi', certFingerprint: FP_A, keyFingerprint: FP_B });
        const revokedAt = clock;
        expect(await store.revokeDevice(device.id)).toBe(true);
        clock += 1000;
        expect(await store.revokeDevice(device.id)).toBe(true);
        expect(await store.getDevice(device.id)).toEqual({ ...device, revokedAt });
        expect(await store.findDevices('pi')).toEqual([]);
        expect(await store.findDevices(device.id)).toEqual([]);
        expect(await store.listDevices()).toEqual([{ ...device, revokedAt }]);
        expect(await store.countActiveDevices()).toBe(0);
        expect(await store.revokeDevice('dev_aaaaaaaaaaaaaaaa')).toBe(false);
      });

      it('lists devices revoked since a time and finds the revoked device of a key', async () => {
        const kept = await store.createDevice({ name: 'kept', certFingerprint: FP_A, keyFingerprint: FP_A });
        const early = await store.createDevice({ name: 'early', certFingerprint: FP_B, keyFingerprint: FP_B });
        const late = await store.createDevice({ name: 'late', certFingerprint: FP_C, keyFingerprint: FP_C });
        const earlyAt = clock;
        await store.revokeDevice(early.id);
        clock += 1000;
        const lateAt = clock;
        await store.revokeDevice(late.id);
        expect(await store.listRevokedDevices(earlyAt)).toEqual([{ ...early, revokedAt: earlyAt }, { ...late, revokedAt: lateAt }]);
        expect(await store.listRevokedDevices(lateAt)).toEqual([{ ...late, revokedAt: lateAt }]);
        expect(await store.listRevokedDevices(lateAt + 1)).toEqual([]);
        expect(await store.findRevokedKey(FP_B)).toEqual({ ...early, revokedAt: earlyAt });
        expect(await store.findRevokedKey(FP_A)).toBeUndefined(); // its device is not revoked
        expect(await store.findRevokedKey('not a fingerprint')).toBeUndefined();
        expect(await store.getDevice(kept.id)).toEqual(kept);
      });

      it('refuses unknown owners with PW_NOT_FOUND and bad arguments synchronously', async () => {
        await expectCode(store.createDevice({ name: 'pi', ownerUserId: 'usr_aaaaaaaaaaaaaaaa', certFingerprint: FP_A, keyFingerprint: FP_B }), 'PW_NOT_FOUND');
        const good = { name: 'pi', certFingerprint: FP_A, keyFingerprint: FP_B };
        for (const bad of [
          { ...good, name: 'bad name' },
          { ...good, id: 'usr_aaaaaaaaaaaaaaaa' },
          { ...good, ownerUserId: 'owner' },
          { ...good, certFingerprint: 'A'.repeat(64) },
          { ...good, keyFingerprint: 'abc' },
        ]) {
          expect(() => store.createDevice(bad)).toThrow(TypeError);
        }
        expect(() => store.updateDeviceCert('dev_aaaaaaaaaaaaaaaa', { certFingerprint: 'x', keyFingerprint: FP_A })).toThrow(TypeError);
        expect(await store.listDevices()).toEqual([]);
      });

      it('answers nothing for garbage lookups', async () => {
        await store.createDevice({ name: 'pi', certFingerprint: FP_A, keyFingerprint: FP_B });
        for (const garbage of GARBAGE_STRINGS) {
          expect(await store.getDevice(garbage)).toBeUndefined();
          expect(await store.findDevices(garbage)).toEqual([]);
        }
      });
    });

    describe('user certificates', () => {
      it('records, gets and revokes user certificates', async () => {
        const alice = await store.createUser('alice');
        const cert = await store.recordUserCert(alice.id, FP_A, FP_B);
        expect(cert).toEqual({ fingerprint: FP_A, userId: alice.id, keyFingerprint: FP_B, createdAt: clock });
        expect(cert.token).toBeUndefined();
        expect(await store.recordUserCert(alice.id, FP_A, FP_B)).toEqual(cert);
        expect(await store.getUserCert(FP_A)).toEqual(cert);
        const revokedAt = clock;
        expect(await store.revokeUserCert(FP_A)).toBe(true);
        expect(await store.getUserCert(FP_A)).toEqual({ ...cert, revokedAt });
        expect(await store.revokeUserCert(FP_C)).toBe(false);
        await expectCode(store.recordUserCert('usr_aaaaaaaaaaaaaaaa', FP_C, FP_B), 'PW_NOT_FOUND');
        for (const garbage of GARBAGE_STRINGS) expect(await store.getUserCert(garbage)).toBeUndefined();
      });
    });

    describeStoreContractMore(factory, () => ({ store, clock, setClock: (ms: number) => (clock = ms) }));
    describeClaimContract(() => ({ store, clock, setClock: (ms: number) => (clock = ms) }));
    describeGrantContract(factory, () => ({ store, clock, setClock: (ms: number) => (clock = ms) }));

    describe('close', () => {
      it('is idempotent and makes later calls reject with PW_SHUTTING_DOWN', async () => {
        await store.close();
        await store.close();
        await expectCode(store.listUsers(), 'PW_SHUTTING_DOWN');
        await expectCode(store.authenticateToken('pwt_x'), 'PW_SHUTTING_DOWN');
      });
    });
  });
}
