/**
 * SqlDriver on SQLite (better-sqlite3): one file, WAL journal, foreign keys on, created 0600 (SQLite gives
 * the -wal and -shm files the same mode). Calls are synchronous underneath; a queue runs one job at a time,
 * so a transaction's statements never interleave with another caller's. Transactions are IMMEDIATE, so
 * several processes sharing the file stay correct (busy_timeout bounds the wait for the write lock).
 */
import { writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { PortwayError } from '../../../protocol';
import type { SqlDriver, SqlExecutor, SqlValue } from './sql-driver';
import { SQLITE_MIGRATIONS } from './sqlite-schema';

const BUSY_TIMEOUT_MS = 5000;

export class SqliteDriver implements SqlDriver {
  readonly #db: Database.Database;
  readonly #direct: SqlExecutor;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(db: Database.Database) {
    this.#db = db;
    this.#direct = {
      query: <R>(sql: string, params: readonly SqlValue[] = []) => Promise.resolve(this.#all<R>(sql, params)),
      execute: (sql: string, params: readonly SqlValue[] = []) => Promise.resolve(this.#run(sql, params)),
    };
  }

  /** Open, create (0600) and migrate. Throws PW_STORE_UNSUPPORTED for a newer schema; other failures as they come. */
  static open(path: string, now: () => number): SqliteDriver {
    if (path !== ':memory:') {
      try {
        writeFileSync(path, '', { flag: 'wx', mode: 0o600 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    const db = new Database(path);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('foreign_keys = ON');
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.pragma('synchronous = NORMAL');
      migrate(db, now);
      return new SqliteDriver(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  query<R>(sql: string, params: readonly SqlValue[] = []): Promise<R[]> {
    return this.#exclusive(() => this.#all<R>(sql, params));
  }

  execute(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    return this.#exclusive(() => this.#run(sql, params));
  }

  transaction<T>(job: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    return this.#exclusive(async () => {
      this.#db.exec('BEGIN IMMEDIATE');
      try {
        const result = await job(this.#direct);
        this.#db.exec('COMMIT');
        return result;
      } catch (err) {
        if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
        throw err;
      }
    });
  }

  /**
   * Checked by code, not `instanceof Database.SqliteError`: the native addon keeps the error class of the
   * first copy of better-sqlite3 loaded in the process, so a second copy would not recognise its own errors.
   */
  isUniqueViolation(err: unknown): boolean {
    const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
    return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
  }

  async close(): Promise<void> {
    await this.#queue;
    if (this.#db.open) this.#db.close();
  }

  #exclusive<T>(job: () => T | Promise<T>): Promise<T> {
    const run = this.#queue.then(() => job());
    this.#queue = run.catch(() => undefined); // the caller gets the rejection; the queue moves on
    return run;
  }

  #all<R>(sql: string, params: readonly SqlValue[]): R[] {
    return this.#db.prepare<SqlValue[], R>(sql).all(...params);
  }

  #run(sql: string, params: readonly SqlValue[]): number {
    return this.#db.prepare<SqlValue[]>(sql).run(...params).changes;
  }
}

/** Each pending migration in its own IMMEDIATE transaction, the version re-read inside it, so two processes opening one file cannot both apply it. */
function migrate(db: Database.Database, now: () => number): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at INTEGER NOT NULL)');
  // Bounded: each pass applies one migration or returns.
  for (let pass = 0; pass <= SQLITE_MIGRATIONS.length; pass++) {
    const applied = db
      .transaction((): boolean => {
        const current = db.prepare<[], { version: number | null }>('SELECT MAX(version) AS version FROM schema_version').get()?.version ?? 0;
        if (current > SQLITE_MIGRATIONS.length) {
          throw new PortwayError('PW_STORE_UNSUPPORTED', `database schema version ${current} is newer than this relay's ${SQLITE_MIGRATIONS.length}`);
        }
        const next = SQLITE_MIGRATIONS[current];
        if (next === undefined) return false;
        db.exec(next);
        db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)').run(current + 1, now());
        return true;
      })
      .immediate();
    if (!applied) return;
  }
}
