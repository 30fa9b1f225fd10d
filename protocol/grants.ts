/**
 * Owner-signed grants: who besides the owner a claimed device lets in (docs/security.md "Grants").
 *
 * The owner's client (holding the key the device pinned at claim time) signs a grant document; the relay
 * stores the latest one per device and hands it to the device (`grants` command); the device checks the
 * signature against its pinned owner keys and refuses a sequence number not above the one it holds, so a
 * relay can neither forge, change nor roll back a grant set — only withhold it.
 *
 * Wire form (SignedGrantSet, JSON):
 *   { document:  base64 of the UTF-8 JSON bytes of a GrantDocument (signed exactly as sent: no canonical form)
 *     signerKey: base64 DER SPKI of the signing key (P-256); the device accepts it only if its SHA-256 is a pinned owner key
 *     signature: base64 DER ECDSA-SHA256 over GRANT_SIGNING_PREFIX || document bytes }
 *
 * GrantDocument: { v: 1, deviceId, seq (1, 2, …: strictly increasing per device), issuedAt (ms),
 *                  entries: [{ key: SHA-256 hex of the grantee's SPKI, user: display name,
 *                              services?: names (absent: every service), expiresAt?: ms }] }
 *
 * Version history: v1 (this).
 */
import * as z from 'zod';
import { PortwayError } from './errors';
import { NAME_PATTERN } from './constants';

export const GRANT_DOCUMENT_VERSION = 1;
/** Domain separation: a grant signature can never be mistaken for a signature over anything else. */
export const GRANT_SIGNING_PREFIX = 'portway-grants-v1\u0000';
export const MAX_GRANT_ENTRIES = 64;
export const MAX_GRANT_SERVICES = 64;
/** Base64 of the document: 64 entries with 64 services each stay well below. */
export const MAX_GRANT_DOCUMENT_CHARS = 48 * 1024;

// Local twins of messages.ts's schemas (messages.ts imports this module for the `grants` command).
const idSchema = z.string().regex(/^[a-z]{3}_[a-z2-7]{16}$/, 'must be a Portway ID');
const nameSchema = z.string().regex(NAME_PATTERN, 'must be a service name');
const fingerprint = z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 hex fingerprint');
const time = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const base64 = (max: number): z.ZodString => z.string().min(4).max(max).regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64');

export const grantEntrySchema = z.object({
  key: fingerprint,
  user: z.string().min(1).max(64),
  services: z.array(nameSchema).min(1).max(MAX_GRANT_SERVICES).optional(),
  expiresAt: time.optional(),
});
export type GrantEntry = z.infer<typeof grantEntrySchema>;

export const grantDocumentSchema = z.object({
  v: z.literal(GRANT_DOCUMENT_VERSION),
  deviceId: idSchema,
  seq: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  issuedAt: time,
  entries: z.array(grantEntrySchema).max(MAX_GRANT_ENTRIES),
});
export type GrantDocument = z.infer<typeof grantDocumentSchema>;

export const signedGrantSetSchema = z.object({
  document: base64(MAX_GRANT_DOCUMENT_CHARS),
  signerKey: base64(512),
  signature: base64(256),
});
export type SignedGrantSet = z.infer<typeof signedGrantSetSchema>;

/** The bytes a grant signature covers. */
export function grantSigningInput(documentBytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from(GRANT_SIGNING_PREFIX, 'utf8'), documentBytes]);
}

/** The bytes of a document as they are signed and sent. */
export function encodeGrantDocument(document: GrantDocument): Buffer {
  return Buffer.from(JSON.stringify(grantDocumentSchema.parse(document)), 'utf8');
}

function strictBase64(text: string, what: string): Buffer {
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) throw new PortwayError('PW_GRANT_INVALID', `grant set ${what} is not canonical base64`);
  return bytes;
}

/**
 * The parts of a signed grant set, shape-checked but NOT verified: callers check the signature
 * (shared/grant-signature.ts) before trusting the document. PW_GRANT_INVALID for anything malformed.
 */
export function decodeSignedGrantSet(value: unknown): { document: GrantDocument; documentBytes: Buffer; signerKey: Buffer; signature: Buffer } {
  const envelope = signedGrantSetSchema.safeParse(value);
  if (!envelope.success) throw new PortwayError('PW_GRANT_INVALID', 'malformed grant set');
  const documentBytes = strictBase64(envelope.data.document, 'document');
  const signerKey = strictBase64(envelope.data.signerKey, 'signer key');
  const signature = strictBase64(envelope.data.signature, 'signature');
  let json: unknown;
  try {
    json = JSON.parse(documentBytes.toString('utf8'));
  } catch (err) {
    throw new PortwayError('PW_GRANT_INVALID', 'grant document is not JSON', { cause: err });
  }
  const document = grantDocumentSchema.safeParse(json);
  if (!document.success) throw new PortwayError('PW_GRANT_INVALID', `malformed grant document: ${document.error.issues.map((i) => `${i.path.join('.') || '(document)'}: ${i.message}`).join('; ').slice(0, 200)}`);
  return { document: document.data, documentBytes, signerKey, signature };
}

/** What a grant set lets `key` reach: 'all', a set of service names, or undefined (nothing, or expired at `now`). */
export function grantedServices(document: GrantDocument, key: string, now: number): 'all' | ReadonlySet<string> | undefined {
  let services: Set<string> | undefined;
  for (const entry of document.entries) {
    if (entry.key !== key || (entry.expiresAt !== undefined && now >= entry.expiresAt)) continue;
    if (!entry.services) return 'all';
    services ??= new Set();
    for (const s of entry.services) services.add(s);
  }
  return services;
}
