import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { idSchema } from '../../protocol';
import { hashSecret, isId, isSecretShaped, newId, newSecret, SqliteStore } from '../../relay/src/store';
import { SQLITE_MIGRATIONS } from '../../relay/src/store/sqlite-schema';
import { describeStoreContract } from '../helpers/store-contract';

let dir: string;
let fileCount = 0;
const nextPath = (): string => join(dir, `store-${++fileCount}.db`);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'portway-store-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describeStoreContract('SqliteStore (file)', {
  make: (deps) => SqliteStore.open({ path: nextPath() }, deps),
  reopen: (deps) => SqliteStore.open({ path: join(dir, `store-${fileCount}.db`) }, deps),
});
describeStoreContract('SqliteStore (:memory:)', { make: (deps) => SqliteStore.open({ path: ':memory:' }, deps) });

describe('IDs and secrets', () => {
  it('newId matches the protocol idSchema for every prefix and does not repeat', () => {
    for (const prefix of ['dev', 'usr', 'key', 'tok'] as const) {
      const ids = new Set(Array.from({ length: 1000 }, () => newId(prefix)));
      expect(ids.size).toBe(1000);
      for (const id of ids) {
        expect(id).toMatch(new RegExp(`^${prefix}_[a-z2-7]{16}$`));
        expect(idSchema.safeParse(id).success).toBe(true);
        expect(isId(id, prefix)).toBe(true);
      }
    }
    expect(isId('dev_aaaaaaaaaaaaaaa1', 'dev')).toBe(false);
    expect(isId('usr_aaaaaaaaaaaaaaaa', 'dev')).toBe(false);
    expect(isId(7, 'dev')).toBe(false);
  });

  it('newSecret makes 32 random bytes behind a readable prefix', () => {
    const token = newSecret('pwt');
    expect(token).toMatch(/^pwt_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token.slice(4), 'base64url')).toHaveLength(32);
    expect(isSecretShaped(token, 'pwt')).toBe(true);
    expect(isSecretShaped(token, 'pwk')).toBe(false);
    expect(hashSecret(token)).toMatch(/^[0-9a-f]{64}$/);
    expect(newSecret('pwk')).not.toBe(newSecret('pwk'));
  });
});

describe('SqliteStore on disk', () => {
  it('creates the file 0600 in WAL mode with a schema_version', async () => {
    const path = nextPath();
    const store = await SqliteStore.open({ path });
    await store.createUser('alice');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    if (existsSync(`${path}-wal`)) expect(statSync(`${path}-wal`).mode & 0o777).toBe(0o600);
    const probe = new Database(path, { readonly: true });
    try {
      expect(probe.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(probe.prepare('SELECT version FROM schema_version ORDER BY version').all()).toEqual([{ version: 1 }, { version: 2 }, { version: 3 }, { version: 4 }]);
    } finally {
      probe.close();
    }
    await store.close();
  });

  it('keeps data across reopening without migrating twice', async () => {
    const path = nextPath();
    const first = await SqliteStore.open({ path });
    const alice = await first.createUser('alice');
    const { token } = await first.createToken(alice.id);
    await first.close();
    const second = await SqliteStore.open({ path });
    expect((await second.authenticateToken(token)).user).toEqual(alice);
    await second.close();
    const probe = new Database(path, { readonly: true });
    expect(probe.prepare('SELECT COUNT(*) AS n FROM schema_version').get()).toEqual({ n: 4 });
    probe.close();
  });

  it('migrates a schema-1 database, keeping its data: old tokens get scope connect, old certificates no token', async () => {
    const path = nextPath();
    const db = new Database(path);
    db.exec('CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at INTEGER NOT NULL)');
    db.exec(SQLITE_MIGRATIONS[0] as string);
    db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (1, 0)').run();
    const token = newSecret('pwt');
    db.prepare('INSERT INTO users (id, name, is_admin, created_at) VALUES (?, ?, 0, 5)').run('usr_aaaaaaaaaaaaaaaa', 'old');
    db.prepare('INSERT INTO api_tokens (id, user_id, token_hash, created_at) VALUES (?, ?, ?, 6)').run('tok_aaaaaaaaaaaaaaaa', 'usr_aaaaaaaaaaaaaaaa', hashSecret(token));
    db.prepare('INSERT INTO user_certs (fingerprint, user_id, key_fingerprint, created_at) VALUES (?, ?, ?, 7)').run('a'.repeat(64), 'usr_aaaaaaaaaaaaaaaa', 'b'.repeat(64));
    db.close();
    const store = await SqliteStore.open({ path });
    const auth = await store.authenticateToken(token);
    expect(auth.token).toEqual({ id: 'tok_aaaaaaaaaaaaaaaa', userId: 'usr_aaaaaaaaaaaaaaaa', scope: 'connect', createdAt: 6 });
    expect(await store.getUserCert('a'.repeat(64))).toEqual({ fingerprint: 'a'.repeat(64), userId: 'usr_aaaaaaaaaaaaaaaa', keyFingerprint: 'b'.repeat(64), createdAt: 7 });
    expect(await store.listAudit({ limit: 5 })).toEqual([]);
    await store.close();
  });

  it('stores secrets only as hashes', async () => {
    const path = nextPath();
    const store = await SqliteStore.open({ path });
    const alice = await store.createUser('alice');
    const { token } = await store.createToken(alice.id);
    const { key } = await store.createEnrollKey({ uses: 2, expiresAt: Date.now() + 60_000 });
    await store.consumeEnrollKey(key);
    const readAll = (): string => [path, `${path}-wal`].filter(existsSync).map((file) => readFileSync(file).toString('latin1')).join('');
    for (const contents of [readAll(), (await store.close(), readAll())]) {
      for (const secret of [token, key]) {
        expect(contents).not.toContain(secret);
        expect(contents).not.toContain(secret.slice(4));
        expect(contents).not.toContain(Buffer.from(secret.slice(4), 'base64url').toString('latin1'));
      }
      expect(contents).toContain(hashSecret(token));
      expect(contents).toContain(hashSecret(key));
    }
  });

  it('refuses a database from a newer version with PW_STORE_UNSUPPORTED', async () => {
    const path = nextPath();
    await (await SqliteStore.open({ path })).close();
    const db = new Database(path);
    db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (99, 0)').run();
    db.close();
    await expect(SqliteStore.open({ path })).rejects.toMatchObject({ code: 'PW_STORE_UNSUPPORTED' });
  });

  it('rejects with PW_INTERNAL when the file cannot be opened, TypeError for a bad path', async () => {
    await expect(SqliteStore.open({ path: dir })).rejects.toMatchObject({ code: 'PW_INTERNAL' });
    await expect(SqliteStore.open({ path: join(dir, 'missing', 'x.db') })).rejects.toMatchObject({ code: 'PW_INTERNAL' });
    expect(() => SqliteStore.open({ path: '' })).toThrow(TypeError);
  });

  it('shares enrollment key uses between two connections to one file', async () => {
    const path = nextPath();
    const a = await SqliteStore.open({ path });
    const b = await SqliteStore.open({ path });
    const { key } = await a.createEnrollKey({ uses: 3, expiresAt: Date.now() + 60_000 });
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_unused, i) => (i % 2 === 0 ? a : b).consumeEnrollKey(key)));
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(3);
    await a.close();
    await b.close();
  });
});
