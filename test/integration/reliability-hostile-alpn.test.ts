/**
 * Hostile input volume per ALPN (issue 6, docs/reliability.md "Hostile input"): after a TLS handshake (resumed
 * sessions, so the relay's parsers and not TLS set the pace), seeded garbage on each route of the relay port:
 *   - mqtt (the device's certificate, so input reaches the broker): random bytes, packets before CONNECT,
 *     CONNECTs with another client ID or a bad protocol level, impossible remaining lengths; one input per
 *     connection (MQTT closes on the first protocol error);
 *   - portway-data/1 (a user's certificate): bad preambles, complete frames of random type, flags and payload,
 *     CLIENT_OPEN with garbage JSON, AGENT_HELLO from a user; one input per connection (the first frame decides);
 *   - http/1.1: garbage requests (random methods, paths, tokens, bodies), each answered 4xx with a code, and
 *     non-HTTP bytes (400); one input per connection, because the relay answers a refused request with
 *     `Connection: close` (pipelined requests after it are parsed and logged, but never answered).
 * Non-TLS bytes on the port: reliability-hostile.test.ts (10,000 inputs).
 * Pass: the relay stays up and keeps serving a stream opened before; every bad connection is closed, 99 % within
 * 1 s, all by the deadline + 1 s; one coded log line per input; relay heap after a full GC grows ≤ 16 MiB.
 * PORTWAY_HOSTILE_INPUTS sets the count per ALPN (default 10,000).
 */
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { DATA_MAGIC, encodeFrame, encodePreamble, FrameType } from '../../protocol';
import type { ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, FAST_AGENT_TIMERS, collectBytes, connectTcp, makeTempDir, startCluster, startEchoServer } from '../helpers';
import { seededRandom } from '../helpers/chunking';
import { RELIABILITY_RELAY_CONFIG, RELIABILITY_UNPACED_RELAY_CONFIG, collectGarbage, gcNodeArgs, relayMetricsPort, sample, scrape } from '../helpers/reliability';

const INPUTS = Number(process.env.PORTWAY_HOSTILE_INPUTS ?? 10_000);
const CONCURRENCY = 50;
/** Of the HTTP inputs, this share are non-HTTP bytes; the rest are garbage requests. */
const HTTP_RAW_SHARE = 0.1;
const DEADLINE_MS = RELIABILITY_RELAY_CONFIG.timers.firstFrameTimeoutMs;
const MAX_HEAP_GROWTH_BYTES = 16 * 1024 * 1024;
const AGENT_KEEPALIVE_S = 10;

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

interface Credentials {
  readonly key: string;
  readonly cert: string;
}

const percentile = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;

function randomBytes(random: () => number, min: number, max: number): Buffer {
  const length = min + Math.floor(random() * (max - min + 1));
  return Buffer.from(Array.from({ length }, () => Math.floor(random() * 256)));
}

/** An MQTT packet: fixed header byte, remaining length (variable byte integer), body. */
function mqttPacket(first: number, body: Buffer): Buffer {
  const len: number[] = [];
  let n = body.length;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([first, ...len]), body]);
}

const mqttString = (s: Buffer | string): Buffer => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};

/** The i-th MQTT garbage input; never a CONNECT with the real device's client ID. */
function mqttGarbage(i: number, random: () => number): Buffer {
  switch (i % 6) {
    case 0:
      return randomBytes(random, 1, 300);
    case 1: // a CONNECT with a client ID other than the certificate's
      return mqttPacket(0x10, Buffer.concat([mqttString('MQTT'), Buffer.from([0x04, 0x02, 0x00, 0x3c]), mqttString(`x${randomBytes(random, 1, 20).toString('hex')}`)]));
    case 2: // a bad protocol name or level
      return mqttPacket(0x10, Buffer.concat([mqttString(randomBytes(random, 0, 8)), Buffer.from([Math.floor(random() * 256), 0x02, 0x00, 0x3c]), mqttString('x')]));
    case 3: // PUBLISH, SUBSCRIBE or PINGREQ before CONNECT
      return [mqttPacket(0x30, Buffer.concat([mqttString('#'), randomBytes(random, 0, 64)])), mqttPacket(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString('#'), Buffer.from([0])])), Buffer.from([0xc0, 0x00])][Math.floor(random() * 3)] as Buffer;
    case 4: // the largest remaining length MQTT can express
      return Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f, ...randomBytes(random, 0, 32)]);
    default: // reserved packet types 0 and 15
      return mqttPacket(random() < 0.5 ? 0x00 : 0xf0, randomBytes(random, 0, 64));
  }
}

/** The i-th data-socket garbage input: always complete, so the relay can decide at once. */
function dataGarbage(i: number, random: () => number): Buffer {
  const frame = (type: number, flags: number, payload: Buffer): Buffer => Buffer.concat([Buffer.from([type, flags, payload.length >> 8, payload.length & 0xff]), payload]);
  switch (i % 6) {
    case 0: // not our magic
      return Buffer.concat([Buffer.from([DATA_MAGIC[0] === 0x50 ? 0x51 : 0x50]), randomBytes(random, 4, 200)]);
    case 1: // our magic, an unknown version
      return Buffer.concat([DATA_MAGIC, Buffer.from([0x7f]), randomBytes(random, 0, 64)]);
    case 2: // a complete frame of random type, flags and payload
      return Buffer.concat([encodePreamble(), frame(Math.floor(random() * 256), Math.floor(random() * 256), randomBytes(random, 0, 256))]);
    case 3: // CLIENT_OPEN with garbage JSON
      return Buffer.concat([encodePreamble(), frame(FrameType.CLIENT_OPEN, 0, Buffer.from(`{"device":${randomBytes(random, 1, 40).toString('latin1')}`, 'latin1'))]);
    case 4: // a user posing as a device
      return Buffer.concat([encodePreamble(), encodeFrame(FrameType.AGENT_HELLO, { kind: 'dial', token: randomBytes(random, 8, 32).toString('base64url') })]);
    default: // CLIENT_OPEN of the wrong shape
      return Buffer.concat([encodePreamble(), encodeFrame(FrameType.CLIENT_OPEN, { device: Math.floor(random() * 1e6), service: [randomBytes(random, 1, 8).toString('hex')] })]);
  }
}

const HTTP_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];

/** The i-th garbage HTTP request: method, path, optional token, optional body. Never a valid credential. */
function httpGarbage(i: number, random: () => number): { method: string; path: string; token?: string; body?: Buffer } {
  const method = HTTP_METHODS[Math.floor(random() * HTTP_METHODS.length)] as string;
  const word = randomBytes(random, 1, 24).toString('base64url');
  const paths = [`/v1/${word}`, `/v1/devices/${word}`, '/v1/enroll', '/v1/login', `/v1/claims/${word}`, `/v1/tokens/${word}`, `/v1/shares/${word}`, `/${'a'.repeat(1 + Math.floor(random() * 2000))}`, `/v1/devices/%00${word}`, '/v1/../../etc/passwd'];
  const p = paths[i % paths.length] as string;
  const token = random() < 0.5 ? undefined : [`pwt_${word}`, word, `pwt_${'A'.repeat(43)}`][Math.floor(random() * 3)];
  const bodies = [randomBytes(random, 1, 300), Buffer.from('{"csr": '), Buffer.from(JSON.stringify({ enrollKey: Math.floor(random() * 1e9), name: word, csr: [] })), Buffer.from('[]')];
  const body = method === 'GET' || method === 'DELETE' || method === 'OPTIONS' ? undefined : bodies[Math.floor(random() * bodies.length)];
  return { method, path: p, ...(token === undefined ? {} : { token }), ...(body === undefined ? {} : { body }) };
}

/**
 * The relay's log lines of interest, parsed as they arrive (ManagedProcess keeps only the first 20,000 lines,
 * and this test makes more than that).
 */
class LogTally {
  private entries: Record<string, unknown>[] = [];
  private partial = '';

  constructor(stdout: NodeJS.ReadableStream, private readonly wanted: (line: string) => boolean) {
    stdout.on('data', (chunk: string) => {
      const lines = (this.partial + chunk).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) if (this.wanted(line)) this.entries.push(JSON.parse(line) as Record<string, unknown>);
    });
  }

  /** The entries since the last take(). */
  take(): Record<string, unknown>[] {
    const out = this.entries;
    this.entries = [];
    return out;
  }
}

const TALLIED = ['broker.packet.rejected', 'broker.connect.refused', 'broker.connection.failed', 'broker.connection.refused', 'broker.connection.closed', 'relay.data.refused', 'relay.http.refused', 'relay.http.client_error', 'relay.http.failed', 'relay.connection.rejected', 'relay.device.offline', 'relay.device.online', 'broker.client.disconnected', 'broker.client.connected', 'broker.session.replaced'];

/** One garbage request as bytes (exact Content-Length, so the pipeline stays in step). */
function httpRequestBytes(g: { method: string; path: string; token?: string; body?: Buffer }): Buffer {
  const headers = [`${g.method} ${g.path} HTTP/1.1`, 'host: relay'];
  if (g.token !== undefined) headers.push(`authorization: Bearer ${g.token}`);
  if (g.body !== undefined) headers.push('content-type: application/json', `content-length: ${g.body.length}`);
  return Buffer.concat([Buffer.from(`${headers.join('\r\n')}\r\n\r\n`, 'latin1'), g.body ?? Buffer.alloc(0)]);
}

describe('relay ALPN routes under hostile input volume', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let relay: ManagedProcess;
  let device: Credentials;
  let user: Credentials;
  let gcDir: string;
  let metricsPort: number;
  let longStream: { socket: net.Socket; received: ReturnType<typeof collectBytes>; sent: string };
  let tally: LogTally;
  const results: Record<string, unknown> = {};

  beforeAll(async () => {
    if (!Number.isInteger(INPUTS) || INPUTS < 10 || INPUTS > 1_000_000) throw new RangeError('PORTWAY_HOSTILE_INPUTS must be 10-1000000');
    const echo = await startEchoServer(suite);
    gcDir = await makeTempDir(suite, 'portway-heap-');
    cluster = await startCluster(suite, { services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` }], relayConfig: RELIABILITY_UNPACED_RELAY_CONFIG, relayNodeArgs: gcNodeArgs(gcDir) });
    // The agent's keepalive is 10 s here (test profile 2 s, production 25 s): the floods below saturate both
    // cores, and a 2 s keepalive (3 s to PINGRESP) then trips in the starved agent itself (seen once per
    // 10,000-input MQTT flood at load average 7), which is not what this test is about.
    await (cluster.agent as ManagedProcess).stop();
    await cluster.writeAgentConfig({ timers: { ...FAST_AGENT_TIMERS, keepaliveS: AGENT_KEEPALIVE_S } });
    await cluster.startAgent();
    relay = cluster.relay as ManagedProcess;
    metricsPort = relayMetricsPort(relay);
    tally = new LogTally(relay.child.stdout as NodeJS.ReadableStream, (line) => TALLIED.some((event) => line.includes(`"msg":"${event}"`)));
    const state = path.join(cluster.dir, 'agent-state');
    device = { key: await fs.readFile(path.join(state, 'device.key'), 'utf8'), cert: await fs.readFile(path.join(state, 'device.crt'), 'utf8') };
    const home = path.join(cluster.configHome, 'portway');
    user = { key: await fs.readFile(path.join(home, 'user.key'), 'utf8'), cert: await fs.readFile(path.join(home, 'user.crt'), 'utf8') };
    const connect = await cluster.connect('echo');
    const socket = await connectTcp(suite, { host: '127.0.0.1', port: connect.port });
    const received = collectBytes(socket);
    socket.write('before\n');
    await received.waitForLength(7, 15_000);
    longStream = { socket, received, sent: 'before\n' };
  }, 90_000);
  afterAll(async () => {
    figure('hostile-alpn', results);
    await suite.run();
  }, 30_000);

  /** The relay is up and the stream opened before still echoes. */
  async function expectUndisturbed(tag: string): Promise<void> {
    expect(relay.child.exitCode).toBeNull();
    longStream.sent += `${tag}\n`;
    longStream.socket.write(`${tag}\n`);
    expect((await longStream.received.waitForLength(longStream.sent.length, 10_000)).toString()).toBe(longStream.sent);
  }

  async function heapUsed(): Promise<number> {
    await collectGarbage(relay, gcDir, metricsPort);
    return sample(await scrape(metricsPort), 'portway_relay_nodejs_heap_size_used_bytes');
  }

  /**
   * `count` connections with ALPN `alpn`, each: TLS (resumed after the first), write input(i) once, time until
   * the relay closes it (bounded). Resolves with the close times and how many handshakes were resumed.
   */
  async function flood(alpn: string, credentials: Credentials | undefined, count: number, input: (i: number) => Buffer, onAnswer?: (i: number, answer: Buffer) => void): Promise<{ closeMs: number[]; resumed: number; elapsedMs: number; ports: Set<number> }> {
    const context = tls.createSecureContext({ ...(credentials ?? {}), minVersion: 'TLSv1.3' });
    let session: Buffer | undefined;
    let resumed = 0;
    const closeMs: number[] = [];
    /** The flood's own source ports: the relay's lines about other connections (the agent's pool, say) are not counted. */
    const ports = new Set<number>();
    let next = 0;
    const one = (i: number): Promise<number> =>
      new Promise((resolve) => {
        const socket = tls.connect({ host: '127.0.0.1', port: cluster.relayPort, secureContext: context, ALPNProtocols: [alpn], rejectUnauthorized: false, ...(session ? { session } : {}) });
        let sentAt = Date.now();
        const timer = setTimeout(() => socket.destroy(), DEADLINE_MS + 5_000);
        socket.on('session', (s: Buffer) => (session = s));
        socket.on('secureConnect', () => {
          if (socket.localPort !== undefined) ports.add(socket.localPort);
          if (socket.isSessionReused()) resumed++;
          sentAt = Date.now();
          socket.write(input(i));
        });
        const answer: Buffer[] = [];
        socket.on('data', (c: Buffer) => {
          if (onAnswer && answer.length < 16) answer.push(c);
        });
        socket.on('error', () => undefined); // resets are expected
        socket.on('close', () => {
          clearTimeout(timer);
          onAnswer?.(i, Buffer.concat(answer));
          resolve(Date.now() - sentAt);
        });
      });
    const started = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < count) closeMs.push(await one(next++));
      }),
    );
    return { closeMs, resumed, elapsedMs: Date.now() - started, ports };
  }

  function summary(closeMs: number[]): { p50Ms: number; p99Ms: number; maxMs: number; within1s: number } {
    const sorted = [...closeMs].sort((a, b) => a - b);
    return { p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), maxMs: sorted.at(-1) as number, within1s: closeMs.filter((ms) => ms <= 1_000).length };
  }

  function codeCounts(events: Record<string, unknown>[], key: string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of events) out[String(e[key])] = (out[String(e[key])] ?? 0) + 1;
    return out;
  }

  /** Entries of `msg` among `entries`. */
  const only = (entries: Record<string, unknown>[], ...msgs: string[]): Record<string, unknown>[] => entries.filter((e) => msgs.includes(String(e.msg)));

  it(`mqtt: ${INPUTS} garbage inputs with the device certificate, each closed with one coded line; the device's session untouched`, async () => {
    const heapBefore = await heapUsed();
    tally.take();
    const random = seededRandom(61);
    const run = await flood('mqtt', device, INPUTS, (i) => mqttGarbage(i, random));
    await new Promise((r) => setTimeout(r, 500)); // the last log lines
    const entries = tally.take();
    // One coded line per rejected connection; a CONNECT deadline is logged as broker.connection.closed with a code.
    const coded = only(entries, 'broker.packet.rejected', 'broker.connect.refused', 'broker.connection.failed', 'broker.connection.refused').concat(only(entries, 'broker.connection.closed').filter((e) => e.code !== undefined));
    const reasons: Record<string, number> = {};
    for (const e of coded) {
      const reason = `${String(e.msg)}:${String(e.reason ?? e.verdict ?? (e.err as { message?: string } | undefined)?.message?.slice(0, 40) ?? '')}`;
      reasons[reason] = (reasons[reason] ?? 0) + 1;
    }
    const heapGrowth = (await heapUsed()) - heapBefore;
    const s = summary(run.closeMs);
    const deviceChanges = only(entries, 'relay.device.offline', 'relay.device.online').length;
    results.mqtt = { inputs: INPUTS, elapsedMs: run.elapsedMs, resumed: run.resumed, ...s, codedLines: coded.length, reasons, heapGrowthBytes: heapGrowth, deviceChanges };
    await expectUndisturbed('after-mqtt');
    expect({ coded: coded.length, deviceChanges }).toEqual({ coded: INPUTS, deviceChanges: 0 });
    expect(s.within1s).toBeGreaterThanOrEqual(INPUTS * 0.99);
    expect(s.maxMs).toBeLessThanOrEqual(DEADLINE_MS + 1_000);
    expect(heapGrowth).toBeLessThanOrEqual(MAX_HEAP_GROWTH_BYTES);
  }, 180_000);

  it(`data: ${INPUTS} garbage first frames with a user certificate, each closed with one coded line`, async () => {
    const heapBefore = await heapUsed();
    tally.take();
    const random = seededRandom(62);
    const run = await flood('portway-data/1', user, INPUTS, (i) => dataGarbage(i, random));
    await new Promise((r) => setTimeout(r, 500));
    const entries = tally.take();
    const allRefused = only(entries, 'relay.data.refused');
    const refused = allRefused.filter((e) => run.ports.has(Number(String(e.remote).split(':').pop())));
    const heapGrowth = (await heapUsed()) - heapBefore;
    const s = summary(run.closeMs);
    const byCode = codeCounts(refused, 'code');
    // Lines about other connections (under this load the real agent's pooled socket can miss its first-frame deadline).
    const otherRefused = codeCounts(allRefused.filter((e) => !refused.includes(e)), 'code');
    results.data = { inputs: INPUTS, elapsedMs: run.elapsedMs, resumed: run.resumed, ...s, codedLines: refused.length, byCode, otherRefused, heapGrowthBytes: heapGrowth };
    await expectUndisturbed('after-data');
    expect(byCode.PW_INTERNAL).toBeUndefined();
    expect(refused.length).toBe(INPUTS);
    expect(s.within1s).toBeGreaterThanOrEqual(INPUTS * 0.99);
    expect(s.maxMs).toBeLessThanOrEqual(DEADLINE_MS + 1_000);
    expect(heapGrowth).toBeLessThanOrEqual(MAX_HEAP_GROWTH_BYTES);
  }, 180_000);

  it(`http/1.1: ${INPUTS} garbage inputs (requests and non-HTTP bytes): 4xx with a code, closed, one coded line each`, async () => {
    const heapBefore = await heapUsed();
    tally.take();
    const random = seededRandom(63);
    const isRaw = (i: number): boolean => i % Math.round(1 / HTTP_RAW_SHARE) === 0;
    const statuses: Record<string, number> = {};
    const codes: Record<string, number> = {};
    let uncoded = 0;
    const run = await flood(
      'http/1.1',
      undefined,
      INPUTS,
      (i) => (isRaw(i) ? Buffer.concat([randomBytes(random, 1, 200), Buffer.from('\r\n\r\n')]) : httpRequestBytes(httpGarbage(i, random))),
      (i, answer) => {
        const text = answer.toString('utf8');
        const status = /^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 'none';
        statuses[status] = (statuses[status] ?? 0) + 1;
        if (isRaw(i)) return;
        let code: string | undefined;
        try {
          code = (JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { code?: string }).code;
        } catch {
          code = undefined; // counted below
        }
        if (code === undefined) uncoded++;
        else codes[code] = (codes[code] ?? 0) + 1;
      },
    );
    await new Promise((r) => setTimeout(r, 500));
    const entries = tally.take();
    const refused = only(entries, 'relay.http.refused');
    const clientErrors = only(entries, 'relay.http.client_error');
    const rawCount = Array.from({ length: INPUTS }, (_, i) => i).filter(isRaw).length;
    const heapGrowth = (await heapUsed()) - heapBefore;
    const s = summary(run.closeMs);
    results.http = { inputs: INPUTS, requests: INPUTS - rawCount, nonHttp: rawCount, elapsedMs: run.elapsedMs, resumed: run.resumed, ...s, statuses, codes, uncoded, refusedLines: refused.length, failedLines: only(entries, 'relay.http.failed').length, clientErrorLines: clientErrors.length, clientErrorCodes: codeCounts(clientErrors, 'code'), heapGrowthBytes: heapGrowth };
    await expectUndisturbed('after-http');
    expect({ uncoded, statuses: Object.keys(statuses).filter((k) => !/^4\d\d$/.test(k)) }).toEqual({ uncoded: 0, statuses: [] });
    expect({ refused: refused.length, clientErrors: clientErrors.length }).toEqual({ refused: INPUTS - rawCount, clientErrors: rawCount });
    expect(s.within1s).toBeGreaterThanOrEqual(INPUTS * 0.99);
    expect(s.maxMs).toBeLessThanOrEqual(DEADLINE_MS + 1_000);
    expect(heapGrowth).toBeLessThanOrEqual(MAX_HEAP_GROWTH_BYTES);
  }, 180_000);
});
