/**
 * Data-socket framing (protocol/data-frames.ts) as byte-vector tables. Each vector is fed whole, split in
 * two at every byte boundary, one byte at a time and in random chunks; every chunking must yield the same
 * frames, the same trailing bytes, or the same coded error.
 */
import {
  DATA_MAGIC,
  DATA_VERSION,
  encodeFrame,
  encodePreamble,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameType,
  MAX_FRAME_BYTES,
  MAX_PREAUTH_FRAME_BYTES,
  PortwayError,
  type ErrorCode,
  type Frame,
} from '../../protocol';
import { bytes, chunkings } from '../helpers/chunking';

const PREAMBLE = '50574453 01'; // "PWDS", version 1

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** A frame built by hand (not with encodeFrame), so the encoder is checked against the same bytes. */
function rawFrame(type: number, body: Buffer | string, flags = 0): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const header = Buffer.from([type, flags, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([header, payload]);
}

interface Outcome {
  readonly frames: Frame[];
  readonly errorCode?: ErrorCode;
  /** Bytes after the first frame when decoding stops there (the inner TLS session's bytes). */
  readonly rest?: Buffer;
}

/** Decode every frame in `chunks`, as a reader that loops on `rest` would. */
function decodeAll(chunks: readonly Buffer[], options: { expectPreamble: boolean; maxFrameBytes: number }): Outcome {
  const decoder = new FrameDecoder(options);
  const frames: Frame[] = [];
  for (const chunk of chunks) {
    let result = decoder.push(chunk);
    for (;;) {
      if (result.kind === 'error') {
        expect(result.error).toBeInstanceOf(PortwayError);
        return { frames, errorCode: result.error.code };
      }
      if (result.kind === 'need-more') break;
      frames.push(result.frame);
      if (result.rest.length === 0) break;
      decoder.unshift(result.rest);
      result = decoder.next();
    }
  }
  return { frames };
}

/** Decode one frame and hand everything after it on, as readFrame does before the inner TLS session. */
function decodeFirst(chunks: readonly Buffer[], options: { expectPreamble: boolean; maxFrameBytes: number }): Outcome {
  const decoder = new FrameDecoder(options);
  for (let i = 0; i < chunks.length; i++) {
    const result = decoder.push(chunks[i] as Buffer);
    if (result.kind === 'error') return { frames: [], errorCode: result.error.code };
    if (result.kind === 'frame') return { frames: [result.frame], rest: Buffer.concat([result.rest, ...chunks.slice(i + 1)]) };
  }
  return { frames: [], rest: undefined };
}

interface Vector {
  readonly name: string;
  readonly input: Buffer;
  readonly expectPreamble: boolean;
  readonly maxFrameBytes?: number;
  readonly frames?: readonly Frame[];
  readonly error?: ErrorCode;
}

const clientOpen = { device: 'pi1', service: 'ssh', prime: false };
const agentHello = { kind: 'dial', token: 'A'.repeat(43) };
const fitsPreauth = 'x'.repeat(MAX_PREAUTH_FRAME_BYTES - 2); // a JSON string of exactly the cap: quotes + body
const fitsMax = 'y'.repeat(MAX_FRAME_BYTES - 2);

const VECTORS: Vector[] = [
  // ---- accepted ----
  { name: 'preamble + CLIENT_OPEN', input: bytes(PREAMBLE, rawFrame(0x01, json(clientOpen))), expectPreamble: true, frames: [{ type: FrameType.CLIENT_OPEN, payload: clientOpen }] },
  { name: 'preamble + AGENT_HELLO pool', input: bytes(PREAMBLE, '02 00 000f', json({ kind: 'pool' })), expectPreamble: true, frames: [{ type: FrameType.AGENT_HELLO, payload: { kind: 'pool' } }] },
  { name: 'preamble + AGENT_HELLO dial', input: bytes(PREAMBLE, rawFrame(0x02, json(agentHello))), expectPreamble: true, frames: [{ type: FrameType.AGENT_HELLO, payload: agentHello }] },
  {
    name: 'RELAY_STATUS failure, no preamble',
    input: rawFrame(0x03, json({ ok: false, code: 'PW_DEVICE_OFFLINE', message: 'device pi1 is offline' })),
    expectPreamble: false,
    frames: [{ type: FrameType.RELAY_STATUS, payload: { ok: false, code: 'PW_DEVICE_OFFLINE', message: 'device pi1 is offline' } }],
  },
  { name: 'E2E_STATUS ok, no preamble', input: bytes('10 00 000b', Buffer.from('{"ok":true}')), expectPreamble: false, frames: [{ type: FrameType.E2E_STATUS, payload: { ok: true } }] },
  {
    name: 'two frames back to back',
    input: bytes(rawFrame(0x03, '{"ok":true,"streamId":"s1"}'), rawFrame(0x04, '{"streamId":"s1"}')),
    expectPreamble: false,
    frames: [
      { type: FrameType.RELAY_STATUS, payload: { ok: true, streamId: 's1' } },
      { type: FrameType.STREAM_OPEN, payload: { streamId: 's1' } },
    ],
  },
  { name: 'UTF-8 payload', input: rawFrame(0x01, json({ device: 'gerät-ü', service: 'ssh' })), expectPreamble: false, frames: [{ type: FrameType.CLIENT_OPEN, payload: { device: 'gerät-ü', service: 'ssh' } }] },
  { name: 'JSON that is not an object (schemas judge it later)', input: rawFrame(0x01, 'null'), expectPreamble: false, frames: [{ type: FrameType.CLIENT_OPEN, payload: null }] },
  { name: 'payload of exactly the pre-auth cap', input: bytes(PREAMBLE, rawFrame(0x01, json(fitsPreauth))), expectPreamble: true, maxFrameBytes: MAX_PREAUTH_FRAME_BYTES, frames: [{ type: FrameType.CLIENT_OPEN, payload: fitsPreauth }] },
  { name: 'payload of exactly MAX_FRAME_BYTES', input: rawFrame(0x04, json(fitsMax)), expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES, frames: [{ type: FrameType.STREAM_OPEN, payload: fitsMax }] },
  { name: 'incomplete preamble', input: bytes('505744'), expectPreamble: true, frames: [] },
  { name: 'preamble only', input: bytes(PREAMBLE), expectPreamble: true, frames: [] },
  { name: 'incomplete header', input: bytes(PREAMBLE, '01 00'), expectPreamble: true, frames: [] },
  { name: 'incomplete payload', input: bytes(PREAMBLE, '01 00 0020', Buffer.from('{"device":')), expectPreamble: true, frames: [] },
  // ---- refused, with the exact code ----
  { name: 'not the magic (HTTP request)', input: Buffer.from('GET / HTTP/1.1\r\n\r\n'), expectPreamble: true, error: 'PW_BAD_PREAMBLE' },
  { name: 'magic with one wrong byte', input: bytes('50574458 01', rawFrame(0x01, '{}')), expectPreamble: true, error: 'PW_BAD_PREAMBLE' },
  { name: 'first byte wrong', input: bytes('00'), expectPreamble: true, error: 'PW_BAD_PREAMBLE' },
  { name: 'unsupported version 2', input: bytes('50574453 02', rawFrame(0x01, '{}')), expectPreamble: true, error: 'PW_BAD_PREAMBLE' },
  { name: 'version 0', input: bytes('50574453 00'), expectPreamble: true, error: 'PW_BAD_PREAMBLE' },
  { name: 'preamble sent where none is expected', input: bytes(PREAMBLE, rawFrame(0x01, '{}')), expectPreamble: false, error: 'PW_BAD_FRAME' },
  { name: 'unknown frame type 0x00', input: bytes(PREAMBLE, rawFrame(0x00, '{}')), expectPreamble: true, error: 'PW_BAD_FRAME' },
  { name: 'unknown frame type 0x05', input: bytes(PREAMBLE, rawFrame(0x05, '{}')), expectPreamble: true, error: 'PW_BAD_FRAME' },
  { name: 'unknown frame type 0xff', input: rawFrame(0xff, '{}'), expectPreamble: false, error: 'PW_BAD_FRAME' },
  { name: 'unknown type alone (decided on its first byte)', input: bytes('7f'), expectPreamble: false, error: 'PW_BAD_FRAME' },
  { name: 'TLS ClientHello where a frame belongs', input: bytes('16 0301 00f1 01'), expectPreamble: false, error: 'PW_BAD_FRAME' },
  { name: 'flags 0x01', input: bytes(PREAMBLE, rawFrame(0x01, '{}', 0x01)), expectPreamble: true, error: 'PW_BAD_FRAME' },
  { name: 'flags 0x80', input: rawFrame(0x10, '{"ok":true}', 0x80), expectPreamble: false, error: 'PW_BAD_FRAME' },
  { name: 'length one over the pre-auth cap', input: bytes(PREAMBLE, '01 00', '1001'), expectPreamble: true, maxFrameBytes: MAX_PREAUTH_FRAME_BYTES, error: 'PW_FRAME_TOO_LARGE' },
  { name: 'length 0xffff', input: bytes(PREAMBLE, '01 00 ffff', '7b7b'), expectPreamble: true, maxFrameBytes: MAX_PREAUTH_FRAME_BYTES, error: 'PW_FRAME_TOO_LARGE' },
  { name: 'length one over MAX_FRAME_BYTES', input: bytes('04 00 2001'), expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES, error: 'PW_FRAME_TOO_LARGE' },
  { name: 'payload is not JSON', input: bytes(PREAMBLE, rawFrame(0x01, '{device:pi1}')), expectPreamble: true, error: 'PW_BAD_FRAME' },
  { name: 'empty payload', input: bytes(PREAMBLE, '01 00 0000'), expectPreamble: true, error: 'PW_BAD_FRAME' },
  { name: 'truncated JSON inside a complete frame', input: rawFrame(0x03, '{"ok":tr'), expectPreamble: false, error: 'PW_BAD_FRAME' },
  { name: 'good frame, then garbage', input: bytes(rawFrame(0x03, '{"ok":true}'), '99 00 0000'), expectPreamble: false, frames: [{ type: FrameType.RELAY_STATUS, payload: { ok: true } }], error: 'PW_BAD_FRAME' },
];

describe('FrameDecoder byte vectors', () => {
  for (const v of VECTORS) {
    it(`${v.name}: same result in every chunking`, () => {
      const options = { expectPreamble: v.expectPreamble, maxFrameBytes: v.maxFrameBytes ?? MAX_PREAUTH_FRAME_BYTES };
      for (const { name, chunks } of chunkings(v.input)) {
        const outcome = decodeAll(chunks, options);
        try {
          expect(outcome.frames).toEqual(v.frames ?? []);
          expect(outcome.errorCode).toBe(v.error);
        } catch (err) {
          throw new Error(`${name}: ${(err as Error).message}`);
        }
      }
    });
  }
});

describe('FrameDecoder hands the bytes after a frame to the next layer', () => {
  const innerBytes = bytes('16 0301 0200', Buffer.alloc(512, 0xab)); // looks like the inner ClientHello
  const cases: { name: string; input: Buffer; expectPreamble: boolean; frame: Frame; rest: Buffer }[] = [
    { name: 'primed CLIENT_OPEN then the inner ClientHello', input: bytes(PREAMBLE, rawFrame(0x01, '{"device":"pi1","service":"ssh","prime":true}'), innerBytes), expectPreamble: true, frame: { type: FrameType.CLIENT_OPEN, payload: { device: 'pi1', service: 'ssh', prime: true } }, rest: innerBytes },
    { name: 'STREAM_OPEN then the inner ClientHello', input: bytes(rawFrame(0x04, '{"streamId":"a"}'), innerBytes), expectPreamble: false, frame: { type: FrameType.STREAM_OPEN, payload: { streamId: 'a' } }, rest: innerBytes },
    { name: 'E2E_STATUS then a data chunk', input: bytes(rawFrame(0x10, '{"ok":true}'), '00000003 414243'), expectPreamble: false, frame: { type: FrameType.E2E_STATUS, payload: { ok: true } }, rest: bytes('00000003 414243') },
  ];
  for (const c of cases) {
    it(`${c.name}: every byte after the frame is kept, in every chunking`, () => {
      for (const { name, chunks } of chunkings(c.input, { randomSeeds: 4 })) {
        const outcome = decodeFirst(chunks, { expectPreamble: c.expectPreamble, maxFrameBytes: MAX_FRAME_BYTES });
        try {
          expect(outcome.errorCode).toBeUndefined();
          expect(outcome.frames).toEqual([c.frame]);
          expect(outcome.rest?.equals(c.rest)).toBe(true);
        } catch (err) {
          throw new Error(`${name}: ${(err as Error).message}`);
        }
      }
    });
  }
});

describe('FrameDecoder state', () => {
  it('stays failed: later input gets the same error and nothing is buffered', () => {
    const decoder = new FrameDecoder({ expectPreamble: true, maxFrameBytes: MAX_PREAUTH_FRAME_BYTES });
    const first = decoder.push(Buffer.from('HELO'));
    expect(first.kind).toBe('error');
    const again = decoder.push(bytes(PREAMBLE, rawFrame(0x01, '{}')));
    expect(again).toEqual(first);
    expect(decoder.next()).toEqual(first);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('holds at most the bytes of one incomplete frame', () => {
    const decoder = new FrameDecoder({ expectPreamble: true, maxFrameBytes: MAX_PREAUTH_FRAME_BYTES });
    const input = bytes(PREAMBLE, rawFrame(0x01, json({ device: 'd'.repeat(3000), service: 's' })));
    let max = 0;
    for (const b of input.subarray(0, input.length - 1)) {
      expect(decoder.push(Buffer.from([b])).kind).toBe('need-more');
      max = Math.max(max, decoder.bufferedBytes);
    }
    expect(max).toBeLessThanOrEqual(FRAME_HEADER_BYTES + MAX_PREAUTH_FRAME_BYTES);
    expect(decoder.push(input.subarray(input.length - 1)).kind).toBe('frame');
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('an empty push changes nothing', () => {
    const decoder = new FrameDecoder({ expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES });
    expect(decoder.push(Buffer.alloc(0)).kind).toBe('need-more');
    expect(decoder.push(rawFrame(0x10, '{"ok":true}'))).toMatchObject({ kind: 'frame', frame: { type: 0x10, payload: { ok: true } } });
  });

  it.each([0, -1, 1.5, 0x10000, Number.NaN])('rejects maxFrameBytes %p with RangeError', (maxFrameBytes) => {
    expect(() => new FrameDecoder({ expectPreamble: false, maxFrameBytes })).toThrow(RangeError);
  });

  it('names the refused type, flags and length in its messages', () => {
    const messageOf = (input: Buffer, max = MAX_FRAME_BYTES): string => {
      const r = new FrameDecoder({ expectPreamble: false, maxFrameBytes: max }).push(input);
      return r.kind === 'error' ? r.error.message : '';
    };
    expect(messageOf(bytes('2a'))).toMatch(/unknown frame type 0x2a/);
    expect(messageOf(bytes('01 04 0000'))).toMatch(/unknown frame flags 0x4/);
    expect(messageOf(bytes('01 00 0200'), 100)).toMatch(/512 bytes exceeds 100/);
  });
});

describe('encodeFrame and encodePreamble', () => {
  it('encodes the preamble as magic and version', () => {
    expect(encodePreamble()).toEqual(bytes(PREAMBLE));
    expect(DATA_MAGIC.toString('ascii')).toBe('PWDS');
    expect(DATA_VERSION).toBe(1);
  });

  const payloads: [FrameType, unknown][] = [
    [FrameType.CLIENT_OPEN, clientOpen],
    [FrameType.AGENT_HELLO, { kind: 'pool' }],
    [FrameType.AGENT_HELLO, agentHello],
    [FrameType.RELAY_STATUS, { ok: true, streamId: '0123456789abcdef', deviceId: 'dev_abcdefghijklmnop', deviceName: 'pi1', deviceKey: 'a'.repeat(64) }],
    [FrameType.RELAY_STATUS, { ok: false, code: 'PW_NOT_AUTHORIZED', message: 'nope' }],
    [FrameType.STREAM_OPEN, { streamId: 's', service: 'ssh', user: { id: 'usr_abcdefghijklmnop', name: 'alice', certFingerprint: 'b'.repeat(64) } }],
    [FrameType.E2E_STATUS, { ok: true }],
    [FrameType.E2E_STATUS, { ok: false, code: 'PW_SERVICE_REFUSED', message: 'connection refused by device service 127.0.0.1:22' }],
    [FrameType.CLIENT_OPEN, { device: '∆ unicode ✓', service: 'x' }],
  ];

  it.each(payloads)('type 0x%s round-trips through the decoder with the documented header', (type, payload) => {
    const encoded = encodeFrame(type, payload);
    const body = Buffer.from(JSON.stringify(payload), 'utf8');
    expect(encoded.subarray(0, FRAME_HEADER_BYTES)).toEqual(Buffer.from([type, 0, body.length >> 8, body.length & 0xff]));
    expect(encoded.subarray(FRAME_HEADER_BYTES)).toEqual(body);
    for (const { name, chunks } of chunkings(Buffer.concat([encodePreamble(), encoded]), { randomSeeds: 2 })) {
      const outcome = decodeAll(chunks, { expectPreamble: true, maxFrameBytes: MAX_FRAME_BYTES });
      expect({ name, frames: outcome.frames, error: outcome.errorCode }).toEqual({ name, frames: [{ type, payload }], error: undefined });
    }
  });

  it('encodes a payload of exactly MAX_FRAME_BYTES and refuses one byte more with RangeError', () => {
    expect(encodeFrame(FrameType.STREAM_OPEN, fitsMax).length).toBe(FRAME_HEADER_BYTES + MAX_FRAME_BYTES);
    expect(() => encodeFrame(FrameType.STREAM_OPEN, `${fitsMax}y`)).toThrow(RangeError);
  });

  it('counts the cap in UTF-8 bytes, not characters', () => {
    const threeByteChars = '€'.repeat(Math.ceil(MAX_FRAME_BYTES / 3));
    expect(() => encodeFrame(FrameType.STREAM_OPEN, threeByteChars)).toThrow(RangeError);
  });

  it('every FrameType value is distinct and fits in one byte', () => {
    const values = Object.values(FrameType);
    expect(new Set(values).size).toBe(values.length);
    for (const v of values) expect(v).toBeGreaterThan(0);
    for (const v of values) expect(v).toBeLessThan(0x100);
  });
});
