/** Relay entry points for the CLI: init, serve, ca, user add, enroll-key create. */
import { promises as fs } from 'node:fs';
import { PortwayError } from '../../protocol';
import { createLogger } from '../../shared/logger';
import { parseHostPort } from '../../shared/relay-trust';
import { parseRelayOptions } from './config';
import { initDataDir, loadCa, relayFiles } from './data-dir';
import { Relay } from './relay';
import { SqliteStore } from './store';

export async function relayInit(dataDir: string, names: string[]): Promise<string> {
  const result = await initDataDir(dataDir, names);
  const store = await SqliteStore.open({ path: relayFiles(dataDir).db });
  await store.close();
  return result.caFingerprint;
}

export async function relayCa(dataDir: string): Promise<{ pem: string; fingerprint: string }> {
  const ca = await loadCa(dataDir);
  return { pem: ca.certPem, fingerprint: ca.fingerprint };
}

async function withStore<T>(dataDir: string, fn: (store: SqliteStore) => Promise<T>): Promise<T> {
  await loadCa(dataDir);
  const store = await SqliteStore.open({ path: relayFiles(dataDir).db });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function relayUserAdd(dataDir: string, name: string, isAdmin: boolean): Promise<string> {
  return withStore(dataDir, async (store) => {
    const user = await store.createUser(name, { isAdmin });
    return (await store.createToken(user.id)).token;
  });
}

export function parseDuration(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text);
  if (!m) throw new PortwayError('PW_BAD_REQUEST', `duration must look like 30m, 12h or 7d, got ${JSON.stringify(text).slice(0, 40)}`);
  return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

export function relayEnrollKeyCreate(dataDir: string, options: { uses: number; expiresMs: number; owner?: string }): Promise<string> {
  return withStore(dataDir, async (store) => {
    let ownerUserId: string | undefined;
    if (options.owner !== undefined) {
      const owner = await store.getUserByName(options.owner);
      if (!owner) throw new PortwayError('PW_NOT_FOUND', `no user named ${options.owner}`);
      ownerUserId = owner.id;
    }
    return (await store.createEnrollKey({ ownerUserId, uses: options.uses, expiresAt: Date.now() + options.expiresMs })).key;
  });
}

export async function relayServe(flags: { data: string; listen: string; cert?: string; key?: string; config?: string; logLevel?: string; metrics?: string }): Promise<Relay> {
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
    listen: parseHostPort(flags.listen),
    ...(flags.metrics ? { metricsListen: parseHostPort(flags.metrics) } : {}),
    ...(flags.cert !== undefined ? { certFile: flags.cert } : {}),
    ...(flags.key !== undefined ? { keyFile: flags.key } : {}),
    ...(flags.logLevel ? { logLevel: flags.logLevel } : {}),
  });
  const log = createLogger({ level: options.logLevel, name: 'portway-relay' });
  const relay = new Relay({ log }, options);
  await relay.start();
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'relay.stopping');
    relay.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return relay;
}
