/**
 * Bearer secrets: 32 random bytes, base64url, behind a readable prefix — `pwt_` API tokens, `pwk_`
 * enrollment keys. Stores keep only the SHA-256 hex of the whole string, look it up by that hash and
 * compare the stored hash in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export type SecretPrefix = 'pwt' | 'pwk';

const SECRET_BYTES = 32;
/** base64url of 32 bytes, unpadded. */
const SECRET_CHARS = 43;

export function newSecret(prefix: SecretPrefix): string {
  return `${prefix}_${randomBytes(SECRET_BYTES).toString('base64url')}`;
}

/** Whether `value` has the shape of a secret with this prefix (cheap check before hashing and querying). */
export function isSecretShaped(value: unknown, prefix: SecretPrefix): value is string {
  return typeof value === 'string' && value.length === prefix.length + 1 + SECRET_CHARS && value.startsWith(`${prefix}_`) && /^[A-Za-z0-9_-]+$/.test(value.slice(prefix.length + 1));
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export function hashesEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === 32 && right.length === 32 && timingSafeEqual(left, right);
}
