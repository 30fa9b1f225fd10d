import { execFileSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { inspect } from 'node:util';
import { PortwayError } from '../../protocol';
import { CertificateAuthority, NOT_BEFORE_BACKDATE_MS, SERVER_CERT_VALIDITY_DAYS } from '../../relay/src/pki';
import { ipBytes } from '../../relay/src/pki/certificate-builder';
import { certFingerprint, describeCert, generateKeyPair, type KeyPair } from '../../shared/x509';

const DEVICE_ID = 'dev_abcdefghijklmnop';
const USER_ID = 'usr_qrstuvwxyz234567';
const DAY_MS = 86_400_000;
const EVENT_TIMEOUT_MS = 5000;

let dir: string;
const disposers: Array<() => void | Promise<void>> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'portway-ca-'));
});
afterEach(async () => {
  while (disposers.length > 0) await disposers.pop()?.();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function opensslText(pem: string): string {
  writeFileSync(join(dir, 'inspect.pem'), pem);
  return execFileSync('openssl', ['x509', '-in', 'inspect.pem', '-noout', '-text'], { cwd: dir, encoding: 'utf8' });
}

/** `openssl verify` exit status 0, with the purpose checked. */
function opensslVerifies(caPem: string, certPem: string, purpose: 'sslclient' | 'sslserver'): boolean {
  writeFileSync(join(dir, 'verify-ca.pem'), caPem);
  writeFileSync(join(dir, 'verify-leaf.pem'), certPem);
  try {
    execFileSync('openssl', ['verify', '-CAfile', 'verify-ca.pem', '-purpose', purpose, 'verify-leaf.pem'], { cwd: dir, stdio: 'pipe' });
    return true;
  } catch (err) {
    if ((err as { status?: number }).status === 2) return false;
    throw err;
  }
}

function deviceCertFor(ca: CertificateAuthority, pair: KeyPair, validityMs = DAY_MS): string {
  return ca.issueDeviceCert({ deviceId: DEVICE_ID, name: 'pi-kitchen', publicKeySpkiDer: pair.publicKeySpkiDer, validityMs });
}

describe('CertificateAuthority.create', () => {
  it('makes a self-signed P-256 CA: CA:TRUE pathlen 0, keyCertSign + cRLSign, key identifiers, 10 years', () => {
    const now = Date.UTC(2030, 5, 15, 12, 0, 0);
    const ca = CertificateAuthority.create({ commonName: 'Portway CA' }, { now: () => now });
    const cert = new X509Certificate(ca.certPem);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toBe('CN=Portway CA');
    expect(cert.issuer).toBe('CN=Portway CA');
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(new Date(cert.validFrom).getTime()).toBe(now - NOT_BEFORE_BACKDATE_MS);
    expect(new Date(cert.validTo).getTime()).toBe(Date.UTC(2040, 5, 15, 12, 0, 0));
    expect(ca.notAfter.getTime()).toBe(Date.UTC(2040, 5, 15, 12, 0, 0));
    expect(ca.fingerprint).toBe(certFingerprint(ca.certPem));
    const text = opensslText(ca.certPem);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(text).toMatch(/Subject Key Identifier:/);
    expect(text).toMatch(/ASN1 OID: prime256v1/);
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
  });

  it('refuses an empty or oversized common name', () => {
    expect(() => CertificateAuthority.create({ commonName: '' })).toThrow(TypeError);
    expect(() => CertificateAuthority.create({ commonName: 'x'.repeat(65) })).toThrow(TypeError);
  });
});

describe('CertificateAuthority key handling', () => {
  const ca = CertificateAuthority.create({ commonName: 'Secret keeper' });

  it('never shows the key in inspect or JSON', () => {
    const body = ca.keyPem.split('\n')[1] ?? '';
    expect(body.length).toBeGreaterThan(20);
    expect(inspect(ca, { depth: 5, showHidden: true })).not.toContain(body);
    expect(JSON.stringify(ca)).not.toContain(body);
    expect(ca.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  });

  it('loads what it saved and issues certificates that chain to the original', () => {
    const loaded = CertificateAuthority.load({ certPem: ca.certPem, keyPem: ca.keyPem });
    expect(loaded.fingerprint).toBe(ca.fingerprint);
    const cert = deviceCertFor(loaded, generateKeyPair());
    expect(new X509Certificate(cert).verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(new X509Certificate(cert).checkIssued(new X509Certificate(ca.certPem))).toBe(true);
    expect(opensslVerifies(ca.certPem, cert, 'sslclient')).toBe(true);
  });

  it('loads a CA made by OpenSSL, keeping its exact subject and key identifier', () => {
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ossl-ca.key'], { cwd: dir });
    execFileSync(
      'openssl',
      ['req', '-x509', '-new', '-key', 'ossl-ca.key', '-subj', '/C=DE/O=Example Org/CN=Example CA', '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-out', 'ossl-ca.pem'],
      { cwd: dir },
    );
    const certPem = execFileSync('openssl', ['x509', '-in', 'ossl-ca.pem'], { cwd: dir, encoding: 'utf8' });
    const keyPem = execFileSync('openssl', ['pkcs8', '-topk8', '-nocrypt', '-in', 'ossl-ca.key'], { cwd: dir, encoding: 'utf8' });
    const loaded = CertificateAuthority.load({ certPem, keyPem });
    const cert = deviceCertFor(loaded, generateKeyPair());
    expect(opensslVerifies(certPem, cert, 'sslclient')).toBe(true);
    expect(new X509Certificate(cert).issuer).toBe(new X509Certificate(certPem).subject);
  });

  it('refuses a mismatched key, a non-CA certificate and garbage with PW_CONFIG_INVALID, and never echoes the key', () => {
    const other = CertificateAuthority.create({ commonName: 'Other' });
    const leaf = ca.issueServerCert({ names: ['localhost'] });
    const attempts: Array<{ certPem: string; keyPem: string }> = [
      { certPem: ca.certPem, keyPem: other.keyPem },
      { certPem: leaf.certPem, keyPem: leaf.keyPem },
      { certPem: ca.certPem, keyPem: 'not a key' },
      { certPem: 'not a cert', keyPem: ca.keyPem },
      { certPem: ca.certPem, keyPem: generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
    ];
    for (const attempt of attempts) {
      let thrown: unknown;
      try {
        CertificateAuthority.load(attempt);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(PortwayError);
      expect((thrown as PortwayError).code).toBe('PW_CONFIG_INVALID');
      const keyBody = attempt.keyPem.split('\n')[1] ?? attempt.keyPem;
      expect(inspect(thrown, { depth: 10 })).not.toContain(keyBody);
    }
  });
});

describe('issued certificates', () => {
  const now = Date.UTC(2031, 0, 10, 8, 30, 0);
  const ca = CertificateAuthority.create({ commonName: 'Issuer' }, { now: () => now });
  const caCert = new X509Certificate(ca.certPem);

  it('device: CN = ID, SAN URI, clientAuth + serverAuth, digitalSignature, backdated notBefore, random positive serial', () => {
    const pair = generateKeyPair();
    const pem = deviceCertFor(ca, pair, 7 * DAY_MS);
    const cert = new X509Certificate(pem);
    expect(cert.subject).toBe(`CN=${DEVICE_ID}\npseudonym=pi-kitchen`);
    expect(cert.subjectAltName).toBe(`URI:urn:portway:device:${DEVICE_ID}`);
    expect([...(cert.keyUsage ?? [])].sort()).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    expect(new Date(cert.validFrom).getTime()).toBe(now - NOT_BEFORE_BACKDATE_MS);
    expect(new Date(cert.validTo).getTime()).toBe(now + 7 * DAY_MS);
    expect(cert.ca).toBe(false);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/);
    const text = opensslText(pem);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    const caSki = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(opensslText(ca.certPem))?.[1];
    expect(caSki).toBeDefined();
    expect(text).toContain(`Authority Key Identifier: \n                ${caSki ?? ''}`);
    expect(describeCert(pem)).toMatchObject({ role: 'device', id: DEVICE_ID });
  });

  it('user: CN = ID, SAN URI urn:portway:user', () => {
    const pem = ca.issueUserCert({ userId: USER_ID, name: 'alice', publicKeySpkiDer: generateKeyPair().publicKeySpkiDer, validityMs: DAY_MS });
    const cert = new X509Certificate(pem);
    expect(cert.subject.split('\n')[0]).toBe(`CN=${USER_ID}`);
    expect(cert.subjectAltName).toBe(`URI:urn:portway:user:${USER_ID}`);
    expect(describeCert(pem)).toMatchObject({ role: 'user', id: USER_ID });
  });

  it('serials differ between certificates', () => {
    const pair = generateKeyPair();
    const serials = new Set(Array.from({ length: 20 }, () => new X509Certificate(deviceCertFor(ca, pair)).serialNumber));
    expect(serials.size).toBe(20);
  });

  it('server: SAN DNS and IP, serverAuth only, 825 days by default, a new key each time', () => {
    const issued = ca.issueServerCert({ names: ['relay.example.com', '*.relay.example.com', '127.0.0.1', '::1', '2001:db8::ffff:192.0.2.1'] });
    const cert = new X509Certificate(issued.certPem);
    expect(cert.subjectAltName).toBe('DNS:relay.example.com, DNS:*.relay.example.com, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:2001:DB8:0:0:0:FFFF:C000:201');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.subject).toBe('CN=relay.example.com');
    expect(new Date(cert.validTo).getTime()).toBe(now + SERVER_CERT_VALIDITY_DAYS * DAY_MS);
    expect(cert.checkPrivateKey(createPrivateKey(issued.keyPem))).toBe(true);
    expect(ca.issueServerCert({ names: ['a'] }).keyPem).not.toBe(issued.keyPem);
    expect(new Date(new X509Certificate(ca.issueServerCert({ names: ['a'], validityDays: 3 }).certPem).validTo).getTime()).toBe(now + 3 * DAY_MS);
  });

  it('caps notAfter at the CA notAfter and uses GeneralizedTime from 2050', () => {
    const capped = new X509Certificate(deviceCertFor(ca, generateKeyPair(), 100 * 365 * DAY_MS));
    expect(new Date(capped.validTo).getTime()).toBe(ca.notAfter.getTime());
    const late = Date.UTC(2049, 11, 1);
    const lateCa = CertificateAuthority.create({ commonName: 'Late' }, { now: () => late });
    const cert = new X509Certificate(deviceCertFor(lateCa, generateKeyPair(), 365 * DAY_MS));
    expect(new Date(cert.validTo).getTime()).toBe(late + 365 * DAY_MS);
    expect(opensslText(cert.toString())).toMatch(/Not After : Dec {2}1 00:00:00 2050 GMT/);
  });

  it('issues nothing once the CA has expired', () => {
    let clock = now;
    const expiring = CertificateAuthority.create({ commonName: 'Expiring' }, { now: () => clock });
    clock = expiring.notAfter.getTime();
    const pair = generateKeyPair();
    expect(() => deviceCertFor(expiring, pair)).toThrow(PortwayError);
    expect(() => deviceCertFor(expiring, pair)).toThrow(expect.objectContaining({ code: 'PW_CONFIG_INVALID' }) as unknown as Error);
    expect(() => deviceCertFor(expiring, pair)).not.toThrow(expect.objectContaining({ code: 'PW_INTERNAL' }) as unknown as Error);
  });

  it('refuses bad arguments synchronously', () => {
    const spki = generateKeyPair().publicKeySpkiDer;
    const rsaSpki = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'der' });
    expect(() => ca.issueDeviceCert({ deviceId: 'dev_short', name: 'x', publicKeySpkiDer: spki, validityMs: DAY_MS })).toThrow(TypeError);
    expect(() => ca.issueDeviceCert({ deviceId: USER_ID, name: 'x', publicKeySpkiDer: spki, validityMs: DAY_MS })).toThrow(TypeError);
    expect(() => ca.issueUserCert({ userId: DEVICE_ID, name: 'x', publicKeySpkiDer: spki, validityMs: DAY_MS })).toThrow(TypeError);
    expect(() => ca.issueDeviceCert({ deviceId: DEVICE_ID, name: '', publicKeySpkiDer: spki, validityMs: DAY_MS })).toThrow(TypeError);
    expect(() => ca.issueDeviceCert({ deviceId: DEVICE_ID, name: 'x', publicKeySpkiDer: rsaSpki, validityMs: DAY_MS })).toThrow(TypeError);
    expect(() => ca.issueDeviceCert({ deviceId: DEVICE_ID, name: 'x', publicKeySpkiDer: Buffer.from('junk'), validityMs: DAY_MS })).toThrow(TypeError);
    expect(() => ca.issueDeviceCert({ deviceId: DEVICE_ID, name: 'x', publicKeySpkiDer: spki, validityMs: 0 })).toThrow(RangeError);
    expect(() => ca.issueDeviceCert({ deviceId: DEVICE_ID, name: 'x', publicKeySpkiDer: spki, validityMs: 1.5 })).toThrow(RangeError);
    expect(() => ca.issueServerCert({ names: [] })).toThrow(TypeError);
    expect(() => ca.issueServerCert({ names: ['bad name'] })).toThrow(TypeError);
    expect(() => ca.issueServerCert({ names: ['-leading.example'] })).toThrow(TypeError);
    expect(() => ca.issueServerCert({ names: ['fe80::1%eth0'] })).toThrow(TypeError);
    expect(() => ca.issueServerCert({ names: ['ok'], validityDays: 0 })).toThrow(RangeError);
  });

  it('encodes IP literals in network order', () => {
    expect(ipBytes('10.0.0.1').toString('hex')).toBe('0a000001');
    expect(ipBytes('::').toString('hex')).toBe('0'.repeat(32));
    expect(ipBytes('1::').toString('hex')).toBe(`0001${'0'.repeat(28)}`);
    expect(ipBytes('1:2:3:4:5:6:7:8').toString('hex')).toBe('00010002000300040005000600070008');
    expect(ipBytes('::ffff:1.2.3.4').toString('hex')).toBe('00000000000000000000ffff01020304');
    expect(() => ipBytes('example.com')).toThrow(TypeError);
  });
});

describe('OpenSSL accepts the chain', () => {
  const ca = CertificateAuthority.create({ commonName: 'OpenSSL check' });
  const foreign = CertificateAuthority.create({ commonName: 'Foreign' });

  it('for server, device and user certificates, and not from another CA', () => {
    const server = ca.issueServerCert({ names: ['localhost', '127.0.0.1'] });
    const device = deviceCertFor(ca, generateKeyPair());
    const user = ca.issueUserCert({ userId: USER_ID, name: 'alice', publicKeySpkiDer: generateKeyPair().publicKeySpkiDer, validityMs: DAY_MS });
    expect(opensslVerifies(ca.certPem, server.certPem, 'sslserver')).toBe(true);
    expect(opensslVerifies(ca.certPem, server.certPem, 'sslclient')).toBe(false);
    for (const peer of [device, user]) {
      expect(opensslVerifies(ca.certPem, peer, 'sslclient')).toBe(true);
      expect(opensslVerifies(ca.certPem, peer, 'sslserver')).toBe(true);
    }
    expect(opensslVerifies(foreign.certPem, device, 'sslclient')).toBe(false);
  });
});

describe('node tls accepts the certificates (mutual authentication)', () => {
  const ca = CertificateAuthority.create({ commonName: 'TLS check' });
  const foreign = CertificateAuthority.create({ commonName: 'Foreign' });

  async function handshake(
    serverOptions: { cert: string; key: string; rejectUnauthorized: boolean },
    clientOptions: { cert: string; key: string; host: string; servername?: string; checkServerIdentity?: tls.ConnectionOptions['checkServerIdentity'] },
  ): Promise<{ server: tls.TLSSocket; client: tls.TLSSocket }> {
    const server = tls.createServer({ ...serverOptions, ca: [ca.certPem], requestCert: true, minVersion: 'TLSv1.3' });
    server.on('tlsClientError', () => undefined); // handshake failures are asserted on the client side
    disposers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening', { signal: AbortSignal.timeout(EVENT_TIMEOUT_MS) });
    const accepted = once(server, 'secureConnection', { signal: AbortSignal.timeout(EVENT_TIMEOUT_MS) });
    const client = tls.connect({ ...clientOptions, port: (server.address() as AddressInfo).port, ca: [ca.certPem] });
    client.on('error', () => undefined); // asserted through the events below
    disposers.push(() => void client.destroy());
    await once(client, 'secureConnect', { signal: AbortSignal.timeout(EVENT_TIMEOUT_MS) });
    const [serverSocket] = (await accepted) as [tls.TLSSocket];
    serverSocket.on('error', () => undefined);
    disposers.push(() => void serverSocket.destroy());
    return { server: serverSocket, client };
  }

  it('relay server certificate + device client certificate: authorized both ways (by name and by IP)', async () => {
    const relay = ca.issueServerCert({ names: ['localhost', '127.0.0.1'] });
    const pair = generateKeyPair();
    const device = deviceCertFor(ca, pair);
    for (const target of [{ host: '127.0.0.1', servername: 'localhost' }, { host: '127.0.0.1' }]) {
      const { server, client } = await handshake({ cert: relay.certPem, key: relay.keyPem, rejectUnauthorized: true }, { cert: device, key: pair.privateKeyPem, ...target });
      expect(client.authorized).toBe(true);
      expect(server.authorized).toBe(true);
      expect(certFingerprint(server.getPeerCertificate().raw)).toBe(certFingerprint(device));
      expect(certFingerprint(client.getPeerCertificate().raw)).toBe(certFingerprint(relay.certPem));
    }
  });

  it('device as TLS server + user as TLS client (the end-to-end session): authorized both ways', async () => {
    const devicePair = generateKeyPair();
    const userPair = generateKeyPair();
    const device = deviceCertFor(ca, devicePair);
    const user = ca.issueUserCert({ userId: USER_ID, name: 'alice', publicKeySpkiDer: userPair.publicKeySpkiDer, validityMs: DAY_MS });
    const { server, client } = await handshake(
      { cert: device, key: devicePair.privateKeyPem, rejectUnauthorized: true },
      // Peers are identified by the pinned certificate, not a host name.
      { cert: user, key: userPair.privateKeyPem, host: '127.0.0.1', checkServerIdentity: () => undefined },
    );
    expect(client.authorized).toBe(true);
    expect(server.authorized).toBe(true);
    expect(describeCert(server.getPeerCertificate().raw)).toMatchObject({ role: 'user', id: USER_ID });
    expect(describeCert(client.getPeerCertificate().raw)).toMatchObject({ role: 'device', id: DEVICE_ID });
  });

  it('a client certificate from another CA is not authorized', async () => {
    const relay = ca.issueServerCert({ names: ['localhost'] });
    const pair = generateKeyPair();
    const stranger = deviceCertFor(foreign, pair);
    const { server, client } = await handshake({ cert: relay.certPem, key: relay.keyPem, rejectUnauthorized: false }, { cert: stranger, key: pair.privateKeyPem, host: '127.0.0.1', servername: 'localhost' });
    expect(client.authorized).toBe(true);
    expect(server.authorized).toBe(false);
  });
});
