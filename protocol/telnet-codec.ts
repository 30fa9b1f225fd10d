/**
 * Telnet (RFC 854/855) framing, as RFC 2217 serial streams use it: the bytes of a `serial` service in mode
 * `rfc2217` are a Telnet stream inside the end-to-end stream (inside CHUNK/FIN framing, inside inner TLS).
 *
 *   data byte          any byte but 0xFF; 0xFF itself is sent doubled: IAC IAC
 *   IAC cmd            cmd in 0xF1..0xF9 (NOP, DM, BRK, IP, AO, AYT, EC, EL, GA): a command without option
 *   IAC WILL|WONT|DO|DONT option                  option negotiation (RFC 855)
 *   IAC SB option payload... IAC SE               subnegotiation; 0xFF in the payload is doubled
 *
 * Decoding is incremental: any chunking, one byte at a time included, yields the same events (data may be
 * split differently). Nothing a peer sends fails the decoder: malformed input (an unknown command byte after
 * IAC, SE without SB, another command inside a subnegotiation, a subnegotiation over
 * MAX_SUBNEGOTIATION_BYTES) yields an `error` event with a reason, the offending command is dropped and
 * decoding goes on; memory held is at most one subnegotiation payload.
 *
 * Version history: 1 (this layout).
 */
export const IAC = 0xff;
export const DONT = 0xfe;
export const DO = 0xfd;
export const WONT = 0xfc;
export const WILL = 0xfb;
export const SB = 0xfa;
export const SE = 0xf0;
/** Telnet options Portway's RFC 2217 server speaks. */
export const TELNET_OPTION = { BINARY: 0, ECHO: 1, SGA: 3, COM_PORT: 44 } as const;
/** Longest subnegotiation payload kept (RFC 2217's longest is 5 bytes: command and a u32 baud rate). */
export const MAX_SUBNEGOTIATION_BYTES = 64;

export type NegotiationVerb = 'WILL' | 'WONT' | 'DO' | 'DONT';
const VERBS: Record<number, NegotiationVerb> = { [WILL]: 'WILL', [WONT]: 'WONT', [DO]: 'DO', [DONT]: 'DONT' };
const VERB_BYTES: Record<NegotiationVerb, number> = { WILL, WONT, DO, DONT };

export type TelnetEvent =
  | { readonly kind: 'data'; readonly data: Buffer }
  | { readonly kind: 'negotiate'; readonly verb: NegotiationVerb; readonly option: number }
  | { readonly kind: 'subnegotiation'; readonly option: number; readonly payload: Buffer }
  | { readonly kind: 'command'; readonly command: number }
  | { readonly kind: 'error'; readonly reason: string };

type State = 'data' | 'iac' | 'verb' | 'sb-option' | 'sb' | 'sb-iac' | 'sb-skip' | 'sb-skip-iac';

const hex = (byte: number): string => `0x${byte.toString(16).padStart(2, '0')}`;

export class TelnetDecoder {
  private state: State = 'data';
  private verb: NegotiationVerb = 'WILL';
  private option = 0;
  private readonly sb = Buffer.alloc(MAX_SUBNEGOTIATION_BYTES);
  private sbLength = 0;

  /** Decode `input`; calls `emit` for each event, in order. Data events are views of `input` where possible. */
  push(input: Buffer, emit: (event: TelnetEvent) => void): void {
    let runStart = -1;
    const flush = (end: number): void => {
      if (runStart >= 0 && end > runStart) emit({ kind: 'data', data: input.subarray(runStart, end) });
      runStart = -1;
    };
    for (let i = 0; i < input.length; i++) {
      const byte = input[i] as number;
      switch (this.state) {
        case 'data':
          if (byte === IAC) {
            flush(i);
            this.state = 'iac';
          } else if (runStart < 0) runStart = i;
          break;
        case 'iac':
          this.state = 'data';
          if (byte === IAC) emit({ kind: 'data', data: Buffer.from([IAC]) });
          else if (byte in VERBS) {
            this.verb = VERBS[byte] as NegotiationVerb;
            this.state = 'verb';
          } else if (byte === SB) this.state = 'sb-option';
          else if (byte === SE) emit({ kind: 'error', reason: 'IAC SE without a subnegotiation' });
          else if (byte > SE) emit({ kind: 'command', command: byte });
          else emit({ kind: 'error', reason: `unknown Telnet command ${hex(byte)} after IAC` });
          break;
        case 'verb':
          this.state = 'data';
          emit({ kind: 'negotiate', verb: this.verb, option: byte });
          break;
        case 'sb-option':
          if (byte === IAC) {
            emit({ kind: 'error', reason: 'IAC SB without an option' });
            this.state = 'iac';
          } else {
            this.option = byte;
            this.sbLength = 0;
            this.state = 'sb';
          }
          break;
        case 'sb':
          if (byte === IAC) this.state = 'sb-iac';
          else this.appendSb(byte, emit);
          break;
        case 'sb-iac':
          if (byte === IAC) {
            this.state = 'sb';
            this.appendSb(IAC, emit);
          } else if (byte === SE) {
            this.state = 'data';
            emit({ kind: 'subnegotiation', option: this.option, payload: Buffer.from(this.sb.subarray(0, this.sbLength)) });
          } else {
            // RFC 855 allows only IAC IAC and IAC SE inside a subnegotiation: drop it, read the byte as a command.
            emit({ kind: 'error', reason: `IAC ${hex(byte)} inside a subnegotiation of option ${this.option}` });
            this.state = 'iac';
            i--;
          }
          break;
        case 'sb-skip':
          if (byte === IAC) this.state = 'sb-skip-iac';
          break;
        case 'sb-skip-iac':
          this.state = byte === SE ? 'data' : 'sb-skip';
          break;
      }
    }
    if (this.state === 'data') flush(input.length);
  }

  /** The stream ended: report an unfinished command or subnegotiation. Resets the decoder. */
  end(emit: (event: TelnetEvent) => void): void {
    if (this.state !== 'data') emit({ kind: 'error', reason: this.state.startsWith('sb') ? 'stream ended inside a subnegotiation' : 'stream ended inside a Telnet command' });
    this.state = 'data';
    this.sbLength = 0;
  }

  private appendSb(byte: number, emit: (event: TelnetEvent) => void): void {
    if (this.sbLength === MAX_SUBNEGOTIATION_BYTES) {
      emit({ kind: 'error', reason: `subnegotiation of option ${this.option} longer than ${MAX_SUBNEGOTIATION_BYTES} bytes` });
      this.state = byte === IAC ? 'sb-skip-iac' : 'sb-skip';
      return;
    }
    this.sb[this.sbLength++] = byte;
  }
}

/** Data bytes for a Telnet stream: every 0xFF doubled. Returns the input itself when it holds none. */
export function escapeIac(data: Buffer): Buffer {
  let count = 0;
  for (const byte of data) if (byte === IAC) count++;
  if (count === 0) return data;
  const out = Buffer.allocUnsafe(data.length + count);
  let j = 0;
  for (const byte of data) {
    out[j++] = byte;
    if (byte === IAC) out[j++] = IAC;
  }
  return out;
}

export function encodeNegotiation(verb: NegotiationVerb, option: number): Buffer {
  return Buffer.from([IAC, VERB_BYTES[verb], option]);
}

/** Option 255 cannot be sent: the decoder reads IAC SB IAC as a subnegotiation without an option. */
export function encodeSubnegotiation(option: number, payload: Buffer): Buffer {
  if (!Number.isInteger(option) || option < 0 || option > 254) throw new RangeError(`subnegotiation option ${option} out of range 0..254`);
  return Buffer.concat([Buffer.from([IAC, SB, option]), escapeIac(payload), Buffer.from([IAC, SE])]);
}
