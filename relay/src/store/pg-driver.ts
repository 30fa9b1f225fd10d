/**
 * SqlDriver on PostgreSQL (`pg`): a pool of connections to one database, for relays that share state.
 * BIGINT columns are parsed to numbers (times in ms fit in 2^53). Every wait is bounded: connecting
 * (PG_CONNECT_TIMEOUT_MS), each statement (PG_STATEMENT_TIMEOUT_MS), idling inside a transaction.
 * Migrations run on open, each in its own transaction under an advisory lock, so relays starting together
 * apply each migration once.
 */
import pg from 'pg';
import { PortwayError } from '../../../protocol';
import { numberPlaceholders, type SqlDriver, type SqlExecutor, type SqlValue } from './sql-driver';
import { PG_MIGRATIONS } from './pg-schema';

const PG_CONNECT_TIMEOUT_MS = 10_000;
const PG_STATEMENT_TIMEOUT_MS = 15_000;
const PG_POOL_SIZE = 10;
/** Advisory lock key for migrations ("port" in ASCII). */
const MIGRATION_LOCK_KEY = 0x706f7274;
const INT8_OID = 20;

const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

export class PgDriver implements SqlDriver {
  readonly #pool: pg.Pool;

  private constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /** Connect and migrate. Rejects PW_STORE_UNAVAILABLE when the server cannot be reached, PW_STORE_UNSUPPORTED for a newer schema. */
  static async open(url: string, now: () => number): Promise<PgDriver> {
    const pool = new pg.Pool({
      connectionString: url,
      max: PG_POOL_SIZE,
      connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
      statement_timeout: PG_STATEMENT_TIMEOUT_MS,
      idle_in_transaction_session_timeout: PG_STATEMENT_TIMEOUT_MS,
      types,
    });
    pool.on('error', () => {
      // An idle connection died (server restart, network): the pool drops it and the next query reconnects.
    });
    try {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw new PortwayError('PW_STORE_UNAVAILABLE', `cannot connect to PostgreSQL: ${(err as Error).message}`.slice(0, 300), { cause: err });
      }
      try {
        await migrate(client, now);
      } finally {
        client.release();
      }
      return new PgDriver(pool);
    } catch (err) {
      await pool.end();
      throw err;
    }
  }

  query<R>(sql: string, params: readonly SqlValue[] = []): Promise<R[]> {
    return queryOn<R>(this.#pool, sql, params);
  }

  async execute(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    return (await this.#pool.query(numberPlaceholders(sql), params as SqlValue[])).rowCount ?? 0;
  }

  async transaction<T>(job: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    /** Set when the connection cannot be trusted any more: the pool then closes it instead of reusing it. */
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      try {
        const result = await job({
          query: <R>(sql: string, params: readonly SqlValue[] = []) => queryOn<R>(client, sql, params),
          execute: async (sql: string, params: readonly SqlValue[] = []) => (await client.query(numberPlaceholders(sql), params as SqlValue[])).rowCount ?? 0,
        });
        await client.query('COMMIT');
        return result;
      } catch (err) {
        // The job's error is the one to report; a failed ROLLBACK only retires the connection.
        await client.query('ROLLBACK').catch((rollbackErr: unknown) => {
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
        });
        throw err;
      }
    } finally {
      client.release(broken);
    }
  }

  isUniqueViolation(err: unknown): boolean {
    return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === '23505';
  }

  close(): Promise<void> {
    return this.#pool.end();
  }
}

async function queryOn<R>(on: pg.Pool | pg.PoolClient, sql: string, params: readonly SqlValue[]): Promise<R[]> {
  return (await on.query(numberPlaceholders(sql), params as SqlValue[])).rows as R[];
}

async function migrate(client: pg.PoolClient, now: () => number): Promise<void> {
  // Bounded: each pass applies one migration or returns.
  for (let pass = 0; pass <= PG_MIGRATIONS.length; pass++) {
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      const current = Number((await client.query<{ version: number | null }>('SELECT MAX(version) AS version FROM schema_migrations')).rows[0]?.version ?? 0);
      if (current > PG_MIGRATIONS.length) {
        throw new PortwayError('PW_STORE_UNSUPPORTED', `database schema version ${current} is newer than this relay's ${PG_MIGRATIONS.length}`);
      }
      const next = PG_MIGRATIONS[current];
      if (next === undefined) {
        await client.query('COMMIT');
        return;
      }
      await client.query(next);
      await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [current + 1, now()]);
      await client.query('COMMIT');
    } catch (err) {
      // On a dead connection ROLLBACK fails too; open() then ends the pool. The migration's error is the one to report.
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }
}
