/**
 * A renewed device certificate from the relay (`cert` command, relay/src/control/cert-renewal.ts), checked before
 * the agent uses it: issued and signed by the relay CA the agent enrolled with, for this device ID, for the key
 * the agent holds, and not expired. Then written atomically over device.crt (a power cut leaves the old or the
 * new one), so a restart uses it too. PW_BAD_REQUEST for a certificate that fails a check (nothing is written).
 */
import { createPublicKey, X509Certificate } from 'node:crypto';
import path from 'node:path';
import { PortwayError } from '../../../protocol';
import { writeFileAtomic } from '../../../shared/write-file-atomic';
import { describeCert } from '../../../shared/x509';

export async function installRenewedCert(
  options: { certPem: string; deviceId: string; keyPem: string; caPem: string; stateDir: string; now: number },
): Promise<{ notAfter: Date; fingerprint: string }> {
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(options.certPem);
    ca = new X509Certificate(options.caPem);
  } catch (err) {
    throw new PortwayError('PW_BAD_REQUEST', 'renewed certificate cannot be parsed', { cause: err });
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw new PortwayError('PW_BAD_REQUEST', 'renewed certificate not issued by the relay CA');
  const described = describeCert(cert.raw);
  if (described.role !== 'device' || described.id !== options.deviceId) throw new PortwayError('PW_BAD_REQUEST', 'renewed certificate is for another identity');
  const ownKey = createPublicKey(options.keyPem).export({ type: 'spki', format: 'der' });
  if (!cert.publicKey.export({ type: 'spki', format: 'der' }).equals(ownKey)) throw new PortwayError('PW_BAD_REQUEST', 'renewed certificate is for another key');
  // Only the end matters here: a device whose clock lags (no RTC) may see the start in its future.
  if (options.now > described.notAfter.getTime()) throw new PortwayError('PW_BAD_REQUEST', 'renewed certificate has already expired');
  await writeFileAtomic(path.join(options.stateDir, 'device.crt'), options.certPem, 0o644);
  return { notAfter: described.notAfter, fingerprint: described.fingerprint };
}
