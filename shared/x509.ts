/**
 * X.509 for every component: P-256 key pairs, PKCS#10 certificate signing requests, fingerprints and
 * certificate descriptions. Node built-ins plus node-forge's ASN.1 encoder; node-forge cannot use ECDSA
 * keys, so structures are built with `forge.asn1` and signed with node:crypto (ecdsa-with-SHA256, DER).
 * Only node-forge's ASN.1 module is loaded (`node-forge/lib/asn1`): all of node-forge costs the device ~10 MB.
 *
 * Also the building blocks the relay's certificate authority shares with the CSR code (names, SPKI,
 * signing). Input from peers (CSRs) is read with a small strict DER reader that works on byte slices, so
 * a signature is always checked over the exact bytes received.
 *
 * Fingerprints are SHA-256 over DER, lowercase hex without colons: `certFingerprint` over the whole
 * certificate, `spkiFingerprint` over the SubjectPublicKeyInfo (stable across renewals with the same key).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import type forge from 'node-forge';
import asn1 from 'node-forge/lib/asn1';
import { PortwayError, URI_DEVICE_PREFIX, URI_USER_PREFIX } from '../protocol';

export type Asn1 = forge.asn1.Asn1;

/** A CSR larger than this is refused before parsing (PEM text or DER bytes). */
export const MAX_CSR_BYTES = 8192;
/** X.520 upper bound for a common name. */
export const MAX_COMMON_NAME_CHARS = 64;

export const OIDS = {
  commonName: '2.5.4.3',
  ecPublicKey: '1.2.840.10045.2.1',
  prime256v1: '1.2.840.10045.3.1.7',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
} as const;

const { Class, Type } = asn1;
const ID_PATTERN = '[a-z]{3}_[a-z2-7]{16}';
const DEVICE_URI = new RegExp(`^URI:${URI_DEVICE_PREFIX}(${ID_PATTERN})$`);
const USER_URI = new RegExp(`^URI:${URI_USER_PREFIX}(${ID_PATTERN})$`);
const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';

// ---------------------------------------------------------------- keys

export interface KeyPair {
  /** PKCS#8 PEM. A secret: never log it or put it in an error. */
  readonly privateKeyPem: string;
  readonly publicKeySpkiDer: Buffer;
}

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', {
    namedCurve: 'prime256v1',
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { privateKeyPem: privateKey, publicKeySpkiDer: publicKey };
}

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** The uncompressed EC point (0x04 | X | Y) of a P-256 key; TypeError for any other key. */
export function p256Point(key: KeyObject): Buffer {
  if (!isP256(key)) throw new TypeError('expected an ECDSA P-256 key');
  const jwk = key.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x ?? '', 'base64url');
  const y = Buffer.from(jwk.y ?? '', 'base64url');
  if (x.length !== 32 || y.length !== 32) throw new TypeError('expected an ECDSA P-256 key');
  return Buffer.concat([Buffer.from([0x04]), x, y]);
}

/** Parse SPKI DER as a P-256 public key; TypeError for anything else. */
export function p256PublicKeyFromSpki(spkiDer: Buffer): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (err) {
    throw new TypeError('public key is not a valid SPKI structure', { cause: err });
  }
  if (!isP256(key)) throw new TypeError('expected an ECDSA P-256 public key');
  return key;
}

/** Parse a PKCS#8 (or SEC1) PEM private key as a P-256 key; TypeError for anything else. The key never appears in the error. */
export function p256PrivateKeyFromPem(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    // ERR_OSSL_*: not a private key; the cause is dropped so nothing about the input reaches logs.
    throw new TypeError('private key is not a valid PEM private key');
  }
  if (!isP256(key)) throw new TypeError('expected an ECDSA P-256 private key');
  return key;
}

// ---------------------------------------------------------------- building blocks (forge.asn1)

export function asn1ToDer(node: Asn1): Buffer {
  return Buffer.from(asn1.toDer(node).getBytes(), 'binary');
}

/** Wrap trusted DER (made by this code or by node:crypto) as a forge node, to embed it in a structure. */
export function derToAsn1(der: Buffer): Asn1 {
  return asn1.fromDer(der.toString('binary'), true);
}

export function oidAsn1(oid: string): Asn1 {
  return asn1.create(Class.UNIVERSAL, Type.OID, false, asn1.oidToDer(oid).getBytes());
}

export function seqAsn1(children: Asn1[]): Asn1 {
  return asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, children);
}

/** BIT STRING holding whole bytes (no unused bits). */
export function bitStringAsn1(bytes: Buffer): Asn1 {
  return asn1.create(Class.UNIVERSAL, Type.BITSTRING, false, Buffer.concat([Buffer.from([0]), bytes]).toString('binary'));
}

/** A distinguished name of one attribute per RDN, values as UTF8String. */
export function nameAsn1(attributes: ReadonlyArray<readonly [oid: string, value: string]>): Asn1 {
  return seqAsn1(
    attributes.map(([oid, value]) =>
      asn1.create(Class.UNIVERSAL, Type.SET, true, [
        seqAsn1([oidAsn1(oid), asn1.create(Class.UNIVERSAL, Type.UTF8, false, Buffer.from(value, 'utf8').toString('binary'))]),
      ]),
    ),
  );
}

/** SubjectPublicKeyInfo for a P-256 point (id-ecPublicKey, namedCurve prime256v1). */
export function spkiAsn1(point: Buffer): Asn1 {
  return seqAsn1([seqAsn1([oidAsn1(OIDS.ecPublicKey), oidAsn1(OIDS.prime256v1)]), bitStringAsn1(point)]);
}

/** SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING signature } — the shape of both certificates and CSRs. */
export function signAsn1(tbs: Asn1, privateKey: KeyObject): Buffer {
  if (!isP256(privateKey)) throw new TypeError('expected an ECDSA P-256 private key');
  const signature = sign('sha256', asn1ToDer(tbs), { key: privateKey, dsaEncoding: 'der' });
  return asn1ToDer(seqAsn1([tbs, seqAsn1([oidAsn1(OIDS.ecdsaWithSha256)]), bitStringAsn1(signature)]));
}

export function checkCommonName(commonName: unknown): string {
  if (typeof commonName !== 'string' || commonName.length < 1 || commonName.length > MAX_COMMON_NAME_CHARS) {
    throw new TypeError(`commonName must be a string of 1-${MAX_COMMON_NAME_CHARS} characters`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(commonName)) throw new TypeError('commonName must not contain control characters');
  return commonName;
}

// ---------------------------------------------------------------- PEM

/** PEM text for DER bytes (64-character lines). */
export function derToPem(der: Buffer, label: string): string {
  const body = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/** DER bytes of the first PEM block with this label; TypeError when there is none or its base64 is malformed. */
export function pemToDer(pem: string, label: string): Buffer {
  const begin = `-----BEGIN ${label}-----`;
  const start = pem.indexOf(begin);
  const end = start < 0 ? -1 : pem.indexOf(`-----END ${label}-----`, start + begin.length);
  if (end < 0) throw new TypeError(`no ${label} PEM block`);
  const body = pem.slice(start + begin.length, end).replace(/\s+/g, '');
  if (body.length === 0 || body.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) {
    throw new TypeError(`malformed ${label} PEM block`);
  }
  return Buffer.from(body, 'base64');
}

function certDer(pemOrDer: string | Buffer): Buffer {
  if (typeof pemOrDer === 'string') return pemToDer(pemOrDer, 'CERTIFICATE');
  if (Buffer.isBuffer(pemOrDer)) return pemOrDer.subarray(0, 10).toString('latin1').startsWith('-----') ? pemToDer(pemOrDer.toString('latin1'), 'CERTIFICATE') : pemOrDer;
  throw new TypeError('certificate must be PEM text or DER bytes');
}

// ---------------------------------------------------------------- CSR

export function createCsr(opts: { privateKeyPem: string; commonName: string }): string {
  const key = p256PrivateKeyFromPem(opts.privateKeyPem);
  const commonName = checkCommonName(opts.commonName);
  const info = seqAsn1([
    asn1.create(Class.UNIVERSAL, Type.INTEGER, false, '\x00'),
    nameAsn1([[OIDS.commonName, commonName]]),
    spkiAsn1(p256Point(createPublicKey(key))),
    asn1.create(Class.CONTEXT_SPECIFIC, 0, true, []),
  ]);
  return derToPem(signAsn1(info, key), 'CERTIFICATE REQUEST');
}

/** One DER element: its tag, its whole encoding and its contents, as slices of the input. */
export interface DerElement {
  readonly tag: number;
  readonly der: Buffer;
  readonly content: Buffer;
}

const TAG = { INTEGER: 0x02, BIT_STRING: 0x03, OID: 0x06, UTF8: 0x0c, PRINTABLE: 0x13, IA5: 0x16, SEQUENCE: 0x30, SET: 0x31, CONTEXT_0: 0xa0 } as const;

/** Split `buf` into consecutive DER elements covering it exactly. Strict: definite, minimal lengths; low tag numbers only. RangeError otherwise. */
export function readDerElements(buf: Buffer): DerElement[] {
  const out: DerElement[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const tag = buf[offset] ?? 0;
    const first = buf[offset + 1];
    if ((tag & 0x1f) === 0x1f || first === undefined) throw new RangeError('malformed DER element');
    let length = first;
    let header = 2;
    if (first & 0x80) {
      const count = first & 0x7f;
      if (count === 0 || count > 3 || buf[offset + 2] === 0) throw new RangeError('malformed DER length');
      length = 0;
      for (let i = 0; i < count; i++) {
        const byte = buf[offset + 2 + i];
        if (byte === undefined) throw new RangeError('truncated DER length');
        length = length * 256 + byte;
      }
      if (length < 0x80) throw new RangeError('non-minimal DER length');
      header += count;
    }
    const end = offset + header + length;
    if (end > buf.length) throw new RangeError('truncated DER element');
    out.push({ tag, der: buf.subarray(offset, end), content: buf.subarray(offset + header, end) });
    offset = end;
  }
  return out;
}

/** The children of `buf`, which must be exactly these tags in this order. */
export function expectDer<const T extends readonly number[]>(buf: Buffer, tags: T): { [K in keyof T]: DerElement } {
  const elements = readDerElements(buf);
  if (elements.length !== tags.length || elements.some((el, i) => el.tag !== tags[i])) throw new RangeError('unexpected DER structure');
  return elements as unknown as { [K in keyof T]: DerElement };
}

const ECDSA_SHA256_ALGORITHM_DER = asn1ToDer(seqAsn1([oidAsn1(OIDS.ecdsaWithSha256)]));
const COMMON_NAME_OID_DER = asn1ToDer(oidAsn1(OIDS.commonName)).subarray(2);

function commonNameOf(nameContent: Buffer): string {
  const found: string[] = [];
  for (const rdn of readDerElements(nameContent)) {
    if (rdn.tag !== TAG.SET) throw new RangeError('malformed name');
    for (const attribute of readDerElements(rdn.content)) {
      if (attribute.tag !== TAG.SEQUENCE) throw new RangeError('malformed name');
      const [type, value] = readDerElements(attribute.content);
      if (!type || !value || type.tag !== TAG.OID) throw new RangeError('malformed name');
      if (type.content.equals(COMMON_NAME_OID_DER)) found.push(decodeDirectoryString(value));
    }
  }
  if (found.length !== 1 || found[0] === undefined) throw new RangeError('name must hold exactly one common name');
  return found[0];
}

function decodeDirectoryString(value: DerElement): string {
  if (value.tag === TAG.UTF8) {
    const text = value.content.toString('utf8');
    if (!Buffer.from(text, 'utf8').equals(value.content)) throw new RangeError('invalid UTF-8');
    return text;
  }
  if ((value.tag === TAG.PRINTABLE || value.tag === TAG.IA5) && value.content.every((b) => b < 0x80)) return value.content.toString('latin1');
  throw new RangeError('unsupported string type');
}

export interface ParsedCsr {
  readonly commonName: string;
  /** Canonical SPKI DER of the requested (verified P-256) key. */
  readonly publicKeySpkiDer: Buffer;
}

/**
 * Parse and verify a PEM CSR from an untrusted peer. Anything malformed, oversized (> MAX_CSR_BYTES),
 * not P-256, not signed ecdsa-with-SHA256 or with a signature that does not verify: PW_BAD_CSR, and
 * never any other error.
 */
export function parseCsr(pem: string): ParsedCsr {
  if (typeof pem !== 'string') throw new PortwayError('PW_BAD_CSR', 'CSR must be PEM text');
  if (pem.length > MAX_CSR_BYTES) throw new PortwayError('PW_BAD_CSR', `CSR exceeds ${MAX_CSR_BYTES} bytes`);
  let verified = false;
  let parsed: ParsedCsr;
  try {
    // OpenSSL's older tools write the "NEW CERTIFICATE REQUEST" label.
    const der = pemToDer(pem, pem.includes('-----BEGIN NEW CERTIFICATE REQUEST-----') ? 'NEW CERTIFICATE REQUEST' : 'CERTIFICATE REQUEST');
    const [request] = expectDer(der, [TAG.SEQUENCE]);
    const [info, algorithm, signature] = expectDer(request.content, [TAG.SEQUENCE, TAG.SEQUENCE, TAG.BIT_STRING]);
    const [version, subject, spki] = expectDer(info.content, [TAG.INTEGER, TAG.SEQUENCE, TAG.SEQUENCE, TAG.CONTEXT_0]);
    if (!version.content.equals(Buffer.from([0]))) throw new RangeError('unsupported CSR version');
    if (!algorithm.der.equals(ECDSA_SHA256_ALGORITHM_DER)) throw new RangeError('CSR is not signed ecdsa-with-SHA256');
    if (signature.content[0] !== 0) throw new RangeError('malformed signature bit string');
    const key = p256PublicKeyFromSpki(spki.der);
    verified = verify('sha256', info.der, { key, dsaEncoding: 'der' }, signature.content.subarray(1));
    parsed = { commonName: checkCommonName(commonNameOf(subject.content)), publicKeySpkiDer: key.export({ type: 'spki', format: 'der' }) };
  } catch (err) {
    throw new PortwayError('PW_BAD_CSR', `malformed CSR: ${err instanceof Error ? err.message : 'unknown error'}`, { cause: err });
  }
  if (!verified) throw new PortwayError('PW_BAD_CSR', 'CSR signature does not verify');
  return parsed;
}

// ---------------------------------------------------------------- fingerprints and descriptions

function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** SHA-256 hex of the certificate DER (PEM text or DER bytes). */
export function certFingerprint(pemOrDer: string | Buffer): string {
  return sha256Hex(certDer(pemOrDer));
}

/** SHA-256 hex of SubjectPublicKeyInfo DER. */
export function spkiFingerprint(spkiDer: Buffer): string {
  return sha256Hex(spkiDer);
}

/** SHA-256 hex of the certificate's SubjectPublicKeyInfo. */
export function certSpkiFingerprint(pemOrDer: string | Buffer): string {
  return spkiFingerprint(parseCertificate(pemOrDer).publicKey.export({ type: 'spki', format: 'der' }));
}

function parseCertificate(pemOrDer: string | Buffer): X509Certificate {
  try {
    return new X509Certificate(certDer(pemOrDer));
  } catch (err) {
    throw new TypeError('not a valid X.509 certificate', { cause: err });
  }
}

export type CertRole = 'device' | 'user' | 'relay' | 'ca' | 'other';

export interface CertDescription {
  readonly role: CertRole;
  /** Device or user ID from the `urn:portway:...` SAN URI. */
  readonly id?: string;
  readonly commonName: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly fingerprint: string;
  readonly spkiFingerprint: string;
  readonly isCa: boolean;
}

/**
 * What a certificate says about itself. This verifies nothing: callers trust the role and ID only for a
 * certificate whose chain to the relay CA has been verified (by TLS or X509Certificate.verify).
 * Role: a CA flag → 'ca'; exactly one Portway device or user URI → 'device'/'user'; otherwise an
 * end-entity with serverAuth → 'relay'; anything else 'other'.
 */
export function describeCert(pemOrDer: string | Buffer): CertDescription {
  const cert = parseCertificate(pemOrDer);
  const sans = (cert.subjectAltName ?? '').split(', ');
  const devices = sans.flatMap((san) => DEVICE_URI.exec(san)?.[1] ?? []);
  const users = sans.flatMap((san) => USER_URI.exec(san)?.[1] ?? []);
  let role: CertRole = 'other';
  let id: string | undefined;
  if (cert.ca) role = 'ca';
  else if (devices.length === 1 && users.length === 0) [role, id] = ['device', devices[0]];
  else if (users.length === 1 && devices.length === 0) [role, id] = ['user', users[0]];
  else if (devices.length + users.length === 0 && (cert.keyUsage ?? []).includes(SERVER_AUTH_OID)) role = 'relay';
  const commonName = cert.subject.split('\n').find((line) => line.startsWith('CN='))?.slice(3) ?? '';
  return {
    role,
    ...(id === undefined ? {} : { id }),
    commonName,
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    fingerprint: sha256Hex(cert.raw),
    spkiFingerprint: spkiFingerprint(cert.publicKey.export({ type: 'spki', format: 'der' })),
    isCa: cert.ca,
  };
}
