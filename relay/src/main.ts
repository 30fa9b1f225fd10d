/** Relay entry points for the CLI: init, serve, ca, user add, enroll-key create, device revoke. */
import { promises as fs } from 'node:fs';
import { PortwayError } from '../../protocol';
import { createLogger } from '../../shared/logger';
import { parseHostPort } from '../../shared/relay-trust';
import { ClaimMisbehaviour, MISBEHAVIOURS, type MisbehaviourName } from './claims/claim-misbehaviour';
import { parseRelayOptions } from './config';
import { DATA_MISBEHAVIOURS, DataMisbehaviour, type DataMisbehaviourName } from './data/data-misbehaviour';
import { initDataDir, loadCa, relayFiles } from './data-dir';
import { Relay } from './relay';
import { checkDbSetting, openStore, type Store, type TokenScope } from './store';

export { parseDuration } from '../../shared/parse-duration';

/** Where the store lives: `--db` (a postgres:// URL or an SQLite file), else relay.db in the data directory. */
export interface StoreFlags {
  readonly data: string;
  readonly db?: string;
}

function dbOf(flags: StoreFlags): string {
  return flags.db === undefined ? relayFiles(flags.data).db : checkDbSetting(flags.db);
}

/**
 * Create (or migrate) the store, then the CA and server certificate: a store that cannot be opened leaves no
 * CA behind, so `relay init` can simply be run again once the database is fixed.
 */
export async function relayInit(flags: StoreFlags, names: string[]): Promise<string> {
  const db = dbOf(flags);
  await fs.mkdir(flags.data, { recursive: true, mode: 0o700 });
  const store = await openStore(db);
  await store.close();
  return (await initDataDir(flags.data, names)).caFingerprint;
}

export async function relayCa(dataDir: string): Promise<{ pem: string; fingerprint: string }> {
  const ca = await loadCa(dataDir);
  return { pem: ca.certPem, fingerprint: ca.fingerprint };
}

async function withStore<T>(flags: StoreFlags, fn: (store: Store) => Promise<T>): Promise<T> {
  await loadCa(flags.data);
  const store = await openStore(dbOf(flags));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Add a user; the token printed has scope connect (log in, list, open streams), no expiry. */
export function relayUserAdd(flags: StoreFlags, name: string, isAdmin: boolean): Promise<string> {
  return withStore(flags, async (store) => {
    const user = await store.createUser(name, { isAdmin });
    const scope: TokenScope = 'connect';
    const created = await store.createToken(user.id, { scope });
    await store.appendAudit({ actor: 'relay-cli', action: 'user.create', target: user.id, outcome: 'ok' });
    return created.token;
  });
}

export function relayEnrollKeyCreate(flags: StoreFlags, options: { uses: number; expiresMs: number; owner?: string }): Promise<string> {
  return withStore(flags, async (store) => {
    let ownerUserId: string | undefined;
    if (options.owner !== undefined) {
      const owner = await store.getUserByName(options.owner);
      if (!owner) throw new PortwayError('PW_NOT_FOUND', `no user named ${options.owner}`);
      ownerUserId = owner.id;
    }
    return (await store.createEnrollKey({ ownerUserId, uses: options.uses, expiresAt: Date.now() + options.expiresMs })).key;
  });
}

/**
 * Revoke a device in the store (`portway relay device revoke`), with or without a running relay: a running relay
 * reads revocations every `timers.revocationPollMs` (1 s) and then ends the device's sessions and streams.
 * Returns the device ID; PW_UNKNOWN_DEVICE, PW_BAD_REQUEST (several devices with that name), PW_DEVICE_REVOKED.
 */
export function relayDeviceRevoke(flags: StoreFlags, nameOrId: string): Promise<string> {
  return withStore(flags, async (store) => {
    const found = await store.findDevices(nameOrId);
    if (found.length > 1) throw new PortwayError('PW_BAD_REQUEST', 'several devices have this name; use the device ID');
    const device = found[0];
    if (!device) {
      const byId = await store.getDevice(nameOrId);
      if (byId?.revokedAt !== undefined) throw new PortwayError('PW_DEVICE_REVOKED', 'this device was already removed');
      throw new PortwayError('PW_UNKNOWN_DEVICE', `no device named ${JSON.stringify(nameOrId)}`);
    }
    await store.revokeDevice(device.id);
    await store.appendAudit({ actor: 'relay-cli', action: 'device.revoke', target: device.id, outcome: 'ok' });
    return device.id;
  });
}

/**
 * TEST ONLY: PORTWAY_TEST_MISBEHAVE=swap-claim-keys makes this relay lie during claims (claim-misbehaviour.ts);
 * =replay-record[:SERVICE], =splice-other-device[:SERVICE] or =forge-service[:SERVICE] (with the forged name in
 * PORTWAY_TEST_FORGED_SERVICE) makes it tamper with streams (data-misbehaviour.ts).
 * Honoured only with PORTWAY_TEST=1; otherwise the relay refuses to start, so a stray variable never goes unnoticed.
 */
function testMisbehaviour(log: ReturnType<typeof createLogger>): { misbehaviour?: ClaimMisbehaviour; dataMisbehaviour?: DataMisbehaviour } {
  const value = process.env.PORTWAY_TEST_MISBEHAVE;
  if (value === undefined || value === '') return {};
  const [name = '', service] = value.split(':', 2);
  const isClaim = (MISBEHAVIOURS as readonly string[]).includes(name) && service === undefined;
  const isData = (DATA_MISBEHAVIOURS as readonly string[]).includes(name);
  const forged = process.env.PORTWAY_TEST_FORGED_SERVICE;
  if (process.env.PORTWAY_TEST !== '1' || !(isClaim || isData)) {
    throw new PortwayError('PW_CONFIG_INVALID', 'PORTWAY_TEST_MISBEHAVE is for tests only (it needs PORTWAY_TEST=1 and a known name)');
  }
  if ((name === 'forge-service') !== (forged !== undefined && forged !== '')) {
    throw new PortwayError('PW_CONFIG_INVALID', 'PORTWAY_TEST_FORGED_SERVICE goes with PORTWAY_TEST_MISBEHAVE=forge-service, and forge-service needs it');
  }
  log.warn({ misbehaviour: name, ...(service === undefined ? {} : { service }) }, 'relay.test_misbehaviour.enabled');
  return isClaim ? { misbehaviour: new ClaimMisbehaviour(name as MisbehaviourName) } : { dataMisbehaviour: new DataMisbehaviour(name as DataMisbehaviourName, service, name === 'forge-service' ? forged : undefined) };
}

export async function relayServe(flags: { data: string; db?: string; broker?: string; listen: string; cert?: string; key?: string; config?: string; logLevel?: string; metrics?: string }): Promise<Relay> {
  let fromFile: Record<string, unknown> = {};
  if (flags.config) {
    try {
      fromFile = JSON.parse(await fs.readFile(flags.config, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new PortwayError('PW_CONFIG_INVALID', `cannot read relay config ${flags.config}: ${(err as Error).message}`, { cause: err });
    }
  }
  const options = parseRelayOptions({
    ...fromFile,
    dataDir: flags.data,
    ...(flags.db !== undefined ? { db: checkDbSetting(flags.db) } : {}),
    ...(flags.broker !== undefined ? { broker: flags.broker } : {}),
    ...(process.env.PORTWAY_BROKER_PASSWORD ? { brokerPassword: process.env.PORTWAY_BROKER_PASSWORD } : {}),
    listen: parseHostPort(flags.listen),
    ...(flags.metrics ? { metricsListen: parseHostPort(flags.metrics) } : {}),
    ...(flags.cert !== undefined ? { certFile: flags.cert } : {}),
    ...(flags.key !== undefined ? { keyFile: flags.key } : {}),
    ...(flags.logLevel ? { logLevel: flags.logLevel } : {}),
  });
  const log = createLogger({ level: options.logLevel, name: 'portway-relay' });
  const relay = new Relay({ log, ...testMisbehaviour(log) }, options);
  // The handlers are in place before the relay starts: a SIGTERM that arrives during start-up (or right after
  // `relay.started` was logged) stops it cleanly once it has started, instead of killing it half-way.
  const starting = relay.start();
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'relay.stopping');
    starting
      .catch(() => undefined)
      .then(() => relay.stop())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await starting;
  return relay;
}
