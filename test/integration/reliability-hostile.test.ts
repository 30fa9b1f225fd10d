/**
 * Hostile input and slowloris on the relay port (docs/reliability.md, test plan C5/D1), against a real relay
 * process with the test timer profile (TLS handshake deadline 3 s; production default 10 s), while a stream
 * stays open through it and must still echo afterwards:
 *   - 10,000 garbage inputs (random bytes, HTTP requests, whole TLS records of garbage): every connection
 *     closed, each with exactly one coded `relay.connection.rejected` line, relay heap (after a full GC)
 *     grows by at most 16 MiB;
 *   - 1,000 connections that send nothing or trickle a ClientHello: each closed at the handshake deadline
 *     (+1 s), and meanwhile the agent's control connection, reset, is back within 1 s of its attempt.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import type { ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, type StartedFaultProxy, collectBytes, connectTcp, makeTempDir, startCluster, startEchoServer, startFaultProxy } from '../helpers';
import { seededRandom } from '../helpers/chunking';
import { AGENT_METRICS_CONFIG, RELIABILITY_RELAY_CONFIG, RELIABILITY_UNPACED_RELAY_CONFIG, collectGarbage, eventsSince, gcNodeArgs, nextEventAt, relayMetricsPort, sample, scrape, startAgentWithMetrics } from '../helpers/reliability';

const GARBAGE_INPUTS = 10_000;
const GARBAGE_CONCURRENCY = 100;
const SLOWLORIS = 1_000;
const PER_ALPN = 300;
const HANDSHAKE_TIMEOUT_MS = RELIABILITY_RELAY_CONFIG.timers.tlsHandshakeTimeoutMs;

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

/** The i-th garbage input: random bytes, an HTTP request, or a whole TLS record (handshake type) of garbage. */
function garbage(i: number, random: () => number): Buffer {
  const length = 1 + Math.floor(random() * 512);
  const bytes = Buffer.from(Array.from({ length }, () => Math.floor(random() * 256)));
  if (i % 8 === 1) return Buffer.from(`GET /${bytes.toString('hex').slice(0, 40)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  if (i % 8 === 2) return Buffer.concat([Buffer.from([0x16, 0x03, 0x01, length >> 8, length & 0xff]), bytes]);
  return bytes;
}

/** A loopback source address of its own for input `i`, so the relay's log line names the input it is about. */
const sourceAddress = (i: number): string => `127.1.${i >> 8}.${(i & 0xff) + 0}`;

/** Send `input`, resolve with ms from the write until the relay closed the connection (bounded). */
function sendAndTimeClose(port: number, input: Buffer, localAddress: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let sentAt = Date.now();
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('connect', () => {
      sentAt = Date.now();
      socket.write(input);
    });
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - sentAt);
    });
  });
}

const percentile = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;

describe('relay port under garbage and slowloris', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let proxy: StartedFaultProxy;
  let relayMetrics: number;
  let gcDir: string;
  let longStream: { socket: net.Socket; received: ReturnType<typeof collectBytes> };

  beforeAll(async () => {
    const echo = await startEchoServer(suite);
    gcDir = await makeTempDir(suite, 'portway-heap-');
    cluster = await startCluster(suite, { services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` }], relayConfig: RELIABILITY_UNPACED_RELAY_CONFIG, relayNodeArgs: gcNodeArgs(gcDir) });
    await (cluster.agent as ManagedProcess).stop();
    proxy = await startFaultProxy(suite, { host: '127.0.0.1', port: cluster.relayPort });
    await cluster.writeAgentConfig({ relay: `127.0.0.1:${proxy.port}`, ...AGENT_METRICS_CONFIG });
    await startAgentWithMetrics(cluster);
    relayMetrics = relayMetricsPort(cluster.relay as ManagedProcess);
    // A stream that stays open through everything below.
    const connect = await cluster.connect('echo');
    const socket = await connectTcp(suite, { host: '127.0.0.1', port: connect.port });
    const received = collectBytes(socket);
    socket.write('before\n');
    await received.waitForLength(7, 15_000);
    longStream = { socket, received };
  }, 90_000);
  afterAll(() => suite.run(), 30_000);

  it(`${GARBAGE_INPUTS} garbage inputs: each closed with one coded log line, relay heap bounded, nothing else disturbed`, async () => {
    const relay = cluster.relay as ManagedProcess;
    await collectGarbage(relay, gcDir, relayMetrics);
    const heapBefore = sample(await scrape(relayMetrics), 'portway_relay_nodejs_heap_size_used_bytes');
    const from = relay.lines.length;
    const random = seededRandom(6);
    const closeMs: number[] = [];
    let next = 0;
    const started = Date.now();
    await Promise.all(
      Array.from({ length: GARBAGE_CONCURRENCY }, async () => {
        while (next < GARBAGE_INPUTS) {
          const i = next++;
          closeMs.push(await sendAndTimeClose(cluster.relayPort, garbage(i, random), sourceAddress(i), HANDSHAKE_TIMEOUT_MS + 5_000));
        }
      }),
    );
    const elapsedMs = Date.now() - started;
    // Let the last log lines arrive.
    await new Promise((r) => setTimeout(r, 500));
    const rejected = eventsSince(relay, 'relay.connection.rejected', from);
    const byCode: Record<string, number> = {};
    const perSource = new Map<string, number>();
    for (const e of rejected) {
      byCode[e.code as string] = (byCode[e.code as string] ?? 0) + 1;
      const source = (e.remote as string).replace(/:\d+$/, '');
      perSource.set(source, (perSource.get(source) ?? 0) + 1);
    }
    const notOne = Array.from({ length: GARBAGE_INPUTS }, (_, i) => sourceAddress(i)).filter((a) => perSource.get(a) !== 1);
    await collectGarbage(relay, gcDir, relayMetrics);
    const heapAfter = sample(await scrape(relayMetrics), 'portway_relay_nodejs_heap_size_used_bytes');
    const sorted = [...closeMs].sort((a, b) => a - b);
    const within1s = closeMs.filter((ms) => ms <= 1_000).length;
    figure('garbage-relay-port', { inputs: GARBAGE_INPUTS, elapsedMs, p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), maxMs: sorted.at(-1), within1s, byCode, heapGrowthBytes: heapAfter - heapBefore, otherLines: rejected.length - GARBAGE_INPUTS + notOne.length, notOne: notOne.slice(0, 5) });
    expect(relay.child.exitCode).toBeNull();
    // The stream opened before the flood still echoes.
    longStream.socket.write('after\n');
    expect((await longStream.received.waitForLength(13, 10_000)).toString()).toBe('before\nafter\n');
    // Exactly one coded line per garbage connection.
    expect(notOne).toEqual([]);
    expect(sorted.at(-1)).toBeLessThanOrEqual(HANDSHAKE_TIMEOUT_MS + 1_000);
    // Only an input that still looks like an unfinished TLS record waits for the handshake deadline.
    expect(within1s).toBeGreaterThanOrEqual(GARBAGE_INPUTS * 0.99);
    expect(heapAfter - heapBefore).toBeLessThanOrEqual(16 * 1024 * 1024);
  }, 120_000);

  it(`${SLOWLORIS} idle or trickling connections: each closed at the handshake deadline; the agent still connects within 1 s`, async () => {
    const relay = cluster.relay as ManagedProcess;
    const agent = cluster.agent as ManagedProcess;
    const rssBefore = sample(await scrape(relayMetrics), 'portway_relay_process_resident_memory_bytes');
    const hello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
    const lifetimes: Promise<number>[] = [];
    const sockets: net.Socket[] = [];
    const timers: NodeJS.Timeout[] = [];
    try {
      for (let i = 0; i < SLOWLORIS; i++) {
        lifetimes.push(
          new Promise<number>((resolve) => {
            const socket = net.connect({ host: '127.0.0.1', port: cluster.relayPort });
            sockets.push(socket);
            let openedAt = Date.now();
            socket.on('connect', () => {
              openedAt = Date.now();
              if (i % 2 === 1) {
                // Trickle: one byte of a ClientHello every 500 ms.
                let sent = 0;
                const timer = setInterval(() => {
                  if (sent < hello.length && socket.writable) socket.write(hello.subarray(sent, ++sent));
                }, 500);
                timers.push(timer);
                socket.once('close', () => clearInterval(timer));
              }
            });
            socket.on('error', () => undefined);
            socket.on('close', () => resolve(Date.now() - openedAt));
          }),
        );
        if (i % 100 === 99) await new Promise((r) => setTimeout(r, 20));
      }
      // Meanwhile: the agent's control connection is reset; its next attempt must get through quickly.
      const scheduled = nextEventAt(agent, 'agent.reconnect.scheduled', 10_000);
      const online = nextEventAt(agent, 'agent.control.online', 15_000);
      proxy.proxy.resetConnections();
      const s = (await scheduled).json;
      const agentConnectMs = Date.parse((await online).json.time as string) - (Date.parse(s.time as string) + (s.delayMs as number));
      const rssPeak = sample(await scrape(relayMetrics), 'portway_relay_process_resident_memory_bytes');
      // And a user's stream is served during the attack (the reset above cut the streams on the agent's link).
      const pipeStarted = Date.now();
      const pipe = await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'during\n', timeoutMs: 10_000 });
      const pipeMs = Date.now() - pipeStarted;
      const closed = await Promise.all(lifetimes);
      const sorted = [...closed].sort((a, b) => a - b);
      figure('slowloris-relay-port', { connections: SLOWLORIS, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS, minMs: sorted[0], p50Ms: percentile(sorted, 0.5), maxMs: sorted.at(-1), agentConnectMs, pipeMs, rssGrowthBytes: rssPeak - rssBefore });
      expect(agentConnectMs).toBeLessThanOrEqual(1_000);
      expect(pipe).toEqual({ code: 0, stdout: 'during\n', stderr: '' });
      expect(sorted[0]).toBeGreaterThanOrEqual(HANDSHAKE_TIMEOUT_MS - 100);
      expect(sorted.at(-1)).toBeLessThanOrEqual(HANDSHAKE_TIMEOUT_MS + 1_000);
      expect(rssPeak - rssBefore).toBeLessThanOrEqual(64 * 1024 * 1024);
      const timeouts = eventsSince(relay, 'relay.connection.rejected', 0).filter((e) => e.code === 'PW_HANDSHAKE_TIMEOUT').length;
      expect(timeouts).toBeGreaterThanOrEqual(SLOWLORIS);
    } finally {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
    }
  }, 60_000);

  /**
   * Open `count` TLS connections with `alpn` that send nothing after the handshake; resolve with how long after
   * its handshake each was closed by the relay (Infinity: still open after `waitMs`, then destroyed).
   */
  async function quietTls(alpn: string, cert: { key: Buffer; cert: Buffer } | undefined, count: number, waitMs: number): Promise<number[]> {
    return Promise.all(
      Array.from({ length: count }, () =>
        new Promise<number>((resolve) => {
          const socket = tls.connect({ host: '127.0.0.1', port: cluster.relayPort, ALPNProtocols: [alpn], rejectUnauthorized: false, ...(cert ?? {}) });
          let handshakeAt = 0;
          const timer = setTimeout(() => {
            resolve(Infinity);
            socket.destroy();
          }, waitMs);
          socket.on('secureConnect', () => (handshakeAt = Date.now()));
          socket.on('data', () => undefined);
          socket.on('error', () => undefined);
          socket.on('close', () => {
            clearTimeout(timer);
            resolve(handshakeAt === 0 ? -1 : Date.now() - handshakeAt);
          });
        }),
      ),
    );
  }

  const summary = (lifetimes: readonly number[], deadlineMs: number) => {
    const sorted = [...lifetimes].sort((a, b) => a - b);
    return { minMs: sorted[0], maxMs: sorted.at(-1), notHandshaken: sorted.filter((ms) => ms < 0).length, beforeDeadline: sorted.filter((ms) => ms >= 0 && ms < deadlineMs - 100).length };
  };

  it(`${PER_ALPN} quiet connections on the MQTT and data ALPNs are closed by the CONNECT / first-frame deadline`, async () => {
    const state = path.join(cluster.dir, 'agent-state');
    const device = { key: readFileSync(path.join(state, 'device.key')), cert: readFileSync(path.join(state, 'device.crt')) };
    const timers = RELIABILITY_RELAY_CONFIG.timers;
    // MQTT without a client certificate is closed at once, so that quiet client holds a device certificate.
    const mqtt = summary(await quietTls('mqtt', device, PER_ALPN, timers.mqttConnectTimeoutMs + 5_000), timers.mqttConnectTimeoutMs);
    const data = summary(await quietTls('portway-data/1', undefined, PER_ALPN, timers.firstFrameTimeoutMs + 5_000), timers.firstFrameTimeoutMs);
    figure('slowloris-per-alpn', { perAlpn: PER_ALPN, deadlinesMs: { mqtt: timers.mqttConnectTimeoutMs, data: timers.firstFrameTimeoutMs }, mqtt, data });
    expect({ notHandshaken: mqtt.notHandshaken, closedBy: (mqtt.maxMs as number) <= timers.mqttConnectTimeoutMs + 1_000 }).toEqual({ notHandshaken: 0, closedBy: true });
    expect({ notHandshaken: data.notHandshaken, early: data.beforeDeadline, closedBy: (data.maxMs as number) <= timers.firstFrameTimeoutMs + 1_000 }).toEqual({ notHandshaken: 0, early: 0, closedBy: true });
    // The real agent, holding the same certificate, is still online.
    expect((await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'ok\n', timeoutMs: 10_000 })).stdout).toBe('ok\n');
  }, 60_000);

  // The HTTP API cuts a connection that sends no request within httpRequestTimeoutMs (before the fix they stayed
  // open about 112 s).
  it(`${PER_ALPN} quiet connections on the HTTP API ALPN are closed by httpRequestTimeoutMs`, async () => {
    const deadlineMs = RELIABILITY_RELAY_CONFIG.timers.httpRequestTimeoutMs;
    const http = summary(await quietTls('http/1.1', undefined, PER_ALPN, deadlineMs + 2_000), deadlineMs);
    figure('slowloris-http-alpn', { perAlpn: PER_ALPN, deadlineMs, http });
    expect({ notHandshaken: http.notHandshaken, closedBy: (http.maxMs as number) <= deadlineMs + 1_000 }).toEqual({ notHandshaken: 0, closedBy: true });
  }, 30_000);

  it('a canary sent 1,000 times through 100 streams never appears in the bytes the relay exchanges with the agent, nor in its logs', async () => {
    const canary = Buffer.from('7c1f0e5a9b3d2c4e6f8a0b1c2d3e4f5a', 'hex').toString('base64url') + 'CANARY';
    const needle = Buffer.from(canary);
    // A tap on the agent's link: every byte the relay sends to or receives from the agent passes through it.
    const counts = { tapped: 0, seen: 0 };
    const scanner = (into = counts) => {
      let carry = Buffer.alloc(0);
      return (chunk: Buffer): void => {
        into.tapped += chunk.length;
        const window = Buffer.concat([carry, chunk]);
        if (window.includes(needle)) into.seen++;
        carry = window.subarray(Math.max(0, window.length - needle.length + 1));
      };
    };
    // The scanner finds a canary split across chunks (else this test could not fail).
    const check = { tapped: 0, seen: 0 };
    const scan = scanner(check);
    for (const piece of [Buffer.from(`xx${canary.slice(0, 7)}`), Buffer.from(canary.slice(7, 9)), Buffer.from(`${canary.slice(9)}yy`)]) scan(piece);
    expect(check.seen).toBe(1);
    const tap = net.createServer((inbound) => {
      const outbound = net.connect({ host: '127.0.0.1', port: cluster.relayPort });
      const scanIn = scanner();
      const scanOut = scanner();
      inbound.on('data', (c: Buffer) => scanIn(c));
      outbound.on('data', (c: Buffer) => scanOut(c));
      inbound.pipe(outbound).pipe(inbound);
      inbound.on('error', () => outbound.destroy());
      outbound.on('error', () => inbound.destroy());
      inbound.on('close', () => outbound.destroy());
      outbound.on('close', () => inbound.destroy());
    });
    await new Promise<void>((resolve) => tap.listen(0, '127.0.0.1', resolve));
    const tapPort = (tap.address() as net.AddressInfo).port;
    try {
      await (cluster.agent as ManagedProcess).stop();
      await cluster.writeAgentConfig({ relay: `127.0.0.1:${tapPort}`, ...AGENT_METRICS_CONFIG });
      await startAgentWithMetrics(cluster);
      const relay = cluster.relay as ManagedProcess;
      const from = relay.lines.length;
      const connect = await cluster.connect('echo');
      let next = 0;
      const stream = async (): Promise<void> => {
        const socket = net.connect({ host: '127.0.0.1', port: connect.port });
        const received = collectBytes(socket);
        socket.on('error', () => undefined);
        for (let i = 0; i < 10; i++) socket.write(`${canary}\n`);
        socket.end();
        const back = await received.waitForLength(10 * (canary.length + 1), 20_000);
        expect(back.toString()).toBe(`${canary}\n`.repeat(10));
      };
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          while (next < 100) {
            next++;
            await stream();
          }
        }),
      );
      const relayText = relay.lines.slice(from).join('\n') + relay.stderr;
      figure('canary', { streams: 100, sends: 1_000, tappedBytes: counts.tapped, seenOnLink: counts.seen, inRelayLogs: relayText.includes(canary) });
      expect(counts.tapped).toBeGreaterThan(1_000 * needle.length);
      expect({ seenOnLink: counts.seen, inRelayLogs: relayText.includes(canary) }).toEqual({ seenOnLink: 0, inRelayLogs: false });
    } finally {
      await (cluster.agent as ManagedProcess).stop();
      tap.close();
    }
  }, 90_000);
});
