/** The Store on PostgreSQL, for relays that share state (pg-driver.ts). */
import { PgDriver } from './pg-driver';
import { SqlStore, type StoreDeps } from './sql-store';

export interface PgStoreOptions {
  /** `postgres://user@host:port/database`; a password comes from PGPASSWORD or ~/.pgpass, never the URL (see open-store.ts). */
  readonly url: string;
}

export class PgStore extends SqlStore {
  /** Connect and migrate. Rejects PW_STORE_UNAVAILABLE, PW_STORE_UNSUPPORTED. */
  static open(options: PgStoreOptions, deps: StoreDeps = {}): Promise<PgStore> {
    if (typeof options.url !== 'string' || !isPostgresUrl(options.url)) throw new TypeError('url must be a postgres:// URL');
    return PgDriver.open(options.url, deps.now ?? Date.now).then((driver) => new PgStore(driver, deps));
  }
}

export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//.test(value);
}
