/**
 * The error registry (protocol/errors.ts): codes are unique and well formed, and every code is documented in
 * docs/protocol.md with the same retryable and wire flags as the registry.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { errorFromWire, ERRORS, failureSchema, isErrorCode, PortwayError, type ErrorCode } from '../../protocol';

const ROOT = path.resolve(__dirname, '..', '..');
const CODE_PATTERN = /^PW_[A-Z0-9_]+$/;
const codes = Object.keys(ERRORS) as ErrorCode[];

/** Rows of the error table in docs/protocol.md: | `PW_X` | meaning | retryable | wire | ... */
function documentedCodes(): Map<string, { retryable: string; wire: string }> {
  const doc = readFileSync(path.join(ROOT, 'docs', 'protocol.md'), 'utf8');
  const rows = new Map<string, { retryable: string; wire: string }>();
  for (const line of doc.split('\n')) {
    const m = /^\|\s*`(PW_[A-Z0-9_]+)`\s*\|([^|]*)\|\s*(\w+)\s*\|\s*(\w+)\s*\|/.exec(line);
    if (!m) continue;
    expect(rows.has(m[1] as string)).toBe(false);
    rows.set(m[1] as string, { retryable: m[3] as string, wire: m[4] as string });
  }
  return rows;
}

describe('error registry', () => {
  it('has no duplicate code in its source (an object literal would silently keep the last)', () => {
    const source = readFileSync(path.join(ROOT, 'protocol', 'errors.ts'), 'utf8');
    const body = source.slice(source.indexOf('export const ERRORS'), source.indexOf('} as const'));
    const keys = [...body.matchAll(/^\s*(PW_[A-Z0-9_]+)\s*:/gm)].map((m) => m[1]);
    expect(keys.length).toBe(codes.length);
    expect(new Set(keys).size).toBe(keys.length);
    expect([...keys].sort()).toEqual([...codes].sort());
  });

  it.each(codes)('%s is PW_[A-Z0-9_]+, fits the wire schema and has a one-line meaning', (code) => {
    expect(code).toMatch(CODE_PATTERN);
    expect(failureSchema.safeParse({ ok: false, code, message: 'x' }).success).toBe(true);
    const spec = ERRORS[code];
    expect(spec.meaning.length).toBeGreaterThan(5);
    expect(spec.meaning).not.toMatch(/\n/);
    expect(typeof spec.retryable).toBe('boolean');
    expect(typeof spec.wire).toBe('boolean');
  });

  it('every code appears in docs/protocol.md', () => {
    const doc = readFileSync(path.join(ROOT, 'docs', 'protocol.md'), 'utf8');
    const missing = codes.filter((code) => !doc.includes(code));
    expect(missing).toEqual([]);
  });

  it('the table in docs/protocol.md lists every code once, with the registry’s retryable and wire flags', () => {
    const rows = documentedCodes();
    const yesNo = (b: boolean): string => (b ? 'yes' : 'no');
    const expected = Object.fromEntries(codes.map((c) => [c, { retryable: yesNo(ERRORS[c].retryable), wire: yesNo(ERRORS[c].wire) }]));
    expect(Object.fromEntries(rows)).toEqual(expected);
  });
});

describe('PortwayError', () => {
  it('takes retryable from the registry and defaults its message to the meaning', () => {
    const err = new PortwayError('PW_DEVICE_OFFLINE');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('PortwayError');
    expect(err.code).toBe('PW_DEVICE_OFFLINE');
    expect(err.retryable).toBe(true);
    expect(err.message).toBe(ERRORS.PW_DEVICE_OFFLINE.meaning);
    expect(new PortwayError('PW_NOT_AUTHORIZED', 'custom').retryable).toBe(false);
  });

  it('keeps its cause', () => {
    const cause = new Error('low level');
    expect(new PortwayError('PW_RELAY_UNREACHABLE', 'x', { cause }).cause).toBe(cause);
  });

  it('crosses the wire as { ok: false, code, message } and comes back the same', () => {
    const wire = new PortwayError('PW_SERVICE_REFUSED', 'connection refused by device service 127.0.0.1:22').toWire();
    expect(wire).toEqual({ ok: false, code: 'PW_SERVICE_REFUSED', message: 'connection refused by device service 127.0.0.1:22' });
    const back = errorFromWire(wire.code, wire.message);
    expect(back.code).toBe('PW_SERVICE_REFUSED');
    expect(back.retryable).toBe(true);
    expect(back.message).toBe(wire.message);
  });

  it.each([['PW_FROM_THE_FUTURE'], [''], [42], [null], [undefined], ['toString'], ['__proto__'], ['hasOwnProperty']])('errorFromWire maps unknown code %p to PW_INTERNAL', (code) => {
    const err = errorFromWire(code, 'm');
    expect(err.code).toBe('PW_INTERNAL');
    expect(err.message.length).toBeLessThan(200);
  });

  it('errorFromWire bounds a peer’s message and ignores one that is not a string', () => {
    expect(errorFromWire('PW_BAD_REQUEST', 'x'.repeat(10_000)).message).toHaveLength(512);
    expect(errorFromWire('PW_BAD_REQUEST', { evil: true }).message).toBe(ERRORS.PW_BAD_REQUEST.meaning);
  });

  it('isErrorCode accepts registry codes only', () => {
    for (const code of codes) expect(isErrorCode(code)).toBe(true);
    for (const value of ['PW_NOPE', 'toString', 'constructor', 1, undefined]) expect(isErrorCode(value)).toBe(false);
  });
});
