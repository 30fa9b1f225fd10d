/**
 * The relay CLI and its store, as a person meets them: a database newer than the relay, a password in the
 * --db URL, an unreachable PostgreSQL, and `relay init` + `user add` on a fresh PostgreSQL database. Each
 * failure is one line with its code and the documented exit status.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { PORTWAY_BIN } from '../../devtools/portway-cluster';
import { PgStore } from '../../relay/src/store';
import { Disposer, findFreePort, makeTempDir, runProcess } from '../helpers';
import { createTestDatabase } from '../helpers/pg';

const EXIT_FAILURE = 1;
const EXIT_CONFIG = 78;

describe('relay store through the CLI', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());
  const portway = (args: readonly string[]) => runProcess(disposer, process.execPath, [PORTWAY_BIN, ...args], { timeoutMs: 30_000 });

  it('refuses a store newer than it knows, at every relay command, with PW_STORE_UNSUPPORTED', async () => {
    const data = path.join(await makeTempDir(disposer), 'relay');
    expect((await portway(['relay', 'init', '--data', data])).code).toBe(0);
    const db = new Database(path.join(data, 'relay.db'));
    db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (5, 0)').run();
    db.close();
    const line = "portway: PW_STORE_UNSUPPORTED: database schema version 5 is newer than this relay's 4\n";
    expect(await portway(['relay', 'user', 'add', 'alice', '--data', data])).toMatchObject({ code: EXIT_FAILURE, stderr: line, stdout: '' });
    const port = await findFreePort();
    expect(await portway(['relay', '--data', data, '--listen', `127.0.0.1:${port}`, '--log-level', 'silent'])).toMatchObject({ code: EXIT_FAILURE, stderr: line });
  });

  it('refuses a password in the --db URL (78) and reports an unreachable PostgreSQL with PW_STORE_UNAVAILABLE', async () => {
    const data = path.join(await makeTempDir(disposer), 'relay');
    expect(await portway(['relay', 'init', '--data', data, '--db', 'postgres://portway:secret@127.0.0.1:5432/portway'])).toMatchObject({
      code: EXIT_CONFIG,
      stderr: 'portway: PW_CONFIG_INVALID: db: the URL must not hold a password; put it in PGPASSWORD or ~/.pgpass\n',
    });
    expect(await portway(['relay', 'init', '--data', data, '--db', 'postgres://portway@127.0.0.1:5432'])).toMatchObject({ code: EXIT_CONFIG });
    const closed = await findFreePort();
    const result = await portway(['relay', 'init', '--data', data, '--db', `postgres://postgres@127.0.0.1:${closed}/portway`]);
    expect(result.code).toBe(EXIT_FAILURE);
    expect(result.stderr).toMatch(/^portway: PW_STORE_UNAVAILABLE: cannot connect to PostgreSQL: .*ECONNREFUSED.*\n$/);
    // Nothing was left behind: init runs again once the store is right (here the default SQLite one).
    expect((await portway(['relay', 'init', '--data', data])).code).toBe(0);
  });

  it('creates and migrates the schema on a fresh PostgreSQL database at relay init; user add writes there', async () => {
    const pg = await createTestDatabase();
    disposer.add(() => pg.drop(), 'drop test database');
    const data = path.join(await makeTempDir(disposer), 'relay');
    expect((await portway(['relay', 'init', '--data', data, '--db', pg.url])).code).toBe(0);
    expect((await pg.query('SELECT version FROM schema_migrations ORDER BY version')).rows).toEqual([{ version: 1 }, { version: 2 }, { version: 3 }, { version: 4 }]);
    const added = await portway(['relay', 'user', 'add', 'alice', '--admin', '--data', data, '--db', pg.url]);
    expect(added.code).toBe(0);
    const store = await PgStore.open({ url: pg.url });
    try {
      const auth = await store.authenticateToken(added.stdout.trim());
      expect(auth).toMatchObject({ user: { name: 'alice', isAdmin: true }, token: { scope: 'connect' } });
      expect(auth.token.expiresAt).toBeUndefined();
    } finally {
      await store.close();
    }
  });
});
