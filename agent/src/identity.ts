/**
 * The device's identity in its state directory:
 *   device.key (0600)  P-256 private key, made on first start, never sent anywhere
 *   device.crt         certificate from the relay (after enrollment; replaced when the relay renews it: control/renewed-cert.ts)
 *   ca.crt             the relay CA (verifies users in end-to-end sessions)
 *   relay-ca.crt       the CA that verifies the relay's TLS certificate (from caFile or the pinned fingerprint)
 *   device.json        { deviceId }
 *   time-floor.json    a time known to have passed, for boards without a real-time clock (clock/time-floor.ts)
 *   claim.json, owners.json   claiming (claim/claim-state.ts): the pending claim, the owner keys pinned at claim time
 * Writes are atomic (temp file, fsync, rename, fsync the directory), so a power cut leaves the old or the new file.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PortwayError } from '../../protocol';
import { apiRequest } from '../../shared/https-json';
import { fetchPinnedCa } from '../../shared/relay-trust';
import { writeFileAtomic } from '../../shared/write-file-atomic';
import { createCsr, describeCert, generateKeyPair } from '../../shared/x509';
import type { Logger } from '../../shared/logger';
import { enrollByClaim } from './claim/claim-enrollment';
import { loadOwnerPins } from './claim/claim-state';

export interface DeviceIdentity {
  readonly deviceId: string;
  readonly keyPem: string;
  readonly certPem: string;
  /** Relay CA: verifies the users' certificates in end-to-end sessions. */
  readonly caPem: string;
  /** Verifies the relay's own TLS certificate. */
  readonly relayCaPem: string;
  /** SPKI fingerprints of the owner keys pinned when the device was claimed; undefined for enrolled devices. */
  readonly ownerKeys?: ReadonlySet<string>;
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function loadOrCreateIdentity(
  deps: { log: Logger },
  options: {
    stateDir: string; relay: { host: string; port: number }; caFile?: string; caFingerprint?: string; enrollKey?: string; name: string; timeoutMs: number;
    claimCode?: string; claimCodeFile?: string; claimConsole?: string;
  },
): Promise<DeviceIdentity> {
  const dir = options.stateDir;
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const file = (n: string): string => path.join(dir, n);

  let relayCaPem = options.caFile ? await fs.readFile(options.caFile, 'utf8').catch((err: unknown) => {
    throw new PortwayError('PW_CONFIG_INVALID', `cannot read caFile ${options.caFile ?? ''}`, { cause: err });
  }) : await readOptional(file('relay-ca.crt'));

  let keyPem = await readOptional(file('device.key'));
  if (!keyPem) {
    const pair = generateKeyPair();
    keyPem = pair.privateKeyPem;
    await writeFileAtomic(file('device.key'), keyPem, 0o600);
    deps.log.info('agent.identity.key_created');
  }
  const certPem = await readOptional(file('device.crt'));
  const caPem = await readOptional(file('ca.crt'));
  const meta = await readOptional(file('device.json'));
  if (certPem && caPem && meta && relayCaPem) {
    const { deviceId } = JSON.parse(meta) as { deviceId: string };
    const ownerKeys = await loadOwnerPins(dir);
    return { deviceId, keyPem, certPem, caPem, relayCaPem, ...(ownerKeys ? { ownerKeys } : {}) };
  }

  if (!relayCaPem) {
    if (!options.caFingerprint) throw new PortwayError('PW_CONFIG_INVALID', 'caFile or caFingerprint is required');
    relayCaPem = await fetchPinnedCa(options.relay, options.caFingerprint, options.timeoutMs);
    await writeFileAtomic(file('relay-ca.crt'), relayCaPem, 0o644);
  }
  if (!options.enrollKey) {
    // No enrollment key: this device is claimed by a person with a claim code (the configured one or its own).
    const claimed = await enrollByClaim(deps, {
      stateDir: dir, relay: options.relay, relayCaPem, keyPem, name: options.name, claimCode: options.claimCode, timeoutMs: options.timeoutMs,
      claimCodeFile: options.claimCodeFile ?? path.join(dir, 'portway-claim-code.txt'), claimConsole: options.claimConsole ?? '',
    });
    const ownerKeys = await loadOwnerPins(dir);
    return { ...claimed, keyPem, relayCaPem, ...(ownerKeys ? { ownerKeys } : {}) };
  }
  deps.log.info({ relay: `${options.relay.host}:${options.relay.port}` }, 'agent.enroll.started');
  const csr = createCsr({ privateKeyPem: keyPem, commonName: options.name });
  const result = await apiRequest<{ deviceId: string; certificate: string; caCertificate: string }>({
    relay: options.relay,
    caPem: relayCaPem,
    method: 'POST',
    path: '/v1/enroll',
    body: { enrollKey: options.enrollKey, name: options.name, csr },
    timeoutMs: options.timeoutMs,
  });
  const described = describeCert(result.certificate);
  if (described.role !== 'device' || described.id !== result.deviceId) throw new PortwayError('PW_INTERNAL', 'relay returned a certificate for another identity');
  await writeFileAtomic(file('ca.crt'), result.caCertificate, 0o644);
  await writeFileAtomic(file('device.crt'), result.certificate, 0o644);
  await writeFileAtomic(file('device.json'), JSON.stringify({ deviceId: result.deviceId }), 0o644);
  deps.log.info({ deviceId: result.deviceId }, 'agent.enroll.done');
  return { deviceId: result.deviceId, keyPem, certPem: result.certificate, caPem: result.caCertificate, relayCaPem };
}
