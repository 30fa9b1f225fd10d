/**
 * The outer TLS of a data socket ends at a handoff marker; after it the TCP connection carries the inner
 * end-to-end TLS session directly.
 *
 *   each direction:  TLS records (handshake, CLIENT_OPEN / RELAY_STATUS / AGENT_HELLO / STREAM_OPEN)
 *                    HANDOFF = 00 50 57 48 4f 46 46 01   ("\0PWHOFF" + version 1; 8 bytes, at a record boundary)
 *                    raw bytes: the inner TLS 1.3 session between forward proxy and agent
 *
 * A TLS record starts with its content type (20..23 here), so a marker starting with 0x00 can never be
 * mistaken for one. Why hand off at all: the inner session already encrypts and authenticates every
 * byte end to end, so a second layer on each link only costs CPU (two AES-GCM passes and two record
 * layers at the relay, one more at each end; see docs/protocol.md "Handoff"). The outer TLS still
 * authenticates both peers to the relay and protects the request (device, service, status).
 *
 * TlsRecordScanner walks a byte stream record by record without buffering: everything before the marker
 * is passed through for the TLS layer, the marker is consumed, and what follows is returned as `rest`.
 * parseClientHelloAlpn reads the ALPN list from a ClientHello, so the relay knows before the handshake
 * which connections are data sockets (they get the handoff-aware TLS layer; MQTT and HTTP keep Node's
 * native one).
 */
import { PortwayError } from './errors';

export const HANDOFF_MARKER = Buffer.from([0x00, 0x50, 0x57, 0x48, 0x4f, 0x46, 0x46, 0x01]);
export const TLS_RECORD_HEADER_BYTES = 5;
/** TLS 1.3 ciphertext records carry at most 2^14 + 256 bytes. */
export const MAX_TLS_RECORD_BYTES = 16384 + 256;

const CONTENT_CHANGE_CIPHER_SPEC = 20;
const CONTENT_APPLICATION_DATA = 23;

export type ScanResult =
  | { readonly kind: 'tls'; readonly pass: Buffer }
  | { readonly kind: 'handoff'; readonly pass: Buffer; readonly rest: Buffer }
  | { readonly kind: 'error'; readonly pass: Buffer; readonly error: PortwayError };

export class TlsRecordScanner {
  /** Bytes of the current record's body still to come. */
  private remaining = 0;
  /** Header bytes of the record (or marker) being read, when it is split across inputs. */
  private readonly header = Buffer.alloc(HANDOFF_MARKER.length);
  private headerHave = 0;
  private state: 'records' | 'handed-off' | 'failed' = 'records';

  /**
   * Scan one input. `pass` is the prefix of `input` that belongs to the TLS layer (feed it on); it never
   * includes marker bytes. After 'handoff' or 'error' the scanner takes no more input.
   */
  scan(input: Buffer): ScanResult {
    if (this.state !== 'records') return this.fail(Buffer.alloc(0), 'input after the end of the TLS layer');
    let offset = 0;
    while (offset < input.length) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, input.length - offset);
        offset += take;
        this.remaining -= take;
        continue;
      }
      const markerStart = offset - this.headerHave;
      const first = this.headerHave > 0 ? this.header[0] : input[offset];
      const need = first === 0x00 ? HANDOFF_MARKER.length : TLS_RECORD_HEADER_BYTES;
      const take = Math.min(need - this.headerHave, input.length - offset);
      input.copy(this.header, this.headerHave, offset, offset + take);
      this.headerHave += take;
      offset += take;
      if (first === 0x00) {
        const have = this.header.subarray(0, this.headerHave);
        if (!have.equals(HANDOFF_MARKER.subarray(0, this.headerHave))) return this.fail(input.subarray(0, Math.max(0, markerStart)), 'bad handoff marker');
        if (this.headerHave < need) return { kind: 'tls', pass: input.subarray(0, Math.max(0, markerStart)) };
        this.state = 'handed-off';
        this.headerHave = 0;
        return { kind: 'handoff', pass: input.subarray(0, Math.max(0, markerStart)), rest: input.subarray(offset) };
      }
      if (this.headerHave < need) break;
      this.headerHave = 0;
      const before = input.subarray(0, Math.max(0, offset - need));
      const type = this.header[0] as number;
      const length = this.header.readUInt16BE(3);
      if (type < CONTENT_CHANGE_CIPHER_SPEC || type > CONTENT_APPLICATION_DATA) return this.fail(before, `not a TLS record (content type ${type})`);
      if (this.header[1] !== 0x03) return this.fail(before, 'not a TLS record (version)');
      if (length > MAX_TLS_RECORD_BYTES) return this.fail(before, `TLS record of ${length} bytes exceeds ${MAX_TLS_RECORD_BYTES}`);
      this.remaining = length;
    }
    // Everything here belongs to TLS records (a marker returns above, as soon as its first byte is seen).
    return { kind: 'tls', pass: input };
  }

  private fail(pass: Buffer, reason: string): ScanResult {
    this.state = 'failed';
    return { kind: 'error', pass, error: new PortwayError('PW_BAD_PREAMBLE', `data socket: ${reason}`) };
  }
}

export type ClientHelloAlpn =
  | { readonly kind: 'need-more' }
  /** `protocols` is empty when the ClientHello has no ALPN extension. */
  | { readonly kind: 'alpn'; readonly protocols: readonly string[] }
  /** Not a ClientHello this parser can read (garbage, or a ClientHello spread over several records). */
  | { readonly kind: 'unknown' };

const EXTENSION_ALPN = 16;

/**
 * The ALPN protocols a ClientHello offers, from the first TLS record on a connection. Needs the whole first
 * record (at most MAX_TLS_RECORD_BYTES + 5 bytes); answers 'unknown' for anything it cannot read, never throws.
 */
export function parseClientHelloAlpn(data: Buffer): ClientHelloAlpn {
  if (data.length < 1) return { kind: 'need-more' };
  if (data[0] !== 22) return { kind: 'unknown' };
  if (data.length < TLS_RECORD_HEADER_BYTES) return { kind: 'need-more' };
  const recordLength = data.readUInt16BE(3);
  if (recordLength > MAX_TLS_RECORD_BYTES || recordLength < 4) return { kind: 'unknown' };
  if (data.length < TLS_RECORD_HEADER_BYTES + recordLength) return { kind: 'need-more' };
  const record = data.subarray(TLS_RECORD_HEADER_BYTES, TLS_RECORD_HEADER_BYTES + recordLength);
  if (record[0] !== 1) return { kind: 'unknown' };
  const helloLength = record.readUIntBE(1, 3);
  if (helloLength + 4 > record.length) return { kind: 'unknown' };
  const hello = record.subarray(4, 4 + helloLength);
  const reader = new Reader(hello);
  if (!reader.skip(2 + 32)) return { kind: 'unknown' };
  if (!reader.skipVector(1) || !reader.skipVector(2) || !reader.skipVector(1)) return { kind: 'unknown' };
  if (reader.left === 0) return { kind: 'alpn', protocols: [] };
  const extensions = reader.vector(2);
  if (!extensions) return { kind: 'unknown' };
  const ext = new Reader(extensions);
  while (ext.left > 0) {
    const type = ext.u16();
    const body = ext.vector(2);
    if (type === undefined || !body) return { kind: 'unknown' };
    if (type !== EXTENSION_ALPN) continue;
    const list = new Reader(body).vector(2);
    if (!list) return { kind: 'unknown' };
    const names = new Reader(list);
    const protocols: string[] = [];
    while (names.left > 0) {
      const name = names.vector(1);
      if (!name || name.length === 0) return { kind: 'unknown' };
      protocols.push(name.toString('latin1'));
    }
    return { kind: 'alpn', protocols };
  }
  return { kind: 'alpn', protocols: [] };
}

class Reader {
  private offset = 0;
  constructor(private readonly buf: Buffer) {}

  get left(): number {
    return this.buf.length - this.offset;
  }

  skip(n: number): boolean {
    if (this.left < n) return false;
    this.offset += n;
    return true;
  }

  u16(): number | undefined {
    if (this.left < 2) return undefined;
    const v = this.buf.readUInt16BE(this.offset);
    this.offset += 2;
    return v;
  }

  vector(lengthBytes: 1 | 2): Buffer | undefined {
    if (this.left < lengthBytes) return undefined;
    const n = this.buf.readUIntBE(this.offset, lengthBytes);
    if (this.left < lengthBytes + n) return undefined;
    const v = this.buf.subarray(this.offset + lengthBytes, this.offset + lengthBytes + n);
    this.offset += lengthBytes + n;
    return v;
  }

  skipVector(lengthBytes: 1 | 2): boolean {
    return this.vector(lengthBytes) !== undefined;
  }
}
