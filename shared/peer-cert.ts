/**
 * Verify the certificate a TLS peer presented against one CA. Needed where one port accepts peers with
 * and without certificates (the relay's port serves the HTTP API to certificate-less clients), so OpenSSL
 * is told to request but not require a certificate, and for TLSSocket servers built by hand, where Node
 * does not compute `authorized`. Portway CAs issue leaves directly (path length 0): the leaf must be
 * issued and signed by the CA and be within its validity period.
 */
import type { X509Certificate } from 'node:crypto';
import type tls from 'node:tls';

export type PeerCertResult = { readonly ok: true; readonly raw: Buffer } | { readonly ok: false; readonly reason: string };

export function verifyPeerCert(socket: tls.TLSSocket, ca: X509Certificate, now: number = Date.now()): PeerCertResult {
  // getPeerX509Certificate is much cheaper than getPeerCertificate's legacy object.
  const leaf = socket.getPeerX509Certificate();
  if (!leaf) return { ok: false, reason: 'no client certificate' };
  if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return { ok: false, reason: 'certificate not issued by this relay' };
  if (now < Date.parse(leaf.validFrom) || now > Date.parse(leaf.validTo)) return { ok: false, reason: 'certificate expired or not yet valid' };
  return { ok: true, raw: leaf.raw };
}
