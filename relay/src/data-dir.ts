/**
 * The relay's data directory:
 *   ca.crt / ca.key (0600)          the relay CA (issues device, user and server certificates)
 *   server.crt / server.key (0600)  the relay's TLS certificate for its port (unless --cert/--key are used)
 *   relay.db                        the SQLite store
 */
import { constants as fsConstants, promises as fs } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { PortwayError } from '../../protocol';
import { CertificateAuthority } from './pki';
import { writeFileAtomic } from '../../shared/write-file-atomic';

export const DEFAULT_SERVER_NAMES = ['localhost', '127.0.0.1', '::1'];

export interface RelayFiles {
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly db: string;
}

export function relayFiles(dataDir: string): RelayFiles {
  return {
    caCert: path.join(dataDir, 'ca.crt'),
    caKey: path.join(dataDir, 'ca.key'),
    serverCert: path.join(dataDir, 'server.crt'),
    serverKey: path.join(dataDir, 'server.key'),
    db: path.join(dataDir, 'relay.db'),
  };
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file, fsConstants.F_OK);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Create the CA and server certificate. Refuses to overwrite an existing CA. */
export async function initDataDir(dataDir: string, names: readonly string[]): Promise<{ caFingerprint: string; names: string[] }> {
  for (const name of names) {
    if (!isIP(name) && !/^(?=.{1,253}$)([A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(name)) {
      throw new PortwayError('PW_BAD_REQUEST', `not a host name or IP address: ${JSON.stringify(name).slice(0, 80)}`);
    }
  }
  const files = relayFiles(dataDir);
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (await exists(files.caKey)) throw new PortwayError('PW_BAD_REQUEST', `${dataDir} already holds a relay CA; refusing to overwrite it`);
  const ca = CertificateAuthority.create({ commonName: 'Portway relay CA' });
  const allNames = [...new Set([...names, ...DEFAULT_SERVER_NAMES])];
  const server = ca.issueServerCert({ names: allNames });
  await writeFileAtomic(files.caKey, ca.keyPem, 0o600);
  await writeFileAtomic(files.caCert, ca.certPem, 0o644);
  await writeFileAtomic(files.serverKey, server.keyPem, 0o600);
  await writeFileAtomic(files.serverCert, `${server.certPem.trim()}\n${ca.certPem.trim()}\n`, 0o644);
  return { caFingerprint: ca.fingerprint, names: allNames };
}

export async function loadCa(dataDir: string): Promise<CertificateAuthority> {
  const files = relayFiles(dataDir);
  let certPem: string;
  let keyPem: string;
  try {
    [certPem, keyPem] = await Promise.all([fs.readFile(files.caCert, 'utf8'), fs.readFile(files.caKey, 'utf8')]);
  } catch (err) {
    throw new PortwayError('PW_CONFIG_INVALID', `no relay CA in ${dataDir}; run "portway relay init --data ${dataDir}" first`, { cause: err });
  }
  return CertificateAuthority.load({ certPem, keyPem });
}

export async function loadServerCert(dataDir: string, override?: { certFile: string; keyFile: string }): Promise<{ certPem: string; keyPem: string }> {
  const files = relayFiles(dataDir);
  const certFile = override?.certFile ?? files.serverCert;
  const keyFile = override?.keyFile ?? files.serverKey;
  try {
    const [certPem, keyPem] = await Promise.all([fs.readFile(certFile, 'utf8'), fs.readFile(keyFile, 'utf8')]);
    return { certPem, keyPem };
  } catch (err) {
    throw new PortwayError('PW_CONFIG_INVALID', `cannot read the relay certificate or key (${certFile}, ${keyFile})`, { cause: err });
  }
}
