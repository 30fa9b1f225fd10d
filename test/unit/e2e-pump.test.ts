/**
 * shared/e2e-pump.ts over real loopback TCP sockets. In each test one pump sits between
 *
 *   app  <-TCP->  local  [pumpE2E]  inner  <-TCP->  peer
 *
 * where `app` plays the client application (or the device's service) and `peer` either speaks the chunk
 * framing by hand (to check exact bytes) or is a second pump (the other end of a real stream).
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { ChunkDecoder, encodeChunkHeader, encodeFin, encodeFrame, encodeHeartbeat, FrameType, MAX_E2E_CHUNK_BYTES, PortwayError } from '../../protocol';
import { isIntegrityFailure, pumpE2E, type PumpResult } from '../../shared/e2e-pump';
import { collectBytes, connectTcp, Disposer, startTcpServer, waitFor } from '../helpers';

const GRACE_MS = 2_000;
const FIN = encodeFin();

const disposer = new Disposer();
afterEach(() => disposer.run());

/** Two ends of one loopback TCP connection, both allowHalfOpen, destroyed by the disposer. */
async function tcpPair(): Promise<[Socket, Socket]> {
  const server = await startTcpServer(disposer);
  const client = await connectTcp(disposer, server);
  const accepted = await server.nextConnection();
  return [client, accepted];
}

interface Rig {
  readonly app: Socket;
  readonly local: Socket;
  readonly inner: Socket;
  readonly peer: Socket;
  readonly result: Promise<PumpResult>;
}

async function rig(options: { expectStatus?: boolean; heartbeatMs?: number } = {}): Promise<Rig> {
  const [app, local] = await tcpPair();
  const [inner, peer] = await tcpPair();
  const result = pumpE2E(inner, local, { closeGraceMs: GRACE_MS, ...options });
  return { app, local, inner, peer, result };
}

function chunk(data: string | Buffer): Buffer {
  const body = typeof data === 'string' ? Buffer.from(data) : data;
  return Buffer.concat([encodeChunkHeader(body.length), body]);
}

/** Decode what a peer received: the data and whether FIN came (and nothing after it). */
function unframe(wire: Buffer): { data: Buffer; fin: boolean; error?: string } {
  const decoder = new ChunkDecoder();
  const data: Buffer[] = [];
  let fin = false;
  let error: string | undefined;
  decoder.push(wire, (e) => {
    if (e.kind === 'data') data.push(e.data);
    else if (e.kind === 'fin') fin = true;
    else if (e.kind === 'error') error = e.reason;
  });
  return { data: Buffer.concat(data), fin, error };
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Resolve with the settled result, or fail the test if it does not settle in time. */
function settled(result: Promise<PumpResult>, timeoutMs = 5_000): Promise<PumpResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`pump did not settle within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([result, timeout]).finally(() => clearTimeout(timer));
}

describe('pumpE2E: data and half-close', () => {
  it('frames local bytes as chunks, unframes the peer’s chunks, and propagates both FINs', async () => {
    const { app, inner, peer, result } = await rig();
    const atPeer = collectBytes(peer);
    const atApp = collectBytes(app);

    app.write('ping');
    expect(await atPeer.waitForLength(8)).toEqual(chunk('ping'));

    peer.write(chunk('pong'));
    expect((await atApp.waitForLength(4)).toString()).toBe('pong');

    // The app half-closes: the peer gets a FIN frame, but the inner session stays open (the peer may still send).
    app.end();
    expect((await atPeer.waitForLength(12)).subarray(8)).toEqual(FIN);
    expect(atPeer.state).toBe('open');

    peer.write(Buffer.concat([chunk('more'), FIN]));
    expect((await atApp.waitForEnd()).toString()).toBe('pongmore');

    // Both directions finished: the pump ends the inner session; the peer closes it and the pump completes.
    await atPeer.waitForEnd();
    peer.end();
    expect(await settled(result)).toEqual({ outcome: 'complete', reason: undefined, bytesToLocal: 8, bytesFromLocal: 4, error: undefined });
    expect(inner.destroyed).toBe(true);
  });

  it('the peer may finish first; the app keeps sending after it got EOF', async () => {
    const { app, peer, result } = await rig();
    const atPeer = collectBytes(peer);
    const atApp = collectBytes(app);

    peer.write(Buffer.concat([chunk('response'), FIN]));
    expect((await atApp.waitForEnd()).toString()).toBe('response');
    expect(atApp.state).toBe('ended');

    app.write('still talking');
    app.end();
    const wire = await atPeer.waitForEnd();
    expect(unframe(wire)).toEqual({ data: Buffer.from('still talking'), fin: true, error: undefined });
    peer.end();
    expect((await settled(result)).outcome).toBe('complete');
  });

  it('an empty stream (both sides end without data) completes', async () => {
    const { app, peer, result } = await rig();
    const atPeer = collectBytes(peer);
    app.end();
    peer.write(FIN);
    expect(await atPeer.waitForEnd()).toEqual(FIN);
    peer.end();
    expect(await settled(result)).toMatchObject({ outcome: 'complete', bytesToLocal: 0, bytesFromLocal: 0 });
  });

  it('destroys an inner session whose peer never closes after both FINs, once the grace period is over', async () => {
    const [app, local] = await tcpPair();
    const [inner, peer] = await tcpPair();
    const result = pumpE2E(inner, local, { closeGraceMs: 200 });
    const atPeer = collectBytes(peer);
    app.end();
    peer.write(FIN);
    await atPeer.waitForEnd();
    // The peer never calls end(): the pump gives up waiting and destroys the inner side.
    expect((await settled(result)).outcome).toBe('complete');
    expect(inner.destroyed).toBe(true);
  });

  it('two pumps back to back carry 8 MiB each way intact, with half-close end to end', async () => {
    const [app, proxyLocal] = await tcpPair();
    const [proxyInner, agentInner] = await tcpPair();
    const [agentLocal, service] = await tcpPair();
    const proxy = pumpE2E(proxyInner, proxyLocal, { closeGraceMs: GRACE_MS });
    const agent = pumpE2E(agentInner, agentLocal, { closeGraceMs: GRACE_MS });
    const atApp = collectBytes(app);
    const atService = collectBytes(service);
    const up = randomBytes(8 * 1024 * 1024);
    const down = randomBytes(8 * 1024 * 1024);

    app.end(up);
    const received = await atService.waitForEnd(20_000);
    expect(received.length).toBe(up.length);
    expect(sha256(received)).toBe(sha256(up));
    expect(atApp.state).toBe('open'); // the app's half-close did not close the other direction

    service.end(down);
    const back = await atApp.waitForEnd(20_000);
    expect(sha256(back)).toBe(sha256(down));

    const [p, a] = await Promise.all([settled(proxy), settled(agent)]);
    expect(p).toMatchObject({ outcome: 'complete', bytesFromLocal: up.length, bytesToLocal: down.length });
    expect(a).toMatchObject({ outcome: 'complete', bytesFromLocal: down.length, bytesToLocal: up.length });
  });

  it('splits a local read larger than MAX_E2E_CHUNK_BYTES into several chunks', async () => {
    const [inner, peer] = await tcpPair();
    const local = new PassThrough();
    const result = pumpE2E(inner, local, { closeGraceMs: GRACE_MS });
    const atPeer = collectBytes(peer);
    const big = randomBytes(MAX_E2E_CHUNK_BYTES * 2 + 10);
    local.end(big);
    const wire = await atPeer.waitForLength(big.length + 4 * 4, 10_000);
    expect(wire.readUInt32BE(0)).toBe(MAX_E2E_CHUNK_BYTES);
    const decoded = unframe(wire);
    expect(decoded.data.equals(big)).toBe(true); // not toEqual: jest compares big buffers byte by byte, slowly
    expect(decoded).toMatchObject({ fin: true, error: undefined });
    peer.destroy();
    await settled(result);
  });
});

describe('pumpE2E: a cut stream is never passed on as a clean end', () => {
  it('inner session ends without a FIN frame: the local socket is reset (ECONNRESET)', async () => {
    const { app, peer, result } = await rig();
    const atApp = collectBytes(app);
    peer.write(chunk('partial resp'));
    await atApp.waitForLength(12);
    peer.end(); // a clean TCP FIN, but no FIN frame: the stream was cut
    const error = await atApp.waitForClose();
    expect((error as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect(atApp.bytes().toString()).toBe('partial resp');
    expect(await settled(result)).toMatchObject({ outcome: 'aborted', reason: expect.stringMatching(/ended before the peer finished/) });
  });

  it('inner session reset: the local socket is reset', async () => {
    const { app, peer, result } = await rig();
    const atApp = collectBytes(app);
    peer.resetAndDestroy();
    expect(((await atApp.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect((await settled(result)).outcome).toBe('aborted');
  });

  it('inner session closes after the peer’s FIN but before the app finished: the app cannot finish cleanly', async () => {
    const { app, peer, result } = await rig();
    const atApp = collectBytes(app);
    peer.write(Buffer.concat([chunk('done'), FIN]));
    await atApp.waitForEnd();
    peer.destroy();
    expect(await settled(result)).toMatchObject({ outcome: 'aborted', reason: 'end-to-end session ended before the local side finished' });
    app.write('too late');
    const error = (await atApp.waitForClose()) as NodeJS.ErrnoException | null;
    expect(['ECONNRESET', 'EPIPE']).toContain(error?.code);
  });

  it('bad framing from the peer (an oversize chunk header): the local socket is reset', async () => {
    const { app, peer, result } = await rig();
    const atApp = collectBytes(app);
    peer.write(Buffer.from('fffffffe', 'hex'));
    expect(((await atApp.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect(await settled(result)).toMatchObject({ outcome: 'aborted', reason: expect.stringMatching(/bad end-to-end framing: chunk of 4294967294 bytes/) });
  });

  it('bad framing from the peer (data after its FIN): the app got a complete response, but its own direction is reset', async () => {
    const { app, peer, result } = await rig();
    const atApp = collectBytes(app);
    peer.write(Buffer.concat([chunk('whole'), FIN, chunk('x')]));
    expect(await settled(result)).toMatchObject({ outcome: 'aborted', reason: 'bad end-to-end framing: data after FIN' });
    expect((await atApp.waitForEnd()).toString()).toBe('whole');
    app.write('more');
    const error = (await atApp.waitForClose()) as NodeJS.ErrnoException | null;
    expect(['ECONNRESET', 'EPIPE']).toContain(error?.code);
  });

  it('local socket reset: the inner session is torn down without a FIN frame', async () => {
    const { app, peer, result } = await rig();
    const atPeer = collectBytes(peer);
    app.write('half a request');
    await atPeer.waitForLength(4 + 14);
    app.resetAndDestroy();
    const wire = await atPeer.waitForEnd();
    expect(unframe(wire)).toEqual({ data: Buffer.from('half a request'), fin: false, error: undefined });
    expect(await settled(result)).toMatchObject({ outcome: 'aborted', reason: expect.stringMatching(/local connection (failed|closed)/) });
  });

  it('two pumps: cutting the link between them resets both applications', async () => {
    const [app, proxyLocal] = await tcpPair();
    const [proxyInner, agentInner] = await tcpPair();
    const [agentLocal, service] = await tcpPair();
    const proxy = pumpE2E(proxyInner, proxyLocal, { closeGraceMs: GRACE_MS });
    const agent = pumpE2E(agentInner, agentLocal, { closeGraceMs: GRACE_MS });
    const atApp = collectBytes(app);
    const atService = collectBytes(service);
    app.write('hello');
    await atService.waitForLength(5);
    proxyInner.resetAndDestroy(); // the relay or the network died
    expect(((await atApp.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect(((await atService.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect((await settled(proxy)).outcome).toBe('aborted');
    expect((await settled(agent)).outcome).toBe('aborted');
  });

  it('a local stream that is not a socket is destroyed with PW_STREAM_ABORTED', async () => {
    const [inner, peer] = await tcpPair();
    const local = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
    const errors: unknown[] = [];
    local.on('error', (err) => errors.push(err));
    const result = pumpE2E(inner, local, { closeGraceMs: GRACE_MS });
    peer.end();
    expect((await settled(result)).outcome).toBe('aborted');
    await waitFor(() => errors.length > 0, { description: 'the local stream error' });
    expect(errors[0]).toBeInstanceOf(PortwayError);
    expect((errors[0] as PortwayError).code).toBe('PW_STREAM_ABORTED');
  });

  it('a local socket that was already closed when the pump started: aborts at once and closes the inner side', async () => {
    const [app, local] = await tcpPair();
    const [inner, peer] = await tcpPair();
    const atPeer = collectBytes(peer);
    local.destroy();
    await once(local, 'close');
    const result = pumpE2E(inner, local, { closeGraceMs: GRACE_MS });
    expect((await settled(result)).outcome).toBe('aborted');
    await atPeer.waitForEnd();
    expect(unframe(atPeer.bytes()).fin).toBe(false);
    app.destroy();
  });

  it('an inner session that was already closed when the pump started: aborts at once and resets the local socket', async () => {
    const [app, local] = await tcpPair();
    const [inner] = await tcpPair();
    const atApp = collectBytes(app);
    inner.destroy();
    await once(inner, 'close');
    const result = pumpE2E(inner, local, { closeGraceMs: GRACE_MS });
    expect((await settled(result)).outcome).toBe('aborted');
    expect(((await atApp.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
  });
});

describe('pumpE2E: backpressure', () => {
  const TOTAL = 64 * 1024 * 1024;
  const PIECE = 256 * 1024;
  /** What the pump may hold for a stalled reader: a high-water mark plus about one read or chunk, with room to spare. */
  const BOUND = 2 * 1024 * 1024;

  /** Write `total` bytes in `piece`s without waiting for 'drain': the sender's own buffer takes the excess. */
  function flood(socket: Socket, total: number, framed: boolean): Buffer {
    const hash = createHash('sha256');
    for (let sent = 0; sent < total; sent += PIECE) {
      const data = randomBytes(PIECE);
      hash.update(data);
      socket.write(framed ? chunk(data) : data);
    }
    return Buffer.from(hash.digest('hex'));
  }

  it('a stalled local reader pauses the inner session instead of buffering at the pump', async () => {
    const { app, local, inner, peer } = await rig();
    app.pause(); // the client application stops reading
    const digest = flood(peer, TOTAL, true);
    let held = 0;
    await waitFor(
      () => {
        held = Math.max(held, local.writableLength + inner.readableLength);
        // Settled: the pump paused the inner side, its local buffer is over the mark (the kernel takes
        // no more), and the sender still holds unsent bytes.
        return inner.isPaused() && local.writableLength >= local.writableHighWaterMark && peer.writableLength > 0;
      },
      { timeoutMs: 20_000, intervalMs: 2, description: 'the pump to stop reading the inner side' },
    );
    expect(held).toBeLessThan(BOUND);
    expect(peer.writableLength).toBeGreaterThan(TOTAL / 4);

    // The reader comes back: everything arrives, in order.
    const hash = createHash('sha256');
    let received = 0;
    app.on('data', (d: Buffer) => {
      hash.update(d);
      received += d.length;
      held = Math.max(held, local.writableLength + inner.readableLength);
    });
    app.resume();
    await waitFor(() => received === TOTAL, { timeoutMs: 30_000, description: 'all bytes at the app' });
    expect(Buffer.from(hash.digest('hex'))).toEqual(digest);
    expect(held).toBeLessThan(BOUND);
  });

  it('a stalled peer pauses the local socket instead of buffering at the pump', async () => {
    const { app, local, inner, peer } = await rig();
    peer.pause(); // the far end stops reading the inner session
    const digest = flood(app, TOTAL, false);
    let held = 0;
    await waitFor(
      () => {
        held = Math.max(held, inner.writableLength + local.readableLength);
        return local.isPaused() && inner.writableLength >= inner.writableHighWaterMark && app.writableLength > 0;
      },
      { timeoutMs: 20_000, intervalMs: 2, description: 'the pump to stop reading the local side' },
    );
    expect(held).toBeLessThan(BOUND);
    expect(app.writableLength).toBeGreaterThan(TOTAL / 4);

    const wire: Buffer[] = [];
    let wireBytes = 0;
    peer.on('data', (d: Buffer) => {
      wire.push(d);
      wireBytes += d.length;
      held = Math.max(held, inner.writableLength + local.readableLength);
    });
    peer.resume();
    await waitFor(() => wireBytes >= TOTAL, { timeoutMs: 30_000, description: 'all bytes at the peer' });
    app.end();
    await waitFor(() => unframe(Buffer.concat(wire)).fin, { timeoutMs: 10_000, description: 'FIN at the peer' });
    const decoded = unframe(Buffer.concat(wire));
    expect(decoded.data.length).toBe(TOTAL);
    expect(Buffer.from(sha256(decoded.data))).toEqual(digest);
    expect(held).toBeLessThan(BOUND);
  });
});

describe('pumpE2E with expectStatus (the forward proxy pipelines its first bytes with the device’s status)', () => {
  const okStatus = encodeFrame(FrameType.E2E_STATUS, { ok: true });

  it('sends local bytes before the status arrives, and passes service bytes on after it', async () => {
    const { app, peer, result } = await rig({ expectStatus: true });
    const atPeer = collectBytes(peer);
    const atApp = collectBytes(app);
    app.write('GET / HTTP/1.0\r\n\r\n');
    expect(unframe(await atPeer.waitForLength(4 + 18)).data.toString()).toBe('GET / HTTP/1.0\r\n\r\n');
    peer.write(Buffer.concat([okStatus, chunk('HTTP/1.0 200 OK\r\n\r\n'), FIN]));
    expect((await atApp.waitForEnd()).toString()).toBe('HTTP/1.0 200 OK\r\n\r\n');
    app.end();
    await atPeer.waitForEnd();
    peer.end();
    expect(await settled(result)).toMatchObject({ outcome: 'complete', error: undefined });
  });

  it('a status alone, then data in a later segment', async () => {
    const { app, peer } = await rig({ expectStatus: true });
    const atApp = collectBytes(app);
    peer.write(okStatus);
    await waitFor(() => peer.writableLength === 0);
    peer.write(chunk('later'));
    expect((await atApp.waitForLength(5)).toString()).toBe('later');
  });

  it('a refusal resets the local connection and is reported with its code', async () => {
    const { app, peer, result } = await rig({ expectStatus: true });
    const atApp = collectBytes(app);
    app.write('request');
    peer.write(encodeFrame(FrameType.E2E_STATUS, { ok: false, code: 'PW_SERVICE_REFUSED', message: 'connection refused by device service 127.0.0.1:22' }));
    expect(((await atApp.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect(atApp.length).toBe(0);
    const r = await settled(result);
    expect(r.outcome).toBe('aborted');
    expect(r.error).toBeInstanceOf(PortwayError);
    expect(r.error?.code).toBe('PW_SERVICE_REFUSED');
  });

  it.each([
    ['another frame type', encodeFrame(FrameType.RELAY_STATUS, { ok: true })],
    ['a malformed status', encodeFrame(FrameType.E2E_STATUS, { ok: 'yes' })],
    ['raw service bytes', chunk('HTTP/1.0 200 OK')],
    ['an oversize frame', Buffer.from('10 00 ffff'.replace(/ /g, ''), 'hex')],
  ])('%s instead of the status: the local connection is reset', async (_name, wire) => {
    const { app, peer, result } = await rig({ expectStatus: true });
    const atApp = collectBytes(app);
    peer.write(wire);
    expect(((await atApp.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect(atApp.length).toBe(0);
    expect((await settled(result)).outcome).toBe('aborted');
  });
});

describe('pumpE2E: heartbeats and dead paths', () => {
  const HEARTBEAT = encodeHeartbeat();
  /** Heartbeats in what a peer received (the bytes are nothing but heartbeats when the app sent nothing). */
  const heartbeatsIn = (wire: Buffer): number => {
    let n = 0;
    new ChunkDecoder().push(wire, (e) => void (e.kind === 'heartbeat' && n++));
    return n;
  };

  it('an idle side sends a heartbeat every interval, and one that hears them stays up', async () => {
    const { app, peer, result } = await rig({ heartbeatMs: 200 });
    const atPeer = collectBytes(peer);
    // The peer answers with heartbeats of its own, as a live device or proxy does.
    const answering = setInterval(() => peer.write(HEARTBEAT), 200);
    disposer.add(() => clearInterval(answering));
    await new Promise((r) => setTimeout(r, 1_300));
    const wire = atPeer.bytes();
    expect(wire.length % 4).toBe(0);
    // 1.3 s / 200 ms: about 6 (timer granularity 100 ms); never a data frame.
    expect(heartbeatsIn(wire)).toBeGreaterThanOrEqual(4);
    expect(heartbeatsIn(wire)).toBeLessThanOrEqual(8);
    expect(unframe(wire)).toEqual({ data: Buffer.alloc(0), fin: false, error: undefined });
    clearInterval(answering);
    app.end();
    peer.write(FIN);
    peer.end();
    expect((await settled(result)).outcome).toBe('complete');
  });

  it('a side that keeps writing sends no heartbeats', async () => {
    const { app, peer } = await rig({ heartbeatMs: 200 });
    const atPeer = collectBytes(peer);
    const writing = setInterval(() => app.write('x'), 50);
    disposer.add(() => clearInterval(writing));
    await new Promise((r) => setTimeout(r, 700));
    clearInterval(writing);
    expect(heartbeatsIn(atPeer.bytes())).toBe(0);
  });

  it('a silent peer (a blackholed path): the stream is aborted after 3 intervals, the app gets a reset, not an EOF', async () => {
    const { app, result } = await rig({ heartbeatMs: 200 });
    const atApp = collectBytes(app);
    const startedAt = Date.now();
    const done = await settled(result, 3_000);
    const tookMs = Date.now() - startedAt;
    expect(done).toMatchObject({ outcome: 'aborted', reason: expect.stringMatching(/^nothing from the peer for \d+ ms \(heartbeats every 200 ms\): the path is dead$/) });
    expect(tookMs).toBeGreaterThanOrEqual(600);
    expect(tookMs).toBeLessThan(1_200);
    expect(((await atApp.waitForClose()) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
  });

  it('heartbeats from the peer after its FIN keep a one-way upload alive; silence after it still ends it', async () => {
    const { app, peer, result } = await rig({ heartbeatMs: 200 });
    peer.write(FIN);
    const answering = setInterval(() => peer.write(HEARTBEAT), 200);
    disposer.add(() => clearInterval(answering));
    const uploading = setInterval(() => app.write('up'), 50);
    disposer.add(() => clearInterval(uploading));
    await new Promise((r) => setTimeout(r, 1_000));
    const aliveAfter1s = await Promise.race([result.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 10))]);
    expect(aliveAfter1s).toBe(true);
    clearInterval(answering);
    expect(await settled(result, 3_000)).toMatchObject({ outcome: 'aborted', reason: expect.stringContaining('the path is dead') });
  });

  it('time this side held its own reads back (its app does not read) does not count as silence', async () => {
    const { app, peer, result } = await rig({ heartbeatMs: 200 });
    app.pause();
    // Fill the app's socket and the local pump's buffers, so the pump stops reading the peer.
    const big = chunk(Buffer.alloc(MAX_E2E_CHUNK_BYTES, 0x61));
    for (let i = 0; i < 16; i++) peer.write(big);
    // The peer then falls silent for far longer than 3 intervals, as a peer blocked behind this side's reads is.
    await new Promise((r) => setTimeout(r, 1_500));
    const aliveWhileHeld = await Promise.race([result.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 10))]);
    expect(aliveWhileHeld).toBe(true);
    app.resume();
    peer.write(FIN);
    app.end();
    peer.end();
    expect((await settled(result, 10_000)).outcome).toBe('complete');
  });

  it('the forward proxy takes the interval from the device\'s E2E_STATUS', async () => {
    const { peer, result } = await rig({ expectStatus: true });
    const atPeer = collectBytes(peer);
    peer.write(encodeFrame(FrameType.E2E_STATUS, { ok: true, heartbeatMs: 200 }));
    await new Promise((r) => setTimeout(r, 700));
    expect(heartbeatsIn(atPeer.bytes())).toBeGreaterThanOrEqual(2);
    expect(await settled(result, 3_000)).toMatchObject({ outcome: 'aborted', reason: expect.stringContaining('heartbeats every 200 ms') });
  });
});

describe('pumpE2E: integrity failures of the inner session', () => {
  const errorWith = (code: string | undefined): Error => Object.assign(new Error('x'), code === undefined ? {} : { code });

  it('OpenSSL record failures and EPROTO are integrity failures; transport errors are not', () => {
    const integrity = ['ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC', 'ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC', 'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR', 'EPROTO'];
    const transport = ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ERR_STREAM_DESTROYED', undefined];
    expect(integrity.map((c) => isIntegrityFailure(errorWith(c)))).toEqual(integrity.map(() => true));
    expect(transport.map((c) => isIntegrityFailure(errorWith(c)))).toEqual(transport.map(() => false));
  });

  it('an inner session that fails with a bad record MAC: the local socket is reset and the result carries PW_E2E_INTEGRITY', async () => {
    const { app, inner, result } = await rig();
    const appBytes = collectBytes(app);
    inner.destroy(errorWith('ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC'));
    const r = await settled(result);
    expect({ outcome: r.outcome, code: r.error?.code }).toEqual({ outcome: 'aborted', code: 'PW_E2E_INTEGRITY' });
    expect(r.error?.message).toMatch(/ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC/);
    expect((await appBytes.waitForClose(5_000) as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
  });

  it('a reset inner session is an abort without a code (not an integrity failure)', async () => {
    const { inner, result } = await rig();
    inner.destroy(errorWith('ECONNRESET'));
    const r = await settled(result);
    expect({ outcome: r.outcome, error: r.error }).toEqual({ outcome: 'aborted', error: undefined });
  });
});
