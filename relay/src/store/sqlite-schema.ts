/**
 * SQLite schema, as ordered migrations: migration N (1-based) brings the schema to version N. Applied on
 * open, each in one transaction with its row in `schema_version`. Never edit a released migration; add one.
 * Plain SQL types and statements only, so the PostgreSQL store can mirror it (INTEGER times → BIGINT).
 */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
  );
  CREATE TABLE enroll_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    owner_user_id TEXT REFERENCES users (id),
    uses_left INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner_user_id TEXT REFERENCES users (id),
    cert_fingerprint TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE INDEX devices_by_name ON devices (name);
  CREATE TABLE user_certs (
    fingerprint TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    key_fingerprint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  `,
];
