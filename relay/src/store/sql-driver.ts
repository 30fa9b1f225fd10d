/**
 * What SqlStore needs from a database: statements with `?` placeholders (the PostgreSQL driver numbers
 * them), transactions, and a way to recognise constraint violations. Each driver migrates its schema on
 * open (sqlite-schema.ts, pg-schema.ts) and refuses a schema newer than it knows (PW_STORE_UNSUPPORTED).
 * Row values come back as plain JS values: BIGINT columns as numbers, NULL as null.
 */
export type SqlValue = string | number | null;

export interface SqlExecutor {
  /** Rows of a statement that returns rows (SELECT, … RETURNING). */
  query<R>(sql: string, params?: readonly SqlValue[]): Promise<R[]>;
  /** Rows changed by a statement. */
  execute(sql: string, params?: readonly SqlValue[]): Promise<number>;
}

export interface SqlDriver extends SqlExecutor {
  /** Run `job` in one transaction: committed when it resolves, rolled back when it rejects. No other statement of this driver runs inside it. */
  transaction<T>(job: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** A UNIQUE or PRIMARY KEY violation. */
  isUniqueViolation(err: unknown): boolean;
  close(): Promise<void>;
}

/** `?` → `$1, $2…` for PostgreSQL. Portway's statements never hold a literal `?`. */
export function numberPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}
