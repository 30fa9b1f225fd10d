/**
 * The one device a request names (by name or ID) that the calling user may manage: its owner or an admin.
 * Several such devices with that name: PW_BAD_REQUEST (use the ID). A device the user can reach but not
 * manage (shared with them): PW_NOT_AUTHORIZED with `why`. Anything else is answered as a device that does
 * not exist (PW_UNKNOWN_DEVICE), so the API does not tell which devices exist.
 */
import { PortwayError } from '../../../protocol';
import { canManageShares, canReach } from '../access';
import type { Device, Store, User } from '../store';

export async function findManagedDevice(store: Store, user: User, nameOrId: string, why: string): Promise<Device> {
  const found = await store.findDevices(nameOrId);
  const managed = found.filter((d) => canManageShares(user, d));
  if (managed.length > 1) throw new PortwayError('PW_BAD_REQUEST', 'several devices have this name; use the device ID');
  if (managed.length === 1) return managed[0] as Device;
  const shares = await Promise.all(found.map((d) => store.getShare(d.id, user.id)));
  if (found.some((d, i) => canReach(user, d, shares[i]))) throw new PortwayError('PW_NOT_AUTHORIZED', why);
  throw new PortwayError('PW_UNKNOWN_DEVICE', `no device named ${JSON.stringify(nameOrId)}`);
}
