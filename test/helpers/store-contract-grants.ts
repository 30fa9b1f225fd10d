/**
 * The Store contract for owner grant sets: the stored set only moves to a higher sequence number (a replayed or
 * older set is PW_GRANT_STALE, racing writers leave the highest), it survives a reopen, the owner key of a claimed
 * device comes from its claim, and a user's certificates are listed. Run from describeStoreContract.
 */
import { PortwayError, type ErrorCode } from '../../protocol';
import type { StoreFactory } from './store-contract';
import type { ContractContext } from './store-contract-more';

const FP = (c: string): string => c.repeat(64);
const RACERS = 20;
const GARBAGE: readonly string[] = ['', "' OR 1=1 --", '%', 'dev_%', '\u0000', 'x'.repeat(100_000), 'dev_aaaaaaaaaaaaaaaa', 'usr_aaaaaaaaaaaaaaaa'];

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await expect(promise).rejects.toBeInstanceOf(PortwayError);
  await expect(promise).rejects.toMatchObject({ code });
}

export function describeGrantContract(factory: StoreFactory, ctx: () => ContractContext): void {
  describe('owner grant sets', () => {
    it('stores a set, replaces it only with a higher seq; replays and older sets are PW_GRANT_STALE', async () => {
      const { store, clock } = ctx();
      const alice = await store.createUser('alice');
      const device = await store.createDevice({ name: 'pi1', ownerUserId: alice.id, certFingerprint: FP('a'), keyFingerprint: FP('b') });
      expect(await store.getDeviceGrants(device.id)).toBeUndefined();
      const first = await store.putDeviceGrants({ deviceId: device.id, seq: 1, grants: '{"one":1}', updatedBy: alice.id });
      expect(first).toEqual({ deviceId: device.id, seq: 1, grants: '{"one":1}', updatedAt: clock, updatedBy: alice.id });
      expect(await store.getDeviceGrants(device.id)).toEqual(first);
      await expectCode(store.putDeviceGrants({ deviceId: device.id, seq: 1, grants: '{"other":1}', updatedBy: alice.id }), 'PW_GRANT_STALE');
      await store.putDeviceGrants({ deviceId: device.id, seq: 5, grants: '{"five":5}', updatedBy: alice.id });
      await expectCode(store.putDeviceGrants({ deviceId: device.id, seq: 4, grants: '{"four":4}', updatedBy: alice.id }), 'PW_GRANT_STALE');
      expect(await store.getDeviceGrants(device.id)).toMatchObject({ seq: 5, grants: '{"five":5}' });
      await expectCode(store.putDeviceGrants({ deviceId: 'dev_aaaaaaaaaaaaaaaa', seq: 1, grants: '{}', updatedBy: alice.id }), 'PW_UNKNOWN_DEVICE');
      for (const garbage of GARBAGE) expect(await store.getDeviceGrants(garbage)).toBeUndefined();
      expect(() => store.putDeviceGrants({ deviceId: device.id, seq: 0, grants: '{}', updatedBy: alice.id })).toThrow(RangeError);
      expect(() => store.putDeviceGrants({ deviceId: device.id, seq: 2 ** 60, grants: '{}', updatedBy: alice.id })).toThrow(RangeError);
      expect(() => store.putDeviceGrants({ deviceId: device.id, seq: 6, grants: 'x'.repeat(70_000), updatedBy: alice.id })).toThrow(RangeError);
      expect(() => store.putDeviceGrants({ deviceId: 'pi1', seq: 6, grants: '{}', updatedBy: alice.id })).toThrow(TypeError);
    });

    it('of racing writers the highest seq stays, whatever the order', async () => {
      const { store } = ctx();
      const alice = await store.createUser('alice');
      const device = await store.createDevice({ name: 'pi1', ownerUserId: alice.id, certFingerprint: FP('a'), keyFingerprint: FP('b') });
      const seqs = Array.from({ length: RACERS }, (_, i) => ((i * 7) % RACERS) + 1);
      const results = await Promise.allSettled(seqs.map((seq) => store.putDeviceGrants({ deviceId: device.id, seq, grants: `{"seq":${seq}}`, updatedBy: alice.id })));
      expect(results.some((r) => r.status === 'fulfilled')).toBe(true);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'PW_GRANT_STALE' });
      expect(await store.getDeviceGrants(device.id)).toMatchObject({ seq: RACERS, grants: `{"seq":${RACERS}}` });
    });

    it("knows a claimed device's owner key, and lists a user's certificates newest first", async () => {
      const { store, setClock, clock } = ctx();
      const alice = await store.createUser('alice');
      await store.registerClaim({ claimId: 'ABCD123', name: 'pi1', csr: 'csr', deviceKey: 'a2V5', keyFingerprint: FP('a'), pollHash: FP('b'), expiresAt: clock + 3_600_000 });
      await store.offerClaim('ABCD123', { offerId: 'o1', userId: alice.id, ownerKey: 'b3duZXI=', ownerTag: 't'.repeat(43) + '=' }, 0);
      await store.answerClaim('ABCD123', 'o1', { ok: true, deviceTag: 'tag' });
      const claimed = await store.completeClaim('ABCD123', 'o1', { id: 'dev_bbbbbbbbbbbbbbbb', name: 'pi1', ownerUserId: alice.id, certFingerprint: FP('c'), keyFingerprint: FP('a'), certificate: 'pem' });
      const enrolled = await store.createDevice({ name: 'pi2', ownerUserId: alice.id, certFingerprint: FP('d'), keyFingerprint: FP('e') });
      expect(await store.getClaimOwnerKey(claimed.id)).toBe('b3duZXI=');
      expect(await store.getClaimOwnerKey(enrolled.id)).toBeUndefined();
      for (const garbage of GARBAGE) expect(await store.getClaimOwnerKey(garbage)).toBeUndefined();
      expect(await store.listUserCerts(alice.id)).toEqual([]);
      await store.recordUserCert(alice.id, FP('1'), FP('7'));
      setClock(clock + 1000);
      await store.recordUserCert(alice.id, FP('2'), FP('8'));
      await store.revokeUserCert(FP('1'));
      const certs = await store.listUserCerts(alice.id);
      expect(certs.map((c) => [c.fingerprint, c.keyFingerprint, c.revokedAt !== undefined])).toEqual([[FP('2'), FP('8'), false], [FP('1'), FP('7'), true]]);
      expect(() => store.listUserCerts('alice')).toThrow(TypeError);
      // Revocations since a time, a revoked token's certificates included.
      const { tokenId } = await store.createToken(alice.id);
      await store.recordUserCert(alice.id, FP('3'), FP('9'), { tokenId });
      setClock(clock + 5000);
      await store.revokeToken(tokenId);
      expect((await store.listRevokedUserCerts(clock)).map((c) => c.fingerprint)).toEqual([FP('1'), FP('3')]);
      expect((await store.listRevokedUserCerts(clock + 1001)).map((c) => [c.fingerprint, c.revokedAt, c.token?.id])).toEqual([[FP('3'), clock + 5000, tokenId]]);
      expect(await store.listRevokedUserCerts(clock + 5001)).toEqual([]);
      expect(() => store.listRevokedUserCerts(Number.NaN)).toThrow(TypeError);
    });

    it('keeps grant sets across a reopen (a relay restart)', async () => {
      if (!factory.reopen) return;
      const { store, clock } = ctx();
      const alice = await store.createUser('alice');
      const device = await store.createDevice({ name: 'pi1', ownerUserId: alice.id, certFingerprint: FP('a'), keyFingerprint: FP('b') });
      await store.putDeviceGrants({ deviceId: device.id, seq: 3, grants: '{"three":3}', updatedBy: alice.id });
      await store.close();
      const again = await factory.reopen({ now: () => clock });
      try {
        expect(await again.getDeviceGrants(device.id)).toEqual({ deviceId: device.id, seq: 3, grants: '{"three":3}', updatedAt: clock, updatedBy: alice.id });
        await expectCode(again.putDeviceGrants({ deviceId: device.id, seq: 2, grants: '{}', updatedBy: alice.id }), 'PW_GRANT_STALE');
      } finally {
        await again.close();
      }
    });
  });
}
