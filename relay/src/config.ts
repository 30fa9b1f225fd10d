/**
 * Relay options: one zod schema, defaults beside each field. The CLI builds the object from flags and an
 * optional JSON file (`--config FILE`, for timers and limits); the schema rejects unknown keys.
 */
import * as z from 'zod';
import { parseConfig } from '../../shared/parse-config';

const hostPort = z.object({ host: z.string().min(1).max(255), port: z.number().int().min(0).max(65535) }).strict();

export const relayTimersSchema = z
  .object({
    /** TLS handshake on the relay port, per connection. */
    tlsHandshakeTimeoutMs: z.number().int().positive().default(10_000),
    /** First frame on a data socket after the TLS handshake. */
    firstFrameTimeoutMs: z.number().int().positive().default(10_000),
    /** A device must open the data socket it was asked for within this time. */
    dialTimeoutMs: z.number().int().positive().default(10_000),
    /** A primed client socket waits this long for its first inner bytes. */
    primedIdleMs: z.number().int().positive().default(60_000),
    /** How long a device keeps its pool of data sockets after the last request for it. */
    poolTtlMs: z.number().int().positive().default(120_000),
    /** After one side of a stream ended, the other gets this long before both are destroyed. */
    streamCloseGraceMs: z.number().int().positive().default(30_000),
    /** MQTT CONNECT must arrive within this time. */
    mqttConnectTimeoutMs: z.number().int().positive().default(10_000),
    /** HTTP API request deadline (headers and body). */
    httpRequestTimeoutMs: z.number().int().positive().default(15_000),
    /** How often the relay reads revocations written by others (relay CLI, other relays) to end live sessions. */
    revocationPollMs: z.number().int().positive().max(5_000).default(1_000),
    /** Longest wait of a device connection for its admission slot (keep below the agents' connectTimeoutMs). */
    deviceAdmissionWaitMs: z.number().int().min(0).max(60_000).default(5_000),
  })
  .strict();

export const relayLimitsSchema = z
  .object({
    maxConnections: z.number().int().positive().default(20_000),
    maxStreamsPerDevice: z.number().int().positive().default(1024),
    maxPendingDialsPerDevice: z.number().int().positive().default(256),
    maxPooledPerDevice: z.number().int().min(0).max(64).default(8),
    maxPrimedPerUser: z.number().int().min(0).default(64),
    /** Sockets the relay asks an agent to keep open while users are active on it. */
    poolSize: z.number().int().min(0).max(16).default(2),
    maxHttpBodyBytes: z.number().int().positive().default(64 * 1024),
    /** New device sessions are paced so that the whole fleet (active devices) comes back over about this many seconds. */
    deviceReconnectSpreadS: z.number().int().min(1).max(3_600).default(15),
    /** Bounds on that pace, in new device sessions per second. */
    minDeviceSessionsPerSecond: z.number().int().positive().default(20),
    maxDeviceSessionsPerSecond: z.number().int().positive().default(1_000),
  })
  .strict();

/** Claim codes (docs/security.md): expiry, the device's answer deadline, long polls, failure limits. */
export const relayClaimsSchema = z
  .object({
    /** A claim code expires this long after its device first registered it with the relay (7 days). */
    ttlMs: z.number().int().positive().default(7 * 24 * 3600 * 1000),
    /** A claimer waits this long for the device's answer (the device must be online). */
    answerTimeoutMs: z.number().int().positive().default(30_000),
    /** Longest long poll of a waiting device. */
    maxWaitMs: z.number().int().positive().max(60_000).default(25_000),
    /** Long polls re-read the store this often (claims made through another relay). */
    pollMs: z.number().int().positive().default(1_000),
    /** Failed claim attempts per source address, and per user, in one window before PW_RATE_LIMITED. */
    maxSourceFailures: z.number().int().positive().default(10),
    maxUserFailures: z.number().int().positive().default(20),
    failureWindowMs: z.number().int().positive().default(15 * 60 * 1000),
  })
  .strict();

export const relayOptionsSchema = z
  .object({
    dataDir: z.string().min(1),
    /**
     * The store: a postgres:// URL (no password in it: PGPASSWORD or ~/.pgpass) for relays sharing state, or an
     * SQLite file path; absent = relay.db in dataDir.
     */
    db: z.string().min(1).max(1024).optional(),
    listen: hostPort.default({ host: '127.0.0.1', port: 8443 }),
    /**
     * The MQTT control plane: absent = the embedded broker; `mqtt://[USER@]HOST:PORT` or `mqtts://...` = an
     * external broker shared by several relays (relay/src/broker/external-broker.ts). Its password comes from
     * PORTWAY_BROKER_PASSWORD, never from the URL or a file.
     */
    broker: z.string().min(1).max(1024).optional(),
    /** PEM file of the CA of an mqtts:// broker (default: the system's CAs). */
    brokerCaFile: z.string().min(1).optional(),
    brokerPassword: z.string().min(1).max(1024).optional(),
    /** Loopback address for the Prometheus metrics endpoint; off when absent. */
    metricsListen: hostPort.optional(),
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Device certificate lifetime (30 days); agents renew over MQTT when less than a third is left. */
    deviceCertValidityMs: z.number().int().positive().default(30 * 24 * 3600 * 1000),
    userCertValidityMs: z.number().int().positive().default(30 * 24 * 3600 * 1000),
    timers: relayTimersSchema.default(relayTimersSchema.parse({})),
    limits: relayLimitsSchema.default(relayLimitsSchema.parse({})),
    claims: relayClaimsSchema.default(relayClaimsSchema.parse({})),
  })
  .strict()
  .refine((o) => (o.certFile === undefined) === (o.keyFile === undefined), { message: '--cert and --key go together', path: ['certFile'] })
  .refine((o) => o.limits.minDeviceSessionsPerSecond <= o.limits.maxDeviceSessionsPerSecond, {
    message: 'minDeviceSessionsPerSecond must not exceed maxDeviceSessionsPerSecond',
    path: ['limits', 'minDeviceSessionsPerSecond'],
  });

export type RelayOptions = z.infer<typeof relayOptionsSchema>;
export type RelayTimers = z.infer<typeof relayTimersSchema>;
export type RelayLimits = z.infer<typeof relayLimitsSchema>;

/** Parse and freeze relay options; every problem is reported at once with its key path. */
export function parseRelayOptions(input: unknown): Readonly<RelayOptions> {
  return parseConfig(relayOptionsSchema, input, 'relay options invalid');
}

