/**
 * API tokens of the calling user:
 *
 *   GET    /v1/tokens[?user=NAME]                      -> { tokens: TokenView[] }                  (scope read; ?user: admins)
 *   POST   /v1/tokens   { scope?, expiresInMs? }        -> { tokenId, token, scope, expiresAt? }    (scope connect)
 *   DELETE /v1/tokens/:tokenId                          -> { ok: true, tokenId }                     (scope connect)
 *
 * A token never begets more than it has: the new token's scope is at most the caller's, and when the caller's
 * token expires the new one expires no later. Users revoke their own tokens; admins any token. Revoking a
 * token revokes the user certificates issued with it (store.revokeToken) and ends the streams this relay carries for
 * them (DataPlane.dropClientStreams). Creation and revocation are audited.
 */
import * as z from 'zod';
import { PortwayError } from '../../../protocol';
import type { ApiToken, Store } from '../store';
import { audited, parseBody, pathSegment, requireScope, scopeCovers, type ApiReply, type ApiRequest } from './api-route';

/** Ten years: longer requests are refused rather than silently shortened. */
const MAX_TOKEN_LIFETIME_MS = 10 * 365 * 24 * 3600 * 1000;

const createSchema = z.object({
  scope: z.enum(['read', 'connect']).default('connect'),
  expiresInMs: z.number().int().positive().max(MAX_TOKEN_LIFETIME_MS).optional(),
});

export interface TokenView extends ApiToken {
  /** The token this request was made with. */
  readonly current: boolean;
}

/** Live streams to end when credentials go (DataPlane.dropClientStreams). */
export interface ClientStreams {
  dropClientStreams(filter: { readonly deviceId?: string; readonly userId?: string; readonly certFingerprints?: ReadonlySet<string> }): number;
}

export function tokenRoutes(deps: { store: Store; now: () => number; streams?: ClientStreams }): (req: ApiRequest) => Promise<ApiReply | undefined> {
  const { store } = deps;
  return async (req) => {
    const { user, token: caller } = req.auth;
    if (req.path === '/v1/tokens' && req.method === 'GET') {
      const userName = req.query.get('user');
      let owner = user;
      if (userName !== null && userName !== user.name) {
        if (!user.isAdmin) throw new PortwayError('PW_NOT_AUTHORIZED', "only admins list other users' tokens");
        const found = await store.getUserByName(userName);
        if (!found) throw new PortwayError('PW_NOT_FOUND', `no user named ${userName.slice(0, 64)}`);
        owner = found;
      }
      const tokens = await store.listTokens(owner.id);
      return { status: 200, body: { tokens: tokens.map((t): TokenView => ({ ...t, current: t.id === caller.id })) } };
    }
    if (req.path === '/v1/tokens' && req.method === 'POST') {
      requireScope(req.auth, 'connect');
      const body = await parseBody(req, createSchema);
      if (!scopeCovers(caller.scope, body.scope)) throw new PortwayError('PW_SCOPE_INSUFFICIENT', `a ${caller.scope} token cannot create a ${body.scope} token`);
      let expiresAt = body.expiresInMs === undefined ? undefined : deps.now() + body.expiresInMs;
      if (caller.expiresAt !== undefined) expiresAt = Math.min(expiresAt ?? caller.expiresAt, caller.expiresAt);
      return audited(store, { actor: user.id, action: 'token.create', source: req.source }, async () => {
        const created = await store.createToken(user.id, { scope: body.scope, ...(expiresAt === undefined ? {} : { expiresAt }) });
        return { status: 201, body: created };
      });
    }
    const revoke = /^\/v1\/tokens\/([^/]{1,100})$/.exec(req.path);
    if (revoke && req.method === 'DELETE') {
      requireScope(req.auth, 'connect');
      const tokenId = pathSegment(revoke[1] as string);
      return audited(store, { actor: user.id, action: 'token.revoke', target: tokenId.slice(0, 64).replace(/[^\x20-\x7e]/g, '?') || '?', source: req.source }, async () => {
        const token = await store.getToken(tokenId);
        // Someone else's token answers like a missing one: token IDs are not for probing.
        if (!token || (token.userId !== user.id && !user.isAdmin)) throw new PortwayError('PW_NOT_FOUND', 'no such token');
        await store.revokeToken(token.id);
        // Streams opened with certificates issued under this token end now, not only new ones.
        const certs = (await store.listUserCerts(token.userId)).filter((c) => c.token?.id === token.id);
        const streams = certs.length === 0 ? 0 : (deps.streams?.dropClientStreams({ userId: token.userId, certFingerprints: new Set(certs.map((c) => c.fingerprint)) }) ?? 0);
        return { status: 200, body: { ok: true, tokenId: token.id, streamsEnded: streams } };
      });
    }
    return undefined;
  };
}
