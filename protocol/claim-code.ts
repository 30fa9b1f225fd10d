/**
 * Claim codes: what a person types from a label or scans to take a device.
 *
 *   A94Q-PXGV-QRD2-MB8P-GTYS-J6C5      24 symbols, shown in groups of 4
 *   \_____/\______________________/\
 *   lookup  secret                  check
 *   7 sym.  16 symbols              1 symbol
 *   35 bits 80 bits
 *
 * Alphabet: Crockford base32 (0-9, A-Z without I L O U); on input, case and separators (- and spaces) are
 * ignored and the look-alikes O -> 0, I and L -> 1 are read as digits. The lookup part is sent to the relay and
 * names the pending claim; the secret part never leaves the device and the claimer's machine (it keys the
 * claim MACs, protocol/claim-binding.ts).
 *
 * Check symbol: the 24 symbol values s_0..s_23 (s_23 the check) are elements of GF(32) (polynomial
 * x^5 + x^2 + 1, alpha = x) and must satisfy sum(alpha^i * s_i) = 0. A single substitution anywhere changes the
 * sum by alpha^i * e != 0, an adjacent transposition by alpha^i * (1 + alpha) * (a + b) != 0, so both are always
 * caught; unlike Crockford's mod-37 check it needs no extra symbols (its *, ~, $, = are awkward on a label
 * and `$` in a shell argument).
 */
import { PortwayError } from './errors';

export const CLAIM_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const CLAIM_ID_SYMBOLS = 7;
export const CLAIM_SECRET_SYMBOLS = 16;
export const CLAIM_CODE_SYMBOLS = CLAIM_ID_SYMBOLS + CLAIM_SECRET_SYMBOLS + 1;
/** Random bytes a new code needs (one per data symbol; the low five bits of a uniform byte are uniform). */
export const CLAIM_CODE_RANDOM_BYTES = CLAIM_ID_SYMBOLS + CLAIM_SECRET_SYMBOLS;
export const CLAIM_SECRET_BITS = CLAIM_SECRET_SYMBOLS * 5;
export const CLAIM_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{7}$/;
/** Longest text accepted as a code before normalising (separators and spaces included). */
const MAX_INPUT_CHARS = 64;
const LOOK_ALIKES: Readonly<Record<string, string>> = { O: '0', I: '1', L: '1' };

export interface ClaimCode {
  /** The lookup part: names the pending claim at the relay. */
  readonly claimId: string;
  /** The secret part: keys the claim MACs; never sent. */
  readonly secret: string;
  /** The whole code in display form (groups of 4). */
  readonly text: string;
}

function gfMul(a: number, b: number): number {
  let product = 0;
  let x = a;
  for (let y = b; y > 0; y >>= 1) {
    if (y & 1) product ^= x;
    x <<= 1;
    if (x & 32) x ^= 0b100101;
  }
  return product;
}

/** sum(alpha^i * values[i]) over GF(32). */
function weightedSum(values: readonly number[]): number {
  let sum = 0;
  let weight = 1;
  for (const v of values) {
    sum ^= gfMul(weight, v);
    weight = gfMul(weight, 2);
  }
  return sum;
}

/** alpha^-(CLAIM_CODE_SYMBOLS - 1): alpha has order 31. */
const CHECK_WEIGHT_INVERSE = ((): number => {
  let w = 1;
  for (let i = 0; i < (31 - ((CLAIM_CODE_SYMBOLS - 1) % 31)) % 31; i++) w = gfMul(w, 2);
  return w;
})();

function checkSymbol(data: readonly number[]): number {
  return gfMul(weightedSum(data), CHECK_WEIGHT_INVERSE);
}

function display(symbols: string): string {
  return (symbols.match(/.{1,4}/g) ?? []).join('-');
}

/** A new code from CLAIM_CODE_RANDOM_BYTES random bytes (the caller's CSPRNG: protocol/ has no entropy source). */
export function claimCodeFromRandom(random: Buffer): ClaimCode {
  if (!Buffer.isBuffer(random) || random.length < CLAIM_CODE_RANDOM_BYTES) throw new RangeError(`need ${CLAIM_CODE_RANDOM_BYTES} random bytes`);
  const data = Array.from(random.subarray(0, CLAIM_CODE_RANDOM_BYTES), (b) => b & 31);
  const symbols = [...data, checkSymbol(data)].map((v) => CLAIM_ALPHABET[v] as string).join('');
  return { claimId: symbols.slice(0, CLAIM_ID_SYMBOLS), secret: symbols.slice(CLAIM_ID_SYMBOLS, -1), text: display(symbols) };
}

/**
 * Parse what a person typed. PW_CLAIM_CODE_INVALID with a message that says what is wrong (length, which
 * character, or a failed check symbol: a typo) and never repeats the secret.
 */
export function parseClaimCode(input: unknown): ClaimCode {
  const invalid = (why: string): PortwayError => new PortwayError('PW_CLAIM_CODE_INVALID', `not a claim code: ${why}`);
  if (typeof input !== 'string') throw invalid('expected text');
  if (input.length > MAX_INPUT_CHARS) throw invalid(`longer than ${MAX_INPUT_CHARS} characters`);
  const compact = input.replace(/[\s-]/g, '').toUpperCase();
  const values: number[] = [];
  for (let i = 0; i < compact.length; i++) {
    const raw = compact[i] as string;
    const ch = LOOK_ALIKES[raw] ?? raw;
    const value = CLAIM_ALPHABET.indexOf(ch);
    if (value < 0 || ch.length !== 1) throw invalid(`character ${i + 1} (${JSON.stringify(raw).slice(0, 8)}) is not one of 0-9 A-Z without I L O U`);
    values.push(value);
  }
  if (values.length !== CLAIM_CODE_SYMBOLS) throw invalid(`it has ${values.length} characters, a code has ${CLAIM_CODE_SYMBOLS} (without the dashes)`);
  if (weightedSum(values) !== 0) throw invalid('the check character does not match (a typo?)');
  const symbols = values.map((v) => CLAIM_ALPHABET[v] as string).join('');
  return { claimId: symbols.slice(0, CLAIM_ID_SYMBOLS), secret: symbols.slice(CLAIM_ID_SYMBOLS, -1), text: display(symbols) };
}

export function isClaimId(value: unknown): value is string {
  return typeof value === 'string' && CLAIM_ID_PATTERN.test(value);
}
