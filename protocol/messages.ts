/**
 * Payload schemas for data-socket frames and MQTT control messages.
 * Unknown fields are ignored (zod's default strip), so older peers keep working when fields are added.
 * Control requests carry `id` and `expiresAt` in the payload (MQTT 3.1.1 has no correlation data or expiry);
 * replies echo `id` and are `{ ok: true, ... }` or `{ ok: false, code, message }`.
 */
import * as z from 'zod';
import { NAME_PATTERN } from './constants';
import { signedGrantSetSchema } from './grants';

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

/**
 * `service` is any non-empty string up to MAX_RELAYED_SERVICE_CHARS, not only a well-formed name: the agent matches
 * it exactly against its own services after the end-to-end handshake, so a relay that forwards a forged or
 * malformed name gets an authenticated PW_SERVICE_NOT_EXPOSED the client can read, not a dropped socket.
 */
export const MAX_RELAYED_SERVICE_CHARS = 256;
export const streamOpenSchema = z.object({
  streamId: z.string().min(1).max(64),
  service: z.string().min(1).max(MAX_RELAYED_SERVICE_CHARS),
  user: z.object({ id: idSchema, name: z.string().max(64), certFingerprint: fingerprintSchema }),
});
export type StreamOpen = z.infer<typeof streamOpenSchema>;

/** `heartbeatMs`: the device's heartbeat interval for this stream (protocol/e2e-frames.ts); absent: no liveness check. */
export const e2eStatusSchema = z.discriminatedUnion('ok', [z.object({ ok: z.literal(true), heartbeatMs: z.number().int().min(100).max(600_000).optional() }), failureSchema]);
export type E2eStatus = z.infer<typeof e2eStatusSchema>;

// ---- MQTT control messages ----
export const serviceTypeSchema = z.enum(['tcp', 'udp', 'serial']);
/** `available: false`: configured but not usable now (a serial device path is missing); absent means available. */
export const serviceInfoSchema = z.object({ name: nameSchema, type: serviceTypeSchema, available: z.boolean().optional() });
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

/**
 * Relay hands the agent a renewed certificate for the key it already has (docs/security.md, certificate lifetime):
 * sent when less than a third of the presented certificate's validity is left. The agent checks it (its device ID,
 * its own key, issued by the relay CA), writes it, replies, and reconnects its control channel with it.
 */
export const certCommandSchema = z.object({ type: z.literal('cert'), ...requestBase, certificate: z.string().min(1).max(8192) });

/**
 * Relay hands the agent the latest owner-signed grant set of the device (protocol/grants.ts): sent when the owner
 * changes it and each time the device comes online. The agent verifies it against its pinned owner keys, keeps it
 * only if its sequence number is above the one it holds, and replies (PW_GRANT_INVALID, PW_GRANT_STALE).
 */
export const grantsCommandSchema = z.object({ type: z.literal('grants'), ...requestBase, grants: signedGrantSetSchema });

export const deviceCommandSchema = z.discriminatedUnion('type', [dialCommandSchema, poolCommandSchema, certCommandSchema, grantsCommandSchema]);
export type DeviceCommand = z.infer<typeof deviceCommandSchema>;
export type DialCommand = z.infer<typeof dialCommandSchema>;
export type PoolCommand = z.infer<typeof poolCommandSchema>;
export type CertCommand = z.infer<typeof certCommandSchema>;
export type GrantsCommand = z.infer<typeof grantsCommandSchema>;

/** The minimal envelope every command has, to answer unknown types with PW_UNKNOWN_MESSAGE. */
export const commandEnvelopeSchema = z.object({ type: z.string().max(64), ...requestBase });

export const commandReplySchema = z.union([
  z.object({ id: z.string().min(1).max(64), ok: z.literal(true) }),
  failureSchema.extend({ id: z.string().min(1).max(64) }),
]);
export type CommandReply = z.infer<typeof commandReplySchema>;

// ---- telemetry ----
/** Telemetry payloads larger than this are dropped unread (the relay checks before JSON.parse). */
export const MAX_TELEMETRY_BYTES = 16 * 1024;

const bytes = z.number().int().nonnegative().max(2 ** 53);
const shortText = z.string().max(128);
const fsUsageSchema = z.object({ totalBytes: bytes, usedBytes: bytes, availableBytes: bytes });

/**
 * Raspberry Pi firmware throttling state (`vcgencmd get_throttled` / sysfs get_throttled): the raw bit mask and
 * its meaning. Bits 0-3 are "now", bits 16-19 "since boot". Absent on other boards.
 */
export const throttleStateSchema = z.object({
  raw: z.number().int().nonnegative().max(0xffffffff),
  underVoltage: z.boolean(),
  frequencyCapped: z.boolean(),
  throttled: z.boolean(),
  softTempLimit: z.boolean(),
  underVoltageOccurred: z.boolean(),
  frequencyCappedOccurred: z.boolean(),
  throttledOccurred: z.boolean(),
  softTempLimitOccurred: z.boolean(),
});
export type ThrottleState = z.infer<typeof throttleStateSchema>;

/**
 * Retained on the device's telemetry topic: published at the agent's telemetryIntervalMs and each time its
 * control connection comes online. Every field but `at` and `uptimeS` is optional: a board that cannot measure
 * something leaves it out. Sizes are bounded; unknown fields are ignored.
 */
export const deviceTelemetrySchema = z.object({
  /** Device clock (ms since the epoch) when the sample was taken; a Pi without RTC may be far off before NTP. */
  at: z.number().int().nonnegative(),
  uptimeS: z.number().nonnegative().max(1e10),
  agent: z.object({ version: z.string().max(64), rssBytes: bytes.optional(), cpuPercent: z.number().nonnegative().max(10_000).optional() }).optional(),
  cpu: z.object({
    cores: z.number().int().positive().max(4096).optional(),
    loadPercent: z.number().min(0).max(100).optional(),
    temperatureC: z.number().min(-100).max(250).optional(),
  }).optional(),
  loadAverage: z.tuple([z.number().nonnegative(), z.number().nonnegative(), z.number().nonnegative()]).optional(),
  memory: z.object({ totalBytes: bytes, usedBytes: bytes, availableBytes: bytes }).optional(),
  rootFs: fsUsageSchema.optional(),
  network: z.array(z.object({
    name: z.string().min(1).max(32),
    mac: z.string().max(32).optional(),
    addresses: z.array(z.object({ family: z.enum(['IPv4', 'IPv6']), address: z.string().max(64), prefixLength: z.number().int().min(0).max(128) })).max(16),
  })).max(32).optional(),
  os: z.object({ platform: shortText, distro: shortText.optional(), release: shortText.optional(), kernel: shortText, arch: z.string().max(32), hostname: z.string().max(255) }).optional(),
  throttle: throttleStateSchema.optional(),
});
export type DeviceTelemetry = z.infer<typeof deviceTelemetrySchema>;
