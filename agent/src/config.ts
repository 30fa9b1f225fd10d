/**
 * Agent configuration (JSON): one zod schema, defaults beside the fields, unknown keys rejected, every
 * problem reported at once with its key path. Secrets (enrollKey) are redacted from logs.
 */
import { readFileSync } from 'node:fs';
import * as z from 'zod';
import { nameSchema, parseClaimCode, PortwayError } from '../../protocol';
import { parseConfig } from '../../shared/parse-config';

const hostPortString = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be HOST:PORT');

export const tcpServiceSchema = z.object({ name: nameSchema, type: z.literal('tcp'), target: hostPortString }).strict();
export const udpServiceSchema = z
  .object({
    name: nameSchema,
    type: z.literal('udp'),
    target: hostPortString,
    /** A session (one client source address) with no datagram either way for this long is closed. */
    idleTimeoutMs: z.number().int().positive().default(60_000),
    /** Sessions open at once for this service; more are refused with PW_LIMIT_REACHED. */
    maxSessions: z.number().int().positive().max(65_536).default(1024),
  })
  .strict();
export const serialServiceSchema = z
  .object({
    name: nameSchema,
    type: z.literal('serial'),
    /** The device node or a stable link to it (/dev/serial/by-id/...); absolute. */
    path: z.string().min(2).max(4096).regex(/^\//, 'must be an absolute path such as /dev/ttyUSB0'),
    baudRate: z.number().int().min(50).max(4_000_000).default(115_200),
    dataBits: z.union([z.literal(5), z.literal(6), z.literal(7), z.literal(8)]).default(8),
    /** mark and space exist in RFC 2217 but not in Linux termios as serialport drives it. */
    parity: z.enum(['none', 'odd', 'even']).default('none'),
    stopBits: z.union([z.literal(1), z.literal(2)]).default(1),
    rtscts: z.boolean().default(false),
    /** raw: the port's bytes unchanged; rfc2217: Telnet COM-PORT-OPTION (line settings from the client). */
    mode: z.enum(['raw', 'rfc2217']).default('raw'),
    /** Read-only taps allowed besides the one writer (0: none; a tap gets PW_LIMIT_REACHED). */
    maxTaps: z.number().int().min(0).max(16).default(0),
    /** After the client's FIN, how long the port's bytes are still forwarded before the agent ends its side. */
    lingerMs: z.number().int().min(0).max(60_000).default(500),
  })
  .strict();
export const serviceSchema = z.discriminatedUnion('type', [tcpServiceSchema, udpServiceSchema, serialServiceSchema]);
export type ServiceConfig = z.infer<typeof serviceSchema>;
export type UdpServiceConfig = z.infer<typeof udpServiceSchema>;
export type SerialServiceConfig = z.infer<typeof serialServiceSchema>;

export const agentTimersSchema = z
  .object({
    /** MQTT keepalive; a dead link is detected within about 1.5x this. */
    keepaliveS: z.number().int().min(1).max(1200).default(25),
    connectTimeoutMs: z.number().int().positive().default(10_000),
    backoffBaseMs: z.number().int().positive().default(500),
    backoffCapMs: z.number().int().positive().default(60_000),
    /** A connection must stay up this long before the backoff resets. */
    backoffStableMs: z.number().int().positive().default(20_000),
    serviceConnectTimeoutMs: z.number().int().positive().default(5_000),
    /** STREAM_OPEN on a dialed socket, and the inner TLS handshake. */
    streamHandshakeTimeoutMs: z.number().int().positive().default(10_000),
    closeGraceMs: z.number().int().positive().default(10_000),
    /**
     * Each stream sends a heartbeat after this long without data (both ends: the client adopts it from the
     * device), and a stream that hears nothing for 3 of these is reset: a dead path ends within ~60 s.
     */
    streamHeartbeatMs: z.number().int().min(100).max(600_000).default(20_000),
    /** How often the agent checks that each serial service's device path exists (unplug / replug). */
    serialPollMs: z.number().int().min(100).max(60_000).default(1_000),
  })
  .strict();

export const agentConfigSchema = z
  .object({
    relay: hostPortString,
    caFile: z.string().min(1).optional(),
    caFingerprint: z.string().min(1).optional(),
    stateDir: z.string().min(1),
    enrollKey: z.string().min(1).max(256).optional(),
    /**
     * A claim code printed for this card (`portway claim-code new`). Without it and without enrollKey, the agent
     * makes its own code and shows it (log, console, claimCodeFile). Exactly one of enrollKey and claimCode at most.
     */
    claimCode: z.string().min(1).max(64).optional(),
    /** Where a device that made its own claim code writes it (the FAT boot partition, readable on any computer). */
    claimCodeFile: z.string().min(1).max(4096).default('/boot/firmware/portway-claim-code.txt'),
    /** The console the agent also shows its own claim code on, when writable; "" for none. */
    claimConsole: z.string().max(4096).default('/dev/console'),
    name: nameSchema,
    services: z.array(serviceSchema).max(256).default([]),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Loopback HOST:PORT for the Prometheus metrics endpoint (`--metrics` overrides); off when absent. */
    metricsListen: hostPortString.optional(),
    /** Streams at once, UDP sessions not counted (they have their own cap below). */
    maxStreams: z.number().int().positive().default(256),
    /** UDP sessions at once over all UDP services (each service also has its own maxSessions). */
    maxUdpSessions: z.number().int().positive().max(65_536).default(4096),
    /** Telemetry sample period (also sent on each reconnect); 0 turns telemetry off. */
    telemetryIntervalMs: z.union([z.literal(0), z.number().int().min(1_000).max(86_400_000)]).default(60_000),
    timers: agentTimersSchema.default(agentTimersSchema.parse({})),
  })
  .strict()
  .superRefine((c, ctx) => {
    if ((c.caFile === undefined) === (c.caFingerprint === undefined)) ctx.addIssue({ code: 'custom', path: ['caFile'], message: 'exactly one of caFile or caFingerprint is required' });
    if (c.enrollKey !== undefined && c.claimCode !== undefined) ctx.addIssue({ code: 'custom', path: ['claimCode'], message: 'give at most one of enrollKey or claimCode' });
    if (c.claimCode !== undefined) {
      try {
        parseClaimCode(c.claimCode);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['claimCode'], message: (err as Error).message });
      }
    }
    const seen = new Set<string>();
    c.services.forEach((s, i) => {
      if (seen.has(s.name)) ctx.addIssue({ code: 'custom', path: ['services', i, 'name'], message: `duplicate service name ${s.name}` });
      seen.add(s.name);
    });
  });

export type AgentConfig = z.infer<typeof agentConfigSchema>;
export type AgentTimers = z.infer<typeof agentTimersSchema>;

export function parseAgentConfig(input: unknown, source = 'config'): Readonly<AgentConfig> {
  return parseConfig(agentConfigSchema, input, source);
}


export function loadAgentConfig(file: string): Readonly<AgentConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PortwayError('PW_CONFIG_INVALID', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PortwayError('PW_CONFIG_INVALID', `${file}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  return parseAgentConfig(json, file);
}
