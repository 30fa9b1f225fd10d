/**
 * The Store contract for device claims: registration is idempotent for the same device and refused for
 * another, offers are exclusive (of racing claimers exactly one wins), expired and used codes are refused
 * with their own codes, a withdrawn offer counts a failure, completion is atomic with the device row.
 * Run from describeStoreContract (store-contract.ts), inside its beforeEach/afterEach.
 */
import { PortwayError, type ErrorCode } from '../../protocol';
import type { NewClaim } from '../../relay/src/store';
import type { ContractContext } from './store-contract-more';

const HOUR_MS = 3_600_000;
const RACERS = 20;
const FP = (c: string): string => c.repeat(64);

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await expect(promise).rejects.toBeInstanceOf(PortwayError);
  await expect(promise).rejects.toMatchObject({ code });
}

export function describeClaimContract(ctx: () => ContractContext): void {
  describe('device claims', () => {
    const claim = (overrides: Partial<NewClaim> = {}): NewClaim => ({
      claimId: 'ABCD123', name: 'pi1', csr: 'csr-pem', deviceKey: 'a2V5', keyFingerprint: FP('a'), pollHash: FP('b'), expiresAt: ctx().clock + HOUR_MS, ...overrides,
    });
    const offer = (userId: string, offerId = 'offer1') => ({ offerId, userId, ownerKey: 'b3duZXI=', ownerTag: 't'.repeat(43) + '=' });

    it('registers once; the same device again gets its row, another key or poll token PW_CLAIM_ID_TAKEN', async () => {
      const { store, clock } = ctx();
      const first = await store.registerClaim(claim());
      expect(first).toEqual({ claimId: 'ABCD123', name: 'pi1', csr: 'csr-pem', deviceKey: 'a2V5', keyFingerprint: FP('a'), pollHash: FP('b'), state: 'pending', createdAt: clock, expiresAt: clock + HOUR_MS, failures: 0 });
      expect(await store.registerClaim(claim())).toEqual(first);
      await expectCode(store.registerClaim(claim({ keyFingerprint: FP('c') })), 'PW_CLAIM_ID_TAKEN');
      await expectCode(store.registerClaim(claim({ pollHash: FP('c') })), 'PW_CLAIM_ID_TAKEN');
      expect(await store.getClaim('ABCD123')).toEqual(first);
      for (const garbage of ['', 'abcd123', 'ABCD12', "' OR 1=1", '\u0000'.repeat(7), 'x'.repeat(10_000)]) expect(await store.getClaim(garbage)).toBeUndefined();
      expect(() => store.registerClaim(claim({ claimId: 'ILOU123' }))).toThrow(TypeError);
    });

    it('of racing offers exactly one wins; the others get PW_CLAIM_IN_PROGRESS', async () => {
      const { store } = ctx();
      const users = await Promise.all(Array.from({ length: RACERS }, (_, i) => store.createUser(`racer${i}`)));
      await store.registerClaim(claim());
      const results = await Promise.allSettled(users.map((u, i) => store.offerClaim('ABCD123', offer(u.id, `offer${i}`), 0)));
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as PortwayError).code).toBe('PW_CLAIM_IN_PROGRESS');
    });

    it('answers, withdraws (a failure), completes atomically with the device row; then PW_CLAIM_USED', async () => {
      const { store, clock } = ctx();
      const alice = await store.createUser('alice');
      await store.registerClaim(claim());
      await expectCode(store.offerClaim('ZZZZ999', offer(alice.id), 0), 'PW_CLAIM_NOT_FOUND');
      await store.offerClaim('ABCD123', offer(alice.id), 0);
      expect(await store.answerClaim('ABCD123', 'other', { ok: true })).toBe(false);
      expect(await store.answerClaim('ABCD123', 'offer1', { ok: false, code: 'PW_CLAIM_BINDING_FAILED' })).toBe(true);
      expect(await store.answerClaim('ABCD123', 'offer1', { ok: true })).toBe(false);
      expect((await store.getClaim('ABCD123'))?.offer?.answer).toEqual({ ok: false, code: 'PW_CLAIM_BINDING_FAILED' });
      expect(await store.withdrawClaimOffer('ABCD123', 'offer1')).toBe(true);
      expect(await store.getClaim('ABCD123')).toMatchObject({ state: 'pending', failures: 1 });
      expect((await store.getClaim('ABCD123'))?.offer).toBeUndefined();

      await store.offerClaim('ABCD123', { ...offer(alice.id, 'offer2'), name: 'garden' }, 0);
      await expectCode(store.completeClaim('ABCD123', 'offer1', { id: 'dev_aaaaaaaaaaaaaaaa', name: 'garden', ownerUserId: alice.id, certFingerprint: FP('c'), keyFingerprint: FP('a'), certificate: 'pem' }), 'PW_CLAIM_IN_PROGRESS');
      expect(await store.getDevice('dev_aaaaaaaaaaaaaaaa')).toBeUndefined();
      const device = await store.completeClaim('ABCD123', 'offer2', { id: 'dev_aaaaaaaaaaaaaaaa', name: 'garden', ownerUserId: alice.id, certFingerprint: FP('c'), keyFingerprint: FP('a'), certificate: 'pem' });
      expect(device).toEqual({ id: 'dev_aaaaaaaaaaaaaaaa', name: 'garden', ownerUserId: alice.id, certFingerprint: FP('c'), keyFingerprint: FP('a'), createdAt: clock });
      expect(await store.getClaim('ABCD123')).toMatchObject({ state: 'claimed', deviceId: device.id, certificate: 'pem', claimedAt: clock });
      await expectCode(store.offerClaim('ABCD123', offer(alice.id, 'offer3'), Number.MAX_SAFE_INTEGER), 'PW_CLAIM_USED');
      expect(await store.withdrawClaimOffer('ABCD123', 'offer2')).toBe(false);
    });

    it('refuses expired codes with PW_CLAIM_EXPIRED; a stale offer may be taken over, a fresh one not', async () => {
      const { store } = ctx();
      const alice = await store.createUser('alice');
      const bob = await store.createUser('bob');
      await store.registerClaim(claim());
      const start = ctx().clock;
      await store.offerClaim('ABCD123', offer(alice.id), 0);
      await expectCode(store.offerClaim('ABCD123', offer(bob.id, 'offer2'), start), 'PW_CLAIM_IN_PROGRESS');
      ctx().setClock(start + 1000);
      expect((await store.offerClaim('ABCD123', offer(bob.id, 'offer2'), start + 500)).offer).toMatchObject({ offerId: 'offer2', userId: bob.id });
      expect(await store.answerClaim('ABCD123', 'offer1', { ok: true })).toBe(false);
      await store.withdrawClaimOffer('ABCD123', 'offer2');
      ctx().setClock(start + HOUR_MS);
      await expectCode(store.offerClaim('ABCD123', offer(alice.id, 'offer3'), 0), 'PW_CLAIM_EXPIRED');
    });
  });
}
