/**
 * Sharing a device with another user, every service or only some:
 *
 *   GET    /v1/shares?device=NAME_OR_ID                  -> { shares: ShareView[] }   (owner or admin; scope read)
 *   GET    /v1/shares                                    -> { shares: ShareView[] }   (devices shared with the caller)
 *   POST   /v1/shares  { device, user, services? }       -> ShareView                 (owner or admin; scope connect)
 *   DELETE /v1/shares/:device/:user                      -> { ok: true }              (owner or admin; scope connect)
 *
 * POST replaces an existing share of that device with that user. DELETE also ends that user's streams to the
 * device on this relay. Changes are audited, refusals included. The relay enforces shares (access.ts canReach);
 * on a claimed device the owner's signed grants (grant-routes.ts) are what the device itself enforces.
 */
import * as z from 'zod';
import { nameSchema, PortwayError } from '../../../protocol';
import { MAX_SHARED_SERVICES, type Device, type Share, type Store, type User } from '../store';
import { findManagedDevice } from './managed-device';
import { audited, parseBody, pathSegment, requireScope, type ApiReply, type ApiRequest } from './api-route';
import type { ClientStreams } from './token-routes';

const shareSchema = z.object({ device: nameSchema, user: nameSchema, services: z.array(nameSchema).min(1).max(MAX_SHARED_SERVICES).optional() });

export interface ShareView {
  readonly deviceId: string;
  readonly deviceName: string;
  readonly userId: string;
  readonly userName: string;
  readonly services?: readonly string[];
  readonly createdAt: number;
  readonly createdBy: string;
}

export function shareRoutes(deps: { store: Store; streams?: ClientStreams }): (req: ApiRequest) => Promise<ApiReply | undefined> {
  const { store } = deps;

  /** The one device `nameOrId` names that `user` may manage shares of. */
  const managedDevice = (user: User, nameOrId: string): Promise<Device> => findManagedDevice(store, user, nameOrId, 'only the owner of a device or an admin may change its shares');

  const userNamed = async (name: string): Promise<User> => {
    const user = await store.getUserByName(name);
    if (!user) throw new PortwayError('PW_NOT_FOUND', `no user named ${name}`);
    return user;
  };

  const view = async (share: Share, device?: Device, user?: User): Promise<ShareView> => {
    const d = device ?? (await store.getDevice(share.deviceId));
    const u = user ?? (await store.getUser(share.userId));
    return {
      deviceId: share.deviceId,
      deviceName: d?.name ?? '?',
      userId: share.userId,
      userName: u?.name ?? '?',
      ...(share.services ? { services: share.services } : {}),
      createdAt: share.createdAt,
      createdBy: share.createdBy,
    };
  };

  return async (req) => {
    const caller = req.auth.user;
    if (req.path === '/v1/shares' && req.method === 'GET') {
      const deviceName = req.query.get('device');
      if (deviceName === null) {
        const shares = await store.listShares({ userId: caller.id });
        const views = await Promise.all(shares.map((s) => view(s, undefined, caller)));
        return { status: 200, body: { shares: views } };
      }
      const device = await managedDevice(caller, deviceName.slice(0, 64));
      const views = await Promise.all((await store.listShares({ deviceId: device.id })).map((s) => view(s, device)));
      return { status: 200, body: { shares: views } };
    }
    if (req.path === '/v1/shares' && req.method === 'POST') {
      requireScope(req.auth, 'connect');
      const body = await parseBody(req, shareSchema);
      return audited(store, { actor: caller.id, action: 'share.create', target: `${body.device}/${body.user}`, source: req.source }, async () => {
        const device = await managedDevice(caller, body.device);
        const user = await userNamed(body.user);
        if (user.id === device.ownerUserId) throw new PortwayError('PW_BAD_REQUEST', `${user.name} owns ${device.name}`);
        const share = await store.shareDevice({ deviceId: device.id, userId: user.id, services: body.services, createdBy: caller.id });
        return { status: 200, body: await view(share, device, user) };
      });
    }
    const remove = /^\/v1\/shares\/([^/]{1,200})\/([^/]{1,200})$/.exec(req.path);
    if (remove && req.method === 'DELETE') {
      requireScope(req.auth, 'connect');
      const deviceName = pathSegment(remove[1] as string);
      const userName = pathSegment(remove[2] as string);
      const target = `${deviceName}/${userName}`.slice(0, 256).replace(/[^\x20-\x7e]/g, '?');
      return audited(store, { actor: caller.id, action: 'share.delete', target, source: req.source }, async () => {
        const device = await managedDevice(caller, deviceName);
        const user = await userNamed(userName);
        if (!(await store.unshareDevice(device.id, user.id))) throw new PortwayError('PW_NOT_FOUND', `${device.name} is not shared with ${user.name}`);
        // An admin reaches every device without a share: their streams stay.
        const streamsEnded = user.isAdmin ? 0 : (deps.streams?.dropClientStreams({ deviceId: device.id, userId: user.id }) ?? 0);
        return { status: 200, body: { ok: true, streamsEnded } };
      });
    }
    return undefined;
  };
}
