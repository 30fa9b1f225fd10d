/**
 * Owner-signed grants: the codec (protocol/grants.ts), signing and verification (shared/grant-signature.ts) and
 * the agent's grant book (agent/src/claim/grant-book.ts). Garbage, another signer, another device, a changed
 * byte, a replayed or older set: each refused with its code, and the held set (and grants.json) kept.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import net from 'node:net';
import { once } from 'node:events';
import { DeviceAccess } from '../../agent/src/claim/device-access';
import { GrantBook } from '../../agent/src/claim/grant-book';
import { decodeSignedGrantSet, grantedServices, MAX_GRANT_ENTRIES, PortwayError, type GrantDocument, type SignedGrantSet } from '../../protocol';
import { spkiOfKeyPem } from '../../shared/claim-tag';
import { signGrantSet, verifyGrantSet } from '../../shared/grant-signature';
import { createLogger } from '../../shared/logger';
import { generateKeyPair, spkiFingerprint } from '../../shared/x509';
import { Disposer, makeTempDir } from '../helpers';

const DEVICE = 'dev_abcdefghijklmnop';
const OTHER_DEVICE = 'dev_ponmlkjihgfedcba';
const owner = generateKeyPair().privateKeyPem;
const stranger = generateKeyPair().privateKeyPem;
const OWNER_FP = spkiFingerprint(spkiOfKeyPem(owner));
const BOB = 'b'.repeat(64);
const CAROL = 'c'.repeat(64);
const owners = new Set([OWNER_FP]);

const doc = (seq: number, overrides: Partial<GrantDocument> = {}): GrantDocument => ({
  v: 1, deviceId: DEVICE, seq, issuedAt: 1_700_000_000_000, entries: [{ key: BOB, user: 'bob', services: ['ssh'] }], ...overrides,
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof PortwayError) return err.code;
    throw err;
  }
  return undefined;
}

describe('grant sets: codec and signature', () => {
  it('signs and verifies a set; the document comes back as signed', () => {
    const signed = signGrantSet(doc(1), owner);
    const verified = verifyGrantSet(signed, { deviceId: DEVICE, ownerKeys: owners });
    expect(verified).toEqual({ document: doc(1), signer: OWNER_FP });
    expect(verifyGrantSet(JSON.parse(JSON.stringify(signed)), { deviceId: DEVICE, ownerKeys: owners }).document.seq).toBe(1);
  });

  it('refuses another signer, another device, changed bytes and garbage with PW_GRANT_INVALID', () => {
    const signed = signGrantSet(doc(2), owner);
    const check = (value: unknown): string | undefined => codeOf(() => verifyGrantSet(value, { deviceId: DEVICE, ownerKeys: owners }));
    expect(check(signGrantSet(doc(2), stranger))).toBe('PW_GRANT_INVALID');
    // A stranger's signature presented with the owner's key as signer.
    expect(check({ ...signGrantSet(doc(2), stranger), signerKey: signed.signerKey })).toBe('PW_GRANT_INVALID');
    expect(check(signGrantSet(doc(2, { deviceId: OTHER_DEVICE }), owner))).toBe('PW_GRANT_INVALID');
    const bytes = Buffer.from(signed.document, 'base64');
    for (let i = 0; i < bytes.length; i += 7) {
      const flipped = Buffer.from(bytes);
      flipped[i] = (flipped[i] as number) ^ 0x01;
      expect(check({ ...signed, document: flipped.toString('base64') })).toBe('PW_GRANT_INVALID');
    }
    const sig = Buffer.from(signed.signature, 'base64');
    sig[sig.length - 1] = (sig[sig.length - 1] as number) ^ 0xff;
    expect(check({ ...signed, signature: sig.toString('base64') })).toBe('PW_GRANT_INVALID');
    // Unsigned (an empty or made-up signature), and an RSA-sized junk key.
    expect(check({ ...signed, signature: '' })).toBe('PW_GRANT_INVALID');
    expect(check({ ...signed, signature: 'AAAA' })).toBe('PW_GRANT_INVALID');
    expect(check({ ...signed, signerKey: Buffer.alloc(300, 1).toString('base64') })).toBe('PW_GRANT_INVALID');
    const garbage: unknown[] = [
      undefined, null, 0, 'x', [], {}, { document: 'AAAA' }, { ...signed, document: '!!!!' }, { ...signed, document: `${signed.document}A` },
      { ...signed, document: Buffer.from('not json').toString('base64') }, { ...signed, document: Buffer.from('null').toString('base64') },
      { ...signed, document: 'A'.repeat(100_000) }, { ...signed, extra: 1, document: Buffer.from(JSON.stringify({ ...doc(1), v: 2 })).toString('base64') },
    ];
    for (const value of garbage) expect(check(value)).toBe('PW_GRANT_INVALID');
  });

  it('refuses malformed documents: bad seq, bad fingerprints, too many entries', () => {
    const raw = (d: unknown): SignedGrantSet => ({ ...signGrantSet(doc(1), owner), document: Buffer.from(JSON.stringify(d)).toString('base64') });
    const bad: unknown[] = [
      { ...doc(1), seq: 0 }, { ...doc(1), seq: -1 }, { ...doc(1), seq: 1.5 }, { ...doc(1), seq: 2 ** 60 }, { ...doc(1), deviceId: 'pi1' },
      { ...doc(1), entries: [{ key: 'B'.repeat(64), user: 'bob' }] }, { ...doc(1), entries: [{ key: BOB, user: '' }] },
      { ...doc(1), entries: [{ key: BOB, user: 'bob', services: [] }] }, { ...doc(1), entries: [{ key: BOB, user: 'bob', services: ['../x'] }] },
      { ...doc(1), entries: Array.from({ length: MAX_GRANT_ENTRIES + 1 }, () => ({ key: BOB, user: 'bob' })) },
    ];
    for (const d of bad) expect(codeOf(() => decodeSignedGrantSet(raw(d)))).toBe('PW_GRANT_INVALID');
  });

  it('grants all services, some, or none after expiry', () => {
    const d = doc(1, { entries: [{ key: BOB, user: 'bob', services: ['ssh'] }, { key: BOB, user: 'bob', services: ['web'], expiresAt: 1000 }, { key: CAROL, user: 'carol' }] });
    expect([...(grantedServices(d, BOB, 999) as Set<string>)].sort()).toEqual(['ssh', 'web']);
    expect([...(grantedServices(d, BOB, 1000) as Set<string>)]).toEqual(['ssh']);
    expect(grantedServices(d, CAROL, 0)).toBe('all');
    expect(grantedServices(d, OWNER_FP, 0)).toBeUndefined();
  });
});

describe('agent grant book', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  async function book(dir: string): Promise<{ book: GrantBook; lines: Record<string, unknown>[] }> {
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>), done()) });
    const b = new GrantBook({ log: createLogger({ level: 'debug', destination }) }, { stateDir: dir, deviceId: DEVICE, ownerKeys: owners });
    await b.load();
    return { book: b, lines };
  }

  it('admits owners, grantees for their services until expiry; refuses others with their codes', async () => {
    const dir = await makeTempDir(disposer);
    const { book: b } = await book(dir);
    expect(b.decide(OWNER_FP, 'ssh', 0)).toEqual({ ok: true, via: 'owner' });
    expect(b.decide(BOB, 'ssh', 0)).toMatchObject({ ok: false, error: { code: 'PW_E2E_OWNER_KEY_MISMATCH' } });
    await b.offer(signGrantSet(doc(1, { entries: [{ key: BOB, user: 'bob', services: ['ssh'], expiresAt: 5000 }] }), owner));
    expect(b.decide(BOB, 'ssh', 4999)).toEqual({ ok: true, via: 'grant' });
    expect(b.decide(BOB, 'web', 0)).toMatchObject({ ok: false, error: { code: 'PW_E2E_NOT_GRANTED' } });
    expect(b.decide(BOB, 'ssh', 5000)).toMatchObject({ ok: false, error: { code: 'PW_E2E_NOT_GRANTED' } });
    expect(b.decide(CAROL, 'ssh', 0)).toMatchObject({ ok: false, error: { code: 'PW_E2E_OWNER_KEY_MISMATCH' } });
  });

  it('keeps the newest set: replays, older and equal-but-different sets are PW_GRANT_STALE; the same set again is a no-op; survives a restart', async () => {
    const dir = await makeTempDir(disposer);
    const { book: b } = await book(dir);
    const first = signGrantSet(doc(1), owner);
    const second = signGrantSet(doc(2, { entries: [] }), owner);
    expect(await b.offer(first)).toEqual({ seq: 1, changed: true });
    expect(await b.offer(second)).toEqual({ seq: 2, changed: true });
    expect(await b.offer(second)).toEqual({ seq: 2, changed: false });
    await expect(b.offer(first)).rejects.toMatchObject({ code: 'PW_GRANT_STALE' });
    await expect(b.offer(signGrantSet(doc(2), owner))).rejects.toMatchObject({ code: 'PW_GRANT_STALE' });
    await expect(b.offer(signGrantSet(doc(3), stranger))).rejects.toMatchObject({ code: 'PW_GRANT_INVALID' });
    await expect(b.offer({ junk: true })).rejects.toMatchObject({ code: 'PW_GRANT_INVALID' });
    expect(b.decide(BOB, 'ssh', 0)).toMatchObject({ ok: false });
    expect(JSON.parse(await fs.readFile(path.join(dir, 'grants.json'), 'utf8'))).toEqual(second);
    const { book: again } = await book(dir);
    expect(again.seq).toBe(2);
    await expect(again.offer(first)).rejects.toMatchObject({ code: 'PW_GRANT_STALE' });
  });

  it('ignores a damaged or foreign grants.json with a coded log line (owner keys still work)', async () => {
    const dir = await makeTempDir(disposer);
    for (const content of ['{not json', JSON.stringify(signGrantSet(doc(4), stranger)), JSON.stringify(signGrantSet(doc(4, { deviceId: OTHER_DEVICE }), owner))]) {
      await fs.writeFile(path.join(dir, 'grants.json'), content);
      const { book: b, lines } = await book(dir);
      expect(b.seq).toBe(0);
      expect(lines.find((l) => l.msg === 'agent.grants.load_refused')).toMatchObject({ level: 50, code: 'PW_GRANT_INVALID' });
      expect(b.decide(OWNER_FP, 'ssh', 0).ok).toBe(true);
      expect(await b.offer(signGrantSet(doc(1), owner))).toEqual({ seq: 1, changed: true });
    }
  });

  it('ends live streams when a grant is withdrawn or expires; owner streams stay', async () => {
    const dir = await makeTempDir(disposer);
    const { book: b } = await book(dir);
    const access = new DeviceAccess({ log: createLogger({ level: 'silent' }), now: Date.now }, b);
    disposer.add(() => access.stop());
    const soon = Date.now() + 300;
    await access.offer(signGrantSet(doc(1, { entries: [{ key: BOB, user: 'bob', expiresAt: soon }, { key: CAROL, user: 'carol' }] }), owner));
    access.start();
    expect(b.nextExpiry(Date.now())).toBe(soon);
    const sockets = { owner: new net.Socket(), bob: new net.Socket(), carol: new net.Socket() };
    for (const socket of Object.values(sockets)) disposer.add(() => socket.destroy());
    access.track(sockets.owner, OWNER_FP, 'ssh');
    access.track(sockets.bob, BOB, 'ssh');
    access.track(sockets.carol, CAROL, 'web');
    const withdrawn = await access.offer(signGrantSet(doc(2, { entries: [{ key: BOB, user: 'bob', expiresAt: soon }] }), owner));
    expect(withdrawn).toEqual({ seq: 2, changed: true, streamsEnded: 1 });
    expect([sockets.owner.destroyed, sockets.bob.destroyed, sockets.carol.destroyed]).toEqual([false, false, true]);
    await once(sockets.bob, 'close');
    expect(Date.now()).toBeGreaterThanOrEqual(soon);
    expect(sockets.owner.destroyed).toBe(false);
    expect(b.nextExpiry(Date.now())).toBeUndefined();
  });
});
