/**
 * One UDP session on the device: after runStream (tcp-stream.ts) has verified the user and found a `udp`
 * service for a datagram stream, the agent takes a session slot, opens one UDP socket connect()ed to the
 * service (so only the service's replies come back, and they belong to this session), reports E2E_STATUS
 * and carries datagrams both ways (shared/datagram-session.ts) until the idle timeout or either side closes.
 */
import dgram from 'node:dgram';
import type net from 'node:net';
import type tls from 'node:tls';
import { encodeFrame, FrameType, PortwayError } from '../../../protocol';
import { DatagramSession } from '../../../shared/datagram-session';
import { pumpE2E, type PumpResult } from '../../../shared/e2e-pump';
import type { Logger } from '../../../shared/logger';
import type { UdpServiceConfig } from '../config';
import type { UdpSessions, UdpSessionSlot } from './udp-sessions';

/** Framed datagrams waiting for a slow stream before newer ones are dropped. */
export const UDP_MAX_BACKLOG_BYTES = 256 * 1024;

export interface UdpStreamOptions {
  readonly serviceConnectTimeoutMs: number;
  readonly closeGraceMs: number;
  readonly heartbeatMs: number;
}

export async function runUdpStream(
  deps: { log: Logger; sessions: UdpSessions },
  inner: tls.TLSSocket,
  transport: net.Socket,
  service: UdpServiceConfig,
  options: UdpStreamOptions,
  fail: (error: PortwayError) => undefined,
): Promise<PumpResult | undefined> {
  let slot: UdpSessionSlot;
  try {
    slot = deps.sessions.acquire(service);
  } catch (err) {
    return fail(err as PortwayError);
  }
  const { host, port } = splitTarget(service.target);
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  const session = new DatagramSession(
    { send: (datagram, done) => socket.send(datagram, done) },
    { idleTimeoutMs: service.idleTimeoutMs, maxBacklogBytes: UDP_MAX_BACKLOG_BYTES, closeGraceMs: options.closeGraceMs },
  );
  session.on('error', () => {
    // The pump reports how the session ended.
  });
  let state: 'connecting' | 'open' = 'connecting';
  let connectFailed: (err: NodeJS.ErrnoException) => void = () => undefined;
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (state === 'connecting') connectFailed(err);
    // ECONNREFUSED: ICMP port unreachable for an earlier datagram (nothing listens on the target now). The
    // socket stays usable and the service may come back; other send errors are counted the same way.
    else if (err.code === 'ECONNREFUSED') session.counters.dropped.refused++;
    else session.counters.dropped['send-failed']++;
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => connectFailed(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })), options.serviceConnectTimeoutMs);
      connectFailed = (err) => {
        clearTimeout(timer);
        reject(new PortwayError('PW_SERVICE_UNREACHABLE', `device service udp ${service.target} unreachable: ${err.code ?? err.message}`));
      };
      socket.connect(port, host, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } catch (err) {
    session.destroy();
    socket.close();
    slot.release();
    return fail(err as PortwayError);
  }
  state = 'open';
  slot.attach(session);
  socket.on('message', (datagram) => session.deliver(datagram));
  inner.write(encodeFrame(FrameType.E2E_STATUS, { ok: true, heartbeatMs: options.heartbeatMs }));
  deps.log.info({ transport: 'udp', udpSessions: deps.sessions.total }, 'agent.stream.opened');
  session.start();
  let result: PumpResult;
  try {
    result = await pumpE2E(inner, session, { closeGraceMs: options.closeGraceMs, transport, heartbeatMs: options.heartbeatMs });
  } finally {
    socket.close();
    slot.release();
  }
  const { datagramsIn, datagramsOut, dropped } = session.counters;
  deps.log[result.error ? 'warn' : 'info'](
    { outcome: result.outcome, code: result.error?.code, reason: result.reason, transport: 'udp', closeReason: session.closeReason, datagramsIn, datagramsOut, dropped, udpSessions: deps.sessions.total },
    'agent.stream.closed',
  );
  return result;
}

function splitTarget(target: string): { host: string; port: number } {
  const index = target.lastIndexOf(':');
  return { host: target.slice(0, index).replace(/^\[|\]$/g, ''), port: Number(target.slice(index + 1)) };
}
