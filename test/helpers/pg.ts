/**
 * Throwaway PostgreSQL databases for tests, on the machine's server at 127.0.0.1:5432 (user postgres, trust
 * auth; CI has it running). One uniquely named database per test run, dropped after it; inside it, one schema
 * per store (`search_path` in the URL) so each test starts empty. Never binds a port.
 * If the server is not reachable the suite fails with a clear message: it must not skip silently.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const PG_HOST = '127.0.0.1';
export const PG_PORT = 5432;
const CONNECT_TIMEOUT_MS = 5_000;

export interface TestDatabase {
  readonly name: string;
  /** URL of the database itself (public schema). */
  readonly url: string;
  /** A fresh, empty schema in the database, and the URL that uses it. */
  newSchemaUrl(): Promise<string>;
  /** Run one statement as postgres in the database. */
  query(sql: string, params?: unknown[]): Promise<pg.QueryResult>;
  drop(): Promise<void>;
}

/** `port`: only for testing this helper's own failure (a port nothing listens on). */
export async function createTestDatabase(port = PG_PORT): Promise<TestDatabase> {
  const adminClient = (database: string): pg.Client => new pg.Client({ host: PG_HOST, port, user: 'postgres', database, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  const name = `portway_test_${randomBytes(6).toString('hex')}`;
  const admin = adminClient('postgres');
  try {
    await admin.connect();
  } catch (err) {
    throw new Error(
      `PostgreSQL is not reachable on ${PG_HOST}:${port} as user postgres (${(err as Error).message}). ` +
        'The PostgreSQL store tests need it (CI machines run it; start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start).',
    );
  }
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = `postgres://postgres@${PG_HOST}:${port}/${name}`;
  let schemas = 0;
  const query = async (sql: string, params: unknown[] = []): Promise<pg.QueryResult> => {
    const client = adminClient(name);
    await client.connect();
    try {
      return await client.query(sql, params);
    } finally {
      await client.end();
    }
  };
  return {
    name,
    url,
    query,
    newSchemaUrl: async () => {
      const schema = `s${++schemas}`;
      await query(`CREATE SCHEMA ${schema}`);
      return `${url}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    },
    drop: async () => {
      const client = adminClient('postgres');
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}
