/**
 * HandoffCarrier (shared/tls-handoff.ts) on real loopback TCP with real TLS 1.3 on both ends: the outer TLS
 * session carries a request, each side hands off, and the bytes after the marker belong to the TCP socket;
 * `whenPeerHandsOff` resolves, or rejects with a code (timeout, close, garbage) and leaves no listener behind.
 */
import net from 'node:net';
import tls from 'node:tls';
import { PortwayError } from '../../protocol';
import { CertificateAuthority } from '../../relay/src/pki/certificate-authority';
import { HandoffCarrier } from '../../shared/tls-handoff';
import { Disposer } from '../helpers';

const disposer = new Disposer();
afterEach(() => disposer.run());

const ca = CertificateAuthority.create({ commonName: 'handoff test CA' });
const server = ca.issueServerCert({ names: ['localhost'] });

interface Side {
  readonly raw: net.Socket;
  readonly carrier: HandoffCarrier;
  readonly tls: tls.TLSSocket;
}

/** A TCP pair on loopback with an outer TLS session over a carrier on each end; resolves once both are secure. */
async function outerPair(): Promise<{ client: Side; server: Side }> {
  const listener = net.createServer();
  disposer.add(() => new Promise<void>((r) => listener.close(() => r())));
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  const { port } = listener.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((r) => listener.once('connection', r));
  const clientRaw = net.connect(port, '127.0.0.1');
  const serverRaw = await accepted;
  for (const raw of [clientRaw, serverRaw]) disposer.add(() => void raw.destroy());
  const clientCarrier = new HandoffCarrier(clientRaw);
  const serverCarrier = new HandoffCarrier(serverRaw);
  const serverTls = new tls.TLSSocket(serverCarrier, { isServer: true, key: server.keyPem, cert: server.certPem, minVersion: 'TLSv1.3' });
  const clientTls = tls.connect({ socket: clientCarrier, ca: ca.certPem, servername: 'localhost', minVersion: 'TLSv1.3' });
  for (const t of [clientTls, serverTls]) {
    t.on('error', () => undefined);
    disposer.add(() => void t.destroy());
  }
  await Promise.all([new Promise((r) => clientTls.once('secureConnect', r)), new Promise((r) => serverTls.once('secure', r))]);
  return { client: { raw: clientRaw, carrier: clientCarrier, tls: clientTls }, server: { raw: serverRaw, carrier: serverCarrier, tls: serverTls } };
}

function listeners(side: Side): { handoff: number; close: number } {
  return { handoff: side.carrier.events.listenerCount('handoff'), close: side.carrier.listenerCount('close') };
}

/** Write `data` on the outer TLS, then the marker; resolves when both are queued. */
function sendLastThenHandOff(side: Side, data: string): Promise<void> {
  return new Promise((resolve) => side.tls.write(data, () => {
    side.carrier.handOffWrites();
    resolve();
  }));
}

jest.setTimeout(10_000);

describe('HandoffCarrier', () => {
  it('the request arrives inside TLS, both sides hand off, and the bytes after the marker are the TCP socket\'s', async () => {
    const { client, server } = await outerPair();
    const before = listeners(server);
    const request = new Promise<string>((r) => server.tls.once('data', (d: Buffer) => r(d.toString())));
    await sendLastThenHandOff(client, 'OPEN echo');
    // Raw bytes right behind the marker, in the same TCP segment as far as the sender can tell.
    client.raw.write('after-the-marker');
    await server.carrier.whenPeerHandsOff(2_000, 'no handoff');
    expect(await request).toBe('OPEN echo');
    expect(server.carrier.peerHandedOff).toBe(true);
    // Nothing arrived inside TLS after the request; the raw bytes are back in the TCP socket for the next owner.
    expect(server.tls.readableLength).toBe(0);
    const raw = await new Promise<string>((r) => {
      let got = '';
      server.raw.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.length >= 'after-the-marker'.length) r(got);
      });
      server.raw.resume(); // the carrier paused it at the marker; the next owner resumes (splice: pipe())
    });
    expect(raw).toBe('after-the-marker');
    expect(listeners(server)).toEqual(before);
    // Already handed off: resolves at once.
    await server.carrier.whenPeerHandsOff(1, 'no handoff');
  });

  it('a peer that never hands off: PW_HANDSHAKE_TIMEOUT after the deadline, naming what was awaited; no listener left', async () => {
    const { server } = await outerPair();
    const before = listeners(server);
    const startedAt = Date.now();
    const err = await server.carrier.whenPeerHandsOff(300, 'no handoff after CLIENT_OPEN').catch((e: unknown) => e);
    const tookMs = Date.now() - startedAt;
    expect(err).toBeInstanceOf(PortwayError);
    expect({ code: (err as PortwayError).code, message: (err as PortwayError).message }).toEqual({ code: 'PW_HANDSHAKE_TIMEOUT', message: 'no handoff after CLIENT_OPEN within 300 ms' });
    expect(tookMs).toBeGreaterThanOrEqual(290);
    expect(listeners(server)).toEqual(before);
  });

  it('the connection closing before the handoff rejects with PW_STREAM_ABORTED, and so does a later call', async () => {
    const { client, server } = await outerPair();
    const waiting = server.carrier.whenPeerHandsOff(5_000, 'no handoff').catch((e: unknown) => e);
    client.raw.destroy();
    expect(((await waiting) as PortwayError).code).toBe('PW_STREAM_ABORTED');
    expect(((await server.carrier.whenPeerHandsOff(5_000, 'no handoff').catch((e: unknown) => e)) as PortwayError).code).toBe('PW_STREAM_ABORTED');
  });

  it('bytes that are neither TLS records nor the marker fail the carrier with a code, at once', async () => {
    const { client, server } = await outerPair();
    const waiting = server.carrier.whenPeerHandsOff(5_000, 'no handoff').catch((e: unknown) => e);
    client.raw.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    const err = (await waiting) as PortwayError;
    expect(err).toBeInstanceOf(PortwayError);
    expect(err.code).toMatch(/^PW_/);
    expect(err.code).not.toBe('PW_HANDSHAKE_TIMEOUT');
  });
});
