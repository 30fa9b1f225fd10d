import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { HANDOFF_MARKER, MAX_TLS_RECORD_BYTES, parseClientHelloAlpn, TLS_RECORD_HEADER_BYTES, TlsRecordScanner, type ScanResult } from '../../protocol';
import { chunkings, randomChunks } from '../helpers/chunking';

function record(type: number, body: Buffer): Buffer {
  const header = Buffer.from([type, 0x03, 0x03, 0, 0]);
  header.writeUInt16BE(body.length, 3);
  return Buffer.concat([header, body]);
}

/** Feed `input` in the given pieces; collect passed bytes, and the outcome. */
function scanAll(pieces: readonly Buffer[]): { passed: Buffer; outcome: ScanResult['kind']; rest: Buffer; error?: string } {
  const scanner = new TlsRecordScanner();
  const passed: Buffer[] = [];
  const rest: Buffer[] = [];
  let outcome: ScanResult['kind'] = 'tls';
  let error: string | undefined;
  for (const piece of pieces) {
    if (outcome === 'handoff') {
      rest.push(piece);
      continue;
    }
    if (outcome === 'error') break;
    const r = scanner.scan(piece);
    passed.push(r.pass);
    outcome = r.kind;
    if (r.kind === 'handoff') rest.push(r.rest);
    if (r.kind === 'error') error = r.error.message;
  }
  return { passed: Buffer.concat(passed), outcome, rest: Buffer.concat(rest), error };
}

describe('TlsRecordScanner', () => {
  const records = Buffer.concat([record(22, randomBytes(300)), record(20, Buffer.from([1])), record(23, randomBytes(MAX_TLS_RECORD_BYTES)), record(23, Buffer.alloc(0))]);
  const after = randomBytes(777);
  const stream = Buffer.concat([records, HANDOFF_MARKER, after]);

  it('passes every record, consumes the marker and returns what follows, for any chunking', () => {
    let cases = 0;
    const cuts = [[stream], ...Array.from({ length: 200 }, (_, seed) => randomChunks(stream, seed, 1 + (seed % 7) * 600))];
    // Every split point around the marker and the record boundaries before it.
    for (let at = records.length - 40; at < records.length + HANDOFF_MARKER.length + 4; at++) cuts.push([stream.subarray(0, at), stream.subarray(at)]);
    for (const pieces of cuts) {
      const r = scanAll(pieces);
      expect(r.outcome).toBe('handoff');
      expect(r.passed.equals(records)).toBe(true);
      expect(r.rest.equals(after)).toBe(true);
      cases++;
    }
    expect(cases).toBeGreaterThan(10);
  });

  it('splits the marker across inputs one byte at a time', () => {
    const pieces = [...stream].map((b) => Buffer.from([b]));
    const r = scanAll(pieces);
    expect(r.outcome).toBe('handoff');
    expect(r.passed.equals(records)).toBe(true);
    expect(r.rest.equals(after)).toBe(true);
  });

  it('keeps passing records when no marker comes', () => {
    const r = scanAll([records]);
    expect(r.outcome).toBe('tls');
    expect(r.passed.equals(records)).toBe(true);
  });

  it.each([
    ['an unknown content type', Buffer.from([0x30, 3, 3, 0, 1, 0]), 'content type 48'],
    ['a heartbeat record', record(24, Buffer.alloc(3)), 'content type 24'],
    ['a wrong version byte', Buffer.from([23, 0x02, 0x00, 0, 1, 0]), 'version'],
    ['a record over the TLS 1.3 limit', Buffer.from([23, 3, 3, (MAX_TLS_RECORD_BYTES + 1) >> 8, (MAX_TLS_RECORD_BYTES + 1) & 0xff]), 'exceeds'],
    ['a damaged marker', Buffer.from([0x00, 0x50, 0x57, 0x48, 0x4f, 0x46, 0x46, 0x02]), 'marker'],
    ['plain text', Buffer.from('GET / HTTP/1.1\r\n'), 'content type 71'],
  ])('rejects %s with a coded error and passes nothing past its header', (_name, bad, message) => {
    const good = record(23, randomBytes(10));
    const input = Buffer.concat([good, bad]);
    for (const { chunks } of chunkings(input, { randomSeeds: 12 })) {
      const r = scanAll(chunks);
      expect(r.outcome).toBe('error');
      expect(r.error).toContain(message);
      // Header bytes that arrived before the rest of their header may have been passed on; no more.
      expect(input.subarray(0, r.passed.length).equals(r.passed)).toBe(true);
      expect(r.passed.length).toBeLessThan(good.length + TLS_RECORD_HEADER_BYTES);
    }
  });

  it('refuses input after the handoff', () => {
    const scanner = new TlsRecordScanner();
    expect(scanner.scan(HANDOFF_MARKER).kind).toBe('handoff');
    expect(scanner.scan(Buffer.from([23])).kind).toBe('error');
  });

  it('never throws on random input', () => {
    for (let i = 0; i < 2000; i++) {
      const scanner = new TlsRecordScanner();
      const input = randomBytes(1 + (i % 64));
      expect(() => scanner.scan(input)).not.toThrow();
    }
  });
});

/** A real ClientHello from Node's TLS client, captured from a loopback socket. */
async function captureClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const got = new Promise<Buffer>((resolve) => {
      server.once('connection', (socket) => {
        let seen = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          seen = Buffer.concat([seen, chunk]);
          if (seen.length >= 5 && seen.length >= 5 + seen.readUInt16BE(3)) {
            socket.destroy();
            resolve(seen);
          }
        });
      });
    });
    const client = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    client.on('error', () => undefined);
    const hello = await got;
    client.destroy();
    return hello;
  } finally {
    server.close();
  }
}

describe('parseClientHelloAlpn', () => {
  it('reads the ALPN list of a real ClientHello, for any truncation', async () => {
    const hello = await captureClientHello({ ALPNProtocols: ['portway-data/1', 'mqtt'] });
    expect(parseClientHelloAlpn(hello)).toEqual({ kind: 'alpn', protocols: ['portway-data/1', 'mqtt'] });
    for (let n = 0; n < hello.length; n++) expect(parseClientHelloAlpn(hello.subarray(0, n)).kind).toBe('need-more');
  });

  it('answers an empty list for a ClientHello without ALPN', async () => {
    const hello = await captureClientHello({});
    expect(parseClientHelloAlpn(hello)).toEqual({ kind: 'alpn', protocols: [] });
  });

  it('answers unknown for garbage and damaged hellos, and never throws', async () => {
    const hello = await captureClientHello({ ALPNProtocols: ['portway-data/1'] });
    expect(parseClientHelloAlpn(Buffer.from('GET / HTTP/1.1\r\n\r\n')).kind).toBe('unknown');
    expect(parseClientHelloAlpn(Buffer.from([22, 3, 1, 0xff, 0xff])).kind).toBe('unknown');
    for (let i = 5; i < hello.length; i++) {
      const damaged = Buffer.from(hello);
      damaged[i] = (damaged[i] as number) ^ 0xff;
      expect(() => parseClientHelloAlpn(damaged)).not.toThrow();
    }
    for (let i = 0; i < 2000; i++) {
      const input = Buffer.concat([Buffer.from([22, 3, 1, 0, 60]), randomBytes(60)]);
      expect(['unknown', 'alpn']).toContain(parseClientHelloAlpn(input).kind);
    }
  });
});
