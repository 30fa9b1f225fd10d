/**
 * TLS settings shared by every Portway connection: TLS 1.3 only, and AEAD suites in the order that is
 * fastest on the machine choosing. With AES instructions (x86 AES-NI, ARMv8 crypto extensions) AES-128-GCM
 * leads (about 7% cheaper than AES-256-GCM); without them (Raspberry Pi 3/4 cores lack the ARMv8 crypto
 * extensions) ChaCha20-Poly1305 is several times faster, so a device without AES puts it first and, as
 * the server of the end-to-end session, insists on its own order.
 */
import { readFileSync } from 'node:fs';

const AES_FIRST = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384';
const CHACHA_FIRST = 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384';

export function hasAesInstructions(cpuinfo?: string): boolean {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return true; // not Linux: assume a desktop-class CPU
    }
  }
  // x86: "flags : ... aes ..."; arm64: "Features : ... aes pmull ...".
  return /^(flags|Features)\s*:.*\baes\b/m.test(text);
}

export function tlsCipherOptions(aes = hasAesInstructions()): { ciphers: string; minVersion: 'TLSv1.3'; honorCipherOrder: boolean } {
  return { ciphers: aes ? AES_FIRST : CHACHA_FIRST, minVersion: 'TLSv1.3', honorCipherOrder: !aes };
}
