/**
 * TLS 1.3 session tickets for the outer connections to the relay (forward proxy sockets, agent data
 * sockets). Resuming skips certificate verification and both signatures, which are most of a handshake's
 * CPU (about 2 ms per side here); the relay still identifies the peer (its certificate travels in the
 * ticket) and still checks revocation on every data socket. Each ticket is used once, newest first; the
 * cache is bounded.
 */
import type tls from 'node:tls';

const MAX_TICKETS = 8;

export class TlsSessionCache {
  private readonly tickets: Buffer[] = [];

  /** A ticket to offer on the next connection, or undefined for a full handshake. */
  take(): Buffer | undefined {
    return this.tickets.pop();
  }

  /** Collect the tickets the server sends on this connection. */
  watch(socket: tls.TLSSocket): void {
    socket.on('session', (ticket: Buffer) => {
      this.tickets.push(ticket);
      if (this.tickets.length > MAX_TICKETS) this.tickets.shift();
    });
  }

  clear(): void {
    this.tickets.length = 0;
  }
}
