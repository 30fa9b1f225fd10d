/**
 * Owner grant sets (docs/security.md "Grants", protocol/grants.ts) and the keys they name:
 *
 *   GET /v1/devices/:nameOrId/grants  -> { deviceId, deviceName, ownerKey?, grants?, seq }   (owner or admin; scope read)
 *   PUT /v1/devices/:nameOrId/grants  { grants: SignedGrantSet } -> { ok, seq, delivered }  (owner or admin; scope connect)
 *   GET /v1/users/:name/keys          -> { userId, userName, keys: [{ fingerprint, since }] }  (any user; scope read)
 *
 * `ownerKey` is the SHA-256 of the key pinned when the device was claimed (absent: enrolled with a fleet key; such
 * devices take no grants). PUT checks what the device will check (the document is for this device and signed by
 * that owner key: PW_GRANT_INVALID; its seq above the stored one: PW_GRANT_STALE), stores it, audits
 * `device.grants`, and sends it to the device when online. The relay's checks only keep junk out of the store: the
 * device trusts the signature, not the relay. A user's keys are those of their certificates not revoked and issued
 * within userCertValidityMs; the relay could lie about them, which is why `portway share` prints them and takes
 * `--key-fingerprint`.
 */
import * as z from 'zod';
import { PortwayError, signedGrantSetSchema } from '../../../protocol';
import { verifyGrantSet } from '../../../shared/grant-signature';
import { spkiFingerprint } from '../../../shared/x509';
import type { GrantDelivery } from '../control/grant-delivery';
import type { Device, Store, User } from '../store';
import { findManagedDevice } from './managed-device';
import { audited, parseBody, pathSegment, requireScope, type ApiReply, type ApiRequest } from './api-route';

const putSchema = z.object({ grants: signedGrantSetSchema });

export function grantRoutes(deps: { store: Store; delivery?: GrantDelivery; now: () => number; userCertValidityMs: number }): (req: ApiRequest) => Promise<ApiReply | undefined> {
  const { store } = deps;

  const managedDevice = (user: User, nameOrId: string): Promise<Device> => findManagedDevice(store, user, nameOrId, "only the owner of a device or an admin may see or change its grants");

  const ownerKeyOf = async (device: Device): Promise<string | undefined> => {
    const key = await store.getClaimOwnerKey(device.id);
    return key === undefined ? undefined : spkiFingerprint(Buffer.from(key, 'base64'));
  };

  return async (req) => {
    const caller = req.auth.user;
    const grantsPath = /^\/v1\/devices\/([^/]{1,200})\/grants$/.exec(req.path);
    if (grantsPath && req.method === 'GET') {
      const device = await managedDevice(caller, pathSegment(grantsPath[1] as string));
      const ownerKey = await ownerKeyOf(device);
      const stored = await store.getDeviceGrants(device.id);
      const grants = stored === undefined ? undefined : parseStored(stored.grants);
      return { status: 200, body: { deviceId: device.id, deviceName: device.name, ...(ownerKey ? { ownerKey } : {}), seq: stored?.seq ?? 0, ...(grants === undefined ? {} : { grants }) } };
    }
    if (grantsPath && req.method === 'PUT') {
      const nameOrId = pathSegment(grantsPath[1] as string);
      return audited(store, { actor: caller.id, action: 'device.grants', target: nameOrId.slice(0, 64).replace(/[^\x20-\x7e]/g, '?') || '?', source: req.source }, async () => {
        requireScope(req.auth, 'connect');
        const body = await parseBody(req, putSchema);
        const device = await managedDevice(caller, nameOrId);
        const ownerKey = await ownerKeyOf(device);
        if (!ownerKey) throw new PortwayError('PW_BAD_REQUEST', `${device.name} was not claimed with a claim code: it has no owner key to check grants with (the relay's shares alone apply)`);
        const { document } = verifyGrantSet(body.grants, { deviceId: device.id, ownerKeys: new Set([ownerKey]) });
        await store.putDeviceGrants({ deviceId: device.id, seq: document.seq, grants: JSON.stringify(body.grants), updatedBy: caller.id });
        const delivered = (await deps.delivery?.deliver(device.id)) ?? false;
        return { status: 200, body: { ok: true, deviceId: device.id, seq: document.seq, delivered } };
      });
    }
    const keysPath = /^\/v1\/users\/([^/]{1,200})\/keys$/.exec(req.path);
    if (keysPath && req.method === 'GET') {
      const name = pathSegment(keysPath[1] as string);
      const user = await store.getUserByName(name.slice(0, 64));
      if (!user) throw new PortwayError('PW_NOT_FOUND', `no user named ${JSON.stringify(name.slice(0, 64))}`);
      const since = deps.now() - deps.userCertValidityMs;
      const keys = new Map<string, number>();
      for (const cert of await store.listUserCerts(user.id)) {
        if (cert.revokedAt !== undefined || cert.createdAt < since || keys.has(cert.keyFingerprint)) continue;
        keys.set(cert.keyFingerprint, cert.createdAt);
      }
      return { status: 200, body: { userId: user.id, userName: user.name, keys: [...keys].map(([fingerprint, at]) => ({ fingerprint, since: at })) } };
    }
    return undefined;
  };
}

/** A stored set as JSON, or undefined for a damaged row (the owner's client then builds on its own copy). */
function parseStored(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // A row changed behind the relay's back (it only ever stores JSON): answered as no set.
    return undefined;
  }
}
