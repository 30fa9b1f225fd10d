/**
 * Entity IDs: `${prefix}_` + 16 characters of lowercase RFC 4648 base32 (a-z, 2-7), 80 random bits.
 * Matches idSchema in protocol/messages.ts.
 */
import { randomBytes } from 'node:crypto';

export type IdPrefix = 'dev' | 'usr' | 'key' | 'tok';

const BASE32_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const ID_CHARS = 16;
const ID_PATTERNS: Readonly<Record<IdPrefix, RegExp>> = {
  dev: /^dev_[a-z2-7]{16}$/,
  usr: /^usr_[a-z2-7]{16}$/,
  key: /^key_[a-z2-7]{16}$/,
  tok: /^tok_[a-z2-7]{16}$/,
};

export function newId(prefix: IdPrefix): string {
  // 256 is a multiple of 32, so the low five bits of each byte are uniform.
  const chars = Array.from(randomBytes(ID_CHARS), (byte) => BASE32_ALPHABET[byte & 31]);
  return `${prefix}_${chars.join('')}`;
}

export function isId(value: unknown, prefix: IdPrefix): value is string {
  return typeof value === 'string' && ID_PATTERNS[prefix].test(value);
}
