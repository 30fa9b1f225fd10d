/**
 * Claim codes (protocol/claim-code.ts) and the claim MACs (protocol/claim-binding.ts, shared/claim-tag.ts):
 * the check character catches every single substitution and adjacent transposition, garbage gets a clear
 * PW_CLAIM_CODE_INVALID, new codes use the whole alphabet uniformly, and a MAC binds both keys and the ID.
 */
import { CLAIM_ALPHABET, CLAIM_CODE_SYMBOLS, claimCodeFromRandom, claimTagInput, parseClaimCode, PortwayError } from '../../protocol';
import { claimTag, isClaimTagValid, newClaimCode, spkiOfKeyPem } from '../../shared/claim-tag';
import { generateKeyPair } from '../../shared/x509';

const compact = (text: string): string => text.replace(/-/g, '');

function codeOf(e: unknown): string | undefined {
  return e instanceof PortwayError ? e.code : undefined;
}

function parseError(input: unknown): { code?: string; message: string } {
  try {
    parseClaimCode(input);
  } catch (err) {
    return { code: codeOf(err), message: (err as Error).message };
  }
  throw new Error(`accepted ${String(input)}`);
}

describe('claim code format', () => {
  it('round-trips: display form, compact, lower case, spaces and look-alikes all parse to the same code', () => {
    for (let n = 0; n < 200; n++) {
      const code = newClaimCode();
      expect(code.text).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){5}$/);
      expect(code.claimId).toHaveLength(7);
      expect(code.secret).toHaveLength(16);
      expect(compact(code.text)).toBe(`${code.claimId}${code.secret}${compact(code.text).slice(-1)}`);
      expect(parseClaimCode(code.text)).toEqual(code);
      expect(parseClaimCode(` ${compact(code.text).toLowerCase().replace(/(.{3})/g, '$1 ')} `)).toEqual(code);
      expect(parseClaimCode(code.text.replace(/0/g, 'O').replace(/1/g, 'l'))).toEqual(code);
    }
  });

  it('catches every single-character substitution and every adjacent transposition', () => {
    let substitutions = 0;
    let transpositions = 0;
    for (let n = 0; n < 10; n++) {
      const symbols = compact(newClaimCode().text);
      for (let i = 0; i < CLAIM_CODE_SYMBOLS; i++) {
        for (const other of CLAIM_ALPHABET) {
          if (other === symbols[i]) continue;
          const typo = symbols.slice(0, i) + other + symbols.slice(i + 1);
          expect([typo, codeOf(catchError(() => parseClaimCode(typo)))]).toEqual([typo, 'PW_CLAIM_CODE_INVALID']);
          substitutions++;
        }
        if (i + 1 < CLAIM_CODE_SYMBOLS && symbols[i] !== symbols[i + 1]) {
          const swapped = symbols.slice(0, i) + (symbols[i + 1] as string) + (symbols[i] as string) + symbols.slice(i + 2);
          expect([swapped, parseError(swapped).code]).toEqual([swapped, 'PW_CLAIM_CODE_INVALID']);
          transpositions++;
        }
      }
    }
    expect(substitutions).toBe(10 * 24 * 31);
    expect(transpositions).toBeGreaterThan(10 * 20);
  });

  it('answers garbage with PW_CLAIM_CODE_INVALID and a message that says what is wrong', () => {
    const good = compact(newClaimCode().text);
    expect(parseError(good.slice(0, -1))).toEqual({ code: 'PW_CLAIM_CODE_INVALID', message: 'not a claim code: it has 23 characters, a code has 24 (without the dashes)' });
    expect(parseError(`${good}A`).message).toMatch(/25 characters/);
    expect(parseError('')).toMatchObject({ code: 'PW_CLAIM_CODE_INVALID' });
    expect(parseError(`U${good.slice(1)}`).message).toBe('not a claim code: character 1 ("U") is not one of 0-9 A-Z without I L O U');
    expect(parseError(`${good.slice(0, 5)}é${good.slice(6)}`).message).toMatch(/character 6/);
    expect(parseError(`${good.slice(0, 5)}\u0000${good.slice(6)}`).code).toBe('PW_CLAIM_CODE_INVALID');
    expect(parseError('x'.repeat(100)).message).toMatch(/longer than 64/);
    expect(parseError(42)).toEqual({ code: 'PW_CLAIM_CODE_INVALID', message: 'not a claim code: expected text' });
    expect(parseError(null).code).toBe('PW_CLAIM_CODE_INVALID');
    // A failed check never echoes the secret part.
    const typo = `${good.slice(0, 10)}${good[10] === 'A' ? 'B' : 'A'}${good.slice(11)}`;
    const failure = parseError(typo);
    expect(failure.message).toBe('not a claim code: the check character does not match (a typo?)');
    expect(() => claimCodeFromRandom(Buffer.alloc(3))).toThrow(RangeError);
  });

  it('new codes: 80-bit secret part, every symbol of the alphabet about equally often', () => {
    const counts = new Map<string, number>();
    const codes = 2_000;
    for (let n = 0; n < codes; n++) for (const ch of newClaimCode().secret) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect([...counts.keys()].sort().join('')).toBe(CLAIM_ALPHABET);
    const expected = (codes * 16) / 32;
    for (const [ch, count] of counts) expect([ch, Math.abs(count - expected) < expected * 0.2]).toEqual([ch, true]);
    // Distinct bytes give distinct codes (no entropy lost in the mapping).
    expect(new Set(Array.from({ length: 1000 }, () => newClaimCode().secret)).size).toBe(1000);
    expect(claimCodeFromRandom(Buffer.alloc(23, 0xff)).text).toBe(claimCodeFromRandom(Buffer.alloc(23, 0x1f)).text);
  });
});

describe('claim MAC binding', () => {
  const device = spkiOfKeyPem(generateKeyPair().privateKeyPem);
  const owner = spkiOfKeyPem(generateKeyPair().privateKeyPem);
  const other = spkiOfKeyPem(generateKeyPair().privateKeyPem);
  const code = newClaimCode();

  it('verifies only with the same secret, role, claim ID, device key and owner key', () => {
    const tag = claimTag(code.secret, 'owner', code.claimId, device, owner).toString('base64');
    expect(isClaimTagValid(tag, code.secret, 'owner', code.claimId, device, owner)).toBe(true);
    expect(isClaimTagValid(tag, newClaimCode().secret, 'owner', code.claimId, device, owner)).toBe(false);
    expect(isClaimTagValid(tag, code.secret, 'device', code.claimId, device, owner)).toBe(false);
    expect(isClaimTagValid(tag, code.secret, 'owner', 'AAAAAAA', device, owner)).toBe(false);
    expect(isClaimTagValid(tag, code.secret, 'owner', code.claimId, other, owner)).toBe(false);
    expect(isClaimTagValid(tag, code.secret, 'owner', code.claimId, device, other)).toBe(false);
    expect(isClaimTagValid(tag, code.secret, 'owner', code.claimId, owner, device)).toBe(false);
    expect(isClaimTagValid('', code.secret, 'owner', code.claimId, device, owner)).toBe(false);
    expect(isClaimTagValid(tag.slice(0, 20), code.secret, 'owner', code.claimId, device, owner)).toBe(false);
  });

  it('length-prefixes every field, so moving bytes between fields changes the input', () => {
    const a = claimTagInput('owner', 'ABC', Buffer.from('xy'), Buffer.from('z'));
    const b = claimTagInput('owner', 'ABC', Buffer.from('x'), Buffer.from('yz'));
    expect(a.equals(b)).toBe(false);
    expect(a.toString('hex')).toBe(Buffer.concat([Buffer.from('portway-claim-owner\0'), Buffer.from([0, 3]), Buffer.from('ABC'), Buffer.from([0, 2]), Buffer.from('xy'), Buffer.from([0, 1]), Buffer.from('z')]).toString('hex'));
    expect(() => claimTagInput('relay' as 'owner', 'ABC', device, owner)).toThrow(TypeError);
  });
});

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}
