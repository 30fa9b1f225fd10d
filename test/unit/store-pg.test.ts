/**
 * The Store contract on PostgreSQL (a throwaway database on 127.0.0.1:5432), plus what only PostgreSQL shows:
 * migrations under concurrent starts, several relays (pools) sharing one database, a newer schema refused.
 */
import { PgStore, type Store } from '../../relay/src/store';
import { describeStoreContract } from '../helpers/store-contract';
import { findFreePort } from '../helpers';
import { createTestDatabase, type TestDatabase } from '../helpers/pg';

let db: TestDatabase | undefined;
let lastUrl = '';

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

function database(): TestDatabase {
  if (!db) throw new Error('no test database (PostgreSQL unreachable: see the beforeAll failure)');
  return db;
}

describeStoreContract('PgStore', {
  make: async (deps) => {
    lastUrl = await database().newSchemaUrl();
    return PgStore.open({ url: lastUrl }, deps);
  },
  reopen: (deps) => PgStore.open({ url: lastUrl }, deps),
});

describe('PgStore on a server', () => {
  const opened: Store[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
  });
  const open = async (url: string): Promise<PgStore> => {
    const store = await PgStore.open({ url });
    opened.push(store);
    return store;
  };

  it('migrates an empty schema once, even when several relays start together', async () => {
    const url = await database().newSchemaUrl();
    await Promise.all(Array.from({ length: 4 }, () => open(url)));
    const schema = /search_path%3D(\w+)/.exec(url)?.[1] as string;
    const versions = await database().query(`SELECT version FROM ${schema}.schema_migrations ORDER BY version`);
    expect(versions.rows).toEqual([{ version: 1 }, { version: 2 }, { version: 3 }, { version: 4 }]);
    const tables = await database().query('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name', [schema]);
    expect(tables.rows.map((r: { table_name: string }) => r.table_name)).toEqual(['api_tokens', 'audit_log', 'claims', 'device_grants', 'devices', 'enroll_keys', 'schema_migrations', 'shares', 'user_certs', 'users']);
  });

  it('lets exactly one of several relays (separate pools) use a single-use enrollment key', async () => {
    const url = await database().newSchemaUrl();
    const relays = await Promise.all(Array.from({ length: 4 }, () => open(url)));
    const first = relays[0] as PgStore;
    for (let round = 0; round < 5; round++) {
      const { key } = await first.createEnrollKey({ uses: 1, expiresAt: Date.now() + 60_000 });
      const results = await Promise.allSettled(Array.from({ length: 24 }, (_, i) => (relays[i % relays.length] as PgStore).consumeEnrollKey(key)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    }
  });

  it('sees a token revoked on one relay at once on another', async () => {
    const url = await database().newSchemaUrl();
    const [a, b] = [await open(url), await open(url)];
    const alice = await a.createUser('alice');
    const { token, tokenId } = await a.createToken(alice.id);
    expect((await b.authenticateToken(token)).user).toEqual(alice);
    await a.revokeToken(tokenId);
    await expect(b.authenticateToken(token)).rejects.toMatchObject({ code: 'PW_TOKEN_REVOKED' });
  });

  it('refuses a schema newer than it knows with PW_STORE_UNSUPPORTED', async () => {
    const url = await database().newSchemaUrl();
    await (await PgStore.open({ url })).close();
    const schema = /search_path%3D(\w+)/.exec(url)?.[1] as string;
    await database().query(`INSERT INTO ${schema}.schema_migrations (version, applied_at) VALUES (99, 0)`);
    await expect(PgStore.open({ url })).rejects.toMatchObject({ code: 'PW_STORE_UNSUPPORTED' });
  });

  it('rejects PW_STORE_UNAVAILABLE for a database that does not exist, TypeError for a non-postgres URL', async () => {
    await expect(PgStore.open({ url: `${database().url}_missing` })).rejects.toMatchObject({ code: 'PW_STORE_UNAVAILABLE' });
    expect(() => PgStore.open({ url: '/tmp/x.db' })).toThrow(TypeError);
  });

  it('(the test helper) fails loudly, never skips, when PostgreSQL is not reachable', async () => {
    await expect(createTestDatabase(await findFreePort())).rejects.toThrow(/^PostgreSQL is not reachable on 127\.0\.0\.1:\d+ as user postgres \(.*ECONNREFUSED/);
  });
});
