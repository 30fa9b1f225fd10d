/**
 * Property-based fuzz of every frame codec in protocol/ (fast-check; docs/reliability.md, test plan D2/D3):
 * decode(encode(x)) = x under any chunking, and decode(random bytes) never throws: it yields frames, a
 * coded PortwayError or an error/drop event. Seeds are fixed (FUZZ_SEED overrides) and printed, runs bounded.
 */
import fc from 'fast-check';
import {
  DATAGRAM_HEADER_BYTES,
  FRAME_HEADER_BYTES,
  MAX_DATAGRAM_BYTES,
  MAX_E2E_CHUNK_BYTES,
  MAX_FRAME_BYTES,
  ChunkDecoder,
  DatagramDecoder,
  FrameDecoder,
  FrameType,
  HANDOFF_MARKER,
  PortwayError,
  TelnetDecoder,
  TlsRecordScanner,
  encodeChunkHeader,
  encodeComPort,
  encodeDatagram,
  encodeFin,
  encodeFrame,
  encodeNegotiation,
  encodeSubnegotiation,
  encodePreamble,
  escapeIac,
  parseComPortRequest,
  type ChunkEvent,
  type DatagramEvent,
  type Frame,
  type TelnetEvent,
} from '../../protocol';

const SEED = process.env.FUZZ_SEED === undefined ? 20_261_126 : Number(process.env.FUZZ_SEED);
const RUNS = 500;
const params = { seed: SEED, numRuns: RUNS };
process.stdout.write(`protocol codec fuzz: seed ${SEED}, ${RUNS} runs per property (FUZZ_SEED=N to replay)\n`);

/** Cut `bytes` at the given fractions (0..1). */
function split(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    if (p > at) out.push(bytes.subarray(at, p));
    at = Math.max(at, p);
  }
  if (at < bytes.length) out.push(bytes.subarray(at));
  return out;
}

const cutsArb = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 });
const bytesArb = (maxLength: number) => fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));
const FRAME_TYPES = Object.values(FrameType);

/** Every frame FrameDecoder yields from `chunks`, then its error code if it failed. */
function decodeFrames(chunks: readonly Buffer[], expectPreamble: boolean): { frames: Frame[]; error?: string; rest: number } {
  const decoder = new FrameDecoder({ expectPreamble, maxFrameBytes: MAX_FRAME_BYTES });
  const frames: Frame[] = [];
  for (const chunk of chunks) {
    let result = decoder.push(chunk);
    for (;;) {
      if (result.kind === 'need-more') break;
      if (result.kind === 'error') {
        expect(result.error).toBeInstanceOf(PortwayError);
        return { frames, error: result.error.code, rest: decoder.bufferedBytes };
      }
      frames.push(result.frame);
      decoder.unshift(result.rest);
      result = decoder.next();
    }
  }
  return { frames, rest: decoder.bufferedBytes };
}

describe('data frames (FrameDecoder)', () => {
  it('decode(encode(frames)) = frames, with or without the preamble, under any chunking', () => {
    const frameArb = fc.record({ type: fc.constantFrom(...FRAME_TYPES), payload: fc.jsonValue({ maxDepth: 3 }) }).filter((f) => Buffer.byteLength(JSON.stringify(f.payload) ?? '') <= MAX_FRAME_BYTES && JSON.stringify(f.payload) !== undefined);
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 4 }), fc.boolean(), cutsArb, (frames, preamble, cuts) => {
        const wire = Buffer.concat([...(preamble ? [encodePreamble()] : []), ...frames.map((f) => encodeFrame(f.type, f.payload))]);
        const decoded = decodeFrames(split(wire, cuts), preamble);
        expect(decoded).toEqual({ frames: frames.map((f) => ({ type: f.type, payload: JSON.parse(JSON.stringify(f.payload)) as unknown })), rest: 0 });
      }),
      params,
    );
  });

  it('random bytes never throw: frames or one coded error (PW_BAD_PREAMBLE, PW_BAD_FRAME, PW_FRAME_TOO_LARGE)', () => {
    fc.assert(
      fc.property(bytesArb(2_000), fc.boolean(), cutsArb, (bytes, preamble, cuts) => {
        const decoded = decodeFrames(split(bytes, cuts), preamble);
        if (decoded.error !== undefined) expect(['PW_BAD_PREAMBLE', 'PW_BAD_FRAME', 'PW_FRAME_TOO_LARGE']).toContain(decoded.error);
        expect(decoded.rest).toBeLessThanOrEqual(FRAME_HEADER_BYTES + MAX_FRAME_BYTES + 5);
      }),
      params,
    );
  });

  it('edge lengths: 0 is a frame (empty JSON fails as PW_BAD_FRAME), max+1 and 0xffff are PW_FRAME_TOO_LARGE from the header alone', () => {
    const header = (length: number): Buffer => Buffer.from([FrameType.CLIENT_OPEN, 0, length >> 8, length & 0xff]);
    expect(decodeFrames([header(0)], false).error).toBe('PW_BAD_FRAME');
    for (const length of [MAX_FRAME_BYTES + 1, 0xffff]) expect(decodeFrames([header(length)], false)).toEqual({ frames: [], error: 'PW_FRAME_TOO_LARGE', rest: 0 });
  });

  it('a frame truncated at every byte offset waits for more and never yields a partial frame', () => {
    const wire = Buffer.concat([encodePreamble(), encodeFrame(FrameType.CLIENT_OPEN, { device: 'pi1', service: 'ssh' })]);
    for (let cut = 0; cut < wire.length; cut++) expect(decodeFrames([wire.subarray(0, cut)], true)).toEqual({ frames: [], rest: expect.any(Number) });
  });
});

/** Run ChunkDecoder over chunks: concatenated data, whether FIN came, the first error reason. */
function decodeChunks(chunks: readonly Buffer[]): { data: Buffer; fin: boolean; error?: string } {
  const decoder = new ChunkDecoder();
  const data: Buffer[] = [];
  let fin = false;
  let error: string | undefined;
  for (const chunk of chunks) {
    decoder.push(chunk, (e: ChunkEvent) => {
      if (e.kind === 'data') data.push(Buffer.from(e.data));
      else if (e.kind === 'fin') fin = true;
      else if (e.kind === 'error') error ??= e.reason;
    });
    if (error !== undefined) break;
  }
  return { data: Buffer.concat(data), fin, ...(error === undefined ? {} : { error }) };
}

describe('end-to-end chunks (ChunkDecoder)', () => {
  it('decode(encode(chunks + FIN)) = the same bytes and a FIN, under any chunking', () => {
    fc.assert(
      fc.property(fc.array(bytesArb(3_000).filter((b) => b.length > 0), { maxLength: 6 }), cutsArb, (pieces, cuts) => {
        const wire = Buffer.concat([...pieces.flatMap((p) => [encodeChunkHeader(p.length), p]), encodeFin()]);
        expect(decodeChunks(split(wire, cuts))).toEqual({ data: Buffer.concat(pieces), fin: true });
      }),
      params,
    );
  });

  it('random bytes never throw', () => {
    fc.assert(fc.property(bytesArb(4_000), cutsArb, (bytes, cuts) => void decodeChunks(split(bytes, cuts))), params);
  });

  it('edge lengths max+1, 2^31-1, 2^32-2 are refused from the header, before any payload is held (2^32-1 is the heartbeat)', () => {
    for (const length of [MAX_E2E_CHUNK_BYTES + 1, 2 ** 31 - 1, 2 ** 32 - 2]) {
      const header = Buffer.alloc(4);
      header.writeUInt32BE(length, 0);
      expect(decodeChunks([header, Buffer.alloc(16)])).toEqual({ data: Buffer.alloc(0), fin: false, error: expect.stringContaining('exceeds') });
    }
    expect(() => encodeChunkHeader(0)).toThrow(RangeError);
    expect(() => encodeChunkHeader(MAX_E2E_CHUNK_BYTES + 1)).toThrow(RangeError);
  });
});

function decodeDatagrams(chunks: readonly Buffer[]): { datagrams: Buffer[]; dropped: number } {
  const decoder = new DatagramDecoder();
  const datagrams: Buffer[] = [];
  let dropped = 0;
  for (const chunk of chunks) {
    decoder.push(chunk, (e: DatagramEvent) => {
      if (e.kind === 'datagram') datagrams.push(Buffer.from(e.data));
      else dropped++;
    });
  }
  return { datagrams, dropped };
}

describe('UDP datagrams (DatagramDecoder)', () => {
  it('decode(encode(datagrams)) = datagrams (zero-length ones included), under any chunking', () => {
    fc.assert(
      fc.property(fc.array(bytesArb(1_500), { maxLength: 8 }), cutsArb, (datagrams, cuts) => {
        const wire = Buffer.concat(datagrams.map((d) => encodeDatagram(d)));
        expect(decodeDatagrams(split(wire, cuts))).toEqual({ datagrams, dropped: 0 });
      }),
      params,
    );
  });

  it('random bytes never throw; an oversized length (up to 2^32-1) is skipped, never buffered', () => {
    fc.assert(fc.property(bytesArb(4_000), cutsArb, (bytes, cuts) => void decodeDatagrams(split(bytes, cuts))), params);
    for (const length of [MAX_DATAGRAM_BYTES + 1, 2 ** 31 - 1, 2 ** 32 - 1]) {
      const header = Buffer.alloc(DATAGRAM_HEADER_BYTES);
      header.writeUInt32BE(length, 0);
      expect(decodeDatagrams([header, Buffer.alloc(100)])).toEqual({ datagrams: [], dropped: 0 });
    }
  });
});

describe('handoff scanner (TlsRecordScanner)', () => {
  const recordArb = fc.record({ type: fc.integer({ min: 20, max: 23 }), body: bytesArb(600) });

  it('TLS records then the marker: pass = the records, rest = what follows, under any chunking', () => {
    fc.assert(
      fc.property(fc.array(recordArb, { maxLength: 5 }), bytesArb(200), cutsArb, (records, after, cuts) => {
        const tlsBytes = Buffer.concat(records.map((r) => Buffer.concat([Buffer.from([r.type, 3, 3, r.body.length >> 8, r.body.length & 0xff]), r.body])));
        const scanner = new TlsRecordScanner();
        const pass: Buffer[] = [];
        const rest: Buffer[] = [];
        let handedOff = false;
        for (const piece of split(Buffer.concat([tlsBytes, HANDOFF_MARKER, after]), cuts)) {
          if (handedOff) {
            rest.push(piece);
            continue;
          }
          const result = scanner.scan(piece);
          expect(result.kind).not.toBe('error');
          pass.push(result.pass);
          if (result.kind === 'handoff') {
            handedOff = true;
            rest.push(result.rest);
          }
        }
        expect({ handedOff, pass: Buffer.concat(pass), rest: Buffer.concat(rest) }).toEqual({ handedOff: true, pass: tlsBytes, rest: after });
      }),
      params,
    );
  });

  it('random bytes never throw: tls, handoff or a PW_BAD_PREAMBLE error', () => {
    fc.assert(
      fc.property(bytesArb(3_000), cutsArb, (bytes, cuts) => {
        const scanner = new TlsRecordScanner();
        for (const piece of split(bytes, cuts)) {
          const result = scanner.scan(piece);
          if (result.kind === 'error') {
            expect(result.error.code).toBe('PW_BAD_PREAMBLE');
            break;
          }
          if (result.kind === 'handoff') break;
        }
      }),
      params,
    );
  });
});

describe('Telnet and RFC 2217 (TelnetDecoder, parseComPortRequest)', () => {
  it('decode(escapeIac(data) + negotiations + subnegotiations) = the same events, under any chunking', () => {
    const partArb = fc.oneof(
      bytesArb(300).filter((b) => b.length > 0).map((data) => ({ kind: 'data' as const, data })),
      fc.record({ verb: fc.constantFrom('WILL' as const, 'WONT' as const, 'DO' as const, 'DONT' as const), option: fc.integer({ min: 0, max: 255 }) }).map((n) => ({ kind: 'negotiate' as const, ...n })),
      fc.record({ option: fc.integer({ min: 0, max: 254 }), payload: bytesArb(60) }).map((s) => ({ kind: 'subnegotiation' as const, ...s })),
    );
    fc.assert(
      fc.property(fc.array(partArb, { maxLength: 8 }), cutsArb, (parts, cuts) => {
        const wire = Buffer.concat(parts.map((p) => (p.kind === 'data' ? escapeIac(p.data) : p.kind === 'negotiate' ? encodeNegotiation(p.verb, p.option) : encodeSubnegotiation(p.option, p.payload))));
        const decoder = new TelnetDecoder();
        const events: TelnetEvent[] = [];
        for (const piece of split(wire, cuts)) decoder.push(piece, (e) => events.push(e.kind === 'data' ? { kind: 'data', data: Buffer.from(e.data) } : e));
        // Adjacent data events merge: compare the data as one run between non-data events.
        const merge = (list: readonly ({ kind: string; data?: Buffer } & Record<string, unknown>)[]): unknown[] => {
          const out: ({ kind: string; data?: Buffer } & Record<string, unknown>)[] = [];
          for (const e of list) {
            const last = out.at(-1);
            if (e.kind === 'data' && last?.kind === 'data') last.data = Buffer.concat([last.data as Buffer, e.data as Buffer]);
            else out.push({ ...e });
          }
          return out;
        };
        expect(merge(events as never)).toEqual(merge(parts as never));
      }),
      params,
    );
  });

  it('random bytes never throw (TelnetDecoder), and parseComPortRequest throws only PortwayError', () => {
    fc.assert(
      fc.property(bytesArb(2_000), cutsArb, (bytes, cuts) => {
        const decoder = new TelnetDecoder();
        for (const piece of split(bytes, cuts)) decoder.push(piece, () => undefined);
        try {
          parseComPortRequest(bytes.subarray(0, 8));
        } catch (err) {
          expect(err).toBeInstanceOf(PortwayError);
        }
      }),
      params,
    );
    expect(encodeComPort(1, Buffer.from([0, 0, 0x25, 0x80])).length).toBeGreaterThan(4);
    // Found by this fuzz: option 255 encoded as IAC SB IAC, which the decoder (rightly) refuses.
    expect(() => encodeSubnegotiation(255, Buffer.alloc(0))).toThrow(RangeError);
  });
});
