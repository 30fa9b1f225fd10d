/**
 * Verify the certificate a TLS peer presented against one CA. Needed where one port accepts peers with
 * and without certificates (the relay's port serves the HTTP API to certificate-less clients), so OpenSSL
 * is told to request but not require a certificate, and for TLSSocket servers built by hand, where Node
 * does not compute `authorized`. Portway CAs issue leaves directly (path length 0): the leaf must be
 * issued and signed by the CA and be within its validity period.
 */
import type { X509Certificate } from 'node:crypto';
import type tls from 'node:tls';

/** Why a presented certificate was refused, as a code the relay sends back (protocol/errors.ts). */
export type PeerCertCode = 'PW_CLIENT_CERT_REQUIRED' | 'PW_CERT_UNTRUSTED' | 'PW_CERT_EXPIRED' | 'PW_CERT_NOT_YET_VALID';

export type PeerCertResult = { readonly ok: true; readonly raw: Buffer } | { readonly ok: false; readonly reason: string; readonly code: PeerCertCode };

export function verifyPeerCert(socket: tls.TLSSocket, ca: X509Certificate, now: number = Date.now()): PeerCertResult {
  // getPeerX509Certificate is much cheaper than getPeerCertificate's legacy object.
  const leaf = socket.getPeerX509Certificate();
  if (!leaf) return { ok: false, reason: 'no client certificate', code: 'PW_CLIENT_CERT_REQUIRED' };
  if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return { ok: false, reason: 'certificate not issued by this relay', code: 'PW_CERT_UNTRUSTED' };
  if (now < Date.parse(leaf.validFrom)) return { ok: false, reason: `certificate not valid before ${leaf.validFrom}`, code: 'PW_CERT_NOT_YET_VALID' };
  if (now > Date.parse(leaf.validTo)) return { ok: false, reason: `certificate expired ${leaf.validTo}`, code: 'PW_CERT_EXPIRED' };
  return { ok: true, raw: leaf.raw };
}
