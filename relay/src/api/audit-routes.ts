/**
 * The audit log, for admins:
 *
 *   GET /v1/audit?limit=N&before=ID   -> { entries: AuditEntry[] }   newest first; limit 1..1000 (default 100)
 */
import { PortwayError } from '../../../protocol';
import { MAX_AUDIT_PAGE, type Store } from '../store';
import type { ApiReply, ApiRequest } from './api-route';

const DEFAULT_AUDIT_PAGE = 100;

export function auditRoutes(deps: { store: Store }): (req: ApiRequest) => Promise<ApiReply | undefined> {
  return async (req) => {
    if (req.path !== '/v1/audit' || req.method !== 'GET') return undefined;
    if (!req.auth.user.isAdmin) throw new PortwayError('PW_NOT_AUTHORIZED', 'the audit log is for admins');
    const limit = integerParam(req.query.get('limit'), 'limit') ?? DEFAULT_AUDIT_PAGE;
    const before = integerParam(req.query.get('before'), 'before');
    if (limit < 1 || limit > MAX_AUDIT_PAGE) throw new PortwayError('PW_BAD_REQUEST', `limit must be 1..${MAX_AUDIT_PAGE}`);
    const entries = await deps.store.listAudit({ limit, ...(before === undefined ? {} : { beforeId: before }) });
    return { status: 200, body: { entries } };
  };
}

function integerParam(value: string | null, name: string): number | undefined {
  if (value === null) return undefined;
  if (!/^\d{1,15}$/.test(value)) throw new PortwayError('PW_BAD_REQUEST', `${name} must be a whole number`);
  return Number(value);
}
