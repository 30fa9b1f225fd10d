/** The one access rule (relay/src/access.ts): owners, admins, shares with and without services, revoked devices, token-bound certificates. */
import { canManageShares, canReach, checkCertToken, reachableServices } from '../../relay/src/access';
import type { ApiToken, Device, Share, User, UserCert } from '../../relay/src/store';

const user = (id: string, isAdmin = false): User => ({ id, name: id, isAdmin, createdAt: 0 });
const owner = user('usr_owner0000000000');
const bob = user('usr_bob00000000000a');
const admin = user('usr_admin0000000000', true);
const device: Device = { id: 'dev_aaaaaaaaaaaaaaaa', name: 'pi', ownerUserId: owner.id, certFingerprint: 'a'.repeat(64), keyFingerprint: 'b'.repeat(64), createdAt: 0 };
const revoked: Device = { ...device, revokedAt: 1 };
const shareAll: Share = { deviceId: device.id, userId: bob.id, createdAt: 0, createdBy: owner.id };
const shareSsh: Share = { ...shareAll, services: ['ssh'] };
const services = [{ name: 'ssh' }, { name: 'web' }];

describe('canReach', () => {
  it.each([
    ['owner, any service', owner, device, undefined, undefined, true],
    ['owner, a service', owner, device, undefined, 'web', true],
    ['admin', admin, device, undefined, 'web', true],
    ['stranger', bob, device, undefined, undefined, false],
    ['stranger, a service', bob, device, undefined, 'ssh', false],
    ['shared all, any service', bob, device, shareAll, 'web', true],
    ['shared ssh, device', bob, device, shareSsh, undefined, true],
    ['shared ssh, ssh', bob, device, shareSsh, 'ssh', true],
    ['shared ssh, web', bob, device, shareSsh, 'web', false],
    ['share of another device', bob, device, { ...shareAll, deviceId: 'dev_bbbbbbbbbbbbbbbb' }, 'ssh', false],
    ['share for another user', bob, device, { ...shareAll, userId: owner.id }, 'ssh', false],
    ['revoked device, owner', owner, revoked, undefined, undefined, false],
    ['revoked device, admin', admin, revoked, undefined, undefined, false],
    ['revoked device, shared', bob, revoked, shareAll, 'ssh', false],
  ] as const)('%s', (_name, who, what, share, service, expected) => {
    expect(canReach(who, what, share, service)).toBe(expected);
  });

  it('lists only the shared services of a shared device, all of them for owners and admins', () => {
    expect(reachableServices(bob, device, shareSsh, services)).toEqual([{ name: 'ssh' }]);
    expect(reachableServices(bob, device, shareAll, services)).toEqual(services);
    expect(reachableServices(owner, device, undefined, services)).toEqual(services);
    expect(reachableServices(bob, device, undefined, services)).toEqual([]);
  });

  it('lets only owners and admins manage shares', () => {
    expect(canManageShares(owner, device)).toBe(true);
    expect(canManageShares(admin, device)).toBe(true);
    expect(canManageShares(bob, device)).toBe(false);
    expect(canManageShares(owner, revoked)).toBe(false);
  });
});

describe('checkCertToken', () => {
  const token: ApiToken = { id: 'tok_aaaaaaaaaaaaaaaa', userId: bob.id, scope: 'connect', createdAt: 0, expiresAt: 1000 };
  const cert = (t?: ApiToken): UserCert => ({ fingerprint: 'c'.repeat(64), userId: bob.id, keyFingerprint: 'd'.repeat(64), createdAt: 0, ...(t ? { token: t } : {}) });

  it('passes a connect token before its expiry and certificates without a token', () => {
    expect(() => checkCertToken(cert(token), 999)).not.toThrow();
    expect(() => checkCertToken(cert({ ...token, expiresAt: undefined }), 10 ** 15)).not.toThrow();
    expect(() => checkCertToken(cert(), 10 ** 15)).not.toThrow();
  });

  it('refuses revoked, expired and read tokens with their codes, revocation first', () => {
    expect(() => checkCertToken(cert(token), 1000)).toThrow(expect.objectContaining({ code: 'PW_TOKEN_EXPIRED' }));
    expect(() => checkCertToken(cert({ ...token, scope: 'read' }), 0)).toThrow(expect.objectContaining({ code: 'PW_SCOPE_INSUFFICIENT' }));
    expect(() => checkCertToken(cert({ ...token, scope: 'read', revokedAt: 5 }), 2000)).toThrow(expect.objectContaining({ code: 'PW_TOKEN_REVOKED' }));
  });
});
