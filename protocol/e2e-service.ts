/**
 * The service a client asked for, bound into the end-to-end handshake (docs/protocol.md §4).
 *
 * The relay names the service in STREAM_OPEN, and the agent must not take the relay's word for it: a relay
 * that rewrote the name could send a user's bytes to another service the user may reach (its SSH instead of
 * its web server). So the forward proxy also offers `portway-service/1:<name>` among the ALPN protocols of its
 * inner ClientHello. The ClientHello is covered by the TLS 1.3 handshake transcript, so a relay that changes
 * it breaks the handshake; the agent reads the offered name in its ALPN callback and, after the handshake and
 * before it connects anywhere, refuses a stream whose STREAM_OPEN names another service
 * (PW_E2E_SERVICE_MISMATCH). Which protocol the agent selects still says the transport: the datagram or serial
 * tap id when offered, else this one (a byte stream).
 *
 * Version history: 1 (this layout). A client without it (older than this version) is served unbound.
 */
import { E2E_ALPN_DATAGRAMS } from './datagram-frames';
import { E2E_ALPN_SERIAL_TAP } from './serial-streams';

export const E2E_ALPN_SERVICE_PREFIX = 'portway-service/1:';
/** An ALPN protocol id is at most 255 bytes (RFC 7301); service names are at most 63 ASCII characters. */
const MAX_ALPN_BYTES = 255;

/** The ALPN id that binds `service` into the inner handshake. */
export function serviceAlpn(service: string): string {
  const id = `${E2E_ALPN_SERVICE_PREFIX}${service}`;
  if (service.length === 0 || Buffer.byteLength(id) > MAX_ALPN_BYTES) throw new RangeError('service name does not fit an ALPN protocol id');
  return id;
}

export type RequestedService = { readonly kind: 'none' } | { readonly kind: 'service'; readonly name: string } | { readonly kind: 'conflicting' };

/** The service named among a ClientHello's ALPN protocols: none, exactly one, or conflicting (more than one name). */
export function requestedService(protocols: readonly string[]): RequestedService {
  const names = new Set(protocols.filter((p) => p.startsWith(E2E_ALPN_SERVICE_PREFIX)).map((p) => p.slice(E2E_ALPN_SERVICE_PREFIX.length)));
  if (names.size === 0) return { kind: 'none' };
  if (names.size > 1) return { kind: 'conflicting' };
  return { kind: 'service', name: [...names][0] as string };
}

/** The agent's choice among the offered protocols: the transport id when offered, else the service id; undefined refuses the handshake. */
export function selectInnerAlpn(protocols: readonly string[]): string | undefined {
  if (protocols.includes(E2E_ALPN_DATAGRAMS)) return E2E_ALPN_DATAGRAMS;
  if (protocols.includes(E2E_ALPN_SERIAL_TAP)) return E2E_ALPN_SERIAL_TAP;
  return protocols.find((p) => p.startsWith(E2E_ALPN_SERVICE_PREFIX));
}
