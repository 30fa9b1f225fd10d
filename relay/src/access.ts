/**
 * Who may reach which device and service: the one place the rule lives (the data plane, the HTTP API and
 * sharing all ask here). Admins reach every device; a user reaches the devices they own, and a device shared
 * with them, every service or only the shared ones. Revoked devices are reached by nobody.
 * Who may change a device's shares: its owner and admins.
 */
import { PortwayError } from '../../protocol';
import type { Device, Share, User, UserCert } from './store';

/** `share`: the device's share with this user, if any. `service`: the service a stream is for; absent = any service. */
export function canReach(user: User, device: Device, share?: Share, service?: string): boolean {
  if (device.revokedAt !== undefined) return false;
  if (user.isAdmin || device.ownerUserId === user.id) return true;
  if (!share || share.deviceId !== device.id || share.userId !== user.id) return false;
  return service === undefined || share.services === undefined || share.services.includes(service);
}

/** The services of `device` this user sees: all of them, or those in their share. */
export function reachableServices<S extends { readonly name: string }>(user: User, device: Device, share: Share | undefined, services: readonly S[]): S[] {
  return services.filter((s) => canReach(user, device, share, s.name));
}

export function canManageShares(user: User, device: Device): boolean {
  return device.revokedAt === undefined && (user.isAdmin || device.ownerUserId === user.id);
}

/**
 * A user certificate is bound to the API token it was issued with (at `portway login`): opening a stream
 * needs that token unrevoked, unexpired and of scope `connect`. Certificates recorded before tokens had
 * scopes (no token on record) keep the `connect` rights they were issued with.
 */
export function checkCertToken(cert: UserCert, now: number): void {
  const token = cert.token;
  if (!token) return;
  if (token.revokedAt !== undefined) throw new PortwayError('PW_TOKEN_REVOKED', 'the token this certificate was issued with was revoked; log in again');
  if (token.expiresAt !== undefined && token.expiresAt <= now) throw new PortwayError('PW_TOKEN_EXPIRED', 'the token this certificate was issued with has expired; log in again');
  if (token.scope !== 'connect') throw new PortwayError('PW_SCOPE_INSUFFICIENT', `this certificate was issued with a ${token.scope} token; opening streams needs scope connect`);
}

/**
 * A device certificate that chains to the relay CA (checked by the TLS front) is accepted for its device when the
 * device exists, is not revoked, and the certificate carries the device's recorded key. The key, not the
 * certificate, is what identifies a device: renewals (cert-renewal.ts) issue new certificates for the same key,
 * and the previous one stays usable until it expires, so a renewal never strands a connection. PW_UNAUTHENTICATED
 * for an unknown device or another key; PW_DEVICE_REVOKED for a removed device.
 */
export function checkDeviceCert(device: Device | undefined, peer: { readonly keyFingerprint?: string }): Device {
  if (!device) throw new PortwayError('PW_UNAUTHENTICATED', 'device unknown');
  if (device.revokedAt !== undefined) throw new PortwayError('PW_DEVICE_REVOKED', 'this device was removed');
  if (peer.keyFingerprint === undefined || device.keyFingerprint !== peer.keyFingerprint) throw new PortwayError('PW_UNAUTHENTICATED', 'device certificate for a key other than the recorded one');
  return device;
}
