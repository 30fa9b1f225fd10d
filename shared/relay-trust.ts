/**
 * How agents and clients trust the relay's TLS certificate: a CA file, or the SHA-256 fingerprint of a
 * certificate in the chain the relay presents (its CA). With a fingerprint the first connection fetches the
 * chain without verification, keeps the certificate whose fingerprint matches, and from then on verifies
 * normally against it. Nothing is trusted unless the fingerprint matches.
 */
import tls from 'node:tls';
import { ALPN_HTTP, PortwayError } from '../protocol';
import { certFingerprint } from './x509';

export function normalizeFingerprint(input: string): string {
  const hex = input.replace(/^sha256:/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new PortwayError('PW_CONFIG_INVALID', 'a fingerprint is 64 hex digits (SHA-256), colons allowed');
  return hex;
}

export function parseHostPort(input: string, defaultPort?: number): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d{1,5}))?$/.exec(input.trim());
  const host = m?.[1] ?? m?.[2];
  const port = m?.[3] !== undefined ? Number(m[3]) : defaultPort;
  if (!host || port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) throw new PortwayError('PW_CONFIG_INVALID', `expected HOST:PORT, got ${JSON.stringify(input).slice(0, 80)}`);
  return { host, port };
}

/** Fetch the relay's chain and return the PEM of the certificate matching `fingerprint`. */
export function fetchPinnedCa(relay: { host: string; port: number }, fingerprint: string, timeoutMs: number): Promise<string> {
  const pin = normalizeFingerprint(fingerprint);
  return new Promise<string>((resolve, reject) => {
    const socket = tls.connect({ host: relay.host, port: relay.port, servername: isIpLiteral(relay.host) ? undefined : relay.host, rejectUnauthorized: false, ALPNProtocols: [ALPN_HTTP] });
    const timer = setTimeout(() => fail(new PortwayError('PW_RELAY_UNREACHABLE', `no TLS handshake with ${relay.host}:${relay.port} within ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', (err) => fail(new PortwayError('PW_RELAY_UNREACHABLE', `cannot reach relay ${relay.host}:${relay.port}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })));
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
        seen.add(cert.fingerprint256);
        if (certFingerprint(cert.raw) === pin) {
          const pem = `-----BEGIN CERTIFICATE-----\n${cert.raw.toString('base64').replace(/(.{64})/g, '$1\n').trim()}\n-----END CERTIFICATE-----\n`;
          socket.end();
          resolve(pem);
          return;
        }
        cert = cert.issuerCertificate;
      }
      socket.destroy();
      reject(new PortwayError('PW_RELAY_CERT_MISMATCH', 'no certificate in the relay chain matches the configured fingerprint'));
    });
  });
}

export function isIpLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(':');
}

/** Map a TLS verification failure toward the relay to a coded error. */
export function relayTlsError(err: NodeJS.ErrnoException, relay: string): PortwayError {
  const code = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS_CERT_ALTNAME/.test(code)) return new PortwayError('PW_RELAY_CERT_MISMATCH', `relay ${relay} presented a certificate we do not trust (${code})`, { cause: err });
  return new PortwayError('PW_RELAY_UNREACHABLE', `cannot reach relay ${relay}: ${code || err.message}`, { cause: err });
}
