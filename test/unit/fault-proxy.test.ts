/**
 * The fault proxy over real loopback sockets: an echo server or a plain TCP server behind it, clients in
 * front. Timing checks are lower bounds the proxy guarantees by construction, plus generous upper bounds
 * that only catch a proxy that ignores a toxic; speed belongs to bench/.
 */
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { FaultProxy, type FaultProxyOptions, pseudoRandomBytes, startDelayLink } from '../../devtools';
import {
  Disposer,
  collectBytes,
  connectTcp,
  startEchoServer,
  startFaultProxy,
  startTcpServer,
  waitFor,
} from '../helpers';

const MIB = 1024 * 1024;
const disposer = new Disposer();
afterEach(() => disposer.run());

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes `request` and resolves with the ms until `request.length` bytes have come back. */
async function echoRoundTrip(socket: Socket, request: Buffer): Promise<number> {
  const collector = collectBytes(socket);
  const started = performance.now();
  socket.write(request);
  await collector.waitForLength(request.length);
  return performance.now() - started;
}

async function echoThroughProxy(options: Omit<FaultProxyOptions, 'listen' | 'upstream'> = {}) {
  const echo = await startEchoServer(disposer);
  const started = await startFaultProxy(disposer, echo, options);
  const client = await connectTcp(disposer, started);
  return { echo, ...started, client };
}

describe('FaultProxy', () => {
  it('forwards 1 MiB each way unchanged with no toxics and counts connections and bytes', async () => {
    const { proxy, client } = await echoThroughProxy();
    const payload = pseudoRandomBytes('plain', MIB);
    const collector = collectBytes(client);
    client.end(payload);
    const echoed = await collector.waitForEnd();
    expect(sha256(echoed)).toBe(sha256(payload));
    await waitFor(() => proxy.stats().connectionsOpen === 0, { description: 'connection closed' });
    const stats = proxy.stats();
    expect(stats.connectionsAccepted).toBe(1);
    expect(stats.upstream).toEqual({ bytesIn: MIB, bytesOut: MIB, bytesDropped: 0 });
    expect(stats.downstream).toEqual({ bytesIn: MIB, bytesOut: MIB, bytesDropped: 0 });
  });

  it('adds the latency to each direction of an echo round trip', async () => {
    const { proxy, client } = await echoThroughProxy();
    await echoRoundTrip(client, Buffer.from('warm-up'));
    proxy.setLatency('both', { latencyMs: 30 });
    const rttMs = await echoRoundTrip(client, Buffer.from('ping'));
    expect(rttMs).toBeGreaterThanOrEqual(60);
    expect(rttMs).toBeLessThan(60 + 1000);
  });

  it('keeps 1 MiB intact and in order under latency, jitter and slicing', async () => {
    const { proxy, client } = await echoThroughProxy();
    proxy.setLatency('upstream', { latencyMs: 5, jitterMs: 5 });
    proxy.setLatency('downstream', { latencyMs: 2, jitterMs: 2 });
    proxy.setSlicer('upstream', { minBytes: 100, maxBytes: 3000, delayMs: 0 });
    const payload = pseudoRandomBytes('latency', MIB);
    const collector = collectBytes(client);
    for (let offset = 0; offset < payload.length; offset += 10_000) {
      client.write(payload.subarray(offset, offset + 10_000));
    }
    client.end();
    const echoed = await collector.waitForEnd(20_000);
    expect(echoed.length).toBe(payload.length);
    expect(echoed.equals(payload)).toBe(true);
  });

  it('slices chunks into pieces within the bounds', async () => {
    const upstream = await startTcpServer(disposer);
    const { proxy, port, host } = await startFaultProxy(disposer, upstream);
    proxy.setSlicer('upstream', { minBytes: 1, maxBytes: 7, delayMs: 1 });
    const client = await connectTcp(disposer, { host, port });
    const server = await upstream.nextConnection();
    const sizes: number[] = [];
    server.on('data', (data: Buffer) => sizes.push(data.length));
    const collector = collectBytes(server);
    const payload = pseudoRandomBytes('slicer', 200);
    client.write(payload);
    expect((await collector.waitForLength(200)).equals(payload)).toBe(true);
    expect(sizes.length).toBeGreaterThanOrEqual(Math.ceil(200 / 7) / 2); // the kernel may merge some
  });

  it('blackhole keeps the connection open, forwards nothing and drops what arrives', async () => {
    const { proxy, client } = await echoThroughProxy();
    const collector = collectBytes(client);
    proxy.setBlackhole('upstream', true);
    client.write('lost');
    await waitFor(() => proxy.stats().upstream.bytesDropped === 4, { description: 'the blackholed bytes' });
    expect(proxy.stats().upstream.bytesOut).toBe(0);
    proxy.setBlackhole('upstream', false);
    client.write('kept');
    expect((await collector.waitForLength(4)).toString()).toBe('kept');
    expect(collector.state).toBe('open');
    expect(proxy.stats().connectionsOpen).toBe(1);
  });

  it('a per-connection blackhole silences that connection only; connectionStats counts each one', async () => {
    const echo = await startEchoServer(disposer);
    const { proxy, port, host } = await startFaultProxy(disposer, echo);
    const first = await connectTcp(disposer, { host, port });
    const second = await connectTcp(disposer, { host, port });
    await waitFor(() => proxy.connectionStats().length === 2, { description: 'two connections' });
    expect(await echoRoundTrip(first, Buffer.from('warm'))).toBeGreaterThanOrEqual(0);
    const [a, b] = proxy.connectionStats().sort((x, y) => y.upstreamBytes - x.upstreamBytes);
    expect({ a: a?.upstreamBytes, b: b?.upstreamBytes }).toEqual({ a: 4, b: 0 });
    proxy.setConnectionBlackhole((a as { id: number }).id, 'both', true);
    const held = collectBytes(first);
    first.write('lost');
    await waitFor(() => proxy.stats().upstream.bytesDropped === 4, { description: 'the blackholed bytes' });
    // The other connection is untouched.
    expect((await echoRoundTrip(second, Buffer.from('still here'))) >= 0).toBe(true);
    expect(held.length).toBe(0);
    proxy.setConnectionBlackhole((a as { id: number }).id, 'both', false);
    first.write('back');
    expect((await held.waitForLength(4)).toString()).toBe('back');
    expect(() => proxy.setConnectionBlackhole(9_999, 'both', true)).toThrow(/no open connection/);
  });

  it('pause holds data in flight and releases it in order when lifted', async () => {
    const { proxy, client } = await echoThroughProxy();
    const collector = collectBytes(client);
    proxy.setPaused('downstream', true);
    client.write('one,');
    client.write('two');
    await waitFor(() => proxy.stats().upstream.bytesOut === 7, { description: 'the request upstream' });
    expect(collector.length).toBe(0);
    proxy.setPaused('downstream', false);
    expect((await collector.waitForLength(7)).toString()).toBe('one,two');
  });

  it('resetConnections gives the client ECONNRESET and resets the upstream side too', async () => {
    const upstream = await startTcpServer(disposer);
    const { proxy, host, port } = await startFaultProxy(disposer, upstream);
    const client = await connectTcp(disposer, { host, port });
    const server = await upstream.nextConnection();
    const clientBytes = collectBytes(client);
    const serverBytes = collectBytes(server);
    client.write('x');
    await serverBytes.waitForLength(1);
    expect(proxy.resetConnections()).toBe(1);
    const clientError = await clientBytes.waitForClose();
    expect((clientError as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    const serverError = await serverBytes.waitForClose();
    expect((serverError as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect(proxy.stats().resets).toBe(1);
  });

  it('setResetPeer resets new connections after the timeout', async () => {
    const { proxy, host, port } = await echoThroughProxy();
    proxy.setResetPeer({ timeoutMs: 0 });
    const client = await connectTcp(disposer, { host, port });
    const error = await collectBytes(client).waitForClose();
    expect((error as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
  });

  it('bitflip at a byte changes exactly that byte by one bit', async () => {
    const { proxy, client } = await echoThroughProxy();
    proxy.setBitflip('downstream', { atByte: 5000, bit: 3 });
    const payload = pseudoRandomBytes('bitflip', 64 * 1024);
    const collector = collectBytes(client);
    client.write(payload);
    const echoed = await collector.waitForLength(payload.length);
    const differing = [...echoed.keys()].filter((i) => echoed[i] !== payload[i]);
    expect(differing).toEqual([5000]);
    expect((echoed[5000] ?? 0) ^ (payload[5000] ?? 0)).toBe(1 << 3);
  });

  it('bitflip with probability 1 flips one bit of every byte', async () => {
    const { proxy, client } = await echoThroughProxy();
    proxy.setBitflip('upstream', { probability: 1 });
    const payload = pseudoRandomBytes('bitflip-all', 1000);
    const collector = collectBytes(client);
    client.write(payload);
    const echoed = await collector.waitForLength(payload.length);
    for (let i = 0; i < payload.length; i++) {
      const diff = (echoed[i] ?? 0) ^ (payload[i] ?? 0);
      expect(diff !== 0 && (diff & (diff - 1)) === 0).toBe(true);
    }
  });

  it('limit_data forwards exactly N bytes, then closes the connection', async () => {
    const { proxy, client } = await echoThroughProxy();
    proxy.setLimitData('downstream', { bytes: 1000 });
    const collector = collectBytes(client);
    const payload = pseudoRandomBytes('limit', 5000);
    client.write(payload);
    const received = await collector.waitForEnd();
    expect(received.equals(payload.subarray(0, 1000))).toBe(true);
    client.end();
    await waitFor(() => proxy.stats().connectionsOpen === 0, { description: 'connection closed' });
  });

  it('limit_data closes the connection as soon as exactly N bytes have passed', async () => {
    const upstream = await startTcpServer(disposer);
    const { proxy, host, port } = await startFaultProxy(disposer, upstream);
    proxy.setLimitData('upstream', { bytes: 4 });
    const client = await connectTcp(disposer, { host, port });
    const server = await upstream.nextConnection();
    const serverBytes = collectBytes(server);
    const clientBytes = collectBytes(client);
    client.write('four');
    expect((await serverBytes.waitForEnd()).toString()).toBe('four');
    await clientBytes.waitForEnd();
    client.end();
    server.end();
    await waitFor(() => proxy.stats().connectionsOpen === 0, { description: 'connection closed' });
  });

  it('the bandwidth cap bounds throughput', async () => {
    const { proxy, client } = await echoThroughProxy();
    proxy.setBandwidth('downstream', { bytesPerSecond: 512 * 1024 });
    const payload = pseudoRandomBytes('bandwidth', 256 * 1024); // 500 ms at the cap
    const started = performance.now();
    const collector = collectBytes(client);
    client.write(payload);
    const echoed = await collector.waitForLength(payload.length, 20_000);
    const elapsedMs = performance.now() - started;
    expect(echoed.equals(payload)).toBe(true);
    expect(elapsedMs).toBeGreaterThanOrEqual(400);
    expect(elapsedMs).toBeLessThan(10_000);
  });

  it('propagates a half-close: the client FIN reaches upstream and the reply still comes back', async () => {
    const upstream = await startTcpServer(disposer);
    const { host, port } = await startFaultProxy(disposer, upstream);
    const client = await connectTcp(disposer, { host, port });
    const server = await upstream.nextConnection();
    const serverBytes = collectBytes(server);
    const clientBytes = collectBytes(client);
    client.end('request');
    expect((await serverBytes.waitForEnd()).toString()).toBe('request');
    server.end('reply after FIN');
    expect((await clientBytes.waitForEnd()).toString()).toBe('reply after FIN');
  });

  it('setHalfClosed ends one direction while the other keeps flowing', async () => {
    const upstream = await startTcpServer(disposer);
    const { proxy, host, port } = await startFaultProxy(disposer, upstream);
    const client = await connectTcp(disposer, { host, port });
    const server = await upstream.nextConnection();
    const serverBytes = collectBytes(server);
    const clientBytes = collectBytes(client);
    proxy.setHalfClosed('downstream', true);
    await clientBytes.waitForEnd();
    client.write('still flowing');
    expect((await serverBytes.waitForLength(13)).toString()).toBe('still flowing');
    expect(serverBytes.state).toBe('open');
  });

  it('pauses the sender instead of buffering without bound when the receiver stops reading', async () => {
    const upstream = await startTcpServer(disposer);
    const maxBufferedBytes = 256 * 1024;
    const { proxy, host, port } = await startFaultProxy(disposer, upstream, { maxBufferedBytes });
    proxy.setLatency('upstream', { latencyMs: 1 });
    const client = await connectTcp(disposer, { host, port });
    const server = await upstream.nextConnection();
    server.pause();
    const payload = pseudoRandomBytes('backpressure', 48 * MIB);
    client.write(payload);
    let lastIn = -1;
    let stableRounds = 0;
    await waitFor(
      () => {
        const { bytesIn, bytesOut } = proxy.stats().upstream;
        expect(bytesIn - bytesOut).toBeLessThanOrEqual(maxBufferedBytes + 64 * 1024);
        stableRounds = bytesIn === lastIn ? stableRounds + 1 : 0;
        lastIn = bytesIn;
        return stableRounds >= 5;
      },
      { timeoutMs: 20_000, intervalMs: 20, description: 'the proxy to stall' },
    );
    expect(proxy.stats().upstream.bytesIn).toBeLessThan(payload.length);
    const serverBytes = collectBytes(server);
    server.resume();
    const received = await serverBytes.waitForLength(payload.length, 30_000);
    expect(sha256(received)).toBe(sha256(payload));
  });

  it('resets the client when the upstream refuses', async () => {
    const closed = await startTcpServer(disposer);
    const refusedPort = closed.port;
    await disposer.run(); // frees the port: connecting to it is now refused
    const { proxy, host, port } = await startFaultProxy(disposer, { host: '127.0.0.1', port: refusedPort });
    const client = await connectTcp(disposer, { host, port });
    const error = await collectBytes(client).waitForClose();
    expect((error as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    expect(proxy.stats().upstreamConnectFailures).toBe(1);
  });

  it('stop() closes every connection and the listener', async () => {
    const { proxy, client, port } = await echoThroughProxy();
    proxy.setLatency('both', { latencyMs: 10_000 });
    client.write('in flight');
    await waitFor(() => proxy.stats().upstream.bytesIn === 9, { description: 'bytes in flight' });
    const collector = collectBytes(client);
    await proxy.stop();
    await collector.waitForEnd();
    expect(proxy.stats().connectionsOpen).toBe(0);
    const again = connectTcp(new Disposer(), { host: '127.0.0.1', port });
    await expect(again).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('rejects bad toxic settings synchronously', () => {
    const proxy = new FaultProxy({ listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: 1 } });
    expect(() => proxy.setLatency('both', { latencyMs: -1 })).toThrow(RangeError);
    expect(() => proxy.setSlicer('upstream', { minBytes: 10, maxBytes: 5 })).toThrow(RangeError);
    expect(() => proxy.setBitflip('upstream', { probability: 2 })).toThrow(RangeError);
    expect(() => proxy.setBandwidth('upstream', { bytesPerSecond: 0 })).toThrow(RangeError);
  });
});

describe('delay link (delayConnect)', () => {
  it('models the handshake: connect + first echo takes two round trips, later echoes one', async () => {
    const echo = await startEchoServer(disposer);
    const link = await startDelayLink({ upstream: echo, oneWayDelayMs: 10 });
    disposer.add(() => link.stop(), 'stop delay link');
    const started = performance.now();
    const client = await connectTcp(disposer, link);
    const collector = collectBytes(client);
    client.write('a');
    await collector.waitForLength(1);
    const firstMs = performance.now() - started;
    const secondMs = await echoRoundTrip(client, Buffer.from('b'));
    expect(firstMs).toBeGreaterThanOrEqual(40);
    expect(firstMs).toBeLessThan(40 + 500);
    expect(secondMs).toBeGreaterThanOrEqual(20);
    expect(secondMs).toBeLessThan(20 + 500);
  });

  it('delays a server-first banner by the handshake and one trip', async () => {
    const upstream = await startTcpServer(disposer);
    const link = await startDelayLink({ upstream, oneWayDelayMs: 10 });
    disposer.add(() => link.stop(), 'stop delay link');
    const started = performance.now();
    const client = await connectTcp(disposer, link);
    const server = await upstream.nextConnection();
    const serverSawMs = performance.now() - started;
    server.write('banner');
    await collectBytes(client).waitForLength(6);
    expect(serverSawMs).toBeGreaterThanOrEqual(10);
    expect(performance.now() - started).toBeGreaterThanOrEqual(40);
  });
});
