/** The user's account commands: API tokens (`portway token …`), removing a device (`portway device remove`), sharing (`portway share|unshare|shares`), the audit log (`portway audit`). */
import { PortwayError } from '../../protocol';
import { apiRequest } from '../../shared/https-json';
import { parseDuration } from '../../shared/parse-duration';
import { configDir, loadSettings } from './settings';

const API_TIMEOUT_MS = 15_000;

export interface TokenView {
  id: string;
  scope: 'read' | 'connect';
  createdAt: number;
  expiresAt?: number;
  revokedAt?: number;
  current: boolean;
}

export interface CreatedToken {
  tokenId: string;
  token: string;
  scope: 'read' | 'connect';
  expiresAt?: number;
}

export interface ShareView {
  deviceId: string;
  deviceName: string;
  userId: string;
  userName: string;
  services?: string[];
  createdAt: number;
}

async function call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const s = await loadSettings(configDir());
  return apiRequest<T>({ relay: s.relay, caPem: s.relayCaPem, method, path, token: s.token, timeoutMs: API_TIMEOUT_MS, ...(body === undefined ? {} : { body }) });
}

/** Your tokens, or (admins) another user's. */
export async function listTokens(user?: string): Promise<TokenView[]> {
  return (await call<{ tokens: TokenView[] }>('GET', user === undefined ? '/v1/tokens' : `/v1/tokens?user=${encodeURIComponent(user)}`)).tokens;
}

export function createToken(options: { scope: string; expires?: string }): Promise<CreatedToken> {
  if (options.scope !== 'read' && options.scope !== 'connect') throw new PortwayError('PW_BAD_REQUEST', `--scope must be read or connect, got ${JSON.stringify(options.scope).slice(0, 40)}`);
  const expiresInMs = options.expires === undefined ? undefined : parseDuration(options.expires);
  return call<CreatedToken>('POST', '/v1/tokens', { scope: options.scope, ...(expiresInMs === undefined ? {} : { expiresInMs }) });
}

export async function revokeToken(tokenId: string): Promise<void> {
  await call('DELETE', `/v1/tokens/${encodeURIComponent(tokenId)}`);
}

/** Remove (revoke) a device you own: its sessions end at once and it can never connect or enroll with its key again. */
export async function removeDevice(device: string): Promise<string> {
  return (await call<{ deviceId: string }>('DELETE', `/v1/devices/${encodeURIComponent(device)}`)).deviceId;
}

export function share(options: { device: string; user: string; services: readonly string[] }): Promise<ShareView> {
  return call<ShareView>('POST', '/v1/shares', { device: options.device, user: options.user, ...(options.services.length > 0 ? { services: options.services } : {}) });
}

export async function unshare(options: { device: string; user: string }): Promise<void> {
  await call('DELETE', `/v1/shares/${encodeURIComponent(options.device)}/${encodeURIComponent(options.user)}`);
}

export async function listShares(device?: string): Promise<ShareView[]> {
  return (await call<{ shares: ShareView[] }>('GET', device === undefined ? '/v1/shares' : `/v1/shares?device=${encodeURIComponent(device)}`)).shares;
}

export interface AuditEntryView {
  id: number;
  at: number;
  actor: string;
  action: string;
  target?: string;
  source?: string;
  outcome: string;
}

export async function listAudit(limit: number): Promise<AuditEntryView[]> {
  return (await call<{ entries: AuditEntryView[] }>('GET', `/v1/audit?limit=${limit}`)).entries;
}

const iso = (ms: number | undefined): string => (ms === undefined ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));

export function formatTokens(tokens: readonly TokenView[]): string {
  return table([
    ['ID', 'SCOPE', 'CREATED', 'EXPIRES', 'REVOKED', ''],
    ...tokens.map((t) => [t.id, t.scope, iso(t.createdAt), iso(t.expiresAt), iso(t.revokedAt), t.current ? '(this one)' : '']),
  ]);
}

export function formatShares(shares: readonly ShareView[]): string {
  return table([['DEVICE', 'USER', 'SERVICES', 'SINCE'], ...shares.map((s) => [s.deviceName, s.userName, s.services?.join(',') ?? 'all', iso(s.createdAt)])]);
}

export function formatAudit(entries: readonly AuditEntryView[]): string {
  return table([['TIME', 'ACTOR', 'ACTION', 'TARGET', 'SOURCE', 'OUTCOME'], ...entries.map((e) => [iso(e.at), e.actor, e.action, e.target ?? '-', e.source ?? '-', e.outcome])]);
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}
