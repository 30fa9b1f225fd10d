/**
 * The relay's certificate authority: one self-signed ECDSA P-256 CA (path length 0) that issues the relay's
 * TLS server certificate and the device and user certificates that authenticate every TLS session.
 *
 * Device and user certificates: CN = the ID, SAN URI urn:portway:device:<id> / urn:portway:user:<id>
 * (the identity the relay and peers trust), the display name as `pseudonym` (informational only, never
 * used for authorisation), EKU clientAuth + serverAuth (each end of the end-to-end session acts as a
 * TLS client or server), keyUsage digitalSignature.
 *
 * The CA private key is held in a private field: it is never logged, never in an error and never shown
 * by util.inspect or JSON.stringify; only `keyPem` reads it, to persist it.
 */
import { createPublicKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { PortwayError, URI_DEVICE_PREFIX, URI_USER_PREFIX } from '../../../protocol';
import {
  type Asn1,
  certFingerprint,
  checkCommonName,
  derToAsn1,
  derToPem,
  generateKeyPair,
  MAX_COMMON_NAME_CHARS,
  nameAsn1,
  OIDS,
  p256Point,
  p256PrivateKeyFromPem,
  p256PublicKeyFromSpki,
} from '../../../shared/x509';
import {
  authorityKeyIdentifier,
  basicConstraints,
  buildCertificate,
  EKU_OIDS,
  extKeyUsage,
  type GeneralName,
  keyIdentifier,
  keyUsage,
  randomSerial,
  subjectAltName,
  subjectKeyIdentifier,
} from './certificate-builder';
import { readIssuerFields } from './issuer-fields';

export const CA_VALIDITY_YEARS = 10;
export const SERVER_CERT_VALIDITY_DAYS = 825;
/**
 * Issued certificates start this long before "now": devices without a real-time clock boot with a clock
 * that lags until NTP catches up, and must still accept a certificate issued moments ago.
 */
export const NOT_BEFORE_BACKDATE_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;
const PSEUDONYM_OID = '2.5.4.65';
const DEVICE_ID = /^dev_[a-z2-7]{16}$/;
const USER_ID = /^usr_[a-z2-7]{16}$/;
const DNS_NAME = /^(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export interface CertificateAuthorityDeps {
  /** Milliseconds since the epoch; defaults to Date.now. */
  readonly now?: () => number;
}

export interface IssuedCertificate {
  readonly certPem: string;
  /** PKCS#8 PEM: a secret, written 0600 and never logged. */
  readonly keyPem: string;
}

export interface PeerCertificateRequest {
  readonly name: string;
  /** SPKI DER of the peer's P-256 key, usually from parseCsr. */
  readonly publicKeySpkiDer: Buffer;
  readonly validityMs: number;
}

interface CaState {
  readonly certPem: string;
  readonly key: KeyObject;
  readonly subjectDer: Buffer;
  readonly keyId: Buffer;
  readonly notAfter: Date;
  readonly now: () => number;
}

export class CertificateAuthority {
  readonly certPem: string;
  /** SHA-256 hex of the CA certificate DER, for pinning. */
  readonly fingerprint: string;
  readonly notAfter: Date;
  readonly #key: KeyObject;
  readonly #subjectDer: Buffer;
  readonly #keyId: Buffer;
  readonly #now: () => number;

  private constructor(state: CaState) {
    this.certPem = state.certPem;
    this.fingerprint = certFingerprint(state.certPem);
    this.notAfter = state.notAfter;
    this.#key = state.key;
    this.#subjectDer = state.subjectDer;
    this.#keyId = state.keyId;
    this.#now = state.now;
  }

  /** A new CA: fresh P-256 key, self-signed, valid for CA_VALIDITY_YEARS. */
  static create(options: { commonName: string }, deps: CertificateAuthorityDeps = {}): CertificateAuthority {
    const now = deps.now ?? Date.now;
    const { privateKey: key } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const point = p256Point(createPublicKey(key));
    const keyId = keyIdentifier(point);
    const subject = nameAsn1([[OIDS.commonName, checkCommonName(options.commonName)]]);
    const issuedAt = now();
    const notAfter = new Date(issuedAt);
    notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
    const der = buildCertificate(
      {
        serial: randomSerial(),
        issuer: subject,
        subject,
        notBefore: new Date(issuedAt - NOT_BEFORE_BACKDATE_MS),
        notAfter,
        publicKeyPoint: point,
        extensions: [basicConstraints({ pathLen: 0 }), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(keyId), authorityKeyIdentifier(keyId)],
      },
      key,
    );
    return new CertificateAuthority({ certPem: derToPem(der, 'CERTIFICATE'), key, subjectDer: readIssuerFields(der).subjectDer, keyId, notAfter: new Date(Math.floor(notAfter.getTime() / 1000) * 1000), now });
  }

  /** Load a persisted CA. PW_CONFIG_INVALID when the certificate is not a CA, the key is not P-256 or they do not match. */
  static load(options: { certPem: string; keyPem: string }, deps: CertificateAuthorityDeps = {}): CertificateAuthority {
    let cert: X509Certificate;
    let key: KeyObject;
    try {
      cert = new X509Certificate(options.certPem);
      key = p256PrivateKeyFromPem(options.keyPem);
    } catch (err) {
      throw new PortwayError('PW_CONFIG_INVALID', 'CA certificate or key cannot be parsed (expected PEM, ECDSA P-256)', { cause: err });
    }
    if (!cert.ca) throw new PortwayError('PW_CONFIG_INVALID', 'CA certificate is not a CA certificate');
    if (!cert.checkPrivateKey(key)) throw new PortwayError('PW_CONFIG_INVALID', 'CA key does not belong to the CA certificate');
    let fields: ReturnType<typeof readIssuerFields>;
    try {
      fields = readIssuerFields(cert.raw);
    } catch (err) {
      throw new PortwayError('PW_CONFIG_INVALID', 'CA certificate is malformed', { cause: err });
    }
    return new CertificateAuthority({
      certPem: derToPem(cert.raw, 'CERTIFICATE'),
      key,
      subjectDer: fields.subjectDer,
      keyId: fields.subjectKeyId ?? keyIdentifier(p256Point(cert.publicKey)),
      notAfter: new Date(cert.validTo),
      now: deps.now ?? Date.now,
    });
  }

  /** The CA private key as PKCS#8 PEM, to persist it (0600). Never log it. */
  get keyPem(): string {
    return this.#key.export({ type: 'pkcs8', format: 'pem' }).toString();
  }

  /**
   * A TLS server certificate with a new key: SAN DNS for names, SAN IP for IP literals, CN = the first name,
   * EKU serverAuth. The caller supplies every name (defaults included).
   */
  issueServerCert(options: { names: readonly string[]; validityDays?: number }): IssuedCertificate {
    const validityDays = options.validityDays ?? SERVER_CERT_VALIDITY_DAYS;
    if (!Number.isSafeInteger(validityDays) || validityDays < 1) throw new RangeError('validityDays must be a positive integer');
    const names = checkServerNames(options.names);
    const first = names[0]?.value ?? '';
    const keys = generateKeyPair();
    const der = this.#issue({
      subject: nameAsn1([[OIDS.commonName, first.length <= MAX_COMMON_NAME_CHARS ? first : 'portway-relay']]),
      publicKeySpkiDer: keys.publicKeySpkiDer,
      validityMs: validityDays * DAY_MS,
      sans: names,
      ekus: [EKU_OIDS.serverAuth],
    });
    return { certPem: derToPem(der, 'CERTIFICATE'), keyPem: keys.privateKeyPem };
  }

  /** A device certificate for a key the device generated (its CSR's key); returns the certificate PEM. */
  issueDeviceCert(options: PeerCertificateRequest & { deviceId: string }): string {
    if (typeof options.deviceId !== 'string' || !DEVICE_ID.test(options.deviceId)) throw new TypeError('deviceId must be a device ID');
    return this.#issuePeer(options.deviceId, `${URI_DEVICE_PREFIX}${options.deviceId}`, options);
  }

  /** A user certificate for a key the user's client generated; returns the certificate PEM. */
  issueUserCert(options: PeerCertificateRequest & { userId: string }): string {
    if (typeof options.userId !== 'string' || !USER_ID.test(options.userId)) throw new TypeError('userId must be a user ID');
    return this.#issuePeer(options.userId, `${URI_USER_PREFIX}${options.userId}`, options);
  }

  #issuePeer(id: string, uri: string, options: PeerCertificateRequest): string {
    const der = this.#issue({
      subject: nameAsn1([
        [OIDS.commonName, id],
        [PSEUDONYM_OID, checkCommonName(options.name)],
      ]),
      publicKeySpkiDer: options.publicKeySpkiDer,
      validityMs: options.validityMs,
      sans: [{ type: 'uri', value: uri }],
      ekus: [EKU_OIDS.clientAuth, EKU_OIDS.serverAuth],
    });
    return derToPem(der, 'CERTIFICATE');
  }

  /** Sign an end-entity certificate. notAfter is capped at the CA's own notAfter; an expired CA issues nothing (PW_CONFIG_INVALID). */
  #issue(spec: { subject: Asn1; publicKeySpkiDer: Buffer; validityMs: number; sans: readonly GeneralName[]; ekus: readonly string[] }): Buffer {
    if (!Number.isSafeInteger(spec.validityMs) || spec.validityMs < 1) throw new RangeError('validityMs must be a positive integer');
    if (!Buffer.isBuffer(spec.publicKeySpkiDer)) throw new TypeError('publicKeySpkiDer must be a Buffer');
    const point = p256Point(p256PublicKeyFromSpki(spec.publicKeySpkiDer));
    const issuedAt = this.#now();
    if (issuedAt >= this.notAfter.getTime()) throw new PortwayError('PW_CONFIG_INVALID', 'CA certificate has expired; create a new CA');
    return buildCertificate(
      {
        serial: randomSerial(),
        issuer: derToAsn1(this.#subjectDer),
        subject: spec.subject,
        notBefore: new Date(issuedAt - NOT_BEFORE_BACKDATE_MS),
        notAfter: new Date(Math.min(issuedAt + spec.validityMs, this.notAfter.getTime())),
        publicKeyPoint: point,
        extensions: [
          basicConstraints(undefined),
          keyUsage(['digitalSignature']),
          extKeyUsage(spec.ekus),
          subjectAltName(spec.sans),
          subjectKeyIdentifier(keyIdentifier(point)),
          authorityKeyIdentifier(this.#keyId),
        ],
      },
      this.#key,
    );
  }
}

function checkServerNames(names: unknown): GeneralName[] {
  if (!Array.isArray(names) || names.length === 0 || names.length > 100) throw new TypeError('names must be a non-empty array of host names and IP addresses');
  return names.map((name: unknown): GeneralName => {
    if (typeof name !== 'string') throw new TypeError('names must be strings');
    if (isIP(name) !== 0) return { type: 'ip', value: name };
    if (name.length > 253 || !DNS_NAME.test(name)) throw new TypeError(`not a valid DNS name: ${JSON.stringify(name.slice(0, 64))}`);
    return { type: 'dns', value: name };
  });
}
