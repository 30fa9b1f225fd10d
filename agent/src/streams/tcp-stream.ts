/**
 * One stream on the device: a data socket that received STREAM_OPEN (and handed off: its outer TLS layer is
 * gone) carries the inner TLS session on its TCP connection, the agent being its server. The agent checks
 * the user's certificate against the identity the relay announced, on a claimed device its key against the owner
 * keys and the owner's grants (claim/grant-book.ts), checks the service against its own
 * allow-list (whatever the relay says), connects to the local service, reports the outcome in E2E_STATUS (inside the end-to-end session, so the relay can
 * neither read nor forge it), and pumps bytes.
 */
import type { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { E2E_ALPN_DATAGRAMS, E2E_ALPN_SERIAL_TAP, encodeFrame, FrameType, NAME_PATTERN, PortwayError, requestedService, selectInnerAlpn, type StreamOpen } from '../../../protocol';
import { pumpE2E, type PumpResult } from '../../../shared/e2e-pump';
import type { Logger } from '../../../shared/logger';
import { verifyPeerCert } from '../../../shared/peer-cert';
import { certFingerprint, certSpkiFingerprint } from '../../../shared/x509';
import type { AccessDecision } from '../claim/grant-book';
import type { ServiceConfig } from '../config';
import type { DataSocket } from '../data-socket';
import { runSerialStream, type SerialStreamDeps } from './serial-stream';
import type { UdpSessions } from './udp-sessions';
import { runUdpStream } from './udp-stream';

export interface TcpStreamOptions {
  readonly serviceConnectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  readonly closeGraceMs: number;
  /** Heartbeats on each stream (shared/e2e-pump.ts), announced to the client in E2E_STATUS. */
  readonly heartbeatMs: number;
}

export async function runStream(
  deps: {
    log: Logger; secureContext: tls.SecureContext; ca: X509Certificate; services: ReadonlyMap<string, ServiceConfig>; udpSessions: UdpSessions; serial: Omit<SerialStreamDeps, 'log'>;
    /** A claimed device's access rule (claim/grant-book.ts): its owner keys, and the keys its owner granted for the services granted. */
    access?: { decide(key: string, service: string, now: number): AccessDecision };
    /** Told the user key a claimed device admitted, so the agent can end the stream when the owner's grants change. */
    onAdmitted?: (key: string) => void;
    /** Told the code of every stream the agent refused (for the metrics). */
    onRefused?: (code: string) => void;
    /** The time to check the user's certificate at: the system clock, or the time floor while the clock is not known (clock/time-floor.ts). */
    now?: () => number;
  },
  dataSocket: DataSocket,
  open: StreamOpen,
  options: TcpStreamOptions,
  onHandshakeDone: () => void = () => undefined,
): Promise<PumpResult | undefined> {
  const log = deps.log.child({ streamId: open.streamId, service: open.service, userId: open.user.id });
  const outer = dataSocket.raw;
  log.debug({ buffered: outer.readableLength }, 'agent.stream.open_received');
  // A forward proxy offers E2E_ALPN_DATAGRAMS for a UDP session, E2E_ALPN_SERIAL_TAP for a read-only serial
  // tap and neither for a byte stream (TCP, or the writer of a serial port), and with each the service it asked
  // for (protocol/e2e-service.ts), which is checked against STREAM_OPEN below.
  let offered: readonly string[] = [];
  const inner = new tls.TLSSocket(outer, {
    isServer: true,
    secureContext: deps.secureContext,
    requestCert: true,
    rejectUnauthorized: true,
    ALPNCallback: ({ protocols }) => {
      offered = protocols;
      return selectInnerAlpn(protocols);
    },
  });
  inner.on('error', () => {
    // Handled below: the handshake promise or the pump reports it.
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PortwayError('PW_HANDSHAKE_TIMEOUT', 'end-to-end handshake timeout')), options.handshakeTimeoutMs);
      inner.once('secure', () => {
        clearTimeout(timer);
        resolve();
      });
      inner.once('error', (err) => {
        clearTimeout(timer);
        reject(new PortwayError('PW_E2E_HANDSHAKE_FAILED', `end-to-end handshake failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
      });
      inner.once('close', () => {
        clearTimeout(timer);
        reject(new PortwayError('PW_E2E_HANDSHAKE_FAILED', 'closed during the end-to-end handshake'));
      });
    });
  } catch (err) {
    log.info({ code: (err as PortwayError).code, reason: (err as Error).message }, 'agent.stream.refused');
    deps.onRefused?.((err as PortwayError).code ?? 'PW_INTERNAL');
    inner.destroy();
    outer.destroy();
    return undefined;
  }

  // A TLSSocket built by hand as a server (not accepted by a tls.Server) does not emit TLS errors after its
  // handshake: Node reports them only as the undocumented '_tlsError' (its tls.Server listens for that one) and
  // leaves the session open, so a record that fails to decrypt went unnoticed until a write failed (EPROTO) or
  // the client reset the stream (https://github.com/nodejs/node/issues/8803). Turn it into the socket's error,
  // so the pump reports PW_E2E_INTEGRITY at once.
  inner.on('_tlsError', (err: Error) => {
    if (!inner.destroyed) inner.destroy(err);
  });
  const isResumed = inner.isSessionReused();
  log.debug({ resumed: isResumed }, 'agent.stream.handshake_done');
  onHandshakeDone();
  const fail = (error: PortwayError): undefined => {
    log.info({ code: error.code, reason: error.message, resumed: isResumed }, 'agent.stream.refused');
    deps.onRefused?.(error.code);
    inner.end(encodeFrame(FrameType.E2E_STATUS, error.toWire()));
    const timer = setTimeout(() => inner.destroy(), options.closeGraceMs);
    timer.unref();
    inner.once('close', () => clearTimeout(timer));
    return undefined;
  };

  const peer = verifyPeerCert(inner, deps.ca, deps.now?.());
  if (!peer.ok) return fail(new PortwayError('PW_E2E_PEER_MISMATCH', `end-to-end client certificate rejected: ${peer.reason}`));
  if (certFingerprint(peer.raw) !== open.user.certFingerprint) {
    return fail(new PortwayError('PW_E2E_PEER_MISMATCH', 'the end-to-end client is not the user the relay announced'));
  }
  const requested = requestedService(offered);
  if (requested.kind === 'conflicting') return fail(new PortwayError('PW_BAD_REQUEST', 'the end-to-end handshake names more than one service'));
  if (requested.kind === 'service' && requested.name !== open.service) {
    return fail(new PortwayError('PW_E2E_SERVICE_MISMATCH', `the client asked for service ${printableName(requested.name)}, the relay opened ${printableName(open.service)}`));
  }
  if (requested.kind === 'none') log.debug('agent.stream.service_unbound');
  if (deps.access) {
    const key = certSpkiFingerprint(peer.raw);
    const decision = deps.access.decide(key, open.service, deps.now?.() ?? Date.now());
    if (!decision.ok) return fail(decision.error);
    if (decision.via === 'grant') log.debug('agent.stream.granted');
    deps.onAdmitted?.(key);
  }
  const service = deps.services.get(open.service);
  // An exact match only: a relay that forwards another name than the client asked for (an address, "../", a look-alike)
  // gets this authenticated answer, which names what the device was asked for (reliability-hostile-relay-service.test.ts).
  if (!service) return fail(new PortwayError('PW_SERVICE_NOT_EXPOSED', `this device does not expose ${printableName(open.service)}`));
  const transport = inner.alpnProtocol === E2E_ALPN_DATAGRAMS ? 'udp' : inner.alpnProtocol === E2E_ALPN_SERIAL_TAP ? 'serial tap' : 'tcp';
  // A serial port is a byte stream: its writer opens a plain (tcp) stream, a tap asks for one.
  const isSerialStream = service.type === 'serial' && (transport === 'tcp' || transport === 'serial tap');
  if (transport !== service.type && !isSerialStream) {
    const hint = service.type === 'udp' ? 'use portway connect --udp' : service.type === 'serial' ? 'use portway console or portway connect without --udp' : transport === 'serial tap' ? 'read-only taps exist only for serial services' : 'connect without --udp';
    return fail(new PortwayError('PW_SERVICE_TYPE_MISMATCH', `service ${open.service} is ${service.type}, the stream is ${transport}; ${hint}`));
  }
  if (service.type === 'udp') return runUdpStream({ log, sessions: deps.udpSessions }, inner, dataSocket.raw, service, options, fail);
  if (service.type === 'serial') {
    return runSerialStream({ log, ...deps.serial }, inner, dataSocket.raw, service, transport === 'serial tap' ? 'tap' : 'writer', options, fail);
  }

  let local: net.Socket;
  try {
    local = await connectLocal(service.target, options.serviceConnectTimeoutMs);
  } catch (err) {
    return fail(err as PortwayError);
  }
  inner.write(encodeFrame(FrameType.E2E_STATUS, { ok: true, heartbeatMs: options.heartbeatMs }));
  log.info({ resumed: isResumed }, 'agent.stream.opened');
  const result = await pumpE2E(inner, local, { closeGraceMs: options.closeGraceMs, transport: dataSocket.raw, heartbeatMs: options.heartbeatMs });
  // warn: an integrity failure (PW_E2E_INTEGRITY, the only error the pump reports on this side) is not self-healing.
  log[result.error ? 'warn' : 'info']({ outcome: result.outcome, code: result.error?.code, reason: result.reason, bytesIn: result.bytesFromLocal, bytesOut: result.bytesToLocal }, 'agent.stream.closed');
  return result;
}

/** A service name as sent by a peer, fit for a message: as is when well-formed, else quoted and cut. */
function printableName(name: string): string {
  return NAME_PATTERN.test(name) ? name : JSON.stringify(name).slice(0, 80);
}

function connectLocal(target: string, timeoutMs: number): Promise<net.Socket> {
  const index = target.lastIndexOf(':');
  const host = target.slice(0, index).replace(/^\[|\]$/g, '');
  const port = Number(target.slice(index + 1));
  return new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new PortwayError('PW_SERVICE_UNREACHABLE', `service ${target} did not accept within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      reject(
        err.code === 'ECONNREFUSED'
          ? new PortwayError('PW_SERVICE_REFUSED', `connection refused by device service ${target}`)
          : new PortwayError('PW_SERVICE_UNREACHABLE', `device service ${target} unreachable: ${err.code ?? err.message}`),
      );
    };
    socket.once('error', onError);
  });
}
