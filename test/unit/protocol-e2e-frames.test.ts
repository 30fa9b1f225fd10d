/**
 * End-to-end chunk framing (protocol/e2e-frames.ts) as byte-vector tables, each vector fed whole, split at
 * every byte boundary, one byte at a time and in random chunks. Data may arrive in pieces, so what is
 * compared is the concatenated data and the sequence of terminal events (FIN, error reason).
 */
import { ChunkDecoder, E2E_CHUNK_HEADER_BYTES, encodeChunkHeader, encodeFin, encodeHeartbeat, MAX_E2E_CHUNK_BYTES, type ChunkEvent } from '../../protocol';
import { bytes, chunkings, randomChunks } from '../helpers/chunking';

interface Decoded {
  readonly data: Buffer;
  /** 'fin', 'heartbeat' and `error: <reason>` in the order they came; nothing is recorded after the first error. */
  readonly events: string[];
  readonly ended: boolean;
}

/** Feed every chunk, as the pump does (it keeps pushing what arrives until it tears the stream down on an error). */
function decode(chunks: readonly Buffer[]): Decoded {
  const decoder = new ChunkDecoder();
  const data: Buffer[] = [];
  const events: string[] = [];
  let failed = false;
  const emit = (event: ChunkEvent): void => {
    if (failed) return;
    if (event.kind === 'data') {
      expect(event.data.length).toBeGreaterThan(0);
      expect(events).not.toContain('fin');
      data.push(Buffer.from(event.data));
    } else if (event.kind === 'fin') events.push('fin');
    else if (event.kind === 'heartbeat') events.push('heartbeat');
    else {
      events.push(`error: ${event.reason}`);
      failed = true;
    }
  };
  for (const chunk of chunks) {
    const more = decoder.push(chunk, emit);
    if (events.some((e) => e !== 'heartbeat')) expect(more).toBe(false);
  }
  return { data: Buffer.concat(data), events, ended: decoder.isEnded };
}

function chunk(text: string | Buffer): Buffer {
  const body = typeof text === 'string' ? Buffer.from(text) : text;
  return Buffer.concat([encodeChunkHeader(body.length), body]);
}

const FIN = '00000000';
const HEARTBEAT = 'ffffffff';
const big = Buffer.alloc(70_000, 0x5a);

interface Vector {
  readonly name: string;
  readonly input: Buffer;
  readonly data: string | Buffer;
  readonly events: readonly string[];
  /** Skip the every-boundary splits for long vectors (random chunkings still run). */
  readonly long?: boolean;
}

const VECTORS: Vector[] = [
  { name: 'one chunk', input: bytes('00000005', Buffer.from('hello')), data: 'hello', events: [] },
  { name: 'one-byte chunk', input: bytes('00000001 41'), data: 'A', events: [] },
  { name: 'two chunks then FIN', input: bytes(chunk('hello '), chunk('world'), FIN), data: 'hello world', events: ['fin'] },
  { name: 'FIN alone (empty stream)', input: bytes(FIN), data: '', events: ['fin'] },
  { name: 'binary chunk with zero bytes inside', input: bytes('00000006 000000000000', FIN), data: Buffer.alloc(6), events: ['fin'] },
  { name: 'header only', input: bytes('00000010'), data: '', events: [] },
  { name: 'incomplete header', input: bytes('0000'), data: '', events: [] },
  { name: 'incomplete payload is delivered as far as it goes', input: bytes('0000000a', Buffer.from('abcd')), data: 'abcd', events: [] },
  { name: 'a chunk larger than one TCP read', input: bytes(chunk(big), chunk('tail'), FIN), data: Buffer.concat([big, Buffer.from('tail')]), events: ['fin'], long: true },
  { name: 'header of exactly MAX_E2E_CHUNK_BYTES is accepted', input: encodeChunkHeader(MAX_E2E_CHUNK_BYTES), data: '', events: [] },
  { name: 'header one over MAX_E2E_CHUNK_BYTES', input: bytes('00100001'), data: '', events: [`error: chunk of ${MAX_E2E_CHUNK_BYTES + 1} bytes exceeds ${MAX_E2E_CHUNK_BYTES}`] },
  { name: 'header 0xfffffffe (one below the heartbeat)', input: bytes('fffffffe 00'), data: '', events: [`error: chunk of 4294967294 bytes exceeds ${MAX_E2E_CHUNK_BYTES}`] },
  { name: 'a heartbeat alone', input: bytes(HEARTBEAT), data: '', events: ['heartbeat'] },
  { name: 'heartbeats between and after chunks', input: bytes(HEARTBEAT, chunk('ab'), HEARTBEAT, HEARTBEAT, chunk('cd'), FIN), data: 'abcd', events: ['heartbeat', 'heartbeat', 'heartbeat', 'fin'] },
  { name: 'heartbeats after FIN (the peer may still be sending)', input: bytes(chunk('x'), FIN, HEARTBEAT, HEARTBEAT), data: 'x', events: ['fin', 'heartbeat', 'heartbeat'] },
  { name: 'data after a heartbeat after FIN', input: bytes(FIN, HEARTBEAT, chunk('late')), data: '', events: ['fin', 'heartbeat', 'error: data after FIN'] },
  { name: 'a broken heartbeat after FIN', input: bytes(FIN, 'ffff00'), data: '', events: ['fin', 'error: data after FIN'] },
  { name: 'data, then an oversize header', input: bytes(chunk('ok'), 'ffffff00', 'aabb'), data: 'ok', events: [`error: chunk of 4294967040 bytes exceeds ${MAX_E2E_CHUNK_BYTES}`] },
  { name: 'data after FIN', input: bytes(chunk('x'), FIN, chunk('late')), data: 'x', events: ['fin', 'error: data after FIN'] },
  { name: 'one stray byte after FIN', input: bytes(FIN, '00'), data: '', events: ['fin', 'error: data after FIN'] },
  { name: 'a second FIN', input: bytes(FIN, FIN), data: '', events: ['fin', 'error: data after FIN'] },
];

describe('ChunkDecoder byte vectors', () => {
  for (const v of VECTORS) {
    it(`${v.name}: same data and events in every chunking`, () => {
      const expected = typeof v.data === 'string' ? Buffer.from(v.data) : v.data;
      const cuts = v.long
        ? [{ name: 'whole', chunks: [v.input] }, ...[1, 2, 3, 4, 5, 6].map((seed) => ({ name: `random (seed ${seed})`, chunks: randomChunks(v.input, seed, 9000) }))]
        : chunkings(v.input);
      for (const { name, chunks } of cuts) {
        const result = decode(chunks);
        try {
          expect(result.data.equals(expected)).toBe(true);
          expect(result.events).toEqual(v.events);
          expect(result.ended).toBe(v.events.includes('fin') && !v.events.some((e) => e.startsWith('error')));
        } catch (err) {
          throw new Error(`${name}: ${(err as Error).message}`);
        }
      }
    });
  }
});

describe('ChunkDecoder', () => {
  it('does not copy payload that arrives whole in one input', () => {
    const input = bytes(chunk('abcdef'));
    const seen: Buffer[] = [];
    new ChunkDecoder().push(input, (e) => {
      if (e.kind === 'data') seen.push(e.data);
    });
    expect(seen).toHaveLength(1);
    expect(seen[0]?.buffer).toBe(input.buffer);
  });

  it('reports push() false once FIN was seen, and keeps refusing data afterwards', () => {
    const decoder = new ChunkDecoder();
    const events: ChunkEvent[] = [];
    expect(decoder.push(chunk('a'), (e) => events.push(e))).toBe(true);
    expect(decoder.push(bytes(FIN), (e) => events.push(e))).toBe(false);
    expect(decoder.isEnded).toBe(true);
    expect(decoder.push(bytes('01'), (e) => events.push(e))).toBe(false);
    expect(events.map((e) => e.kind)).toEqual(['data', 'fin', 'error']);
    expect(decoder.isEnded).toBe(false);
  });

  it('reports push() false for an empty input after FIN too', () => {
    const decoder = new ChunkDecoder();
    decoder.push(bytes(FIN), () => undefined);
    const events: ChunkEvent[] = [];
    expect(decoder.push(Buffer.alloc(0), (e) => events.push(e))).toBe(false);
    expect(events).toEqual([]);
  });
});

describe('encodeChunkHeader and encodeFin', () => {
  it.each([1, 255, 256, 65_536, MAX_E2E_CHUNK_BYTES])('encodes %p as a big-endian u32', (n) => {
    const header = encodeChunkHeader(n);
    expect(header.length).toBe(E2E_CHUNK_HEADER_BYTES);
    expect(header.readUInt32BE(0)).toBe(n);
  });

  it.each([0, -1, 1.5, MAX_E2E_CHUNK_BYTES + 1, Number.NaN])('refuses length %p with RangeError (FIN is encodeFin)', (n) => {
    expect(() => encodeChunkHeader(n)).toThrow(RangeError);
  });

  it('encodes FIN as a zero length', () => {
    expect(encodeFin()).toEqual(bytes(FIN));
  });

  it('encodes a heartbeat as the length 0xFFFFFFFF', () => {
    expect(encodeHeartbeat()).toEqual(bytes(HEARTBEAT));
  });

  it('round-trips a stream of random chunk sizes in random input chunkings', () => {
    const pieces = [1, 7, 4096, 65_535, 3, MAX_E2E_CHUNK_BYTES].map((n, i) => Buffer.alloc(n, i + 1));
    const wire = Buffer.concat([...pieces.map((p) => chunk(p)), encodeFin()]);
    for (const seed of [11, 12, 13]) {
      const result = decode(randomChunks(wire, seed, 50_000));
      expect(result.data.equals(Buffer.concat(pieces))).toBe(true);
      expect(result.events).toEqual(['fin']);
    }
  });
});
