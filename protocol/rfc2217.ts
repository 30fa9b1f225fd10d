/**
 * RFC 2217 (Telnet COM-PORT-OPTION, option 44) as Portway's agent serves it for `serial` services in mode
 * `rfc2217`: pure parts only (request parsing, reply encoding, Telnet option negotiation). The agent applies
 * the requests to the port (agent/src/streams/rfc2217-link.ts).
 *
 *   client -> agent  IAC SB 44 <command 1..12> <value> IAC SE
 *   agent  -> client IAC SB 44 <command + 100> <value> IAC SE      (the value in effect after the request)
 *
 *   command              value (client)                     agent's answer
 *   1  SET-BAUDRATE      u32 BE, 0 = ask                    the baud rate in effect
 *   2  SET-DATASIZE      u8 5..8, 0 = ask                   the data bits in effect
 *   3  SET-PARITY        u8 1 none 2 odd 3 even, 0 = ask    the parity in effect (mark/space are refused)
 *   4  SET-STOPSIZE      u8 1 one 2 two, 0 = ask            the stop bits in effect (1.5 is refused)
 *   5  SET-CONTROL       u8 (flow control, BREAK, DTR, RTS) the state in effect (see controlReply)
 *   6  NOTIFY-LINESTATE  (poll)                             line state (0x60: transmitter empty)
 *   7  NOTIFY-MODEMSTATE (poll)                             modem state (CTS 0x10, DSR 0x20, RI 0x40, CD 0x80)
 *   8/9 FLOWCONTROL-SUSPEND/RESUME                         none (the agent stops/starts sending port data)
 *   10/11 SET-LINESTATE-MASK/SET-MODEMSTATE-MASK u8        the mask
 *   12 PURGE-DATA        u8 1 rx 2 tx 3 both                the value
 *
 * A request the port cannot honour is answered with the value in effect, which pyserial reports as "remote
 * rejected value". A malformed request (wrong length, unknown command or value) is a `bad` result with a
 * reason; the agent logs it (PW_TELNET_INVALID) and answers where the RFC has an answer.
 *
 * Version history: 1 (this layout).
 */
import { encodeNegotiation, encodeSubnegotiation, TELNET_OPTION, type NegotiationVerb } from './telnet-codec';

export const COM_PORT = { SET_BAUDRATE: 1, SET_DATASIZE: 2, SET_PARITY: 3, SET_STOPSIZE: 4, SET_CONTROL: 5, NOTIFY_LINESTATE: 6, NOTIFY_MODEMSTATE: 7, FLOWCONTROL_SUSPEND: 8, FLOWCONTROL_RESUME: 9, SET_LINESTATE_MASK: 10, SET_MODEMSTATE_MASK: 11, PURGE_DATA: 12 } as const;
export const SERVER_OFFSET = 100;
export const MODEMSTATE = { CTS: 0x10, DSR: 0x20, RI: 0x40, CD: 0x80 } as const;
/** Line state the agent reports: transmit holding and shift registers empty (a Linux tty has no other). */
export const LINESTATE_IDLE = 0x60;

export type Parity = 'none' | 'odd' | 'even';
export type FlowControl = 'none' | 'xonxoff' | 'rtscts';
const PARITY_CODES: Record<Parity, number> = { none: 1, odd: 2, even: 3 };
const FLOW_CODES: Record<FlowControl, number> = { none: 1, xonxoff: 2, rtscts: 3 };

/** The line settings and output lines one port has (what RFC 2217 can ask for and change). */
export interface LineState {
  readonly baudRate: number;
  readonly dataBits: 5 | 6 | 7 | 8;
  readonly parity: Parity;
  readonly stopBits: 1 | 2;
  readonly flow: FlowControl;
  readonly dtr: boolean;
  readonly rts: boolean;
  readonly brk: boolean;
}

/** What a client's COM-PORT-OPTION subnegotiation asks for. `change` fields are absent for a query. */
export type ComPortRequest =
  | { readonly kind: 'line'; readonly command: 1 | 2 | 3 | 4; readonly change?: Partial<Pick<LineState, 'baudRate' | 'dataBits' | 'parity' | 'stopBits'>>; readonly bad?: string }
  | { readonly kind: 'control'; readonly value: number; readonly change?: Partial<Pick<LineState, 'flow' | 'dtr' | 'rts' | 'brk'>>; readonly bad?: string }
  | { readonly kind: 'notify-linestate' }
  | { readonly kind: 'notify-modemstate' }
  | { readonly kind: 'flow-suspend' | 'flow-resume' }
  | { readonly kind: 'mask'; readonly command: 10 | 11; readonly mask: number }
  | { readonly kind: 'purge'; readonly value: 1 | 2 | 3 }
  | { readonly kind: 'bad'; readonly reason: string };

const DATA_BITS = new Set([5, 6, 7, 8]);

/** Parse the payload of a COM-PORT-OPTION subnegotiation (after the option byte 44). */
export function parseComPortRequest(payload: Buffer): ComPortRequest {
  const command = payload[0];
  const value = payload.subarray(1);
  if (command === undefined) return { kind: 'bad', reason: 'empty COM-PORT-OPTION subnegotiation' };
  const byteValue = (): number | undefined => (value.length === 1 ? value[0] : undefined);
  switch (command) {
    case COM_PORT.SET_BAUDRATE: {
      if (value.length !== 4) return { kind: 'bad', reason: `SET-BAUDRATE needs 4 bytes, got ${value.length}` };
      const baudRate = value.readUInt32BE(0);
      return baudRate === 0 ? { kind: 'line', command } : { kind: 'line', command, change: { baudRate } };
    }
    case COM_PORT.SET_DATASIZE: {
      const v = byteValue();
      if (v === undefined) return { kind: 'bad', reason: `SET-DATASIZE needs 1 byte, got ${value.length}` };
      if (v === 0) return { kind: 'line', command };
      return DATA_BITS.has(v) ? { kind: 'line', command, change: { dataBits: v as 5 | 6 | 7 | 8 } } : { kind: 'line', command, bad: `data size ${v} is not 5..8` };
    }
    case COM_PORT.SET_PARITY: {
      const v = byteValue();
      if (v === undefined) return { kind: 'bad', reason: `SET-PARITY needs 1 byte, got ${value.length}` };
      if (v === 0) return { kind: 'line', command };
      const parity = (Object.keys(PARITY_CODES) as Parity[]).find((p) => PARITY_CODES[p] === v);
      return parity ? { kind: 'line', command, change: { parity } } : { kind: 'line', command, bad: `parity ${v} is not supported (1 none, 2 odd, 3 even)` };
    }
    case COM_PORT.SET_STOPSIZE: {
      const v = byteValue();
      if (v === undefined) return { kind: 'bad', reason: `SET-STOPSIZE needs 1 byte, got ${value.length}` };
      if (v === 0) return { kind: 'line', command };
      return v === 1 || v === 2 ? { kind: 'line', command, change: { stopBits: v } } : { kind: 'line', command, bad: `stop size ${v} is not supported (1 or 2)` };
    }
    case COM_PORT.SET_CONTROL: {
      const v = byteValue();
      if (v === undefined) return { kind: 'bad', reason: `SET-CONTROL needs 1 byte, got ${value.length}` };
      return { kind: 'control', value: v, ...controlChange(v) };
    }
    case COM_PORT.NOTIFY_LINESTATE:
      return { kind: 'notify-linestate' };
    case COM_PORT.NOTIFY_MODEMSTATE:
      return { kind: 'notify-modemstate' };
    case COM_PORT.FLOWCONTROL_SUSPEND:
      return { kind: 'flow-suspend' };
    case COM_PORT.FLOWCONTROL_RESUME:
      return { kind: 'flow-resume' };
    case COM_PORT.SET_LINESTATE_MASK:
    case COM_PORT.SET_MODEMSTATE_MASK: {
      const v = byteValue();
      return v === undefined ? { kind: 'bad', reason: `SET-*STATE-MASK needs 1 byte, got ${value.length}` } : { kind: 'mask', command, mask: v };
    }
    case COM_PORT.PURGE_DATA: {
      const v = byteValue();
      return v === 1 || v === 2 || v === 3 ? { kind: 'purge', value: v } : { kind: 'bad', reason: `PURGE-DATA value ${String(v)} is not 1..3` };
    }
    default:
      return { kind: 'bad', reason: `unknown COM-PORT-OPTION command ${command}` };
  }
}

function controlChange(v: number): { change?: Partial<Pick<LineState, 'flow' | 'dtr' | 'rts' | 'brk'>>; bad?: string } {
  switch (v) {
    case 1:
      return { change: { flow: 'none' } };
    case 2:
      return { change: { flow: 'xonxoff' } };
    case 3:
      return { change: { flow: 'rtscts' } };
    case 5:
      return { change: { brk: true } };
    case 6:
      return { change: { brk: false } };
    case 8:
      return { change: { dtr: true } };
    case 9:
      return { change: { dtr: false } };
    case 11:
      return { change: { rts: true } };
    case 12:
      return { change: { rts: false } };
    case 0:
    case 4:
    case 7:
    case 10:
    case 13:
    case 14:
      return {};
    default:
      return { bad: `SET-CONTROL value ${v} is not supported` };
  }
}

/** The SET-CONTROL value to answer `request` with, from the state in effect. */
export function controlReply(value: number, state: LineState): number {
  if (value === 4 || value === 5 || value === 6) return state.brk ? 5 : 6;
  if (value === 7 || value === 8 || value === 9) return state.dtr ? 8 : 9;
  if (value === 10 || value === 11 || value === 12) return state.rts ? 11 : 12;
  // Inbound flow control (13..16) follows the outbound setting; only "as outbound" exists on a Linux tty.
  if (value >= 13 && value <= 16) return 14;
  return FLOW_CODES[state.flow];
}

/** The answer to a SET-BAUDRATE/DATASIZE/PARITY/STOPSIZE request: the value in effect. */
export function encodeLineReply(command: 1 | 2 | 3 | 4, state: LineState): Buffer {
  if (command === COM_PORT.SET_BAUDRATE) {
    const value = Buffer.alloc(4);
    value.writeUInt32BE(state.baudRate, 0);
    return encodeComPort(command + SERVER_OFFSET, value);
  }
  const value = command === COM_PORT.SET_DATASIZE ? state.dataBits : command === COM_PORT.SET_PARITY ? PARITY_CODES[state.parity] : state.stopBits;
  return encodeComPort(command + SERVER_OFFSET, Buffer.from([value]));
}

/** IAC SB 44 <command> <value> IAC SE (command already server-side, i.e. + 100). */
export function encodeComPort(command: number, value: Buffer = Buffer.alloc(0)): Buffer {
  return encodeSubnegotiation(TELNET_OPTION.COM_PORT, Buffer.concat([Buffer.from([command]), value]));
}

/**
 * Telnet option negotiation for the agent's side (RFC 1143's rules, simplified to options that are only
 * ever switched on): which options it enables for itself (WILL) and asks of the client (DO), and the answer
 * to each WILL/WONT/DO/DONT it receives. Pure: returns the bytes to send; never answers a verb that merely
 * confirms its own request, so two such peers cannot loop.
 */
export class TelnetNegotiation {
  /** Options enabled on our side (we WILL) and the client's side (they WILL). */
  private readonly ours = new Map<number, 'requested' | 'on' | 'off'>();
  private readonly theirs = new Map<number, 'requested' | 'on' | 'off'>();

  constructor(
    private readonly supportedOurs: readonly number[] = [TELNET_OPTION.BINARY, TELNET_OPTION.SGA, TELNET_OPTION.COM_PORT],
    private readonly supportedTheirs: readonly number[] = [TELNET_OPTION.BINARY, TELNET_OPTION.SGA, TELNET_OPTION.COM_PORT],
  ) {}

  /** The opening requests: WILL and DO for BINARY and SGA, WILL COM-PORT-OPTION. */
  start(): Buffer {
    const out: Buffer[] = [];
    for (const option of [TELNET_OPTION.BINARY, TELNET_OPTION.SGA, TELNET_OPTION.COM_PORT]) {
      this.ours.set(option, 'requested');
      out.push(encodeNegotiation('WILL', option));
    }
    for (const option of [TELNET_OPTION.BINARY, TELNET_OPTION.SGA]) {
      this.theirs.set(option, 'requested');
      out.push(encodeNegotiation('DO', option));
    }
    return Buffer.concat(out);
  }

  isOn(side: 'ours' | 'theirs', option: number): boolean {
    return (side === 'ours' ? this.ours : this.theirs).get(option) === 'on';
  }

  /** Answer one received verb; `enabled` tells whether the option just switched on. */
  receive(verb: NegotiationVerb, option: number): { reply?: Buffer; enabled: boolean } {
    const isAboutUs = verb === 'DO' || verb === 'DONT';
    const table = isAboutUs ? this.ours : this.theirs;
    const supported = (isAboutUs ? this.supportedOurs : this.supportedTheirs).includes(option);
    const current = table.get(option) ?? 'off';
    const yes: NegotiationVerb = isAboutUs ? 'WILL' : 'DO';
    const no: NegotiationVerb = isAboutUs ? 'WONT' : 'DONT';
    if (verb === 'WILL' || verb === 'DO') {
      if (!supported) return { reply: encodeNegotiation(no, option), enabled: false };
      if (current === 'on') return { enabled: false };
      table.set(option, 'on');
      return { reply: current === 'requested' ? undefined : encodeNegotiation(yes, option), enabled: true };
    }
    if (current === 'off') return { enabled: false };
    table.set(option, 'off');
    return { reply: current === 'requested' ? undefined : encodeNegotiation(no, option), enabled: false };
  }
}
