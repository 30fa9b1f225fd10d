/**
 * Deterministic pseudo-random bytes, the same on both ends of a test or benchmark without sending a seed
 * table: the AES-128-CTR keystream under key = sha256("portway-bytes:" + seed)[0..16), counter from 0.
 * Any window (offset, length) can be produced on its own, and fast (GB/s), so large transfers can be
 * generated and checked in chunks.
 */
import { createCipheriv, createHash } from 'node:crypto';

const BLOCK_BYTES = 16;
export const DEFAULT_CHUNK_BYTES = 64 * 1024;

function keyFor(seed: string | number): Buffer {
  return createHash('sha256').update(`portway-bytes:${String(seed)}`).digest().subarray(0, 16);
}

function counterBlock(blockIndex: number): Buffer {
  const iv = Buffer.alloc(BLOCK_BYTES);
  iv.writeBigUInt64BE(BigInt(blockIndex), 8);
  return iv;
}

/** `length` bytes of the stream for `seed`, starting at byte `offset`. */
export function pseudoRandomBytes(seed: string | number, length: number, offset = 0): Buffer {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`bad length ${length}`);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`bad offset ${offset}`);
  const skip = offset % BLOCK_BYTES;
  const cipher = createCipheriv('aes-128-ctr', keyFor(seed), counterBlock(Math.floor(offset / BLOCK_BYTES)));
  const stream = cipher.update(Buffer.alloc(skip + length));
  return stream.subarray(skip);
}

/** The same stream as `pseudoRandomBytes(seed, length)`, in chunks of at most `chunkBytes`. */
export function* pseudoRandomChunks(
  seed: string | number,
  length: number,
  chunkBytes = DEFAULT_CHUNK_BYTES,
): Generator<Buffer> {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`bad chunkBytes ${chunkBytes}`);
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`bad length ${length}`);
  const cipher = createCipheriv('aes-128-ctr', keyFor(seed), counterBlock(0));
  const zeros = Buffer.alloc(Math.min(chunkBytes, length));
  for (let offset = 0; offset < length; offset += chunkBytes) {
    const size = Math.min(chunkBytes, length - offset);
    yield cipher.update(size === zeros.length ? zeros : zeros.subarray(0, size));
  }
}
