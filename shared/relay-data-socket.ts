/**
 * Open a TLS data socket to the relay (ALPN portway-data/1, with the caller's client certificate in its
 * secure context), for the agent and the forward proxy alike: a deadline, TLS session resumption, an
 * optional abort signal, and coded errors. Resolves with the TLS socket, the TCP socket under it (what
 * carries the inner session after the handoff, and what gets reset when a stream is cut) and the carrier
 * between them, which ends the outer TLS at the handoff marker (shared/tls-handoff.ts).
 */
import net from 'node:net';
import tls from 'node:tls';
import { ALPN_DATA, PortwayError } from '../protocol';
import { checkRelayCertAt, type RelayCertCheck } from './relay-cert-at';
import { isIpLiteral, relayTlsError } from './relay-trust';
import { HandoffCarrier } from './tls-handoff';
import type { TlsSessionCache } from './tls-session-cache';

export interface RelaySocket {
  readonly tls: tls.TLSSocket;
  readonly raw: net.Socket;
  readonly carrier: HandoffCarrier;
}

export interface RelaySocketOptions {
  readonly host: string;
  readonly port: number;
  readonly secureContext: tls.SecureContext;
  readonly timeoutMs: number;
  readonly sessions?: TlsSessionCache;
  readonly signal?: AbortSignal;
  /** Agents whose clock is not known yet: check the relay certificate at this time instead (relay-cert-at.ts). */
  readonly certCheck?: () => RelayCertCheck | undefined;
}

export function connectRelayDataSocket(options: RelaySocketOptions): Promise<RelaySocket> {
  const relayName = `${options.host}:${options.port}`;
  return new Promise<RelaySocket>((resolve, reject) => {
    const raw = net.connect({ host: options.host, port: options.port, noDelay: true, allowHalfOpen: true });
    raw.on('error', () => {
      // Reported through the TLS socket.
    });
    const carrier = new HandoffCarrier(raw);
    const certCheck = options.certCheck?.();
    const socket = tls.connect({
      ...(certCheck ? { rejectUnauthorized: false } : {}),
      socket: carrier,
      secureContext: options.secureContext,
      servername: isIpLiteral(options.host) ? undefined : options.host,
      ALPNProtocols: [ALPN_DATA],
      // No resumption while the clock is unknown: the check below reads the relay's certificate from a full handshake.
      session: certCheck ? undefined : options.sessions?.take(),
    });
    options.sessions?.watch(socket);
    const onAbort = (): void => fail(new PortwayError('PW_SHUTTING_DOWN'));
    const onError = (err: NodeJS.ErrnoException): void => fail(relayTlsError(err, relayName));
    const timer = setTimeout(() => fail(new PortwayError('PW_RELAY_UNREACHABLE', `no connection to relay ${relayName} within ${options.timeoutMs} ms`)), options.timeoutMs);
    const settle = (): void => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
    };
    const fail = (err: Error): void => {
      settle();
      socket.destroy();
      raw.destroy();
      reject(err);
    };
    socket.on('error', onError);
    socket.once('secureConnect', () => {
      const refused = certCheck ? checkRelayCertAt(socket, options.host, certCheck) : undefined;
      if (refused) return fail(refused);
      settle();
      socket.on('error', () => {
        // From here the owner of the socket (a stream, a pool) reports failures through 'close'.
      });
      resolve({ tls: socket, raw, carrier });
    });
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
