/**
 * Removing a device (`portway device remove DEVICE`):
 *
 *   DELETE /v1/devices/:nameOrId   -> { ok: true, deviceId }   (owner or admin; scope connect)
 *
 * Revokes the device for good (DeviceRevocations): its MQTT session and open streams end at once, its
 * certificates and its key are refused from then on (PW_DEVICE_REVOKED), and it leaves device lists. Audited
 * (`device.revoke`), refusals included. A device the caller cannot see answers PW_UNKNOWN_DEVICE, one shared
 * with them PW_NOT_AUTHORIZED.
 */
import { PortwayError } from '../../../protocol';
import { canManageShares, canReach } from '../access';
import type { DeviceRevocations } from '../control/device-revocations';
import type { Device, Store } from '../store';
import { pathSegment, requireScope, type ApiReply, type ApiRequest } from './api-route';

export function deviceRoutes(deps: { store: Store; revocations: DeviceRevocations }): (req: ApiRequest) => Promise<ApiReply | undefined> {
  const { store, revocations } = deps;
  return async (req) => {
    const match = /^\/v1\/devices\/([^/]{1,200})$/.exec(req.path);
    if (req.method !== 'DELETE' || !match) return undefined;
    const user = req.auth.user;
    const nameOrId = pathSegment(match[1] as string);
    const refuse = async (code: 'PW_UNKNOWN_DEVICE' | 'PW_NOT_AUTHORIZED' | 'PW_SCOPE_INSUFFICIENT' | 'PW_BAD_REQUEST', message: string, target?: string): Promise<never> => {
      await store.appendAudit({ actor: user.id, action: 'device.revoke', target: target ?? nameOrId.slice(0, 64), source: req.source, outcome: code });
      throw new PortwayError(code, message);
    };
    try {
      requireScope(req.auth, 'connect');
    } catch (err) {
      return refuse('PW_SCOPE_INSUFFICIENT', (err as Error).message);
    }
    const found = await store.findDevices(nameOrId);
    const managed = found.filter((d) => canManageShares(user, d));
    if (managed.length > 1) return refuse('PW_BAD_REQUEST', 'several devices have this name; use the device ID');
    const device = managed[0];
    if (!device) {
      const shares = await Promise.all(found.map((d) => store.getShare(d.id, user.id)));
      const shared = found.find((d, i) => canReach(user, d, shares[i]));
      if (shared) return refuse('PW_NOT_AUTHORIZED', 'only the owner of a device or an admin may remove it', shared.id);
      return refuse('PW_UNKNOWN_DEVICE', `no device named ${JSON.stringify(nameOrId)}`);
    }
    await revocations.revoke(device as Device, { actor: user.id, source: req.source });
    return { status: 200, body: { ok: true, deviceId: device.id } };
  };
}
