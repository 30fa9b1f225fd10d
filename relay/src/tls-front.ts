/**
 * The relay's one port: a TCP listener whose connections are wrapped in TLS per connection (never on the
 * accept path), with a handshake deadline, then routed by ALPN: data sockets, MQTT, HTTP API.
 * We wrap the raw socket ourselves (instead of tls.Server) so that teardown can send a TCP RST
 * (`raw.resetAndDestroy()`), which a TLSSocket cannot do.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { ALPN_DATA, ALPN_HTTP, ALPN_MQTT, MAX_TLS_RECORD_BYTES, parseClientHelloAlpn, RELAY_ALPNS, TLS_RECORD_HEADER_BYTES } from '../../protocol';
import { HandoffCarrier } from '../../shared/tls-handoff';
import { type PeerCertCode, verifyPeerCert } from '../../shared/peer-cert';
import { describeCert } from '../../shared/x509';
import type { Logger } from '../../shared/logger';
import type { DeviceAdmission } from './device-admission';

const IDENTITY_CACHE_ENTRIES = 10_000;
/** A TLS connection starts with a handshake record (content type 22). */
const TLS_HANDSHAKE_RECORD = 22;

export interface PeerIdentity {
  /** Role from a client certificate that chains to the relay CA; 'none' when absent or not valid. */
  readonly role: 'device' | 'user' | 'none';
  readonly id?: string;
  readonly certFingerprint?: string;
  readonly keyFingerprint?: string;
  /** Why a presented certificate was not accepted (for logs). */
  readonly certError?: string;
  /** The same as a code: PW_CLIENT_CERT_REQUIRED (none, or an unusable role), PW_CERT_UNTRUSTED, PW_CERT_EXPIRED, PW_CERT_NOT_YET_VALID. */
  readonly certCode?: PeerCertCode;
}

export interface Connection {
  readonly tls: tls.TLSSocket;
  readonly raw: net.Socket;
  /** Data sockets only: the layer that ends the outer TLS at the handoff marker (shared/tls-handoff.ts). */
  readonly carrier?: HandoffCarrier;
  readonly peer: PeerIdentity;
  readonly remote: string;
}

/**
 * End a connection at once. The TLS socket goes first: destroying the TCP socket under a TLS wrap that
 * is still dispatching one of its events, and then the wrap, crashes Node (SIGSEGV). With `reset`, the
 * TCP connection is then reset (RST) if it is still open, so the peer sees an error rather than an EOF.
 */
export function dropConnection(conn: Pick<Connection, 'tls' | 'raw'>, options: { reset?: boolean } = {}): void {
  conn.tls.destroy();
  if (conn.raw.destroyed) return;
  if (options.reset) conn.raw.resetAndDestroy();
  else conn.raw.destroy();
}

export interface TlsFrontRoutes {
  data(conn: Connection): void;
  mqtt(conn: Connection): void;
  http(conn: Connection): void;
}

export interface TlsFrontOptions {
  readonly tlsHandshakeTimeoutMs: number;
  readonly maxConnections: number;
}

export class TlsFront {
  private server: net.Server | undefined;
  private readonly sockets = new Map<net.Socket, tls.TLSSocket>();
  /** Connections whose ClientHello is still being read. */
  private readonly peeking = new Set<net.Socket>();
  /** Device connections waiting for their admission slot (paused, before TLS). */
  private readonly waiting = new Set<net.Socket>();
  private readonly identities = new Map<string, { identity: PeerIdentity; notBefore: number; notAfter: number }>();
  private state: 'idle' | 'listening' | 'closed' = 'idle';

  constructor(
    private readonly deps: {
      log: Logger;
      secureContext: tls.SecureContext;
      ca: X509Certificate;
      routes: TlsFrontRoutes;
      onReject?: (reason: string) => void;
      /** Paces connections offering ALPN `mqtt` (device sessions) before their TLS handshake. */
      admission?: DeviceAdmission;
    },
    private readonly options: TlsFrontOptions,
  ) {
    const log = deps.log;
    // One listener for every connection, not a closure each (relay memory per idle device, docs/benchmark.md).
    this.failAfterHandshake = function (this: tls.TLSSocket, err: NodeJS.ErrnoException): void {
      if (this.destroyed) return;
      log.info({ remote: `${this.remoteAddress ?? '?'}:${this.remotePort ?? '?'}`, code: 'PW_TLS_RECORD_INVALID', reason: err.code ?? err.message }, 'relay.connection.failed');
      this.destroy(err);
    };
  }

  /**
   * A TLSSocket built by hand as a server (not accepted by a tls.Server) reports TLS errors after its handshake
   * (a record that fails to decrypt, a protocol violation) only as the undocumented '_tlsError' and stays open
   * (https://github.com/nodejs/node/issues/8803): an MQTT session would then hang until its keepalive. This
   * turns such an error into the end of the connection, which the route that owns it sees as an error.
   */
  private readonly failAfterHandshake: (this: tls.TLSSocket, err: NodeJS.ErrnoException) => void;

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false, noDelay: true }, (raw) => this.handleConnection(raw));
    server.maxConnections = this.options.maxConnections;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.deps.log.error({ err }, 'relay.listener.error'));
    this.state = 'listening';
    const address = server.address() as net.AddressInfo;
    return { host: address.address, port: address.port };
  }

  /** Entry for one raw TCP connection (the listener, and tests). */
  handleConnection(raw: net.Socket): void {
    const remote = `${raw.remoteAddress ?? '?'}:${raw.remotePort ?? '?'}`;
    raw.on('error', () => {
      // Reported through the TLS socket or the route that owns it; a raw error alone just ends the connection.
    });
    if (this.state === 'closed') {
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    raw.setKeepAlive(true, 30_000);
    raw.once('close', () => {
      this.sockets.delete(raw);
      this.waiting.delete(raw);
    });
    const started = Date.now();
    this.peeking.add(raw);
    peekClientHelloAlpn(raw, this.options.tlsHandshakeTimeoutMs).then((offered) => {
      this.peeking.delete(raw);
      if (raw.destroyed || this.state === 'closed') {
        raw.destroy();
        return;
      }
      if (offered === 'not-tls') {
        // Plain HTTP, a port scanner, garbage: no TLS layer is started for it.
        this.deps.log.info({ remote, code: 'PW_NOT_TLS', reason: 'the first bytes are not a TLS handshake' }, 'relay.connection.rejected');
        this.deps.onReject?.('PW_NOT_TLS');
        raw.destroy();
        return;
      }
      // Data sockets get a TLS layer that can end at the handoff marker; MQTT and HTTP keep Node's native one.
      const carrier = offered.includes(ALPN_DATA) ? new HandoffCarrier(raw) : undefined;
      // The wait for an admission slot does not count against the handshake deadline; reading the ClientHello does.
      const handshakeTimeoutMs = Math.max(1, this.options.tlsHandshakeTimeoutMs - (Date.now() - started));
      const start = (): void => {
        this.waiting.delete(raw);
        this.startTls(raw, remote, carrier, handshakeTimeoutMs);
      };
      const admission = this.deps.admission;
      if (!admission || !offered.includes(ALPN_MQTT)) {
        start();
        return;
      }
      this.waiting.add(raw);
      const verdict = admission.admit({ start, isGone: () => raw.destroyed || this.state === 'closed' });
      if ('refused' in verdict) {
        this.waiting.delete(raw);
        this.deps.log.info({ remote, code: 'PW_RELAY_BUSY', reason: 'device sessions are paced after a reconnection storm', expectedWaitMs: verdict.expectedWaitMs }, 'relay.connection.rejected');
        this.deps.onReject?.('PW_RELAY_BUSY');
        raw.destroy();
      }
    });
  }

  private startTls(raw: net.Socket, remote: string, carrier: HandoffCarrier | undefined, handshakeTimeoutMs: number): void {
    const socket = new tls.TLSSocket(carrier ?? raw, {
      isServer: true,
      secureContext: this.deps.secureContext,
      requestCert: true,
      rejectUnauthorized: false,
      ALPNProtocols: [...RELAY_ALPNS],
    });
    this.sockets.set(raw, socket);
    const timer = setTimeout(() => reject('PW_HANDSHAKE_TIMEOUT', 'TLS handshake timeout'), handshakeTimeoutMs);
    const reject = (code: string, reason: string): void => {
      clearTimeout(timer);
      this.deps.log.info({ remote, code, reason }, 'relay.connection.rejected');
      this.deps.onReject?.(code);
      // TLS socket first: reject() also runs inside the 'secure' event, and closing the TCP handle under a
      // TLS wrap that is still dispatching it, then destroying the wrap, crashes Node (SIGSEGV).
      socket.destroy();
      raw.destroy();
    };
    const onHandshakeError = (err: NodeJS.ErrnoException): void => {
      reject(err.code === 'ERR_SSL_NO_APPLICATION_PROTOCOL' ? 'PW_UNKNOWN_ALPN' : 'PW_BAD_PREAMBLE', `TLS handshake failed: ${err.code ?? err.message}`);
    };
    socket.on('error', onHandshakeError);
    socket.once('secure', () => {
      // After the handshake the route that took the connection owns its errors; the shared no-op listener
      // replaces this closure, which would otherwise keep the handshake's timer and state for the session.
      socket.off('error', onHandshakeError).on('error', ignoreErrorAfterHandshake).on('_tlsError', this.failAfterHandshake);
      clearTimeout(timer);
      const alpn = socket.alpnProtocol;
      const conn: Connection = { tls: socket, raw, carrier, peer: this.identify(socket), remote };
      if (alpn === ALPN_DATA) this.deps.routes.data(conn);
      else if (alpn === ALPN_MQTT) this.deps.routes.mqtt(conn);
      else if (alpn === ALPN_HTTP) this.deps.routes.http(conn);
      else reject('PW_UNKNOWN_ALPN', 'TLS connection without a supported ALPN protocol');
    });
  }

  /**
   * The peer's identity from its certificate. Parsing and verifying a certificate costs about as much as
   * relaying a small stream, and the same devices and users connect again and again, so verified results
   * are cached by certificate (bounded); the validity period is checked on every use.
   */
  private identify(socket: tls.TLSSocket): PeerIdentity {
    const cert = socket.getPeerX509Certificate();
    if (!cert) return { role: 'none' };
    // Keyed by the certificate's SHA-256 (44 characters) rather than the certificate itself (about 1 KiB
    // per cached device): the cache stays small next to the connections it serves.
    const key = createHash('sha256').update(cert.raw).digest('base64');
    const now = Date.now();
    const cached = this.identities.get(key);
    if (cached && now >= cached.notBefore && now <= cached.notAfter) return cached.identity;
    const identity = identify(socket, this.deps.ca);
    if (identity.role !== 'none') {
      if (this.identities.size >= IDENTITY_CACHE_ENTRIES) this.identities.delete(this.identities.keys().next().value as string);
      this.identities.set(key, { identity, notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) });
    }
    return identity;
  }

  get connectionCount(): number {
    return this.sockets.size + this.peeking.size + this.waiting.size;
  }

  async stop(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    const server = this.server;
    for (const [raw, socket] of this.sockets) dropConnection({ raw, tls: socket });
    for (const raw of this.peeking) raw.destroy();
    this.deps.admission?.stop();
    for (const raw of this.waiting) raw.destroy();
    this.waiting.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function ignoreErrorAfterHandshake(): void {
  // The route that took the connection reports its errors.
}

/**
 * Read the first TLS record of a connection without consuming it (the bytes go back into the socket) and
 * return the ALPN protocols its ClientHello offers: 'not-tls' when the first byte cannot start a TLS
 * handshake; empty for anything else unreadable, which then fails in the TLS layer with the usual reasons.
 * Ends early, with what it has, when the socket closes or at the deadline.
 */
function peekClientHelloAlpn(raw: net.Socket, timeoutMs: number): Promise<readonly string[] | 'not-tls'> {
  return new Promise<readonly string[] | 'not-tls'>((resolve) => {
    let seen: Buffer = Buffer.alloc(0);
    const done = (protocols: readonly string[] | 'not-tls'): void => {
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('close', onClose);
      raw.pause();
      if (seen.length > 0 && !raw.destroyed) raw.unshift(seen);
      resolve(protocols);
    };
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      if (seen[0] !== TLS_HANDSHAKE_RECORD) {
        done('not-tls');
        return;
      }
      const result = parseClientHelloAlpn(seen);
      if (result.kind === 'alpn') done(result.protocols);
      else if (result.kind === 'unknown' || seen.length >= MAX_TLS_RECORD_BYTES + TLS_RECORD_HEADER_BYTES) done([]);
    };
    const onClose = (): void => done([]);
    const timer = setTimeout(() => done([]), timeoutMs);
    raw.on('data', onData);
    raw.once('close', onClose);
  });
}

function identify(socket: tls.TLSSocket, ca: X509Certificate): PeerIdentity {
  const verified = verifyPeerCert(socket, ca);
  if (!verified.ok) return { role: 'none', certError: verified.reason, certCode: verified.code };
  try {
    const description = describeCert(verified.raw);
    if ((description.role === 'device' || description.role === 'user') && description.id) {
      return { role: description.role, id: description.id, certFingerprint: description.fingerprint, keyFingerprint: description.spkiFingerprint };
    }
    return { role: 'none', certError: `certificate role ${description.role} cannot connect here` };
  } catch (err) {
    return { role: 'none', certError: `unreadable certificate: ${(err as Error).message}` };
  }
}
