/**
 * PostgreSQL schema: the twin of sqlite-schema.ts, migration for migration (times BIGINT, the audit ID
 * BIGSERIAL). Applied on open, each migration in its own transaction under an advisory lock, with its row in
 * `schema_migrations`. Never edit a released migration; add one to both files in the same change.
 */
export const PG_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
  );
  CREATE TABLE enroll_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    owner_user_id TEXT REFERENCES users (id),
    uses_left INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner_user_id TEXT REFERENCES users (id),
    cert_fingerprint TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  CREATE INDEX devices_by_name ON devices (name);
  CREATE TABLE user_certs (
    fingerprint TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    key_fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  `,
  `
  ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'connect' CHECK (scope IN ('read', 'connect'));
  CREATE INDEX api_tokens_by_user ON api_tokens (user_id);
  ALTER TABLE user_certs ADD COLUMN token_id TEXT REFERENCES api_tokens (id);
  CREATE INDEX user_certs_by_token ON user_certs (token_id);
  CREATE TABLE shares (
    device_id TEXT NOT NULL REFERENCES devices (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    services TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (device_id, user_id)
  );
  CREATE INDEX shares_by_user ON shares (user_id);
  CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    source TEXT,
    outcome TEXT NOT NULL
  );
  `,
  // 3: pending device claims (claim codes): one row per lookup ID, the atomic pending -> offered -> claimed transitions.
  `
  CREATE TABLE claims (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    csr TEXT NOT NULL,
    device_key TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    poll_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'offered', 'claimed')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    offer_id TEXT,
    offer_user_id TEXT REFERENCES users (id),
    owner_key TEXT,
    owner_tag TEXT,
    offer_name TEXT,
    offered_at BIGINT,
    answer_ok INTEGER,
    device_tag TEXT,
    answer_code TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    device_id TEXT REFERENCES devices (id),
    certificate TEXT,
    claimed_at BIGINT
  );
  `,
  // 4: the latest owner-signed grant set of each claimed device (protocol/grants.ts), kept as received; seq only rises;
  // user certificates by revocation time (running relays poll them to end live streams).
  `
  CREATE TABLE device_grants (
    device_id TEXT PRIMARY KEY REFERENCES devices (id),
    seq BIGINT NOT NULL,
    grants TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
  );
  CREATE INDEX user_certs_by_revoked ON user_certs (revoked_at);
  `,
];
