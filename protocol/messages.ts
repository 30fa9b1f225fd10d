/**
 * Payload schemas for data-socket frames and MQTT control messages.
 * Unknown fields are ignored (zod's default strip), so older peers keep working when fields are added.
 * Control requests carry `id` and `expiresAt` in the payload (MQTT 3.1.1 has no correlation data or expiry);
 * replies echo `id` and are `{ ok: true, ... }` or `{ ok: false, code, message }`.
 */
import { z } from 'zod';
import { NAME_PATTERN } from './constants';

export const nameSchema = z.string().regex(NAME_PATTERN, 'must be 1-63 characters: letters, digits, ".", "_" or "-", starting with a letter or digit');
export const idSchema = z.string().regex(/^[a-z]{3}_[a-z2-7]{16}$/, 'must be a Portway ID');
const fingerprintSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 hex fingerprint');
const errorCodeSchema = z.string().regex(/^PW_[A-Z0-9_]{1,60}$/);

export const failureSchema = z.object({ ok: z.literal(false), code: errorCodeSchema, message: z.string().max(512) });

// ---- data-socket frames ----
export const clientOpenSchema = z.object({
  device: z.string().min(1).max(64),
  service: nameSchema,
  /** A primed open is answered at once and paired when the client's first inner bytes arrive. */
  prime: z.boolean().default(false),
});
export type ClientOpen = z.infer<typeof clientOpenSchema>;

export const relayStatusSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), streamId: z.string().min(1).max(64), deviceId: idSchema, deviceName: z.string().max(64), deviceKey: fingerprintSchema }),
  failureSchema,
]);
export type RelayStatus = z.infer<typeof relayStatusSchema>;

export const agentHelloSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('pool') }),
  z.object({ kind: z.literal('dial'), token: z.string().min(16).max(128) }),
]);
export type AgentHello = z.infer<typeof agentHelloSchema>;

export const streamOpenSchema = z.object({
  streamId: z.string().min(1).max(64),
  service: nameSchema,
  user: z.object({ id: idSchema, name: z.string().max(64), certFingerprint: fingerprintSchema }),
});
export type StreamOpen = z.infer<typeof streamOpenSchema>;

export const e2eStatusSchema = z.discriminatedUnion('ok', [z.object({ ok: z.literal(true) }), failureSchema]);
export type E2eStatus = z.infer<typeof e2eStatusSchema>;

// ---- MQTT control messages ----
export const serviceTypeSchema = z.enum(['tcp', 'udp', 'serial']);
export const serviceInfoSchema = z.object({ name: nameSchema, type: serviceTypeSchema });
export type ServiceInfo = z.infer<typeof serviceInfoSchema>;

/** Retained on the device's status topic; the last will publishes `{ online: false }`. */
export const deviceStatusSchema = z.object({
  online: z.boolean(),
  at: z.number().int().nonnegative().optional(),
  version: z.string().max(64).optional(),
  session: z.string().max(64).optional(),
});
export type DeviceStatus = z.infer<typeof deviceStatusSchema>;

/** Retained on the device's services topic. */
export const deviceServicesSchema = z.object({ services: z.array(serviceInfoSchema).max(256) });
export type DeviceServices = z.infer<typeof deviceServicesSchema>;

const requestBase = { id: z.string().min(1).max(64), expiresAt: z.number().int().nonnegative() };

/** Relay asks the agent to open one data socket for one stream. */
export const dialCommandSchema = z.object({ type: z.literal('dial'), ...requestBase, token: z.string().min(16).max(128) });
/** Relay asks the agent to keep `size` idle data sockets open for `ttlMs` (renewed while users are active). */
export const poolCommandSchema = z.object({ type: z.literal('pool'), ...requestBase, size: z.number().int().min(0).max(16), ttlMs: z.number().int().min(0).max(3_600_000) });

export const deviceCommandSchema = z.discriminatedUnion('type', [dialCommandSchema, poolCommandSchema]);
export type DeviceCommand = z.infer<typeof deviceCommandSchema>;
export type DialCommand = z.infer<typeof dialCommandSchema>;
export type PoolCommand = z.infer<typeof poolCommandSchema>;

/** The minimal envelope every command has, to answer unknown types with PW_UNKNOWN_MESSAGE. */
export const commandEnvelopeSchema = z.object({ type: z.string().max(64), ...requestBase });

export const commandReplySchema = z.union([
  z.object({ id: z.string().min(1).max(64), ok: z.literal(true) }),
  failureSchema.extend({ id: z.string().min(1).max(64) }),
]);
export type CommandReply = z.infer<typeof commandReplySchema>;
