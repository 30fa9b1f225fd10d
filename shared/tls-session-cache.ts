/**
 * TLS 1.3 session tickets for resuming: the outer connections to the relay (forward proxy sockets, agent
 * data sockets) and the inner end-to-end sessions with a device. Resuming skips certificate verification
 * and both signatures, which are most of a handshake's CPU (about 2 ms per side here); the server still
 * knows the peer (its certificate travels in the ticket) and checks it as on a full handshake.
 *
 * The newest ticket is offered again and again until a newer one arrives, rather than each ticket once:
 * OpenSSL's server sends tickets only after a full handshake (two), none after a resumed one, so single-use
 * tickets would make every third connection a full handshake. OpenSSL accepts a ticket more than once
 * (there is no early data here, so nothing to replay), and RFC 8446's advice to use each ticket once is
 * about unlinkability, which does not apply: the relay and the device know who connects anyway. A ticket
 * the server no longer takes (expired after its lifetime, keys rotated, another server) just means a full
 * handshake, which brings new tickets.
 */
import type tls from 'node:tls';

export class TlsSessionCache {
  private ticket: Buffer | undefined;

  /** The ticket to offer on the next connection, or undefined for a full handshake. */
  take(): Buffer | undefined {
    return this.ticket;
  }

  /** Keep the newest ticket the server sends on this connection. */
  watch(socket: tls.TLSSocket): void {
    socket.on('session', (ticket: Buffer) => {
      this.ticket = ticket;
    });
  }

  clear(): void {
    this.ticket = undefined;
  }
}
