/** Argument checks shared by the store: bad arguments from the caller throw TypeError/RangeError synchronously. */
import { NAME_PATTERN } from '../../../protocol';
import { isId, type IdPrefix } from './ids';
import { TOKEN_SCOPES, type TokenScope } from './store';

export const MAX_ENROLL_KEY_USES = 1_000_000;
export const MAX_SHARED_SERVICES = 64;
export const MAX_AUDIT_PAGE = 1000;
export const FINGERPRINT = /^[0-9a-f]{64}$/;
/** Audit text fields: printable, no NUL, bounded. */
const AUDIT_TEXT = /^[\x20-\x7e]{1,256}$/;

export function checkString(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${field} must be a string`);
}

export function checkName(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) throw new TypeError(`${field} must match ${String(NAME_PATTERN)}`);
}

export function checkId(value: unknown, prefix: IdPrefix, field: string): asserts value is string {
  if (!isId(value, prefix)) throw new TypeError(`${field} must be a ${prefix}_ ID`);
}

export function checkFingerprint(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string' || !FINGERPRINT.test(value)) throw new TypeError(`${field} must be a SHA-256 hex fingerprint`);
}

export function checkTime(value: unknown, field: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new RangeError(`${field} must be milliseconds since the epoch`);
}

export function checkScope(value: unknown): asserts value is TokenScope {
  if (!TOKEN_SCOPES.includes(value as TokenScope)) throw new TypeError(`scope must be one of ${TOKEN_SCOPES.join(', ')}`);
}

/** Service names of a share, deduplicated and sorted; undefined stays undefined (every service). */
export function normalizeServices(value: unknown): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_SHARED_SERVICES) throw new RangeError(`services must list 1..${MAX_SHARED_SERVICES} names`);
  for (const name of value) checkName(name, 'service');
  return [...new Set(value as string[])].sort();
}

export function checkAuditText(value: unknown, field: string, optional: boolean): void {
  if (optional && value === undefined) return;
  if (typeof value !== 'string' || !AUDIT_TEXT.test(value)) throw new TypeError(`${field} must be 1-256 printable ASCII characters`);
}
