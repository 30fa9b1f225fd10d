/**
 * Toxic settings of the fault proxy (see fault-proxy.ts), their validation and the random draws they need.
 *
 * A "direction" is the flow of bytes: `upstream` = client → upstream server, `downstream` = upstream
 * server → client. Each direction has its own set of toxics; the proxy reads them live, so a change applies
 * to the next byte of every existing connection and to every new one.
 */

export type Direction = 'upstream' | 'downstream';
export type DirectionSelector = Direction | 'both';
export const DIRECTIONS: readonly Direction[] = ['upstream', 'downstream'];

/** Fixed one-way delay plus a uniform random jitter in [-jitterMs, +jitterMs] (clamped at 0). */
export interface LatencyToxic {
  readonly latencyMs: number;
  readonly jitterMs?: number;
}

/** Serialisation rate of the direction. */
export interface BandwidthToxic {
  readonly bytesPerSecond: number;
}

/** Split every chunk into pieces of a random size in [minBytes, maxBytes], `delayMs` apart. */
export interface SlicerToxic {
  readonly minBytes: number;
  readonly maxBytes: number;
  readonly delayMs?: number;
}

/**
 * Flip one bit: either of the byte at `atByte` (0-based offset in the direction's byte stream of each
 * connection, counted from the connection's first byte), or of each byte with `probability`.
 * `bit` (0-7, default 0) picks the bit for `atByte`; random flips pick a random bit.
 */
export type BitflipToxic = { readonly atByte: number; readonly bit?: number } | { readonly probability: number };

/** Forward at most `bytes` bytes in the direction per connection, then close the whole connection. */
export interface LimitDataToxic {
  readonly bytes: number;
}

export interface DirectionToxics {
  latency: LatencyToxic | null;
  bandwidth: BandwidthToxic | null;
  slicer: SlicerToxic | null;
  bitflip: BitflipToxic | null;
  limitData: LimitDataToxic | null;
  /** Forward nothing and drop what arrives (and what is in flight); sockets stay open. */
  isBlackholed: boolean;
  /** Stop reading and forwarding; data in flight is held and the sender is back-pressured. */
  isPaused: boolean;
  /** FIN toward the direction's sink (after what is in flight); later data is dropped. */
  isHalfClosed: boolean;
}

export function emptyToxics(): DirectionToxics {
  return {
    latency: null,
    bandwidth: null,
    slicer: null,
    bitflip: null,
    limitData: null,
    isBlackholed: false,
    isPaused: false,
    isHalfClosed: false,
  };
}

/** `() => number` in [0, 1), like Math.random; injectable so tests can make slicing and jitter repeatable. */
export type RandomSource = () => number;

function checkNumber(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max) {
    throw new RangeError(`${name} must be a number in [${min}, ${max}], got ${String(value)}`);
  }
}

function checkInteger(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  checkNumber(name, value, min, max);
  if (!Number.isInteger(value)) throw new RangeError(`${name} must be an integer, got ${value}`);
}

export function checkLatency(toxic: LatencyToxic): void {
  checkNumber('latencyMs', toxic.latencyMs, 0, 600_000);
  checkNumber('jitterMs', toxic.jitterMs ?? 0, 0, 600_000);
}

export function checkBandwidth(toxic: BandwidthToxic): void {
  checkNumber('bytesPerSecond', toxic.bytesPerSecond, 1);
}

export function checkSlicer(toxic: SlicerToxic): void {
  checkInteger('minBytes', toxic.minBytes, 1);
  checkInteger('maxBytes', toxic.maxBytes, toxic.minBytes);
  checkNumber('delayMs', toxic.delayMs ?? 0, 0, 600_000);
}

export function checkBitflip(toxic: BitflipToxic): void {
  if ('atByte' in toxic) {
    checkInteger('atByte', toxic.atByte, 0);
    checkInteger('bit', toxic.bit ?? 0, 0, 7);
  } else {
    checkNumber('probability', toxic.probability, 0, 1);
  }
}

export function checkLimitData(toxic: LimitDataToxic): void {
  checkInteger('bytes', toxic.bytes, 0);
}

/** One draw of the latency toxic: latency ± jitter, never negative. 0 without the toxic. */
export function sampleDelayMs(latency: LatencyToxic | null, random: RandomSource): number {
  if (latency === null) return 0;
  const jitterMs = latency.jitterMs ?? 0;
  return Math.max(0, latency.latencyMs + jitterMs * (2 * random() - 1));
}

/** Random integer in [min, max]. */
export function randomInt(min: number, max: number, random: RandomSource): number {
  return min + Math.min(max - min, Math.floor(random() * (max - min + 1)));
}

/** Splits `data` into views of random sizes in [minBytes, maxBytes] (the last one may be smaller). */
export function sliceChunk(data: Buffer, slicer: SlicerToxic, random: RandomSource): Buffer[] {
  const pieces: Buffer[] = [];
  let offset = 0;
  while (offset < data.length) {
    const size = randomInt(slicer.minBytes, slicer.maxBytes, random);
    pieces.push(data.subarray(offset, offset + size));
    offset += size;
  }
  return pieces;
}

/** Bytes to skip before the next randomly flipped byte: a geometric draw (Infinity for p = 0). */
export function nextFlipGap(probability: number, random: RandomSource): number {
  if (probability <= 0) return Number.POSITIVE_INFINITY;
  if (probability >= 1) return 0;
  const u = 1 - random(); // in (0, 1]
  return Math.floor(Math.log(u) / Math.log(1 - probability));
}
