/** The Store on SQLite: the relay's embedded default, one file in its data directory (sqlite-driver.ts). */
import { PortwayError } from '../../../protocol';
import { SqliteDriver } from './sqlite-driver';
import { SqlStore, type StoreDeps } from './sql-store';

export interface SqliteStoreOptions {
  /** Database file, or ':memory:' for a throwaway store. */
  readonly path: string;
}

export class SqliteStore extends SqlStore {
  /** Open (creating and migrating) the database. Rejects PW_STORE_UNSUPPORTED for a newer schema, PW_INTERNAL when the file cannot be used. */
  static open(options: SqliteStoreOptions, deps: StoreDeps = {}): Promise<SqliteStore> {
    if (typeof options.path !== 'string' || options.path === '') throw new TypeError('path must be a non-empty string');
    try {
      return Promise.resolve(new SqliteStore(SqliteDriver.open(options.path, deps.now ?? Date.now), deps));
    } catch (err) {
      return Promise.reject(err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', `cannot open database ${options.path}`, { cause: err }));
    }
  }
}
