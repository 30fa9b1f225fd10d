/**
 * Telnet framing and RFC 2217 (protocol/telnet-codec.ts, protocol/rfc2217.ts) as byte-vector tables, each
 * vector fed whole, split at every byte boundary, one byte at a time and in random chunks: the same events
 * must come out of every chunking (data joined), garbage yields `error` events with a reason and never a
 * throw, and the negotiation answers pyserial's opening without loops.
 */
import {
  COM_PORT,
  controlReply,
  encodeComPort,
  encodeLineReply,
  encodeNegotiation,
  encodeSubnegotiation,
  escapeIac,
  MAX_SUBNEGOTIATION_BYTES,
  parseComPortRequest,
  TELNET_OPTION,
  TelnetDecoder,
  TelnetNegotiation,
  type LineState,
  type TelnetEvent,
} from '../../protocol';
import { bytes, chunkings, seededRandom } from '../helpers/chunking';

/** Events as strings, consecutive data joined (chunking may split data anywhere). */
function decode(chunks: readonly Buffer[]): string[] {
  const decoder = new TelnetDecoder();
  const out: string[] = [];
  let data: Buffer[] = [];
  const flush = (): void => {
    if (data.length) out.push(`data ${Buffer.concat(data).toString('hex')}`);
    data = [];
  };
  const emit = (e: TelnetEvent): void => {
    if (e.kind === 'data') {
      data.push(Buffer.from(e.data));
      return;
    }
    flush();
    if (e.kind === 'negotiate') out.push(`${e.verb} ${e.option}`);
    else if (e.kind === 'subnegotiation') out.push(`SB ${e.option} ${e.payload.toString('hex')}`);
    else if (e.kind === 'command') out.push(`command ${e.command}`);
    else out.push(`error ${e.reason}`);
  };
  for (const chunk of chunks) decoder.push(chunk, emit);
  decoder.end(emit);
  flush();
  return out;
}

const VECTORS: { name: string; input: Buffer; events: string[] }[] = [
  { name: 'plain data', input: bytes('616263'), events: ['data 616263'] },
  { name: 'IAC IAC is one 0xFF data byte', input: bytes('61 ffff 62'), events: ['data 61ff62'] },
  { name: 'every byte value, escaped', input: escapeIac(Buffer.from([...Array(256).keys()])), events: [`data ${Buffer.from([...Array(256).keys()]).toString('hex')}`] },
  { name: 'negotiation verbs', input: bytes('fffb00 fffc01 fffd2c fffe03'), events: ['WILL 0', 'WONT 1', 'DO 44', 'DONT 3'] },
  { name: 'a subnegotiation with a doubled IAC', input: bytes('fffa 2c 01 0001ffff00 fff0'), events: ['SB 44 010001ff00'] },
  { name: 'data around a subnegotiation', input: bytes('41 fffa2c0700fff0 42'), events: ['data 41', 'SB 44 0700', 'data 42'] },
  { name: 'commands without option', input: bytes('fff1 fff3 fff9'), events: ['command 241', 'command 243', 'command 249'] },
  { name: 'unknown command after IAC', input: bytes('41 ff41 42'), events: ['data 41', 'error unknown Telnet command 0x41 after IAC', 'data 42'] },
  { name: 'SE without SB', input: bytes('fff0 43'), events: ['error IAC SE without a subnegotiation', 'data 43'] },
  { name: 'IAC SB IAC', input: bytes('fffaff fb01'), events: ['error IAC SB without an option', 'WILL 1'] },
  { name: 'a command inside a subnegotiation ends it', input: bytes('fffa2c01 fffb03 44'), events: ['error IAC 0xfb inside a subnegotiation of option 44', 'WILL 3', 'data 44'] },
  {
    name: 'an over-long subnegotiation is skipped up to IAC SE',
    input: bytes('fffa2c', Buffer.alloc(MAX_SUBNEGOTIATION_BYTES + 10, 0x11), 'ffff fff0 45'),
    events: [`error subnegotiation of option 44 longer than ${MAX_SUBNEGOTIATION_BYTES} bytes`, 'data 45'],
  },
  { name: 'end inside a subnegotiation', input: bytes('fffa2c0100'), events: ['error stream ended inside a subnegotiation'] },
  { name: 'end after IAC', input: bytes('46 ff'), events: ['data 46', 'error stream ended inside a Telnet command'] },
  { name: 'end after a verb', input: bytes('fffd'), events: ['error stream ended inside a Telnet command'] },
];

describe('TelnetDecoder', () => {
  describe.each(VECTORS)('$name', ({ input, events }) => {
    it.each(chunkings(input).map((c) => [c.name, c.chunks] as const))('%s', (_name, chunks) => {
      expect(decode(chunks)).toEqual(events);
    });
  });

  it('never throws on random garbage, in any chunking, and keeps at most one subnegotiation', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = seededRandom(seed);
      const input = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 300) }, () => (random() < 0.3 ? 0xff : random() < 0.3 ? 0xf0 + Math.floor(random() * 16) : Math.floor(random() * 256))));
      const whole = decode([input]);
      expect(decode([...input].map((b) => Buffer.from([b])))).toEqual(whole);
    }
  });

  it('escapes and encodes: escapeIac doubles 0xFF, subnegotiations escape their payload', () => {
    expect(escapeIac(bytes('00ff01ffff')).toString('hex')).toBe('00ffff01ffffffff');
    const plain = bytes('0102');
    expect(escapeIac(plain)).toBe(plain);
    expect(encodeNegotiation('DO', 44).toString('hex')).toBe('fffd2c');
    expect(encodeSubnegotiation(44, bytes('65 000000ff')).toString('hex')).toBe('fffa2c65000000fffffff0');
    expect(decode([encodeSubnegotiation(44, bytes('65 ffffffff'))])).toEqual(['SB 44 65ffffffff']);
  });
});

const STATE: LineState = { baudRate: 115200, dataBits: 8, parity: 'none', stopBits: 1, flow: 'none', dtr: true, rts: true, brk: false };

describe('RFC 2217 requests', () => {
  it.each([
    ['SET-BAUDRATE 9600', '01 00002580', { kind: 'line', command: 1, change: { baudRate: 9600 } }],
    ['SET-BAUDRATE query', '01 00000000', { kind: 'line', command: 1 }],
    ['SET-DATASIZE 7', '02 07', { kind: 'line', command: 2, change: { dataBits: 7 } }],
    ['SET-DATASIZE 9 is refused', '02 09', { kind: 'line', command: 2, bad: 'data size 9 is not 5..8' }],
    ['SET-PARITY even', '03 03', { kind: 'line', command: 3, change: { parity: 'even' } }],
    ['SET-PARITY mark is refused', '03 04', { kind: 'line', command: 3, bad: 'parity 4 is not supported (1 none, 2 odd, 3 even)' }],
    ['SET-STOPSIZE 2', '04 02', { kind: 'line', command: 4, change: { stopBits: 2 } }],
    ['SET-STOPSIZE 1.5 is refused', '04 03', { kind: 'line', command: 4, bad: 'stop size 3 is not supported (1 or 2)' }],
    ['SET-CONTROL RTS/CTS', '05 03', { kind: 'control', value: 3, change: { flow: 'rtscts' } }],
    ['SET-CONTROL DTR off', '05 09', { kind: 'control', value: 9 }],
    ['SET-CONTROL unknown', '05 63', { kind: 'control', value: 99, bad: 'SET-CONTROL value 99 is not supported' }],
    ['NOTIFY-MODEMSTATE', '07', { kind: 'notify-modemstate' }],
    ['PURGE both', '0c 03', { kind: 'purge', value: 3 }],
    ['SET-MODEMSTATE-MASK', '0b ff', { kind: 'mask', command: 11, mask: 255 }],
    ['short baud rate', '01 0025', { kind: 'bad', reason: 'SET-BAUDRATE needs 4 bytes, got 2' }],
    ['empty', '', { kind: 'bad', reason: 'empty COM-PORT-OPTION subnegotiation' }],
    ['unknown command', '2a 00', { kind: 'bad', reason: 'unknown COM-PORT-OPTION command 42' }],
    ['PURGE 0', '0c 00', { kind: 'bad', reason: 'PURGE-DATA value 0 is not 1..3' }],
  ])('%s', (_name, hex, expected) => {
    const parsed = parseComPortRequest(bytes(hex));
    expect(parsed).toMatchObject(expected);
    if (expected.kind === 'control' && !('change' in expected) && _name === 'SET-CONTROL DTR off') expect(parsed).toMatchObject({ change: { dtr: false } });
  });

  it('answers with the value in effect', () => {
    expect(encodeLineReply(COM_PORT.SET_BAUDRATE, STATE).toString('hex')).toBe('fffa2c650001c200fff0');
    expect(encodeLineReply(COM_PORT.SET_PARITY, { ...STATE, parity: 'even' }).toString('hex')).toBe('fffa2c6703fff0');
    expect(controlReply(1, { ...STATE, flow: 'rtscts' })).toBe(3);
    expect(controlReply(7, { ...STATE, dtr: false })).toBe(9);
    expect(controlReply(11, STATE)).toBe(11);
    expect(controlReply(4, STATE)).toBe(6);
    expect(encodeComPort(107, Buffer.from([0xff])).toString('hex')).toBe('fffa2c6bfffffff0');
  });
});

describe('TelnetNegotiation', () => {
  it("answers pyserial's opening once and never its confirmations", () => {
    const n = new TelnetNegotiation();
    expect(n.start().toString('hex')).toBe('fffb00fffb03fffb2cfffd00fffd03');
    // pyserial: DO ECHO, WILL SGA, DO SGA, WILL COM-PORT, DO COM-PORT; then confirmations of our requests.
    expect(n.receive('DO', TELNET_OPTION.ECHO)).toEqual({ reply: encodeNegotiation('WONT', TELNET_OPTION.ECHO), enabled: false });
    expect(n.receive('WILL', TELNET_OPTION.SGA)).toEqual({ enabled: true });
    expect(n.receive('DO', TELNET_OPTION.SGA)).toEqual({ enabled: true });
    expect(n.receive('WILL', TELNET_OPTION.COM_PORT)).toEqual({ reply: encodeNegotiation('DO', TELNET_OPTION.COM_PORT), enabled: true });
    expect(n.receive('DO', TELNET_OPTION.COM_PORT)).toEqual({ enabled: true });
    expect(n.receive('WILL', TELNET_OPTION.BINARY)).toEqual({ enabled: true });
    expect(n.receive('DO', TELNET_OPTION.BINARY)).toEqual({ enabled: true });
    // Repeats of an enabled option get no answer (no loop).
    expect(n.receive('WILL', TELNET_OPTION.BINARY)).toEqual({ enabled: false });
    expect(n.isOn('theirs', TELNET_OPTION.COM_PORT)).toBe(true);
    // Switching off is acknowledged once.
    expect(n.receive('DONT', TELNET_OPTION.BINARY)).toEqual({ reply: encodeNegotiation('WONT', TELNET_OPTION.BINARY), enabled: false });
    expect(n.receive('DONT', TELNET_OPTION.BINARY)).toEqual({ enabled: false });
    // Unknown options are refused.
    expect(n.receive('WILL', 200)).toEqual({ reply: encodeNegotiation('DONT', 200), enabled: false });
  });
});
