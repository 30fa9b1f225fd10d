/**
 * Claim routes (relay/src/claims/claim-service.ts):
 *   POST /v1/claims/device/register | wait | answer    the device, no bearer (claim ID + its poll token)
 *   GET  /v1/claims/{claimId}                            bearer: the pending device's key
 *   POST /v1/claims/{claimId}                            bearer, connect: claim it
 */
import type { ClaimService } from '../claims/claim-service';
import { pathSegment, type ApiReply, type ApiRoutes } from './api-route';

const DEVICE_ROUTE = /^\/v1\/claims\/device\/(register|wait|answer)$/;
const CLAIM_ROUTE = /^\/v1\/claims\/([^/]{1,64})$/;

/** The device's routes (before bearer authentication); undefined when the path is not one of them. */
export async function deviceClaimRoute(claims: ClaimService, req: { method: string; path: string; source: string; body: () => Promise<unknown> }): Promise<ApiReply | undefined> {
  const match = DEVICE_ROUTE.exec(req.path);
  if (!match || req.method !== 'POST') return undefined;
  const body = await req.body();
  if (match[1] === 'register') return { status: 200, body: await claims.register(body, req.source) };
  if (match[1] === 'wait') return { status: 200, body: await claims.wait(body) };
  return { status: 200, body: await claims.answer(body) };
}

export function claimRoutes(claims: ClaimService): ApiRoutes {
  return async (req) => {
    const match = CLAIM_ROUTE.exec(req.path);
    if (!match || match[1] === 'device') return undefined;
    const claimId = pathSegment(match[1] as string);
    if (req.method === 'GET') return { status: 200, body: await claims.info(claimId, req.auth, req.source) };
    if (req.method === 'POST') return { status: 200, body: await claims.claim(claimId, await req.body(), req.auth, req.source) };
    return undefined;
  };
}
