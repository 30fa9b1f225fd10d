/**
 * Inbound size limits for one MQTT connection, checked on the raw bytes before aedes buffers a packet.
 *
 * MQTT 3.1.1 fixed header (every packet):
 *
 *   byte 0        packet type (high nibble) | flags (low nibble)
 *   bytes 1..4    remaining length, variable-byte integer: 7 bits per byte, least significant first,
 *                 high bit set = another byte follows; at most 4 bytes (max 268 435 455)
 *   then          `remaining length` bytes of variable header and payload
 *
 * aedes (through mqtt-packet) buffers a packet until all of its remaining length has arrived and has no
 * size option, so a header announcing 256 MiB would make it wait and buffer. The guard follows packet
 * boundaries incrementally (any chunking gives the same verdict) and fails as soon as a header announces a
 * packet larger than `maxPacketBytes`, or a length needs a fifth byte. Before the session is authenticated,
 * all bytes together are capped at `maxPreAuthBytes`.
 */

export type GuardVerdict = 'ok' | 'too_large' | 'malformed';

const MAX_LENGTH_BYTES = 4;

type GuardState =
  | { readonly kind: 'header' }
  | { readonly kind: 'length'; readonly value: number; readonly multiplier: number; readonly bytes: number }
  | { readonly kind: 'body'; readonly remaining: number };

/** Shared: the guard of every idle connection sits at a packet boundary. */
const AT_HEADER: GuardState = Object.freeze({ kind: 'header' });

export class PacketSizeGuard {
  private state: GuardState = AT_HEADER;
  private preAuthBytes = 0;
  private isAuthenticated = false;
  private failed: GuardVerdict = 'ok';

  constructor(private readonly limits: { readonly maxPacketBytes: number; readonly maxPreAuthBytes: number }) {
    for (const [key, value] of Object.entries(limits)) {
      if (!Number.isInteger(value) || value < 2) throw new RangeError(`${key} must be an integer >= 2`);
    }
  }

  /** Lift the pre-authentication cap (the broker accepted the CONNECT). */
  markAuthenticated(): void {
    this.isAuthenticated = true;
  }

  /** Account for the next inbound chunk; once the verdict is not 'ok' it stays so. */
  push(chunk: Uint8Array): GuardVerdict {
    if (this.failed !== 'ok') return this.failed;
    if (!this.isAuthenticated) {
      this.preAuthBytes += chunk.length;
      if (this.preAuthBytes > this.limits.maxPreAuthBytes) return this.fail('too_large');
    }
    let offset = 0;
    while (offset < chunk.length) {
      const state = this.state;
      if (state.kind === 'body') {
        const take = Math.min(state.remaining, chunk.length - offset);
        offset += take;
        this.state = state.remaining === take ? AT_HEADER : { kind: 'body', remaining: state.remaining - take };
      } else if (state.kind === 'header') {
        offset += 1;
        this.state = { kind: 'length', value: 0, multiplier: 1, bytes: 0 };
      } else {
        const byte = chunk[offset] ?? 0;
        offset += 1;
        const verdict = this.lengthByte(state, byte);
        if (verdict !== 'ok') return this.fail(verdict);
      }
    }
    return 'ok';
  }

  private lengthByte(state: Extract<GuardState, { kind: 'length' }>, byte: number): GuardVerdict {
    const value = state.value + (byte & 0x7f) * state.multiplier;
    const bytes = state.bytes + 1;
    if (byte & 0x80) {
      if (bytes === MAX_LENGTH_BYTES) return 'malformed';
      this.state = { kind: 'length', value, multiplier: state.multiplier * 128, bytes };
      return 'ok';
    }
    if (1 + bytes + value > this.limits.maxPacketBytes) return 'too_large';
    this.state = value === 0 ? AT_HEADER : { kind: 'body', remaining: value };
    return 'ok';
  }

  private fail(verdict: GuardVerdict): GuardVerdict {
    this.failed = verdict;
    return verdict;
  }
}
