/**
 * X.509 v3 certificates (RFC 5280) built with forge.asn1 and signed with node:crypto (ECDSA P-256, SHA-256).
 *
 *   Certificate    ::= SEQUENCE { tbsCertificate, signatureAlgorithm (ecdsa-with-SHA256), signature BIT STRING }
 *   TBSCertificate ::= SEQUENCE { [0] version v3, serialNumber, signature, issuer, validity { notBefore, notAfter },
 *                                 subject, subjectPublicKeyInfo, [3] extensions }
 *
 * Times before 2050 are UTCTime, from 2050 on GeneralizedTime (RFC 5280 4.1.2.5).
 */
import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';
import { type Asn1, asn1ToDer, oidAsn1, OIDS, seqAsn1, signAsn1, spkiAsn1 } from '../../../shared/x509';

const { Class, Type } = forge.asn1;

export const EXTENSION_OIDS = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
} as const;

export const EKU_OIDS = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' } as const;

export interface Extension {
  readonly id: string;
  readonly critical: boolean;
  readonly value: Asn1;
}

export interface CertificateSpec {
  readonly serial: Buffer;
  readonly issuer: Asn1;
  readonly subject: Asn1;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Uncompressed P-256 point of the subject's key. */
  readonly publicKeyPoint: Buffer;
  readonly extensions: readonly Extension[];
}

/** Build and sign a certificate; returns its DER. */
export function buildCertificate(spec: CertificateSpec, issuerKey: KeyObject): Buffer {
  const tbs = seqAsn1([
    forge.asn1.create(Class.CONTEXT_SPECIFIC, 0, true, [integerAsn1(Buffer.from([2]))]),
    integerAsn1(spec.serial),
    seqAsn1([oidAsn1(OIDS.ecdsaWithSha256)]),
    spec.issuer,
    seqAsn1([timeAsn1(spec.notBefore), timeAsn1(spec.notAfter)]),
    spec.subject,
    spkiAsn1(spec.publicKeyPoint),
    forge.asn1.create(Class.CONTEXT_SPECIFIC, 3, true, [seqAsn1(spec.extensions.map(extensionAsn1))]),
  ]);
  return signAsn1(tbs, issuerKey);
}

/** 16 random bytes, positive and minimally encoded (top bits 01): 126 bits of entropy. */
export function randomSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x3f) | 0x40;
  return serial;
}

/** Key identifier method 1 of RFC 5280 4.2.1.2: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(publicKeyPoint: Buffer): Buffer {
  return createHash('sha1').update(publicKeyPoint).digest();
}

export function basicConstraints(ca: { pathLen: number } | undefined): Extension {
  const fields = ca ? [forge.asn1.create(Class.UNIVERSAL, Type.BOOLEAN, false, '\xff'), integerAsn1(Buffer.from([ca.pathLen]))] : [];
  return { id: EXTENSION_OIDS.basicConstraints, critical: true, value: seqAsn1(fields) };
}

const KEY_USAGE_BITS = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;
export type KeyUsage = keyof typeof KEY_USAGE_BITS;

/** keyUsage as a DER named-bit list: trailing zero bits dropped and counted as unused. */
export function keyUsage(usages: readonly KeyUsage[]): Extension {
  const bits = usages.map((usage) => KEY_USAGE_BITS[usage]);
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[bit >> 3] = (bytes[bit >> 3] ?? 0) | (0x80 >> (bit & 7));
  const value = forge.asn1.create(Class.UNIVERSAL, Type.BITSTRING, false, Buffer.concat([Buffer.from([7 - (highest & 7)]), bytes]).toString('binary'));
  return { id: EXTENSION_OIDS.keyUsage, critical: true, value };
}

export function extKeyUsage(oids: readonly string[]): Extension {
  return { id: EXTENSION_OIDS.extKeyUsage, critical: false, value: seqAsn1(oids.map(oidAsn1)) };
}

export type GeneralName = { readonly type: 'dns' | 'uri' | 'ip'; readonly value: string };

export function subjectAltName(names: readonly GeneralName[]): Extension {
  const tagOf = { dns: 2, uri: 6, ip: 7 } as const;
  const value = seqAsn1(
    names.map((name) =>
      forge.asn1.create(Class.CONTEXT_SPECIFIC, tagOf[name.type], false, (name.type === 'ip' ? ipBytes(name.value) : Buffer.from(name.value, 'ascii')).toString('binary')),
    ),
  );
  return { id: EXTENSION_OIDS.subjectAltName, critical: false, value };
}

export function subjectKeyIdentifier(keyId: Buffer): Extension {
  return { id: EXTENSION_OIDS.subjectKeyIdentifier, critical: false, value: octetStringAsn1(keyId) };
}

export function authorityKeyIdentifier(keyId: Buffer): Extension {
  return { id: EXTENSION_OIDS.authorityKeyIdentifier, critical: false, value: seqAsn1([forge.asn1.create(Class.CONTEXT_SPECIFIC, 0, false, keyId.toString('binary'))]) };
}

/** Network-order bytes of an IPv4 or IPv6 literal (no zone); TypeError otherwise. */
export function ipBytes(ip: string): Buffer {
  const version = isIP(ip);
  if (version === 4) return Buffer.from(ip.split('.').map(Number));
  if (version !== 6 || ip.includes('%')) throw new TypeError('not an IP address literal');
  // A trailing dotted quad ("::ffff:192.0.2.1") becomes two hex groups, then "::" expands to zero groups.
  const hex = ip.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_all, a: string, b: string, c: string, d: string) =>
    `${((Number(a) << 8) | Number(b)).toString(16)}:${((Number(c) << 8) | Number(d)).toString(16)}`,
  );
  const [head = '', tail] = hex.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

function integerAsn1(bytes: Buffer): Asn1 {
  return forge.asn1.create(Class.UNIVERSAL, Type.INTEGER, false, bytes.toString('binary'));
}

function octetStringAsn1(bytes: Buffer): Asn1 {
  return forge.asn1.create(Class.UNIVERSAL, Type.OCTETSTRING, false, bytes.toString('binary'));
}

function timeAsn1(date: Date): Asn1 {
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050
    ? forge.asn1.create(Class.UNIVERSAL, Type.UTCTIME, false, forge.asn1.dateToUtcTime(date))
    : forge.asn1.create(Class.UNIVERSAL, Type.GENERALIZEDTIME, false, forge.asn1.dateToGeneralizedTime(date));
}

function extensionAsn1(extension: Extension): Asn1 {
  return seqAsn1([
    oidAsn1(extension.id),
    ...(extension.critical ? [forge.asn1.create(Class.UNIVERSAL, Type.BOOLEAN, false, '\xff')] : []),
    octetStringAsn1(asn1ToDer(extension.value)),
  ]);
}
