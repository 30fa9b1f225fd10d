/**
 * End-to-end stream framing, inside the inner TLS session between the forward proxy and the agent.
 *
 *   agent -> client: one E2E_STATUS frame (data-frames.ts layout) before anything else.
 *   then both ways:  CHUNK = length (u32 BE, 1..MAX_E2E_CHUNK_BYTES) | length bytes of service data
 *                    FIN   = length 0 (u32 BE zero): the sender will send no more data (half-close)
 *
 * Why frame at all: TLS close_notify would say "clean end", but Node treats a TCP FIN without close_notify
 * as a clean end too, so a killed peer would look like a finished stream. With FIN frames, a stream whose
 * inner session ends before the FIN arrived was cut, and the receiving side resets its local connection
 * instead of passing on a false EOF.
 */
export const E2E_CHUNK_HEADER_BYTES = 4;
export const MAX_E2E_CHUNK_BYTES = 1024 * 1024;

const FIN = Buffer.alloc(E2E_CHUNK_HEADER_BYTES);

export function encodeChunkHeader(length: number): Buffer {
  if (!Number.isInteger(length) || length < 1 || length > MAX_E2E_CHUNK_BYTES) throw new RangeError(`chunk length ${length} out of range`);
  const header = Buffer.allocUnsafe(E2E_CHUNK_HEADER_BYTES);
  header.writeUInt32BE(length, 0);
  return header;
}

export function encodeFin(): Buffer {
  return FIN;
}

export type ChunkEvent = { readonly kind: 'data'; readonly data: Buffer } | { readonly kind: 'fin' } | { readonly kind: 'error'; readonly reason: string };

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

  /** Decode `input`; calls `emit` for each event in order. Returns false once FIN or an error was seen. */
  push(input: Buffer, emit: (event: ChunkEvent) => void): boolean {
    let offset = 0;
    while (offset < input.length) {
      if (this.state === 'ended' || this.state === 'failed') {
        this.state = 'failed';
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
      // header
      if (this.headerHave === 0 && input.length - offset >= E2E_CHUNK_HEADER_BYTES) {
        this.remaining = input.readUInt32BE(offset);
        offset += E2E_CHUNK_HEADER_BYTES;
      } else {
        const take = Math.min(E2E_CHUNK_HEADER_BYTES - this.headerHave, input.length - offset);
        input.copy(this.header, this.headerHave, offset, offset + take);
        this.headerHave += take;
        offset += take;
        if (this.headerHave < E2E_CHUNK_HEADER_BYTES) return true;
        this.headerHave = 0;
        this.remaining = this.header.readUInt32BE(0);
      }
      if (this.remaining === 0) {
        this.state = 'ended';
        emit({ kind: 'fin' });
        if (offset < input.length) {
          this.state = 'failed';
          emit({ kind: 'error', reason: 'data after FIN' });
        }
        return false;
      }
      if (this.remaining > MAX_E2E_CHUNK_BYTES) {
        this.state = 'failed';
        emit({ kind: 'error', reason: `chunk of ${this.remaining} bytes exceeds ${MAX_E2E_CHUNK_BYTES}` });
        return false;
      }
      this.state = 'payload';
    }
    return this.state === 'header' || this.state === 'payload';
  }
}
