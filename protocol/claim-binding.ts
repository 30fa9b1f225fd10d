/**
 * The claim binding: what the claim MACs cover, and the claim API's payloads.
 *
 *   tagOwner  = HMAC-SHA256(S, input('owner'))    claimer -> relay -> device
 *   tagDevice = HMAC-SHA256(S, input('device'))   device  -> relay -> claimer
 *   input(role) = "portway-claim-" role 0x00 || u16 len || claimId || u16 len || deviceKeySpki || u16 len || ownerKeySpki
 *
 * S is the secret part of the claim code (ASCII, protocol/claim-code.ts), known to the device and the claimer,
 * never to the relay. The device checks tagOwner before it pins the owner key; the claimer checks tagDevice
 * before it pins the device key. A relay that swaps either key cannot make a tag that verifies.
 * Lengths are big-endian u16; keys are DER SubjectPublicKeyInfo. protocol/ computes no MAC (node:crypto lives
 * in shared/claim-tag.ts); it only defines the bytes.
 */
import * as z from 'zod';
import { CLAIM_ID_PATTERN } from './claim-code';
import { nameSchema } from './messages';

export type ClaimTagRole = 'owner' | 'device';
/** Longest key accepted in a claim (a P-256 SPKI is 91 bytes). */
export const MAX_CLAIM_KEY_BYTES = 1024;

function field(bytes: Buffer): Buffer {
  if (bytes.length > 0xffff) throw new RangeError('claim field too long');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

export function claimTagInput(role: ClaimTagRole, claimId: string, deviceKeySpki: Buffer, ownerKeySpki: Buffer): Buffer {
  if (role !== 'owner' && role !== 'device') throw new TypeError('role must be owner or device');
  return Buffer.concat([Buffer.from(`portway-claim-${role}\0`, 'ascii'), field(Buffer.from(claimId, 'ascii')), field(deviceKeySpki), field(ownerKeySpki)]);
}

const base64Key = z.string().min(1).max(Math.ceil(MAX_CLAIM_KEY_BYTES / 3) * 4).regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64');
const base64Tag = z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'must be a base64 SHA-256 MAC');
export const claimIdSchema = z.string().regex(CLAIM_ID_PATTERN, 'must be the 7-character lookup part of a claim code');
/** Device-chosen secret that authenticates its own polls (stored hashed by the relay). */
const pollTokenSchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes of base64url');

/** POST /v1/claims/device/register (no bearer): a device with a claim code announces itself. */
export const claimRegisterSchema = z.object({ claimId: claimIdSchema, name: nameSchema, csr: z.string().min(1).max(8192), pollToken: pollTokenSchema });
/** POST /v1/claims/device/wait: long poll for an offer or for the certificate. */
export const claimWaitSchema = z.object({ claimId: claimIdSchema, pollToken: pollTokenSchema, waitMs: z.number().int().min(0).max(60_000).optional() });
/** POST /v1/claims/device/answer: the device's verdict on an offer. */
export const claimAnswerSchema = z.object({
  claimId: claimIdSchema,
  pollToken: pollTokenSchema,
  offerId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  ok: z.boolean(),
  deviceTag: base64Tag.optional(),
  code: z.string().regex(/^PW_[A-Z0-9_]{1,60}$/).optional(),
});
/** What a waiting device receives. */
export const claimWaitReplySchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('none') }),
  z.object({ kind: z.literal('offer'), offerId: z.string().min(1).max(64), ownerKey: base64Key, ownerTag: base64Tag }),
  z.object({ kind: z.literal('claimed'), deviceId: z.string().min(1).max(64), certificate: z.string().min(1).max(16384), caCertificate: z.string().min(1).max(16384) }),
]);
export type ClaimWaitReply = z.infer<typeof claimWaitReplySchema>;

/** POST /v1/claims/{claimId} (bearer, connect): the claimer's offer. */
export const claimOfferSchema = z.object({ ownerKey: base64Key, ownerTag: base64Tag, name: nameSchema.optional() });
/** GET /v1/claims/{claimId}: the pending device's key, which the claimer MACs. */
export const claimInfoSchema = z.object({ claimId: claimIdSchema, deviceKey: base64Key, name: z.string().max(64), expiresAt: z.number() });
/** The claimer's result, which it checks before pinning. */
export const claimResultSchema = z.object({ deviceId: z.string().min(1).max(64), name: z.string().max(64), deviceKey: base64Key, deviceTag: base64Tag });
