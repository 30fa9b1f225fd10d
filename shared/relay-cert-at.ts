/**
 * Check the relay's TLS certificate at a given time instead of the system clock: used by agents whose clock is
 * not known yet (a board without a real-time clock booting at its last saved time, or 1970; agent/src/clock/
 * time-floor.ts). Nothing else is relaxed: the certificate must be issued and signed by the pinned relay CA
 * (directly: Portway's own relay certificates are; an operator's chain through intermediates is refused until
 * the clock is known), both must be valid at `atMs`, and the name or IP must match. OpenSSL's verdict (made
 * with the wrong clock) is not used on this path; the connection is made with rejectUnauthorized: false and
 * this check runs on 'secureConnect', before any byte is read from the relay.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type tls from 'node:tls';
import { PortwayError } from '../protocol';

export interface RelayCertCheck {
  /** The pinned CA that issued the relay's certificate (the agent's relay-ca.crt). */
  readonly ca: X509Certificate;
  /** Milliseconds since the epoch to check validity at. */
  readonly atMs: number;
}

/** undefined when the relay's certificate passes; PW_RELAY_CERT_MISMATCH (with the reason) otherwise. */
export function checkRelayCertAt(socket: tls.TLSSocket, host: string, check: RelayCertCheck): PortwayError | undefined {
  const leaf = socket.getPeerX509Certificate();
  const fail = (reason: string): PortwayError => new PortwayError('PW_RELAY_CERT_MISMATCH', `${reason} (checked at ${new Date(check.atMs).toISOString()}: the clock is not known yet)`);
  if (!leaf) return fail('the relay sent no certificate');
  if (!leaf.checkIssued(check.ca) || !leaf.verify(check.ca.publicKey)) return fail('the relay certificate was not issued by the pinned relay CA');
  for (const [what, cert] of [['relay CA', check.ca], ['relay certificate', leaf]] as const) {
    if (check.atMs < Date.parse(cert.validFrom)) return fail(`${what} not valid before ${cert.validFrom}`);
    if (check.atMs > Date.parse(cert.validTo)) return fail(`${what} expired ${cert.validTo}`);
  }
  const matches = isIP(host) !== 0 ? leaf.checkIP(host) !== undefined : leaf.checkHost(host) !== undefined;
  if (!matches) return fail(`the relay certificate does not name ${host}`);
  return undefined;
}

export function relayCaOf(pem: string): X509Certificate {
  return new X509Certificate(pem);
}
