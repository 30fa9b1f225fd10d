/**
 * The relay's store from its options: PostgreSQL when `db` is a postgres:// URL, else SQLite (`db` a file
 * path, default relay.db in the data directory). A URL may not carry a password (it would sit in argv and
 * process listings): pg reads it from PGPASSWORD or ~/.pgpass.
 */
import { PortwayError } from '../../../protocol';
import { isPostgresUrl, PgStore } from './pg-store';
import { SqliteStore } from './sqlite-store';
import type { StoreDeps } from './sql-store';
import type { Store } from './store';

/** PW_CONFIG_INVALID when `db` is not usable as written; returns it unchanged otherwise. */
export function checkDbSetting(db: string): string {
  if (!isPostgresUrl(db)) return db;
  let url: URL;
  try {
    url = new URL(db);
  } catch (err) {
    throw new PortwayError('PW_CONFIG_INVALID', 'db: not a valid postgres:// URL', { cause: err });
  }
  if (url.password !== '') throw new PortwayError('PW_CONFIG_INVALID', 'db: the URL must not hold a password; put it in PGPASSWORD or ~/.pgpass');
  if (url.pathname.length < 2) throw new PortwayError('PW_CONFIG_INVALID', 'db: the URL must name a database (postgres://user@host:port/DBNAME)');
  return db;
}

/** A URL safe to log: user, host, port and database only. */
export function describeDb(db: string): string {
  if (!isPostgresUrl(db)) return `sqlite:${db}`;
  const url = new URL(db);
  return `postgres://${url.username ? `${url.username}@` : ''}${url.host}${url.pathname}`;
}

export function openStore(db: string, deps: StoreDeps = {}): Promise<Store> {
  checkDbSetting(db);
  return isPostgresUrl(db) ? PgStore.open({ url: db }, deps) : SqliteStore.open({ path: db }, deps);
}
