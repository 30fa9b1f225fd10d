/**
 * Hostile input on the relay's one port, from raw `net`/`tls` sockets: garbage instead of TLS, unknown
 * ALPN, missing or foreign client certificates, broken data-socket preambles and frames, clients that
 * stall, a made-up stream token, certificates used in the wrong role; garbage on the HTTP API; garbage
 * agent config files. Each attempt must be refused with its exact code, logged by the relay with that code
 * (`relay.connection.rejected` before routing, `relay.data.refused` on data sockets, `relay.http.refused`
 * on the API), and lose nothing else: an echo stream opened through `portway connect` before the attacks
 * keeps carrying data, checked byte for byte, during and after each of them, and the relay stays up.
 */
import { promises as fs } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import {
  DATA_MAGIC,
  DATA_VERSION,
  encodeFrame,
  encodePreamble,
  FrameDecoder,
  FrameType,
  HANDOFF_MARKER,
  MAX_FRAME_BYTES,
  MAX_PREAUTH_FRAME_BYTES,
  type ErrorCode,
} from '../../protocol';
import { CertificateAuthority } from '../../relay/src/pki';
import { generateKeyPair } from '../../shared/x509';
import { PORTWAY_BIN, isEvent, pseudoRandomBytes, type ManagedProcess, type PortwayCluster } from '../../devtools';
import { type ByteCollector, Disposer, collectBytes, connectTcp, makeTempDir, once, runProcess, startCluster, startEchoServer } from '../helpers';
import { startFaultProxy } from '../helpers/fault-proxy';

const LOG_WAIT_MS = 10_000;
/** FAST_RELAY_CONFIG's tlsHandshakeTimeoutMs and firstFrameTimeoutMs are 3 s: a stalled client is cut soon after. */
const STALL_WAIT_MS = 10_000;
const EXIT_CONFIG_INVALID = 78;

/** An MQTT 3.1.1 CONNECT packet (clean session, keepalive 60 s) for `clientId`. */
function mqttConnect(clientId: string): Buffer {
  const id = Buffer.from(clientId, 'utf8');
  const variable = Buffer.from([0x00, 0x04, ...Buffer.from('MQTT'), 0x04, 0x02, 0x00, 0x3c]);
  const payload = Buffer.concat([Buffer.from([id.length >> 8, id.length & 0xff]), id]);
  const remaining = variable.length + payload.length;
  if (remaining > 127) throw new RangeError('client ID too long for this test packet');
  return Buffer.concat([Buffer.from([0x10, remaining]), variable, payload]);
}

interface Credentials {
  readonly key: string;
  readonly cert: string;
}

interface Attempt {
  readonly raw: net.Socket;
  readonly localPort: number;
}

describe('relay under hostile input', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  let cluster: PortwayCluster;
  let relay: ManagedProcess;
  let device: Credentials;
  let user: Credentials & { userId: string };
  let deviceId: string;

  // The stream that must survive everything: a TCP connection through `portway connect` to an echo service.
  let echo: ByteCollector;
  let echoSocket: net.Socket;
  const echoSent: Buffer[] = [];
  let echoRounds = 0;

  beforeAll(async () => {
    const echoServer = await startEchoServer(suite);
    cluster = await startCluster(suite, { services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echoServer.port}` }] });
    relay = cluster.relay as ManagedProcess;
    const state = path.join(cluster.dir, 'agent-state');
    device = { key: await fs.readFile(path.join(state, 'device.key'), 'utf8'), cert: await fs.readFile(path.join(state, 'device.crt'), 'utf8') };
    deviceId = (JSON.parse(await fs.readFile(path.join(state, 'device.json'), 'utf8')) as { deviceId: string }).deviceId;
    const home = path.join(cluster.configHome, 'portway');
    const { userId } = JSON.parse(await fs.readFile(path.join(home, 'client.json'), 'utf8')) as { userId: string };
    user = { userId, key: await fs.readFile(path.join(home, 'user.key'), 'utf8'), cert: await fs.readFile(path.join(home, 'user.crt'), 'utf8') };
    const { port } = await cluster.connect('echo');
    echoSocket = await connectTcp(suite, { host: '127.0.0.1', port });
    echo = collectBytes(echoSocket);
    await echoRoundTrip();
  }, 60_000);
  afterEach(() => disposer.run());
  afterAll(async () => {
    try {
      // Still the same stream, still intact, and it ends cleanly.
      echoSocket.end();
      await echo.waitForEnd(10_000);
      expect(echo.bytes().equals(Buffer.concat(echoSent))).toBe(true);
    } finally {
      await suite.run();
    }
  }, 60_000);

  /** Send a fresh chunk on the long-lived echo stream and check that everything so far came back in order. */
  async function echoRoundTrip(): Promise<void> {
    const chunk = pseudoRandomBytes(`round-${echoRounds++}`, 16 * 1024);
    echoSent.push(chunk);
    echoSocket.write(chunk);
    const expected = Buffer.concat(echoSent);
    const got = await echo.waitForLength(expected.length, 10_000);
    expect(got.length).toBe(expected.length);
    expect(got.equals(expected)).toBe(true);
  }

  function expectRelayAlive(): void {
    expect(relay.child.exitCode).toBeNull();
    expect(relay.child.signalCode).toBeNull();
    expect(relay.events('relay.data.refused').filter((e) => e.code === 'PW_INTERNAL')).toEqual([]);
  }

  /** The relay's log line `event` about the connection from our local port. */
  function relayLogFor(attempt: Attempt, event: string, timeoutMs = LOG_WAIT_MS): Promise<Record<string, unknown>> {
    const remote = `"remote":"127.0.0.1:${attempt.localPort}"`;
    return relay.waitForLine((l) => isEvent(event)(l) && l.includes(remote), timeoutMs, `${event} for ${remote}`).then((l) => JSON.parse(l) as Record<string, unknown>);
  }

  async function openTcp(): Promise<Attempt> {
    const raw = await connectTcp(disposer, { host: '127.0.0.1', port: cluster.relayPort }, { allowHalfOpen: false });
    return { raw, localPort: raw.localPort as number };
  }

  /** TLS over a fresh TCP connection to the relay; not awaited, so failing handshakes can be observed too. */
  function startTls(attempt: Attempt, options: { alpn?: string[]; credentials?: Credentials }): tls.TLSSocket {
    const socket = tls.connect({
      socket: attempt.raw,
      rejectUnauthorized: false, // the attacker does not care who the relay is
      ...(options.alpn ? { ALPNProtocols: options.alpn } : {}),
      ...(options.credentials ? { key: options.credentials.key, cert: options.credentials.cert } : {}),
    });
    socket.on('error', () => undefined); // observed through collectBytes()
    disposer.add(() => socket.destroy(), 'destroy tls probe');
    return socket;
  }

  async function openData(credentials?: Credentials): Promise<Attempt & { tls: tls.TLSSocket; bytes: ByteCollector }> {
    const attempt = await openTcp();
    const socket = startTls(attempt, { alpn: ['portway-data/1'], credentials });
    const bytes = collectBytes(socket);
    await once(socket, 'secureConnect', 5_000);
    expect(socket.alpnProtocol).toBe('portway-data/1');
    return { ...attempt, tls: socket, bytes };
  }

  /** What the relay answered on a data socket before closing it: exactly one RELAY_STATUS failure frame. */
  async function readRefusal(bytes: ByteCollector, timeoutMs = LOG_WAIT_MS): Promise<{ code: string; message: string }> {
    await bytes.waitForClose(timeoutMs);
    const decoder = new FrameDecoder({ expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES });
    const result = decoder.push(bytes.bytes());
    if (result.kind !== 'frame') throw new Error(`expected one RELAY_STATUS frame, got ${result.kind} from ${bytes.length} bytes`);
    expect(result.frame.type).toBe(FrameType.RELAY_STATUS);
    expect(result.rest.length).toBe(0);
    const payload = result.frame.payload as { ok: boolean; code: string; message: string };
    expect(payload.ok).toBe(false);
    expect(typeof payload.message).toBe('string');
    return payload;
  }

  /** Send `bytes` on a new data socket (no certificate unless given); expect RELAY_STATUS `code` and a logged refusal. */
  async function expectDataRefusal(bytes: Buffer, code: ErrorCode, credentials?: Credentials): Promise<{ message: string; log: Record<string, unknown> }> {
    const probe = await openData(credentials);
    const logged = relayLogFor(probe, 'relay.data.refused');
    probe.tls.write(bytes);
    await echoRoundTrip(); // during: the attempt is in flight or being refused
    const refusal = await readRefusal(probe.bytes);
    expect(refusal.code).toBe(code);
    const log = await logged;
    expect(log).toMatchObject({ code, level: 30 });
    await echoRoundTrip(); // after
    expectRelayAlive();
    return { message: refusal.message, log };
  }

  const preamble = encodePreamble();
  const header = (type: number, flags: number, length: number): Buffer => Buffer.from([type, flags, length >> 8, length & 0xff]);
  const clientOpen = encodeFrame(FrameType.CLIENT_OPEN, { device: 'pi1', service: 'echo' });

  describe('before TLS: the ALPN router', () => {
    it('plain TCP garbage is closed before any TLS layer with PW_NOT_TLS; a damaged ClientHello fails the handshake', async () => {
      const notTls = [Buffer.from('GET / HTTP/1.1\r\nHost: relay\r\n\r\n'), Buffer.concat([Buffer.from([0x80]), pseudoRandomBytes('garbage', 4096)]), Buffer.concat([preamble, clientOpen])];
      for (const garbage of notTls) {
        const attempt = await openTcp();
        const bytes = collectBytes(attempt.raw);
        const logged = relayLogFor(attempt, 'relay.connection.rejected');
        attempt.raw.write(garbage);
        await echoRoundTrip();
        await bytes.waitForClose(LOG_WAIT_MS);
        expect(await logged).toMatchObject({ code: 'PW_NOT_TLS' });
      }
      // Starts like a TLS handshake record, then garbage: the TLS layer refuses it.
      const attempt = await openTcp();
      const bytes = collectBytes(attempt.raw);
      const logged = relayLogFor(attempt, 'relay.connection.rejected');
      attempt.raw.write(Buffer.concat([Buffer.from([22, 3, 1, 0, 200]), pseudoRandomBytes('hello-garbage', 200)]));
      await bytes.waitForClose(LOG_WAIT_MS);
      expect(await logged).toMatchObject({ code: 'PW_BAD_PREAMBLE', reason: expect.stringContaining('TLS handshake failed') });
      await echoRoundTrip();
      expectRelayAlive();
    });

    it('TLS with an unknown ALPN, or none, is rejected with PW_UNKNOWN_ALPN', async () => {
      for (const alpn of [['h2'], ['portway-data/2', 'mqtt-ish'], undefined]) {
        const attempt = await openTcp();
        const socket = startTls(attempt, { alpn, credentials: user });
        const bytes = collectBytes(socket);
        const logged = relayLogFor(attempt, 'relay.connection.rejected');
        await echoRoundTrip();
        await bytes.waitForClose(LOG_WAIT_MS);
        expect(bytes.length).toBe(0);
        expect(await logged).toMatchObject({ code: 'PW_UNKNOWN_ALPN' });
      }
      await echoRoundTrip();
      expectRelayAlive();
    });

    it('a TLS record that fails to decrypt after the handshake closes that connection at once (MQTT with the device certificate, HTTP)', async () => {
      // Without this the relay kept such a connection open (Node reports the error only as '_tlsError') until the
      // CONNECT deadline (3 s here) or the HTTP idle deadline (15 s).
      const record = Buffer.concat([Buffer.from([23, 3, 3, 0, 64]), pseudoRandomBytes('bad-record', 64)]);
      for (const [alpn, credentials] of [['mqtt', device], ['http/1.1', undefined]] as const) {
        const attempt = await openTcp();
        const socket = startTls(attempt, { alpn: [alpn], credentials });
        const bytes = collectBytes(socket);
        // The relay's session ticket comes after its side of the handshake is done (TLS 1.3): only then is the
        // record below a record after the handshake rather than a broken handshake.
        await once(socket, 'session', 5_000);
        const logged = relayLogFor(attempt, 'relay.connection.failed');
        const sentAt = Date.now();
        attempt.raw.write(record); // under the TLS layer: a record the relay cannot decrypt
        await bytes.waitForClose(LOG_WAIT_MS);
        const closedAfterMs = Date.now() - sentAt;
        expect({ alpn, logged: await logged }).toMatchObject({ alpn, logged: { code: 'PW_TLS_RECORD_INVALID' } });
        expect({ alpn, closedWithin1s: closedAfterMs < 1_000 }).toEqual({ alpn, closedWithin1s: true });
      }
      await echoRoundTrip();
      expectRelayAlive();
      expect(relay.events('relay.device.offline')).toEqual([]);
    });

    it('MQTT without a client certificate, or with a user certificate, is closed', async () => {
      for (const [credentials, code] of [[undefined, 'PW_CLIENT_CERT_REQUIRED'], [user, 'PW_WRONG_ROLE']] as const) {
        const attempt = await openTcp();
        const socket = startTls(attempt, { alpn: ['mqtt'], credentials });
        const bytes = collectBytes(socket);
        const logged = relayLogFor(attempt, 'relay.connection.rejected');
        await once(socket, 'secureConnect', 5_000);
        // An MQTT CONNECT with the device's client ID: it must not reach the broker (no session takeover).
        socket.write(mqttConnect(deviceId));
        await echoRoundTrip();
        await bytes.waitForClose(LOG_WAIT_MS);
        expect(bytes.length).toBe(0);
        expect(await logged).toMatchObject({ code });
      }
      await echoRoundTrip();
      expectRelayAlive();
      // The real agent's control session was not disturbed.
      expect(relay.events('relay.device.offline')).toEqual([]);
    });
  });

  describe('data sockets: preamble and first frame', () => {
    it('no client certificate: RELAY_STATUS PW_CLIENT_CERT_REQUIRED', async () => {
      await expectDataRefusal(Buffer.concat([preamble, clientOpen]), 'PW_CLIENT_CERT_REQUIRED');
      await expectDataRefusal(Buffer.concat([preamble, encodeFrame(FrameType.AGENT_HELLO, { kind: 'pool' })]), 'PW_CLIENT_CERT_REQUIRED');
    });

    it('a look-alike user certificate from another CA: PW_CERT_UNTRUSTED', async () => {
      const foreign = CertificateAuthority.create({ commonName: 'Portway relay CA' });
      const keys = generateKeyPair();
      const cert = foreign.issueUserCert({ userId: user.userId, name: 'alice', publicKeySpkiDer: keys.publicKeySpkiDer, validityMs: 3_600_000 });
      await expectDataRefusal(Buffer.concat([preamble, clientOpen]), 'PW_CERT_UNTRUSTED', { key: keys.privateKeyPem, cert });
    });

    it('oversized frame header before authentication: PW_FRAME_TOO_LARGE, nothing buffered', async () => {
      for (const length of [MAX_PREAUTH_FRAME_BYTES + 1, 0xffff]) {
        const { message } = await expectDataRefusal(Buffer.concat([preamble, header(FrameType.CLIENT_OPEN, 0, length)]), 'PW_FRAME_TOO_LARGE');
        expect(message).toBe(`frame of ${length} bytes exceeds ${MAX_PREAUTH_FRAME_BYTES}`);
      }
    });

    it('bad magic or an unknown version: PW_BAD_PREAMBLE', async () => {
      await expectDataRefusal(Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), 'PW_BAD_PREAMBLE');
      await expectDataRefusal(Buffer.concat([DATA_MAGIC, Buffer.from([DATA_VERSION + 1]), clientOpen]), 'PW_BAD_PREAMBLE');
    });

    it('unknown frame type, unknown flags, a frame that cannot open a socket: PW_BAD_FRAME', async () => {
      await expectDataRefusal(Buffer.concat([preamble, header(0x7f, 0, 2), Buffer.from('{}')]), 'PW_BAD_FRAME');
      await expectDataRefusal(Buffer.concat([preamble, header(FrameType.CLIENT_OPEN, 0x80, 2), Buffer.from('{}')]), 'PW_BAD_FRAME');
      await expectDataRefusal(Buffer.concat([preamble, encodeFrame(FrameType.RELAY_STATUS, { ok: true })]), 'PW_BAD_FRAME');
    });

    it('malformed JSON, and JSON of the wrong shape: PW_BAD_FRAME', async () => {
      const notJson = Buffer.from('{"device": "pi1", "service": ');
      await expectDataRefusal(Buffer.concat([preamble, header(FrameType.CLIENT_OPEN, 0, notJson.length), notJson]), 'PW_BAD_FRAME');
      await expectDataRefusal(Buffer.concat([preamble, encodeFrame(FrameType.CLIENT_OPEN, { device: 42, service: ['echo'] })]), 'PW_BAD_FRAME', user);
      await expectDataRefusal(Buffer.concat([preamble, encodeFrame(FrameType.AGENT_HELLO, { kind: 'dial' })]), 'PW_BAD_FRAME', device);
    });

    it('a frame cut short by the client: PW_STREAM_ABORTED', async () => {
      const probe = await openData(user);
      const logged = relayLogFor(probe, 'relay.data.refused');
      probe.tls.end(Buffer.concat([preamble, clientOpen.subarray(0, clientOpen.length - 3)]));
      await echoRoundTrip();
      expect(await logged).toMatchObject({ code: 'PW_STREAM_ABORTED' });
      await probe.bytes.waitForClose(LOG_WAIT_MS);
      await echoRoundTrip();
      expectRelayAlive();
    });

    it('clients that stall are cut after the handshake or first-frame deadline', async () => {
      // Three at once: TCP without a TLS ClientHello, TLS without a first frame, and half a preamble.
      const silentTcp = await openTcp();
      const silentTcpBytes = collectBytes(silentTcp.raw);
      const silentTcpLog = relayLogFor(silentTcp, 'relay.connection.rejected', STALL_WAIT_MS);
      const silentData = await openData(user);
      const silentDataLog = relayLogFor(silentData, 'relay.data.refused', STALL_WAIT_MS);
      const trickle = await openData(user);
      const trickleLog = relayLogFor(trickle, 'relay.data.refused', STALL_WAIT_MS);
      trickle.tls.write(preamble.subarray(0, 2));
      // The echo stream keeps flowing while they hang.
      await echoRoundTrip();
      await echoRoundTrip();
      expect(await silentTcpLog).toMatchObject({ code: 'PW_HANDSHAKE_TIMEOUT' });
      await silentTcpBytes.waitForClose(STALL_WAIT_MS);
      expect(silentTcpBytes.length).toBe(0);
      for (const [probe, log] of [[silentData, silentDataLog], [trickle, trickleLog]] as const) {
        expect(await log).toMatchObject({ code: 'PW_HANDSHAKE_TIMEOUT' });
        expect((await readRefusal(probe.bytes, STALL_WAIT_MS)).code).toBe('PW_HANDSHAKE_TIMEOUT');
      }
      await echoRoundTrip();
      expectRelayAlive();
    });
  });

  describe('data sockets: identities and tokens', () => {
    it('a made-up (or stolen and already used) stream token on a device socket: PW_STREAM_TOKEN_INVALID', async () => {
      const { log } = await expectDataRefusal(Buffer.concat([preamble, encodeFrame(FrameType.AGENT_HELLO, { kind: 'dial', token: 'x'.repeat(43) })]), 'PW_STREAM_TOKEN_INVALID', device);
      expect(JSON.stringify(log)).not.toContain('x'.repeat(43)); // tokens never reach the log
    });

    it('a device certificate opening a stream as a user: PW_WRONG_ROLE', async () => {
      await expectDataRefusal(Buffer.concat([preamble, clientOpen]), 'PW_WRONG_ROLE', device);
    });

    it('a user certificate posing as a device: PW_WRONG_ROLE', async () => {
      await expectDataRefusal(Buffer.concat([preamble, encodeFrame(FrameType.AGENT_HELLO, { kind: 'pool' })]), 'PW_WRONG_ROLE', user);
      await expectDataRefusal(Buffer.concat([preamble, encodeFrame(FrameType.AGENT_HELLO, { kind: 'dial', token: 'y'.repeat(43) })]), 'PW_WRONG_ROLE', user);
    });
  });

  describe('data sockets: the handoff (protocol.md 3.7)', () => {
    /** A user's data socket that sends CLIENT_OPEN and then `after` on the TCP connection, below TLS. */
    async function openWithRawTail(after: Buffer, inTls: Buffer = Buffer.alloc(0)): Promise<Attempt & { tls: tls.TLSSocket; bytes: ByteCollector; log: Promise<Record<string, unknown>> }> {
      const probe = await openData(user);
      const log = relayLogFor(probe, 'relay.data.refused');
      await new Promise<void>((resolve) => probe.tls.write(Buffer.concat([preamble, clientOpen, inTls]), () => resolve()));
      probe.raw.write(after);
      return { ...probe, log };
    }

    it('a damaged marker: PW_BAD_PREAMBLE, the connection is cut', async () => {
      const damaged = Buffer.from(HANDOFF_MARKER);
      damaged[7] = 0x02;
      const probe = await openWithRawTail(Buffer.concat([damaged, Buffer.from('inner bytes')]));
      await echoRoundTrip();
      expect(await probe.log).toMatchObject({ code: 'PW_BAD_PREAMBLE', level: 30 });
      await probe.bytes.waitForClose(LOG_WAIT_MS);
      await echoRoundTrip();
      expectRelayAlive();
    });

    it('bytes that are neither a TLS record nor the marker: PW_BAD_PREAMBLE', async () => {
      const probe = await openWithRawTail(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
      expect(await probe.log).toMatchObject({ code: 'PW_BAD_PREAMBLE', level: 30 });
      await probe.bytes.waitForClose(LOG_WAIT_MS);
      await echoRoundTrip();
      expectRelayAlive();
    });

    it('TLS data between CLIENT_OPEN and the marker: RELAY_STATUS PW_BAD_FRAME', async () => {
      const probe = await openWithRawTail(HANDOFF_MARKER, encodeFrame(FrameType.CLIENT_OPEN, { device: 'pi1', service: 'echo' }));
      expect((await readRefusal(probe.bytes)).code).toBe('PW_BAD_FRAME');
      expect(await probe.log).toMatchObject({ code: 'PW_BAD_FRAME', level: 30 });
      await echoRoundTrip();
      expectRelayAlive();
    });

    it('no marker after CLIENT_OPEN: cut at the first-frame deadline with PW_HANDSHAKE_TIMEOUT', async () => {
      const probe = await openWithRawTail(Buffer.alloc(0));
      expect((await readRefusal(probe.bytes, 15_000)).code).toBe('PW_HANDSHAKE_TIMEOUT');
      expect(await probe.log).toMatchObject({ code: 'PW_HANDSHAKE_TIMEOUT' });
      await echoRoundTrip();
      expectRelayAlive();
    }, 30_000);

    it('a byte flipped on the link after the handoff aborts the stream: an error on the client, no corrupted byte delivered', async () => {
      // A second client configuration whose relay address is a fault proxy in front of the relay.
      const proxy = await startFaultProxy(disposer, { host: '127.0.0.1', port: cluster.relayPort });
      const home = path.join(cluster.dir, 'flip-home');
      await fs.cp(cluster.configHome, home, { recursive: true });
      const clientJson = path.join(home, 'portway', 'client.json');
      const settings = JSON.parse(await fs.readFile(clientJson, 'utf8')) as Record<string, unknown>;
      await fs.writeFile(clientJson, JSON.stringify({ ...settings, relay: `127.0.0.1:${proxy.port}` }), { mode: 0o600 });
      const payload = pseudoRandomBytes('flip', 128 * 1024).toString('hex'); // text: runProcess decodes stdout as UTF-8
      // Well past the handshakes (a few KiB): inside the inner session's records.
      proxy.proxy.setBitflip('upstream', { atByte: 64 * 1024, bit: 3 });
      const result = await runProcess(disposer, process.execPath, [PORTWAY_BIN, 'pipe', 'pi1', 'echo'], { input: payload, env: { ...process.env, XDG_CONFIG_HOME: home }, timeoutMs: 30_000 });
      // The agent's inner TLS fails to decrypt the damaged record and alerts the client. The client names the
      // integrity failure when the alert reaches it before the reset that follows; a reset that overtakes the alert
      // (its kernel drops unread data on RST) leaves it PW_STREAM_ABORTED (seen once in a full run). Never a clean end.
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^portway: (PW_E2E_INTEGRITY: end-to-end integrity check failed \(ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC\): [^\n]+|PW_STREAM_ABORTED: the stream was cut before a clean end)\n$/);
      const agent = cluster.agent as ManagedProcess;
      await agent.waitForLine((l) => isEvent('agent.stream.closed')(l) && l.includes('"code":"PW_E2E_INTEGRITY"'), 10_000, 'agent.stream.closed PW_E2E_INTEGRITY');
      expect(result.stdout.length).toBeLessThan(payload.length);
      expect(payload.startsWith(result.stdout)).toBe(true);
      await echoRoundTrip();
      expectRelayAlive();
    });
  });

  describe('HTTP API', () => {
    interface Reply {
      readonly status: number;
      readonly body: string;
    }

    function request(method: string, urlPath: string, options: { body?: Buffer | string; token?: string; raw?: Buffer } = {}): Promise<Reply> {
      return new Promise<Reply>((resolve, reject) => {
        const headers: Record<string, string> = {};
        if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
        if (options.body !== undefined) headers['content-type'] = 'application/json';
        const req = https.request(
          { host: '127.0.0.1', port: cluster.relayPort, method, path: urlPath, headers, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], agent: false, timeout: 10_000 } as https.RequestOptions,
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
            res.on('error', reject);
          },
        );
        req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
        req.on('error', reject);
        req.end(options.body);
      });
    }

    /** Send the request; expect `status` with `{ ok: false, code }` and a `relay.http.refused` line logged for it. */
    async function expectApiError(send: () => Promise<Reply>, status: number, code: ErrorCode): Promise<string> {
      const earlier = new Set(relay.lines.filter(isEvent('relay.http.refused')));
      const logged = relay.waitForLine((l) => isEvent('relay.http.refused')(l) && !earlier.has(l) && l.includes(`"code":"${code}"`), LOG_WAIT_MS, `relay.http.refused ${code}`);
      const { status: got, body } = await send();
      const json = JSON.parse(body) as { ok: boolean; code: string; message: string };
      expect({ status: got, ok: json.ok, code: json.code }).toEqual({ status, ok: false, code });
      await logged;
      return json.message;
    }

    it('answers health, so the refusals below are about the input', async () => {
      expect(await request('GET', '/v1/health')).toEqual({ status: 200, body: '{"ok":true}' });
    });

    it('no or a wrong token: 401 PW_UNAUTHENTICATED', async () => {
      await expectApiError(() => request('GET', '/v1/devices'), 401, 'PW_UNAUTHENTICATED');
      await expectApiError(() => request('GET', '/v1/devices', { token: `pwt_${'A'.repeat(43)}` }), 401, 'PW_UNAUTHENTICATED');
      await expectApiError(() => request('GET', '/v1/devices', { token: 'a b\tc' }), 401, 'PW_UNAUTHENTICATED');
      await echoRoundTrip();
    });

    it('unknown route: 404 PW_NOT_FOUND', async () => {
      expect(await expectApiError(() => request('GET', '/v1/nothing-here', { token: cluster.token }), 404, 'PW_NOT_FOUND')).toContain('/v1/nothing-here');
      await expectApiError(() => request('DELETE', '/v1/devices', { token: cluster.token }), 404, 'PW_NOT_FOUND');
    });

    it('bad JSON and wrong types: 400 PW_BAD_REQUEST naming the field', async () => {
      await expectApiError(() => request('POST', '/v1/login', { token: cluster.token, body: '{"csr": ' }), 400, 'PW_BAD_REQUEST');
      await expectApiError(() => request('POST', '/v1/enroll', { body: 'not json at all' }), 400, 'PW_BAD_REQUEST');
      const message = await expectApiError(() => request('POST', '/v1/enroll', { body: JSON.stringify({ enrollKey: 5, name: 'x y', csr: [] }) }), 400, 'PW_BAD_REQUEST');
      for (const field of ['enrollKey', 'name', 'csr']) expect(message).toContain(field);
      await expectApiError(() => request('POST', '/v1/login', { token: cluster.token, body: JSON.stringify({ csr: 'not a CSR' }) }), 400, 'PW_BAD_CSR');
      await echoRoundTrip();
    });

    it('a body over 64 KiB: 413 PW_FRAME_TOO_LARGE', async () => {
      const huge = Buffer.alloc(200 * 1024, 0x20);
      await expectApiError(() => request('POST', '/v1/enroll', { body: huge }), 413, 'PW_FRAME_TOO_LARGE');
      await expectApiError(() => request('POST', '/v1/login', { token: cluster.token, body: huge }), 413, 'PW_FRAME_TOO_LARGE');
      await echoRoundTrip();
      expectRelayAlive();
    });

    it('garbage instead of HTTP on the http/1.1 ALPN: 400 and closed', async () => {
      const attempt = await openTcp();
      const socket = startTls(attempt, { alpn: ['http/1.1'] });
      const bytes = collectBytes(socket);
      await once(socket, 'secureConnect', 5_000);
      socket.write(pseudoRandomBytes('http-garbage', 2048));
      await bytes.waitForClose(LOG_WAIT_MS);
      expect(bytes.bytes().toString('latin1')).toMatch(/^HTTP\/1\.1 400 /);
      await echoRoundTrip();
      expectRelayAlive();
    });
  });
});

describe('agent config validator with garbage', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  const valid = {
    relay: '127.0.0.1:8443',
    caFingerprint: 'a'.repeat(64),
    stateDir: '/nonexistent/portway-state',
    name: 'pi1',
    services: [{ name: 'ssh', type: 'tcp', target: '127.0.0.1:22' }],
  };

  async function runAgentWith(text: string): Promise<{ code: number | null; stderr: string; file: string }> {
    const dir = await makeTempDir(disposer, 'portway-agent-config-');
    const file = path.join(dir, 'agent.json');
    await fs.writeFile(file, text);
    const result = await runProcess(disposer, process.execPath, [PORTWAY_BIN, 'agent', '--config', file], { timeoutMs: 15_000 });
    return { code: result.code, stderr: result.stderr, file };
  }

  /** Exit 78 with one line `portway: PW_CONFIG_INVALID: FILE: ...` that names every bad field. */
  async function expectInvalid(config: unknown, fields: readonly string[]): Promise<void> {
    const { code, stderr, file } = await runAgentWith(typeof config === 'string' ? config : JSON.stringify(config));
    expect({ code, lines: stderr.split('\n').length }).toEqual({ code: EXIT_CONFIG_INVALID, lines: 2 });
    expect(stderr.startsWith(`portway: PW_CONFIG_INVALID: ${file}: `)).toBe(true);
    for (const field of fields) expect(stderr).toContain(field);
  }

  it('bad JSON', async () => {
    await expectInvalid('{"relay": "127.0.0.1:8443", ', ['not valid JSON']);
    await expectInvalid('', ['not valid JSON']);
  });

  it('wrong types, naming each bad field by its path', async () => {
    await expectInvalid({ ...valid, relay: 8443, name: ['pi1'] }, ['relay:', 'name:']);
    await expectInvalid({ ...valid, services: [{ name: 'ssh', type: 'tcp', target: 'localhost' }] }, ['services.0.target: must be HOST:PORT']);
    await expectInvalid({ ...valid, services: [{ name: 'ssh', type: 'carrier-pigeon', target: '127.0.0.1:22' }] }, ['services.0.type']);
    await expectInvalid({ ...valid, timers: { keepaliveS: 'fast', closeGraceMs: -1 } }, ['timers.keepaliveS:', 'timers.closeGraceMs:']);
    await expectInvalid([valid], ['(root):']);
  });

  it('missing fields, unknown keys, and cross-field problems', async () => {
    await expectInvalid({}, ['relay:', 'stateDir:', 'name:']);
    await expectInvalid({ ...valid, relayy: 'typo' }, ['relayy']);
    await expectInvalid({ ...valid, caFingerprint: undefined }, ['caFile: exactly one of caFile or caFingerprint is required']);
    await expectInvalid({ ...valid, services: [...valid.services, { name: 'ssh', type: 'tcp', target: '127.0.0.1:23' }] }, ['services.1.name: duplicate service name ssh']);
  });

  it('a config file that cannot be read', async () => {
    const dir = await makeTempDir(disposer, 'portway-agent-config-');
    const file = path.join(dir, 'missing.json');
    const result = await runProcess(disposer, process.execPath, [PORTWAY_BIN, 'agent', '--config', file], { timeoutMs: 15_000 });
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: EXIT_CONFIG_INVALID, stderr: `portway: PW_CONFIG_INVALID: cannot read ${file}: ENOENT\n` });
  });
});
