/**
 * End-to-end stream framing, inside the inner TLS session between the forward proxy and the agent.
 *
 *   agent -> client: one E2E_STATUS frame (data-frames.ts layout) before anything else.
 *   then both ways:  CHUNK     = length (u32 BE, 1..MAX_E2E_CHUNK_BYTES) | length bytes of service data
 *                    FIN       = length 0 (u32 BE zero): the sender will send no more data (half-close)
 *                    HEARTBEAT = length 0xFFFFFFFF, no payload: "I am here"; sent by a side that has written
 *                                nothing for its heartbeat interval, also after its FIN (the peer may still
 *                                be sending), never after both FINs. It carries no data.
 *
 * Heartbeats make a dead path visible: after the handoff the relay splices TCP, and a path that goes silent
 * without a FIN or RST (a blackholed link, a NAT that dropped the mapping) would otherwise hang the stream
 * until the application gives up. The device announces its interval in E2E_STATUS (`heartbeatMs`); each side
 * that reads with nothing of its own holding it back and hears nothing for 3 intervals resets the stream.
 *
 * Why frame at all: TLS close_notify would say "clean end", but Node treats a TCP FIN without close_notify
 * as a clean end too, so a killed peer would look like a finished stream. With FIN frames, a stream whose
 * inner session ends before the FIN arrived was cut, and the receiving side resets its local connection
 * instead of passing on a false EOF.
 */
export const E2E_CHUNK_HEADER_BYTES = 4;
export const MAX_E2E_CHUNK_BYTES = 1024 * 1024;

const FIN = Buffer.alloc(E2E_CHUNK_HEADER_BYTES);
const HEARTBEAT_LENGTH = 0xffff_ffff;
const HEARTBEAT = Buffer.from([0xff, 0xff, 0xff, 0xff]);

export function encodeChunkHeader(length: number): Buffer {
  if (!Number.isInteger(length) || length < 1 || length > MAX_E2E_CHUNK_BYTES) throw new RangeError(`chunk length ${length} out of range`);
  const header = Buffer.allocUnsafe(E2E_CHUNK_HEADER_BYTES);
  header.writeUInt32BE(length, 0);
  return header;
}

export function encodeFin(): Buffer {
  return FIN;
}

export function encodeHeartbeat(): Buffer {
  return HEARTBEAT;
}

export type ChunkEvent =
  | { readonly kind: 'data'; readonly data: Buffer }
  | { readonly kind: 'fin' }
  | { readonly kind: 'heartbeat' }
  | { readonly kind: 'error'; readonly reason: string };

/**
 * Incremental chunk decoder. It never copies payload bytes that arrive whole inside one input buffer;
 * only a header split across inputs is reassembled. Payload pieces are emitted as they arrive (a chunk
 * may be delivered in several pieces), so memory held is at most one header.
 */
export class ChunkDecoder {
  private header = Buffer.alloc(E2E_CHUNK_HEADER_BYTES);
  private headerHave = 0;
  private remaining = 0;
  private state: 'header' | 'payload' | 'ended' | 'failed' = 'header';

  get isEnded(): boolean {
    return this.state === 'ended';
  }

  /**
   * Decode `input`; calls `emit` for each event in order. Returns false once an error was seen, or once FIN
   * was seen and nothing but heartbeats may follow.
   */
  push(input: Buffer, emit: (event: ChunkEvent) => void): boolean {
    let offset = 0;
    while (offset < input.length) {
      if (this.state === 'failed') {
        emit({ kind: 'error', reason: 'data after FIN' });
        return false;
      }
      if (this.state === 'payload') {
        const take = Math.min(this.remaining, input.length - offset);
        emit({ kind: 'data', data: input.subarray(offset, offset + take) });
        offset += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'header';
        continue;
      }
      if (this.state === 'ended') {
        // After FIN only heartbeats may come: a byte other than 0xFF is refused at once, not after 4 bytes.
        if (input[offset] !== 0xff) {
          this.state = 'failed';
          emit({ kind: 'error', reason: 'data after FIN' });
          return false;
        }
        offset += 1;
        this.headerHave += 1;
        if (this.headerHave === E2E_CHUNK_HEADER_BYTES) {
          this.headerHave = 0;
          emit({ kind: 'heartbeat' });
        }
        continue;
      }
      let length: number;
      if (this.headerHave === 0 && input.length - offset >= E2E_CHUNK_HEADER_BYTES) {
        length = input.readUInt32BE(offset);
        offset += E2E_CHUNK_HEADER_BYTES;
      } else {
        const take = Math.min(E2E_CHUNK_HEADER_BYTES - this.headerHave, input.length - offset);
        input.copy(this.header, this.headerHave, offset, offset + take);
        this.headerHave += take;
        offset += take;
        if (this.headerHave < E2E_CHUNK_HEADER_BYTES) return true;
        this.headerHave = 0;
        length = this.header.readUInt32BE(0);
      }
      if (length === HEARTBEAT_LENGTH) {
        emit({ kind: 'heartbeat' });
        continue;
      }
      if (length === 0) {
        this.state = 'ended';
        emit({ kind: 'fin' });
        continue;
      }
      if (length > MAX_E2E_CHUNK_BYTES) {
        this.state = 'failed';
        emit({ kind: 'error', reason: `chunk of ${length} bytes exceeds ${MAX_E2E_CHUNK_BYTES}` });
        return false;
      }
      this.remaining = length;
      this.state = 'payload';
    }
    return this.state === 'header' || this.state === 'payload';
  }
}
