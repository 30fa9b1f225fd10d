/**
 * Ways to cut a byte vector into chunks, for incremental-decoder tests: whole, split in two at every byte
 * boundary, one byte at a time, and random chunk sizes from a seeded generator (so a failure names a seed
 * that reproduces it).
 */

/** Small deterministic PRNG (mulberry32); returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Chunking {
  readonly name: string;
  readonly chunks: readonly Buffer[];
}

/** Cut `bytes` into random non-empty pieces of at most `maxPiece` bytes. */
export function randomChunks(bytes: Buffer, seed: number, maxPiece = Math.max(1, Math.ceil(bytes.length / 3))): Buffer[] {
  const random = seededRandom(seed);
  const out: Buffer[] = [];
  for (let offset = 0; offset < bytes.length; ) {
    const size = 1 + Math.floor(random() * maxPiece);
    out.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return out;
}

/** Every chunking the codec tests feed a vector in. */
export function chunkings(bytes: Buffer, options: { randomSeeds?: number } = {}): Chunking[] {
  const out: Chunking[] = [{ name: 'whole', chunks: [bytes] }];
  for (let i = 1; i < bytes.length; i++) out.push({ name: `split at ${i}`, chunks: [bytes.subarray(0, i), bytes.subarray(i)] });
  if (bytes.length > 1) out.push({ name: 'one byte at a time', chunks: [...bytes].map((b) => Buffer.from([b])) });
  for (let seed = 1; seed <= (options.randomSeeds ?? 8); seed++) out.push({ name: `random chunks (seed ${seed})`, chunks: randomChunks(bytes, seed) });
  return out;
}

/** Concatenate hex strings and buffers into one vector (spaces in hex are ignored). */
export function bytes(...parts: (string | Buffer)[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p.replace(/\s+/g, ''), 'hex') : p)));
}
