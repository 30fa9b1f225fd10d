/**
 * Hostile relay on the data plane (issue 6, docs/reliability.md): a test build of the relay
 * (PORTWAY_TEST_MISBEHAVE with PORTWAY_TEST=1, relay/src/data/data-misbehaviour.ts) that, for the streams of
 * one service only,
 *   - replays one inner TLS record toward the agent (`replay-record`: both ends report PW_E2E_INTEGRITY), or
 *   - splices a client's stream for pi1 to a data socket of the owner's other device pi2 (`splice-other-device`).
 * Pass: the client gets an error (not corrupted data, not a clean EOF), the service gets nothing wrong (a
 * prefix of what the client sent, at most; nothing at all on the wrong device), and the relay keeps serving
 * the other streams (one opened before the attack and a new one after it).
 */
import net from 'node:net';
import path from 'node:path';
import { promises as fs } from 'node:fs';
import { pseudoRandomBytes } from '../../devtools';
import { type ManagedProcess, type PortwayCluster, isEvent } from '../../devtools/portway-cluster';
import { Disposer, collectBytes, connectTcp, startCluster, startEchoServer } from '../helpers';
import { RELIABILITY_RELAY_CONFIG, eventsSince } from '../helpers/reliability';

/** Poll `read` (every 50 ms, at most `timeoutMs`) until it returns a value. */
async function waitForValue<T>(read: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

/** An echo server that keeps every byte each connection received, to check what reached the service. */
async function startRecordingEcho(disposer: Disposer): Promise<{ port: number; received: Buffer[][] }> {
  const received: Buffer[][] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    received.push(chunks);
    sockets.add(socket);
    socket.on('error', () => undefined); // a reset from the agent is expected here
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      socket.write(c);
    });
    socket.on('end', () => socket.end());
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  disposer.add(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }, 'stop recording echo');
  return { port: (server.address() as net.AddressInfo).port, received };
}

describe('hostile relay on the data plane', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  let cluster: PortwayCluster;
  let victim1: Awaited<ReturnType<typeof startRecordingEcho>>;
  let victim2: Awaited<ReturnType<typeof startRecordingEcho>>;
  let agent2: ManagedProcess;

  beforeAll(async () => {
    const echo = await startEchoServer(suite);
    victim1 = await startRecordingEcho(suite);
    victim2 = await startRecordingEcho(suite);
    cluster = await startCluster(suite, {
      services: [
        { name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` },
        { name: 'victim', type: 'tcp', target: `127.0.0.1:${victim1.port}` },
      ],
      relayConfig: RELIABILITY_RELAY_CONFIG,
    });
    // The owner's second device, with a 'victim' service of its own.
    const config = JSON.parse(await fs.readFile(cluster.agentConfigFile, 'utf8')) as Record<string, unknown>;
    const file = path.join(cluster.dir, 'agent2.json');
    await fs.writeFile(file, JSON.stringify({ ...config, name: 'pi2', stateDir: path.join(cluster.dir, 'agent2-state'), services: [{ name: 'victim', type: 'tcp', target: `127.0.0.1:${victim2.port}` }] }));
    agent2 = cluster.spawnCli(['agent', '--config', file]);
    suite.add(() => agent2.stop(), 'stop agent pi2');
    await agent2.waitForLine(isEvent('agent.control.online'), 30_000, 'pi2 online');
  }, 90_000);
  afterEach(() => disposer.run());
  afterAll(() => suite.run(), 30_000);

  /** Restart the relay misbehaving as `value` (PORTWAY_TEST_MISBEHAVE); both agents back online. */
  async function misbehavingRelay(value: string): Promise<ManagedProcess> {
    await (cluster.relay as ManagedProcess).stop();
    process.env.PORTWAY_TEST = '1';
    process.env.PORTWAY_TEST_MISBEHAVE = value;
    try {
      const relay = await cluster.startRelay();
      expect(relay.events('relay.test_misbehaviour.enabled')).toHaveLength(1);
      await relay.waitForLine((l) => isEvent('relay.device.online')(l) && relay.events('relay.device.online').length >= 2, 20_000, 'both devices online');
      return relay;
    } finally {
      delete process.env.PORTWAY_TEST;
      delete process.env.PORTWAY_TEST_MISBEHAVE;
    }
  }

  /** An echo stream through `portway connect`: send `payload`, expect it back. */
  async function echoOnce(port: number, payload: Buffer): Promise<void> {
    const socket = await connectTcp(disposer, { host: '127.0.0.1', port });
    const bytes = collectBytes(socket);
    socket.end(payload);
    expect((await bytes.waitForLength(payload.length, 15_000)).equals(payload)).toBe(true);
  }

  it('a replayed inner TLS record: the client gets a reset, the service got only a prefix of what was sent, other streams keep working', async () => {
    const relay = await misbehavingRelay('replay-record:victim');
    const echoPort = (await cluster.connect('echo')).port;
    const victim = await cluster.connect('victim');
    const victimPort = victim.port;
    // A stream of another service, open before the attack and used after it.
    const before = await connectTcp(disposer, { host: '127.0.0.1', port: echoPort });
    const beforeBytes = collectBytes(before);
    before.write('before');
    await beforeBytes.waitForLength(6, 15_000);

    const socket = await connectTcp(disposer, { host: '127.0.0.1', port: victimPort });
    const bytes = collectBytes(socket);
    const messages = Array.from({ length: 20 }, (_, i) => pseudoRandomBytes(`replay-${i}`, 1_000));
    const sent: Buffer[] = [];
    let echoed = 0;
    const started = Date.now();
    for (const m of messages) {
      if (bytes.state !== 'open') break;
      socket.write(m);
      sent.push(m);
      try {
        await bytes.waitForLength((echoed + 1) * 1_000, 5_000);
        echoed++;
      } catch {
        break; // the stream died: checked below
      }
    }
    const error = await bytes.waitForClose(10_000);
    const failedAfterMs = Date.now() - started;
    const sentBytes = Buffer.concat(sent);
    const back = bytes.bytes();
    const atService = Buffer.concat(victim1.received.at(-1) ?? []);
    await relay.waitForLine((l) => isEvent('relay.stream.closed')(l) && l.includes('"service":"victim"'), 10_000, 'relay.stream.closed (victim)');
    const relayClosed = eventsSince(relay, 'relay.stream.closed', 0).filter((e) => e.service === 'victim');
    await (cluster.agent as ManagedProcess).waitForLine((l) => isEvent('agent.stream.closed')(l) && l.includes('"service":"victim"'), 10_000, 'agent.stream.closed (victim)');
    const agentClosed = eventsSince(cluster.agent as ManagedProcess, 'agent.stream.closed', 0).filter((e) => e.service === 'victim').at(-1);
    // Both ends name the integrity failure: the agent (whose inner TLS failed to decrypt the replayed record) in its
    // stream line, the forward proxy (which got the bad_record_mac alert) on its stderr line for the connection.
    const proxyLine = await waitForValue(() => /^portway: (PW_[A-Z0-9_]+): .*$/m.exec(victim.proc.stderr)?.[0], 10_000, 'the forward proxy\'s error line');
    figure('hostile-relay-replay', { messagesSent: sent.length, echoedIntact: echoed, clientError: (error as NodeJS.ErrnoException | null)?.code ?? null, failedAfterMs, bytesAtService: atService.length, relayOutcome: relayClosed.map((e) => e.outcome), agentClosed: { outcome: agentClosed?.outcome, level: agentClosed?.level, code: agentClosed?.code, reason: agentClosed?.reason }, forwardProxy: proxyLine });
    expect({ level: agentClosed?.level, code: agentClosed?.code }).toEqual({ level: 40, code: 'PW_E2E_INTEGRITY' });
    // The alert can be overtaken by the reset that follows it (the client's kernel drops unread data on RST): then
    // the forward proxy says PW_STREAM_ABORTED. The agent, which detected the replay, always names it (above).
    expect(proxyLine).toMatch(/^portway: (PW_E2E_INTEGRITY: end-to-end integrity check failed \(ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC\): .*|PW_STREAM_ABORTED: [^\n]*) \(connection from 127\.0\.0\.1:\d+\)$/);
    expect({
      clientError: (error as NodeJS.ErrnoException | null)?.code,
      beforeEnd: bytes.state === 'closed' && error !== null,
      backIsPrefix: sentBytes.subarray(0, back.length).equals(back),
      serviceGotPrefix: atService.length <= sentBytes.length && sentBytes.subarray(0, atService.length).equals(atService),
      notAllSent: sent.length < messages.length || echoed < messages.length,
    }).toEqual({ clientError: 'ECONNRESET', beforeEnd: true, backIsPrefix: true, serviceGotPrefix: true, notAllSent: true });
    expect(echoed).toBeGreaterThanOrEqual(1);
    expect({ relay: relayClosed.map((e) => e.outcome), agent: agentClosed?.outcome }).toEqual({ relay: ['aborted'], agent: 'aborted' });

    before.write('after');
    await beforeBytes.waitForLength(11, 15_000);
    expect(beforeBytes.bytes().toString()).toBe('beforeafter');
    await echoOnce(echoPort, Buffer.from('a new stream after the attack'));
  }, 90_000);

  it('a stream spliced to another device of the same owner: the client fails the device check, neither service gets a byte, other streams keep working', async () => {
    await misbehavingRelay('splice-other-device:victim');
    const accepts = { pi1: victim1.received.length, pi2: victim2.received.length };
    const started = Date.now();
    const piped = await cluster.runCli(['pipe', 'pi1', 'victim'], { input: 'secret for pi1\n', timeoutMs: 30_000 });
    const failedAfterMs = Date.now() - started;
    const echoPort = (await cluster.connect('echo')).port;
    await echoOnce(echoPort, Buffer.from('other streams still work'));
    const newAccepts = { pi1: victim1.received.length - accepts.pi1, pi2: victim2.received.length - accepts.pi2 };
    const pi2Streams = agent2.events('agent.stream.opened').length;
    figure('hostile-relay-splice', { exit: piped.code, stderr: piped.stderr.trim(), failedAfterMs, serviceAccepts: newAccepts, pi2StreamsOpened: pi2Streams });
    expect({ exit: piped.code, stdout: piped.stdout, code: /PW_[A-Z0-9_]+/.exec(piped.stderr)?.[0], newAccepts }).toEqual({ exit: 1, stdout: '', code: 'PW_E2E_DEVICE_KEY_MISMATCH', newAccepts: { pi1: 0, pi2: 0 } });
  }, 90_000);
});
