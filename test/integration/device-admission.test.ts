/**
 * The relay paces device sessions (relay/src/device-admission.ts): connections offering ALPN `mqtt` start their
 * TLS handshake one slot apart (here 5 per second), wait at most deviceAdmissionWaitMs (here 1 s) for a slot,
 * and past that are closed before any TLS work with one `PW_RELAY_BUSY` line. Other ALPNs are never paced, and
 * a connection after a quiet gap is admitted at once. Real relay process, real TLS clients on loopback.
 */
import tls from 'node:tls';
import { type ManagedProcess, type PortwayCluster, isEvent } from '../../devtools';
import { Disposer, FAST_RELAY_CONFIG, startCluster } from '../helpers';

const RATE = 5;
const WAIT_MS = 1_000;
const BURST = 20;

interface Outcome {
  readonly alpn: string;
  /** ms after the burst started, or undefined when the connection closed before its handshake. */
  readonly handshakeMs: number | undefined;
}

describe('device session pacing at the relay port', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let relay: ManagedProcess;

  beforeAll(async () => {
    cluster = await startCluster(suite, {
      services: [],
      relayConfig: { ...FAST_RELAY_CONFIG, timers: { ...FAST_RELAY_CONFIG.timers, deviceAdmissionWaitMs: WAIT_MS }, limits: { minDeviceSessionsPerSecond: RATE, maxDeviceSessionsPerSecond: RATE } },
    });
    relay = cluster.relay as ManagedProcess;
  }, 60_000);
  afterAll(() => suite.run(), 30_000);

  /** One TLS connection offering `alpn`; resolves with when its handshake finished, if it did. */
  function attempt(alpn: string, startedAt: number): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port: cluster.relayPort, ALPNProtocols: [alpn], rejectUnauthorized: false });
      let handshakeMs: number | undefined;
      const timer = setTimeout(() => socket.destroy(), 10_000);
      socket.on('secureConnect', () => {
        handshakeMs = Date.now() - startedAt;
        socket.destroy();
      });
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve({ alpn, handshakeMs });
      });
    });
  }

  const busyLines = (): number => relay.lines.filter((l) => isEvent('relay.connection.rejected')(l) && l.includes('"PW_RELAY_BUSY"')).length;

  it(`a burst of ${BURST} MQTT connections: ${RATE} per second start TLS, those past the ${WAIT_MS} ms wait are refused before TLS; HTTP is not paced`, async () => {
    expect(JSON.parse(relay.lines.find(isEvent('relay.started')) as string)).toMatchObject({ deviceSessionsPerSecond: RATE });
    const busyBefore = busyLines();
    const startedAt = Date.now();
    const mqtt = Array.from({ length: BURST }, () => attempt('mqtt', startedAt));
    // Sent after the burst, on the API's ALPN: not queued behind it.
    await new Promise((r) => setTimeout(r, 50));
    const http = await attempt('http/1.1', startedAt);
    const outcomes = await Promise.all(mqtt);

    const handshakes = outcomes.map((o) => o.handshakeMs).filter((ms): ms is number => ms !== undefined).sort((a, b) => a - b);
    const refused = outcomes.length - handshakes.length;
    await relay.waitForLine(() => busyLines() - busyBefore >= refused, 5_000, 'PW_RELAY_BUSY lines').catch(() => undefined);
    const figures = { handshakes, refused, busyLines: busyLines() - busyBefore, httpHandshakeMs: http.handshakeMs };
    process.stdout.write(`device-admission.figure ${JSON.stringify(figures)}\n`);

    // Slots 0, 200, ..., 1000 ms fit the wait: 6 (one fewer if the burst's first slot went to a stray
    // reconnect of the cluster's own agent, which this suite does not disturb).
    expect(handshakes.length).toBeGreaterThanOrEqual(WAIT_MS / (1_000 / RATE));
    expect(handshakes.length).toBeLessThanOrEqual(WAIT_MS / (1_000 / RATE) + 1);
    // Each refusal is one coded line, and nothing is refused twice.
    expect(figures.busyLines).toBe(refused);
    // Paced: the admitted handshakes are spread over the slots, not bunched.
    expect((handshakes.at(-1) as number) - (handshakes[0] as number)).toBeGreaterThanOrEqual(((handshakes.length - 1) * 1_000) / RATE - 100);
    // The HTTP connection did not wait for the MQTT slots.
    expect(http.handshakeMs).toBeDefined();
    expect(http.handshakeMs as number).toBeLessThan(handshakes.at(-1) as number);
  }, 30_000);

  it('after a quiet second a device connection is admitted at once, and the real agent stayed online', async () => {
    await new Promise((r) => setTimeout(r, 1_500));
    const busyBefore = busyLines();
    const outcome = await attempt('mqtt', Date.now());
    expect(outcome.handshakeMs).toBeDefined();
    expect(busyLines()).toBe(busyBefore);
    expect((cluster.agent as ManagedProcess).lines.filter(isEvent('agent.control.disconnected'))).toEqual([]);
  }, 30_000);
});
