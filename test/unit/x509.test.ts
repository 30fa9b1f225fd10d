import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { PortwayError } from '../../protocol';
import { CertificateAuthority } from '../../relay/src/pki';
import { buildCertificate, keyIdentifier, randomSerial, subjectAltName } from '../../relay/src/pki/certificate-builder';
import {
  certFingerprint,
  certSpkiFingerprint,
  createCsr,
  derToPem,
  describeCert,
  generateKeyPair,
  MAX_CSR_BYTES,
  nameAsn1,
  OIDS,
  p256Point,
  p256PrivateKeyFromPem,
  parseCsr,
  pemToDer,
  seqAsn1,
  signAsn1,
  spkiAsn1,
  spkiFingerprint,
} from '../../shared/x509';

const DEVICE_ID = 'dev_abcdefghijklmnop';
const USER_ID = 'usr_qrstuvwxyz234567';
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'portway-x509-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function openssl(args: string[]): string {
  return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Deterministic bytes so a failing fuzz case can be reproduced. */
function seededBytes(seed: string, length: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; out.length * 32 < length; i++) out.push(createHash('sha256').update(`${seed}:${i}`).digest());
  return Buffer.concat(out).subarray(0, length);
}

function expectBadCsr(input: unknown): void {
  let thrown: unknown;
  try {
    parseCsr(input as string);
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(PortwayError);
  expect((thrown as PortwayError).code).toBe('PW_BAD_CSR');
}

/** A CSR whose request info is built by hand, so tests can break one field at a time. */
function handmadeCsr(opts: { names: ReadonlyArray<readonly [string, string]>; keyPem: string; signerPem?: string }): string {
  const key = p256PrivateKeyFromPem(opts.keyPem);
  const { Class, Type } = forge.asn1;
  const info = seqAsn1([
    forge.asn1.create(Class.UNIVERSAL, Type.INTEGER, false, '\x00'),
    nameAsn1(opts.names),
    spkiAsn1(p256Point(key)),
    forge.asn1.create(Class.CONTEXT_SPECIFIC, 0, true, []),
  ]);
  return derToPem(signAsn1(info, p256PrivateKeyFromPem(opts.signerPem ?? opts.keyPem)), 'CERTIFICATE REQUEST');
}

describe('generateKeyPair', () => {
  it('makes a P-256 key with PKCS#8 PEM and SPKI DER', () => {
    const pair = generateKeyPair();
    expect(pair.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const key = p256PrivateKeyFromPem(pair.privateKeyPem);
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(pair.publicKeySpkiDer).toHaveLength(91);
    expect(spkiFingerprint(pair.publicKeySpkiDer)).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('createCsr and parseCsr', () => {
  it('round-trips the common name and the public key', () => {
    const pair = generateKeyPair();
    const csr = createCsr({ privateKeyPem: pair.privateKeyPem, commonName: 'pi-kitchen' });
    expect(csr).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n/);
    const parsed = parseCsr(csr);
    expect(parsed.commonName).toBe('pi-kitchen');
    expect(parsed.publicKeySpkiDer.equals(pair.publicKeySpkiDer)).toBe(true);
  });

  it('accepts the older NEW CERTIFICATE REQUEST label', () => {
    const pair = generateKeyPair();
    const csr = createCsr({ privateKeyPem: pair.privateKeyPem, commonName: 'old-label' }).replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST');
    expect(parseCsr(csr).commonName).toBe('old-label');
  });

  it('keeps UTF-8 common names', () => {
    const pair = generateKeyPair();
    expect(parseCsr(createCsr({ privateKeyPem: pair.privateKeyPem, commonName: 'Küche – 台所' })).commonName).toBe('Küche – 台所');
  });

  it('writes CSRs that OpenSSL verifies', () => {
    const pair = generateKeyPair();
    writeFileSync(join(dir, 'ours.csr'), createCsr({ privateKeyPem: pair.privateKeyPem, commonName: 'pi-kitchen' }));
    const text = execFileSync('openssl', ['req', '-in', 'ours.csr', '-noout', '-verify', '-subject'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(text).toMatch(/CN\s*=\s*pi-kitchen/);
  });

  it('reads CSRs that OpenSSL wrote', () => {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'p256.key']);
    openssl(['req', '-new', '-key', 'p256.key', '-subj', '/O=Example/CN=from-openssl', '-out', 'p256.csr']);
    const csr = openssl(['req', '-in', 'p256.csr']);
    expect(parseCsr(csr).commonName).toBe('from-openssl');
    const spki = openssl(['ec', '-in', 'p256.key', '-pubout', '-outform', 'PEM']);
    expect(parseCsr(csr).publicKeySpkiDer.equals(pemToDer(spki, 'PUBLIC KEY'))).toBe(true);
  });

  it('refuses RSA and P-384 keys', () => {
    openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'rsa.key']);
    openssl(['req', '-new', '-key', 'rsa.key', '-subj', '/CN=rsa', '-sha256', '-out', 'rsa.csr']);
    expectBadCsr(openssl(['req', '-in', 'rsa.csr']));
    openssl(['ecparam', '-name', 'secp384r1', '-genkey', '-noout', '-out', 'p384.key']);
    openssl(['req', '-new', '-key', 'p384.key', '-subj', '/CN=p384', '-sha256', '-out', 'p384.csr']);
    expectBadCsr(openssl(['req', '-in', 'p384.csr']));
  });

  it('refuses a CSR signed by another key', () => {
    const subject = generateKeyPair();
    const signer = generateKeyPair();
    expectBadCsr(handmadeCsr({ names: [[OIDS.commonName, 'x']], keyPem: subject.privateKeyPem, signerPem: signer.privateKeyPem }));
    expect(parseCsr(handmadeCsr({ names: [[OIDS.commonName, 'x']], keyPem: subject.privateKeyPem })).commonName).toBe('x');
  });

  it('refuses missing, repeated, empty, long or control-character common names', () => {
    const { privateKeyPem } = generateKeyPair();
    expectBadCsr(handmadeCsr({ names: [], keyPem: privateKeyPem }));
    expectBadCsr(handmadeCsr({ names: [['2.5.4.10', 'org only']], keyPem: privateKeyPem }));
    expectBadCsr(handmadeCsr({ names: [[OIDS.commonName, 'a'], [OIDS.commonName, 'b']], keyPem: privateKeyPem }));
    expectBadCsr(handmadeCsr({ names: [[OIDS.commonName, '']], keyPem: privateKeyPem }));
    expectBadCsr(handmadeCsr({ names: [[OIDS.commonName, 'x'.repeat(65)]], keyPem: privateKeyPem }));
    expectBadCsr(handmadeCsr({ names: [[OIDS.commonName, 'evil\nname']], keyPem: privateKeyPem }));
  });

  it('refuses oversize input before parsing it', () => {
    const { privateKeyPem } = generateKeyPair();
    const csr = createCsr({ privateKeyPem, commonName: 'big' });
    expectBadCsr(csr + ' '.repeat(MAX_CSR_BYTES));
  });

  it('createCsr refuses non-P-256 keys and bad names with TypeError', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(() => createCsr({ privateKeyPem: rsa, commonName: 'x' })).toThrow(TypeError);
    expect(() => createCsr({ privateKeyPem: 'garbage', commonName: 'x' })).toThrow(TypeError);
    const { privateKeyPem } = generateKeyPair();
    expect(() => createCsr({ privateKeyPem, commonName: '' })).toThrow(TypeError);
  });

  describe('garbage', () => {
    const pair = generateKeyPair();
    const valid = createCsr({ privateKeyPem: pair.privateKeyPem, commonName: 'fuzz-target' });
    const der = pemToDer(valid, 'CERTIFICATE REQUEST');

    it('refuses non-strings', () => {
      for (const input of [undefined, null, 42, {}, [], Buffer.from(valid), Symbol('x')]) expectBadCsr(input);
    });

    it('refuses random bytes, raw and wrapped as PEM', () => {
      for (let i = 0; i < 300; i++) {
        const bytes = seededBytes(`random:${i}`, 1 + (i % 97) * 7);
        expectBadCsr(bytes.toString('latin1'));
        expectBadCsr(derToPem(bytes, 'CERTIFICATE REQUEST'));
        // Random content behind a plausible DER header.
        expectBadCsr(derToPem(Buffer.concat([Buffer.from([0x30, 0x81, bytes.length & 0x7f | 0x80]), bytes]), 'CERTIFICATE REQUEST'));
      }
      expectBadCsr('');
      expectBadCsr('-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n');
      expectBadCsr('-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n');
    });

    it('refuses every truncation of a valid PEM', () => {
      for (let length = 0; length < valid.length - 27; length++) expectBadCsr(valid.slice(0, length));
      // Cutting the DER (and re-encoding a well-formed PEM) too.
      for (let length = 0; length < der.length; length++) expectBadCsr(derToPem(der.subarray(0, length), 'CERTIFICATE REQUEST'));
    });

    it('refuses a valid CSR with any byte flipped', () => {
      for (let i = 0; i < der.length; i++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const flipped = Buffer.from(der);
          flipped[i] = (flipped[i] ?? 0) ^ mask;
          expectBadCsr(derToPem(flipped, 'CERTIFICATE REQUEST'));
        }
      }
    });

    it('refuses trailing bytes and BER lengths', () => {
      expectBadCsr(derToPem(Buffer.concat([der, Buffer.from([0])]), 'CERTIFICATE REQUEST'));
      // Same content with a non-minimal (long-form) outer length.
      const content = der.subarray(der[1] === 0x81 ? 3 : 4);
      expectBadCsr(derToPem(Buffer.concat([Buffer.from([0x30, 0x82, content.length >> 8, content.length & 0xff]), content]), 'CERTIFICATE REQUEST'));
      // Indefinite length.
      expectBadCsr(derToPem(Buffer.concat([Buffer.from([0x30, 0x80]), content, Buffer.from([0, 0])]), 'CERTIFICATE REQUEST'));
    });
  });
});

describe('fingerprints and describeCert', () => {
  const ca = CertificateAuthority.create({ commonName: 'x509 test CA' });
  const devicePair = generateKeyPair();
  const deviceCert = ca.issueDeviceCert({ deviceId: DEVICE_ID, name: 'pi-kitchen', publicKeySpkiDer: devicePair.publicKeySpkiDer, validityMs: 86_400_000 });

  it('fingerprints the certificate DER like OpenSSL, from PEM, DER or PEM bytes', () => {
    writeFileSync(join(dir, 'device.pem'), deviceCert);
    const text = openssl(['x509', '-in', 'device.pem', '-noout', '-fingerprint', '-sha256']);
    const expected = text.trim().split('=')[1]?.replace(/:/g, '').toLowerCase();
    expect(certFingerprint(deviceCert)).toBe(expected);
    expect(certFingerprint(pemToDer(deviceCert, 'CERTIFICATE'))).toBe(expected);
    expect(certFingerprint(Buffer.from(deviceCert))).toBe(expected);
    expect(certFingerprint(new X509Certificate(deviceCert).raw)).toBe(expected);
  });

  it('fingerprints the SPKI of a certificate like the key pair', () => {
    expect(certSpkiFingerprint(deviceCert)).toBe(spkiFingerprint(devicePair.publicKeySpkiDer));
  });

  it('describes device, user, relay and CA certificates', () => {
    const device = describeCert(deviceCert);
    expect(device).toMatchObject({ role: 'device', id: DEVICE_ID, commonName: DEVICE_ID, isCa: false, fingerprint: certFingerprint(deviceCert) });
    expect(device.spkiFingerprint).toBe(spkiFingerprint(devicePair.publicKeySpkiDer));
    expect(device.notAfter.getTime() - device.notBefore.getTime()).toBeGreaterThan(86_400_000);

    const userPair = generateKeyPair();
    const userCert = ca.issueUserCert({ userId: USER_ID, name: 'alice', publicKeySpkiDer: userPair.publicKeySpkiDer, validityMs: 3_600_000 });
    expect(describeCert(userCert)).toMatchObject({ role: 'user', id: USER_ID, commonName: USER_ID, isCa: false });

    const relay = describeCert(ca.issueServerCert({ names: ['relay.example.com', '127.0.0.1'] }).certPem);
    expect(relay).toMatchObject({ role: 'relay', commonName: 'relay.example.com', isCa: false });
    expect(relay.id).toBeUndefined();

    expect(describeCert(ca.certPem)).toMatchObject({ role: 'ca', commonName: 'x509 test CA', isCa: true, fingerprint: ca.fingerprint });
  });

  it("calls a certificate 'other' unless it names exactly one well-formed Portway identity", () => {
    const key = p256PrivateKeyFromPem(generateKeyPair().privateKeyPem);
    const make = (uris: string[]): string => {
      const point = p256Point(key);
      const name = nameAsn1([[OIDS.commonName, 'odd']]);
      const der = buildCertificate(
        { serial: randomSerial(), issuer: name, subject: name, notBefore: new Date(), notAfter: new Date(Date.now() + 60_000), publicKeyPoint: point, extensions: [subjectAltName(uris.map((value) => ({ type: 'uri', value })))] },
        key,
      );
      expect(keyIdentifier(point)).toHaveLength(20);
      return derToPem(der, 'CERTIFICATE');
    };
    expect(describeCert(make([`urn:portway:device:${DEVICE_ID}`])).role).toBe('device');
    expect(describeCert(make([`urn:portway:device:${DEVICE_ID}`, `urn:portway:user:${USER_ID}`])).role).toBe('other');
    expect(describeCert(make([`urn:portway:device:${DEVICE_ID}`, 'urn:portway:device:dev_bbbbbbbbbbbbbbbb'])).role).toBe('other');
    expect(describeCert(make(['urn:portway:device:DEV_ABC'])).role).toBe('other');
    expect(describeCert(make([`urn:portway:device:${DEVICE_ID}, URI:urn:portway:user:${USER_ID}`])).role).toBe('other');
    expect(describeCert(make([])).role).toBe('other');
  });

  it('throws TypeError for something that is not a certificate', () => {
    expect(() => describeCert('garbage')).toThrow(TypeError);
    expect(() => describeCert(Buffer.from('garbage'))).toThrow(TypeError);
    expect(() => certFingerprint('no pem here')).toThrow(TypeError);
  });
});

describe('PEM helpers', () => {
  it('round-trip DER through PEM with 64-character lines', () => {
    const der = seededBytes('pem', 200);
    const pem = derToPem(der, 'THING');
    expect(pem.split('\n').every((line) => line.length <= 64)).toBe(true);
    expect(pemToDer(`junk before\n${pem}junk after`, 'THING').equals(der)).toBe(true);
  });

  it('throw TypeError for a missing or malformed block', () => {
    expect(() => pemToDer('nothing', 'THING')).toThrow(TypeError);
    expect(() => pemToDer('-----BEGIN THING-----\nab$c\n-----END THING-----', 'THING')).toThrow(TypeError);
    expect(() => pemToDer('-----BEGIN THING-----\nabc\n-----END THING-----', 'THING')).toThrow(TypeError);
  });
});
