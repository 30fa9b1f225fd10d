/**
 * One serial stream on the device: after runStream (tcp-stream.ts) has verified the user and found a `serial`
 * service, the agent takes the port's writer slot (or a tap slot for a stream that asked for a read-only
 * tap), which opens the port if nobody had it open, reports E2E_STATUS and pumps bytes: raw, or through the
 * RFC 2217 server (rfc2217-link.ts) for a writer on an `rfc2217` service. Taps always get raw bytes.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import { encodeFrame, FrameType, PortwayError } from '../../../protocol';
import { pumpE2E, type PumpResult } from '../../../shared/e2e-pump';
import type { Logger } from '../../../shared/logger';
import type { SerialServiceConfig } from '../config';
import { Rfc2217Link } from './rfc2217-link';
import { SerialLink } from './serial-link';
import type { SerialLease, SerialPortHub, SerialRole } from './serial-port-hub';

/** Port bytes waiting for a slow tap before newer ones are dropped. */
export const SERIAL_TAP_BACKLOG_BYTES = 256 * 1024;
/** Malformed-Telnet log lines per stream; the rest are only counted (in agent.stream.closed). */
const MAX_INVALID_LOG_LINES = 5;

export interface SerialStreamDeps {
  readonly log: Logger;
  readonly hubs: ReadonlyMap<string, SerialPortHub>;
  /** The port is missing or present again (from a failed open), so the services list can follow at once. */
  readonly onAvailability: (service: string, isAvailable: boolean) => void;
}

export async function runSerialStream(
  deps: SerialStreamDeps,
  inner: tls.TLSSocket,
  transport: net.Socket,
  service: SerialServiceConfig,
  role: SerialRole,
  options: { closeGraceMs: number; heartbeatMs: number },
  fail: (error: PortwayError) => undefined,
): Promise<PumpResult | undefined> {
  const hub = deps.hubs.get(service.name);
  if (!hub) return fail(new PortwayError('PW_INTERNAL', `no port for serial service ${service.name}`));
  let lease: SerialLease;
  try {
    lease = await hub.acquire(role);
  } catch (err) {
    const error = err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', String(err));
    if (error.code === 'PW_SERVICE_UNAVAILABLE') deps.onAvailability(service.name, false);
    return fail(error);
  }
  deps.onAvailability(service.name, true);
  const linkOptions = { lingerMs: service.lingerMs, maxTapBacklogBytes: SERIAL_TAP_BACKLOG_BYTES };
  let invalidLogged = 0;
  const link =
    role === 'writer' && service.mode === 'rfc2217'
      ? new Rfc2217Link(lease, linkOptions, (reason) => {
          if (invalidLogged++ < MAX_INVALID_LOG_LINES) deps.log.warn({ code: 'PW_TELNET_INVALID', reason }, 'agent.serial.telnet_invalid');
        })
      : new SerialLink(lease, linkOptions);
  link.on('error', () => {
    // The pump reports how the stream ended.
  });
  inner.write(encodeFrame(FrameType.E2E_STATUS, { ok: true, heartbeatMs: options.heartbeatMs }));
  deps.log.info({ transport: 'serial', role, mode: role === 'tap' ? 'raw' : service.mode }, 'agent.stream.opened');
  const result = await pumpE2E(inner, link, { closeGraceMs: options.closeGraceMs, transport, heartbeatMs: options.heartbeatMs });
  link.destroy();
  deps.log[result.error ? 'warn' : 'info'](
    {
      outcome: result.outcome,
      code: result.error?.code,
      reason: result.reason,
      transport: 'serial',
      role,
      bytesIn: result.bytesFromLocal,
      bytesOut: result.bytesToLocal,
      telnetInvalid: link instanceof Rfc2217Link ? link.invalidCount : undefined,
      ...(role === 'tap' ? link.counters : {}),
    },
    'agent.stream.closed',
  );
  return result;
}
