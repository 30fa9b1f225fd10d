/**
 * What an HTTP API route module sees and answers: the authenticated request (token, user, scope, source
 * address, lazily read JSON body) in, `{ status, body }` out, or undefined when the route is not its own.
 * Modules never touch the HTTP objects; HttpApi reads, answers and maps errors to statuses.
 */
import * as z from 'zod';
import { PortwayError } from '../../../protocol';
import type { NewAuditEntry, Store, TokenAuth, TokenScope } from '../store';

export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly auth: TokenAuth;
  /** Remote address of the connection. */
  readonly source: string;
  body(): Promise<unknown>;
}

export interface ApiReply {
  readonly status: number;
  readonly body: unknown;
}

export type ApiRoutes = (req: ApiRequest) => Promise<ApiReply | undefined>;

const SCOPE_RANK: Readonly<Record<TokenScope, number>> = { read: 0, connect: 1 };

/** PW_SCOPE_INSUFFICIENT unless the request's token has at least `scope`. */
export function requireScope(auth: TokenAuth, scope: TokenScope): void {
  if (SCOPE_RANK[auth.token.scope] < SCOPE_RANK[scope]) throw new PortwayError('PW_SCOPE_INSUFFICIENT', `this needs a token with scope ${scope}; this one is ${auth.token.scope}`);
}

export function scopeCovers(held: TokenScope, wanted: TokenScope): boolean {
  return SCOPE_RANK[held] >= SCOPE_RANK[wanted];
}

export async function parseBody<T>(req: ApiRequest, schema: z.ZodType<T>): Promise<T> {
  const parsed = schema.safeParse(await req.body());
  if (!parsed.success) throw new PortwayError('PW_BAD_REQUEST', parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; '));
  return parsed.data;
}

/** Run `action`, then append its audit entry: `ok`, or the code it was refused with (the error is rethrown). */
export async function audited<T>(store: Store, entry: Omit<NewAuditEntry, 'outcome'>, action: () => Promise<T>): Promise<T> {
  let outcome = 'ok';
  try {
    return await action();
  } catch (err) {
    outcome = err instanceof PortwayError ? err.code : 'PW_INTERNAL';
    throw err;
  } finally {
    await store.appendAudit({ ...entry, outcome });
  }
}

/** A path segment, URI-decoded; PW_BAD_REQUEST for bad escapes. */
export function pathSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch (err) {
    throw new PortwayError('PW_BAD_REQUEST', 'bad escape in the path', { cause: err });
  }
}
