/**
 * UDP datagram framing (protocol/datagram-frames.ts) as byte-vector tables, each vector fed whole, split at
 * every byte boundary, one byte at a time and in random chunks: the same datagrams and the same drops must
 * come out of every chunking, and nothing a peer sends makes the decoder throw.
 */
import { DATAGRAM_HEADER_BYTES, DatagramDecoder, encodeDatagram, MAX_DATAGRAM_BYTES, type DatagramEvent } from '../../protocol';
import { bytes, chunkings, seededRandom } from '../helpers/chunking';

/** 'datagram <hex or length>' and 'dropped <reason> <bytes>' in order, the stream's end included. */
function decode(chunks: readonly Buffer[]): string[] {
  const decoder = new DatagramDecoder();
  const out: string[] = [];
  const emit = (event: DatagramEvent): void => {
    if (event.kind === 'datagram') out.push(`datagram ${event.data.length > 16 ? `#${event.data.length}:${event.data.toString('hex', 0, 4)}` : event.data.toString('hex')}`);
    else out.push(`dropped ${event.reason} ${event.bytes}`);
  };
  for (const chunk of chunks) decoder.push(chunk, emit);
  decoder.end(emit);
  return out;
}

const max = Buffer.alloc(MAX_DATAGRAM_BYTES, 0xab);
const oversizedHeader = bytes('0000ffe4'); // 65,508: one past the limit

interface Vector {
  readonly name: string;
  readonly input: Buffer;
  readonly events: readonly string[];
  readonly long?: boolean;
}

const VECTORS: Vector[] = [
  { name: 'one datagram', input: bytes('00000003 616263'), events: ['datagram 616263'] },
  { name: 'an empty datagram is a datagram', input: bytes('00000000'), events: ['datagram '] },
  { name: 'empty datagrams around a byte', input: bytes('00000000 00000001 ff 00000000'), events: ['datagram ', 'datagram ff', 'datagram '] },
  { name: 'two back to back', input: bytes('00000001 01 00000002 0203'), events: ['datagram 01', 'datagram 0203'] },
  { name: 'the largest datagram', input: encodeDatagram(max), events: [`datagram #${MAX_DATAGRAM_BYTES}:abababab`], long: true },
  { name: 'oversized is skipped, the next one kept', input: bytes(oversizedHeader, Buffer.alloc(65_508, 1), '00000001 7a'), events: ['dropped oversized 65508', 'datagram 7a'], long: true },
  { name: 'a huge length is skipped without buffering', input: bytes('ffffffff', Buffer.alloc(10, 2)), events: ['dropped oversized 10'] },
  { name: 'truncated payload at the end', input: bytes('00000005 6162'), events: ['dropped truncated 2'] },
  { name: 'truncated header at the end', input: bytes('00000001 41 0000'), events: ['datagram 41', 'dropped truncated 2'] },
  { name: 'nothing', input: Buffer.alloc(0), events: [] },
];

describe('datagram frames', () => {
  it('encodes length then payload, from 0 to 65,507 bytes', () => {
    expect(encodeDatagram(Buffer.alloc(0))).toEqual(bytes('00000000'));
    expect(encodeDatagram(Buffer.from('hi'))).toEqual(bytes('00000002 6869'));
    expect(encodeDatagram(max)).toHaveLength(DATAGRAM_HEADER_BYTES + MAX_DATAGRAM_BYTES);
    expect(() => encodeDatagram(Buffer.alloc(MAX_DATAGRAM_BYTES + 1))).toThrow(RangeError);
  });

  describe.each(VECTORS)('$name', (vector) => {
    const ways = chunkings(vector.input).filter((c) => !vector.long || !c.name.startsWith('split at') || Number(c.name.slice(9)) % 4099 === 1);
    it.each(ways.map((c) => [c.name, c.chunks] as const))('%s', (_name, chunks) => {
      expect(decode(chunks)).toEqual(vector.events);
    });
  });

  it('survives random garbage in random chunks without throwing, and never emits more than 65,507 bytes', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const random = seededRandom(seed);
      const garbage = Buffer.from(Array.from({ length: 2000 }, () => Math.floor(random() * 256)));
      // Small lengths now and then, so some frames decode.
      for (let i = 0; i < garbage.length; i += 97) garbage.writeUInt32BE(Math.floor(random() * 40), i);
      const decoder = new DatagramDecoder();
      let offset = 0;
      while (offset < garbage.length) {
        const size = 1 + Math.floor(random() * 300);
        decoder.push(garbage.subarray(offset, offset + size), (event) => {
          if (event.kind === 'datagram') expect(event.data.length).toBeLessThanOrEqual(MAX_DATAGRAM_BYTES);
        });
        offset += size;
      }
      decoder.end(() => undefined);
    }
  });

  it('round-trips every size in steps from 0 to 65,507 in one stream', () => {
    const sizes = [...Array.from({ length: 64 }, (_, i) => i), ...Array.from({ length: 66 }, (_, i) => i * 1000), MAX_DATAGRAM_BYTES - 1, MAX_DATAGRAM_BYTES];
    const payloads = sizes.map((n, i) => Buffer.alloc(n, i & 0xff));
    const stream = Buffer.concat(payloads.map(encodeDatagram));
    const got: Buffer[] = [];
    const decoder = new DatagramDecoder();
    const random = seededRandom(7);
    for (let offset = 0; offset < stream.length; ) {
      const size = 1 + Math.floor(random() * 20_000);
      decoder.push(stream.subarray(offset, offset + size), (event) => {
        if (event.kind === 'datagram') got.push(Buffer.from(event.data));
      });
      offset += size;
    }
    expect(got).toHaveLength(payloads.length);
    got.forEach((g, i) => expect(g.equals(payloads[i] as Buffer)).toBe(true));
  });
});
