/**
 * Data-socket framing (inside the outer TLS session, ALPN "portway-data/1").
 *
 *   initiator -> relay:  PREAMBLE  = "PWDS" (4 bytes ASCII) | version (u8, = 1)
 *   then, both ways:     FRAME     = type (u8) | flags (u8, must be 0) | length (u16 BE) | payload (JSON, UTF-8)
 *
 * Frames only travel before a stream is paired; after that the socket carries the raw bytes of the inner
 * end-to-end TLS session and the relay stops parsing. Inside that inner session the agent sends one
 * E2E_STATUS frame (same layout) before the service's bytes.
 *
 * Who sends what:
 *   client -> relay  CLIENT_OPEN   { device, service, prime? }
 *   relay  -> client RELAY_STATUS  { ok: true, streamId, deviceId, deviceKey } | { ok: false, code, message }
 *   agent  -> relay  AGENT_HELLO   { kind: "pool" } | { kind: "dial", token }
 *   relay  -> agent  STREAM_OPEN   { streamId, service, user: { id, name, certFingerprint } }
 *   agent  -> client E2E_STATUS    { ok: true } | { ok: false, code, message }     (inside the inner TLS)
 *
 * Version history: 1 — first version.
 */
import { DATA_MAGIC, DATA_VERSION, FRAME_HEADER_BYTES, MAX_FRAME_BYTES } from './constants';
import { PortwayError } from './errors';

export const FrameType = {
  CLIENT_OPEN: 0x01,
  AGENT_HELLO: 0x02,
  RELAY_STATUS: 0x03,
  STREAM_OPEN: 0x04,
  E2E_STATUS: 0x10,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

const KNOWN_TYPES: ReadonlySet<number> = new Set(Object.values(FrameType));

export interface Frame {
  readonly type: FrameType;
  readonly payload: unknown;
}

export function encodePreamble(): Buffer {
  return Buffer.concat([DATA_MAGIC, Buffer.from([DATA_VERSION])]);
}

export function encodeFrame(type: FrameType, payload: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(payload), 'utf8');
  if (body.length > MAX_FRAME_BYTES) throw new RangeError(`frame payload of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt8(0, 1);
  header.writeUInt16BE(body.length, 2);
  return Buffer.concat([header, body]);
}

export type DecodeResult =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'frame'; readonly frame: Frame; readonly rest: Buffer }
  | { readonly kind: 'error'; readonly error: PortwayError };

/**
 * Incremental decoder for the preamble (optional) and frames. Feed it chunks; it keeps at most one
 * frame's worth of bytes (header + `maxFrameBytes`), so a peer cannot make it buffer more.
 * Once it yields a frame, `rest` holds the bytes after it: the caller either feeds them back or hands
 * them to the next layer (the inner TLS session), which is why the decoder stops after every frame.
 */
export class FrameDecoder {
  private buffered: Buffer = Buffer.alloc(0);
  private needPreamble: boolean;
  private failed: PortwayError | undefined;

  constructor(private readonly options: { expectPreamble: boolean; maxFrameBytes: number }) {
    if (!Number.isInteger(options.maxFrameBytes) || options.maxFrameBytes < 1 || options.maxFrameBytes > 0xffff) {
      throw new RangeError('maxFrameBytes must be an integer in 1..65535');
    }
    this.needPreamble = options.expectPreamble;
  }

  /** Bytes held but not yet decoded. */
  get bufferedBytes(): number {
    return this.buffered.length;
  }

  push(chunk: Buffer): DecodeResult {
    if (this.failed) return { kind: 'error', error: this.failed };
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    return this.next();
  }

  /** Decode from what is buffered, without new input (after a frame, to look for another). */
  next(): DecodeResult {
    if (this.failed) return { kind: 'error', error: this.failed };
    if (this.needPreamble) {
      const have = Math.min(this.buffered.length, DATA_MAGIC.length + 1);
      for (let i = 0; i < have; i++) {
        const expected = i < DATA_MAGIC.length ? DATA_MAGIC[i] : DATA_VERSION;
        if (this.buffered[i] !== expected) {
          return this.fail(new PortwayError('PW_BAD_PREAMBLE', i < DATA_MAGIC.length ? 'not a Portway data socket' : `unsupported data protocol version ${String(this.buffered[i])}`));
        }
      }
      if (have < DATA_MAGIC.length + 1) return { kind: 'need-more' };
      this.buffered = this.buffered.subarray(DATA_MAGIC.length + 1);
      this.needPreamble = false;
    }
    if (this.buffered.length < 1) return { kind: 'need-more' };
    const type = this.buffered.readUInt8(0);
    if (!KNOWN_TYPES.has(type)) return this.fail(new PortwayError('PW_BAD_FRAME', `unknown frame type 0x${type.toString(16)}`));
    if (this.buffered.length < FRAME_HEADER_BYTES) return { kind: 'need-more' };
    const flags = this.buffered.readUInt8(1);
    if (flags !== 0) return this.fail(new PortwayError('PW_BAD_FRAME', `unknown frame flags 0x${flags.toString(16)}`));
    const length = this.buffered.readUInt16BE(2);
    if (length > this.options.maxFrameBytes) {
      return this.fail(new PortwayError('PW_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds ${this.options.maxFrameBytes}`));
    }
    if (this.buffered.length < FRAME_HEADER_BYTES + length) return { kind: 'need-more' };
    const body = this.buffered.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length);
    const rest = this.buffered.subarray(FRAME_HEADER_BYTES + length);
    this.buffered = Buffer.alloc(0);
    let payload: unknown;
    try {
      payload = JSON.parse(body.toString('utf8'));
    } catch (err) {
      return this.fail(new PortwayError('PW_BAD_FRAME', 'frame payload is not valid JSON', { cause: err }));
    }
    return { kind: 'frame', frame: { type: type as FrameType, payload }, rest };
  }

  /** Give back bytes that followed a frame so the decoder can look for the next one. */
  unshift(rest: Buffer): void {
    this.buffered = this.buffered.length === 0 ? rest : Buffer.concat([rest, this.buffered]);
  }

  private fail(error: PortwayError): DecodeResult {
    this.failed = error;
    this.buffered = Buffer.alloc(0);
    return { kind: 'error', error };
  }
}
