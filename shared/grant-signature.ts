/**
 * Signing and verifying owner grant sets (protocol/grants.ts) with node:crypto: ECDSA P-256 / SHA-256 over
 * GRANT_SIGNING_PREFIX || the document bytes exactly as sent. Used by the owner's client (sign), the agent
 * (verify against its pinned owner keys) and the relay (verify against the owner key on record before it stores).
 */
import { createPublicKey, sign, verify } from 'node:crypto';
import { decodeSignedGrantSet, encodeGrantDocument, grantSigningInput, PortwayError, type GrantDocument, type SignedGrantSet } from '../protocol';
import { p256PrivateKeyFromPem, p256PublicKeyFromSpki, spkiFingerprint } from './x509';

/** Sign `document` with the owner's private key (PEM, P-256). */
export function signGrantSet(document: GrantDocument, ownerKeyPem: string): SignedGrantSet {
  const key = p256PrivateKeyFromPem(ownerKeyPem);
  const documentBytes = encodeGrantDocument(document);
  const signature = sign('sha256', grantSigningInput(documentBytes), key);
  const signerKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return { document: documentBytes.toString('base64'), signerKey: signerKey.toString('base64'), signature: signature.toString('base64') };
}

export interface VerifiedGrantSet {
  readonly document: GrantDocument;
  /** SHA-256 hex of the signer's SPKI. */
  readonly signer: string;
}

/**
 * Check a grant set from a peer: well formed, for `deviceId`, signed by a key whose SPKI SHA-256 is in
 * `ownerKeys`, and the signature verifies. PW_GRANT_INVALID (with the reason) for anything else; never throws
 * anything but a PortwayError, whatever `value` is.
 */
export function verifyGrantSet(value: unknown, expected: { deviceId: string; ownerKeys: ReadonlySet<string> }): VerifiedGrantSet {
  const { document, documentBytes, signerKey, signature } = decodeSignedGrantSet(value);
  if (document.deviceId !== expected.deviceId) throw new PortwayError('PW_GRANT_INVALID', 'grant set is for another device');
  const signer = spkiFingerprint(signerKey);
  if (!expected.ownerKeys.has(signer)) throw new PortwayError('PW_GRANT_INVALID', 'grant set is not signed by an owner key pinned for this device');
  let ok: boolean;
  try {
    ok = verify('sha256', grantSigningInput(documentBytes), p256PublicKeyFromSpki(signerKey), signature);
  } catch (err) {
    throw new PortwayError('PW_GRANT_INVALID', 'grant set signature cannot be checked', { cause: err });
  }
  if (!ok) throw new PortwayError('PW_GRANT_INVALID', 'grant set signature does not verify');
  return { document, signer };
}
