/**
 * Who may reach which device: the one place the rule lives (the data plane, the HTTP API and later
 * sharing all ask here). Today: admins reach every device, users the devices they own.
 */
import type { Device, User } from './store';

export function canReach(user: User, device: Device): boolean {
  return device.revokedAt === undefined && (user.isAdmin || device.ownerUserId === user.id);
}
