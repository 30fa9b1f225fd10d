/**
 * UDP datagram framing, carried as service bytes inside an end-to-end stream (inside the CHUNK/FIN framing
 * of e2e-frames.ts, inside the inner TLS session). One stream is one UDP session: one client source address
 * at the forward proxy, one connected UDP socket toward the service at the agent.
 *
 *   DATAGRAM (both ways, any number, back to back in the stream's bytes):
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                 length (u32 BE, 0..65507)                     |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |        payload: length bytes, one whole UDP datagram ...      |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * - A zero-length datagram is a valid datagram (UDP allows it), not an end marker: the session ends with the
 *   stream's FIN (e2e-frames.ts) after the idle timeout or when either side closes.
 * - A frame whose length exceeds MAX_DATAGRAM_BYTES (65,507, the largest UDP payload over IPv4) is oversized:
 *   its payload is skipped without being buffered, counted, and decoding goes on with the next frame.
 * - Bytes of an unfinished frame when the stream ends are a truncated datagram: dropped and counted.
 *   Nothing a peer sends can fail the decoder, so bad input costs a datagram, never the session.
 *
 * Who speaks which mode: the forward proxy offers the ALPN id E2E_ALPN_DATAGRAMS in the inner TLS handshake
 * (integrity-protected, so the relay cannot change it); a stream without it is a TCP stream. The agent
 * compares that mode with its service's type and refuses a mismatch in E2E_STATUS (PW_SERVICE_TYPE_MISMATCH).
 *
 * Version history: 1 (this layout).
 */
export const DATAGRAM_HEADER_BYTES = 4;
/** 65,535 - 8 (UDP header) - 20 (IPv4 header). */
export const MAX_DATAGRAM_BYTES = 65_507;
/** Inner-TLS ALPN id of a datagram (UDP) stream. */
export const E2E_ALPN_DATAGRAMS = 'portway-datagrams/1';

/** Encode one datagram frame (header and payload in one buffer, so it crosses the pump as one piece). */
export function encodeDatagram(payload: Buffer): Buffer {
  if (payload.length > MAX_DATAGRAM_BYTES) throw new RangeError(`datagram of ${payload.length} bytes exceeds ${MAX_DATAGRAM_BYTES}`);
  const frame = Buffer.allocUnsafe(DATAGRAM_HEADER_BYTES + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  payload.copy(frame, DATAGRAM_HEADER_BYTES);
  return frame;
}

export type DatagramDropReason = 'oversized' | 'truncated';

export type DatagramEvent = { readonly kind: 'datagram'; readonly data: Buffer } | { readonly kind: 'dropped'; readonly reason: DatagramDropReason; readonly bytes: number };

/**
 * Incremental datagram decoder. A datagram that arrives whole inside one input is emitted as a view of it,
 * without a copy; one split across inputs is assembled in a buffer of its announced length (never more than
 * MAX_DATAGRAM_BYTES). Memory held is at most one datagram.
 */
export class DatagramDecoder {
  private readonly header = Buffer.alloc(DATAGRAM_HEADER_BYTES);
  private headerHave = 0;
  /** Payload being assembled (state 'payload'), or undefined while skipping an oversized one. */
  private payload: Buffer | undefined;
  private payloadHave = 0;
  /** Bytes still to skip (state 'skip'). */
  private skipRemaining = 0;
  private skipTotal = 0;
  private state: 'header' | 'payload' | 'skip' = 'header';

  /** Decode `input`; calls `emit` for each datagram or drop, in order. */
  push(input: Buffer, emit: (event: DatagramEvent) => void): void {
    let offset = 0;
    while (offset < input.length) {
      if (this.state === 'skip') {
        const take = Math.min(this.skipRemaining, input.length - offset);
        offset += take;
        this.skipRemaining -= take;
        if (this.skipRemaining === 0) {
          this.state = 'header';
          emit({ kind: 'dropped', reason: 'oversized', bytes: this.skipTotal });
        }
        continue;
      }
      if (this.state === 'payload') {
        const payload = this.payload as Buffer;
        const take = Math.min(payload.length - this.payloadHave, input.length - offset);
        input.copy(payload, this.payloadHave, offset, offset + take);
        this.payloadHave += take;
        offset += take;
        if (this.payloadHave === payload.length) {
          this.state = 'header';
          this.payload = undefined;
          emit({ kind: 'datagram', data: payload });
        }
        continue;
      }
      // header
      let length: number;
      if (this.headerHave === 0 && input.length - offset >= DATAGRAM_HEADER_BYTES) {
        length = input.readUInt32BE(offset);
        offset += DATAGRAM_HEADER_BYTES;
      } else {
        const take = Math.min(DATAGRAM_HEADER_BYTES - this.headerHave, input.length - offset);
        input.copy(this.header, this.headerHave, offset, offset + take);
        this.headerHave += take;
        offset += take;
        if (this.headerHave < DATAGRAM_HEADER_BYTES) return;
        this.headerHave = 0;
        length = this.header.readUInt32BE(0);
      }
      if (length > MAX_DATAGRAM_BYTES) {
        this.state = 'skip';
        this.skipRemaining = length;
        this.skipTotal = length;
        continue;
      }
      if (input.length - offset >= length) {
        emit({ kind: 'datagram', data: input.subarray(offset, offset + length) });
        offset += length;
        continue;
      }
      this.payload = Buffer.allocUnsafe(length);
      this.payloadHave = 0;
      this.state = 'payload';
    }
  }

  /** The stream ended: report an unfinished frame as a truncated (or oversized) drop. Resets the decoder. */
  end(emit: (event: DatagramEvent) => void): void {
    if (this.state === 'payload') emit({ kind: 'dropped', reason: 'truncated', bytes: this.payloadHave });
    else if (this.state === 'skip') emit({ kind: 'dropped', reason: 'oversized', bytes: this.skipTotal - this.skipRemaining });
    else if (this.headerHave > 0) emit({ kind: 'dropped', reason: 'truncated', bytes: this.headerHave });
    this.state = 'header';
    this.headerHave = 0;
    this.payload = undefined;
  }
}
