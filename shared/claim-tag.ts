/**
 * The claim MACs (protocol/claim-binding.ts): HMAC-SHA256 keyed with the claim code's secret part, compared in
 * constant time; and the random parts of claiming (new codes, poll tokens).
 */
import { createHmac, createPublicKey, randomBytes, timingSafeEqual } from 'node:crypto';
import { CLAIM_CODE_RANDOM_BYTES, claimCodeFromRandom, claimTagInput, PortwayError, type ClaimCode, type ClaimTagRole } from '../protocol';

export function claimTag(secret: string, role: ClaimTagRole, claimId: string, deviceKeySpki: Buffer, ownerKeySpki: Buffer): Buffer {
  return createHmac('sha256', Buffer.from(secret, 'ascii')).update(claimTagInput(role, claimId, deviceKeySpki, ownerKeySpki)).digest();
}

/** True when `tag` (base64) is the MAC for these keys; constant time in the tag. */
export function isClaimTagValid(tag: string, secret: string, role: ClaimTagRole, claimId: string, deviceKeySpki: Buffer, ownerKeySpki: Buffer): boolean {
  const expected = claimTag(secret, role, claimId, deviceKeySpki, ownerKeySpki);
  const given = Buffer.from(tag, 'base64');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export function newClaimCode(): ClaimCode {
  return claimCodeFromRandom(randomBytes(CLAIM_CODE_RANDOM_BYTES));
}

export function newPollToken(): string {
  return randomBytes(32).toString('base64url');
}

/** DER SubjectPublicKeyInfo of a private or public key in PEM. */
export function spkiOfKeyPem(pem: string): Buffer {
  return createPublicKey(pem).export({ type: 'spki', format: 'der' });
}

/** A base64 SPKI from a peer: PW_BAD_REQUEST unless it parses as a public key. */
export function parseSpkiBase64(text: string): Buffer {
  const der = Buffer.from(text, 'base64');
  try {
    createPublicKey({ key: der, format: 'der', type: 'spki' });
  } catch (err) {
    throw new PortwayError('PW_BAD_REQUEST', 'not a public key (DER SubjectPublicKeyInfo, base64)', { cause: err });
  }
  return der;
}
